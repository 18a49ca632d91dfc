#!/bin/bash
# The demo: set up the host, build and boot the real guest, take a full
# snapshot, change the guest, revert, and show the proof from inside it.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
bash "$REPO/tools/setup-host.sh"
exec "${SNAPEXT_VENV:-$REPO/.venv}/bin/snapext" demo "$@"
