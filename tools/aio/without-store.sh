#!/bin/bash
# without-store.sh DIR CMD...: run CMD in a mount namespace of its own in
# which DIR (the compute host's snapext store) is an empty, read-only
# tmpfs.  The AIO starts nova-api this way: nova-api must serve the snapext
# API over RPC from the agents, as on a controller that shares no
# filesystem with the compute hosts, and a regression that reads (or
# writes) the store fails loudly instead of passing on a single host.
#
# The namespace's mounts are private, so nothing mounted here reaches the
# host, and everything else (the Cinder share, /proc, /var/log) stays as
# the host has it.  CMD keeps this script's PID (exec all the way).
set -euo pipefail
dir=$1
shift
[[ -d "$dir" ]] || { echo "without-store.sh: no directory $dir" >&2; exit 1; }
exec unshare --mount --propagation private -- /bin/sh -c \
    'mount -t tmpfs -o ro,size=64k,mode=0555 snapext-aio-no-store "$0" && exec "$@"' \
    "$dir" "$@"
