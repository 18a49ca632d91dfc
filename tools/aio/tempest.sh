#!/bin/bash
# Tempest's own tests against the AIO, snapext's full snapshots on:
#   tools/aio/tempest.sh [extra tempest run args]
# Prints the pass/skip/fail counts and every skip with its reason; exits
# non-zero when a test failed.
set -euo pipefail
AIO=${SNAPEXT_AIO_DIR:-/opt/snapext-aio}
LOGS=${SNAPEXT_AIO_LOGS:-/var/log/snapext-aio}
WS=$AIO/tempest-workspace
[[ -f $WS/etc/tempest.conf ]] || { echo "no $WS/etc/tempest.conf: run tools/aio/aio.sh up" >&2; exit 1; }
# test_novnc: the VNC console end to end (noVNC's page through
# nova-novncproxy, the websocket, the RFB handshake with the guest's QEMU).
# Expected skips: ServerActionsTestJSON.test_change_server_password
# (tempest_conf.py says why) and tempest's own skip of
# test_get_console_output_server_id_in_shutoff_status (bug 2028851).
REGEX='^tempest\.api\.(compute\.images\.(test_images_oneserver|test_images)\.|compute\.servers\.(test_server_actions|test_novnc)\.|volume\.test_volumes_snapshots\.|volume\.admin\.test_group_snapshots\.)'
# Both need a Neutron port on the server (no port can bind in the AIO: Neutron
# API server only, no agent): the first reads its security groups from its
# ports, the second reads its address (tempest asks for it even without
# validation).
EXCLUDE='test_remove_server_all_security_groups|ServerActionsV293TestJSON.test_rebuild_volume_backed_server'
cd "$WS"
rc=0
"$AIO/tempest/bin/tempest" run --regex "$REGEX" --exclude-regex "$EXCLUDE" --concurrency "${SNAPEXT_TEMPEST_CONCURRENCY:-2}" "$@" \
    >"$LOGS/tempest-run.log" 2>&1 || rc=$?
"$AIO/tempest/bin/stestr" last --subunit | "$AIO/tempest/bin/subunit2csv" >"$LOGS/tempest-results.csv" || true
"$AIO/tempest/bin/python" - "$LOGS/tempest-results.csv" "$LOGS/tempest-run.log" <<'PY'
import csv, re, sys
rows = list(csv.DictReader(open(sys.argv[1])))
reasons = dict(re.findall(r'(tempest\.\S+) \.\.\. SKIPPED: (.*)', open(sys.argv[2]).read()))
count = {}
for r in rows:
    count[r['status']] = count.get(r['status'], 0) + 1
print('tempest: %s' % ', '.join('%d %s' % (n, s) for s, n in sorted(count.items())))
for r in rows:
    if r['status'] == 'skip':
        reason = reasons.get(r['test'].split('[')[0], '')[:200]
        print('  skip %s: %s' % (r['test'].split('[')[0], reason))
for r in rows:
    if r['status'] == 'fail':
        print('  FAIL %s' % r['test'].split('[')[0])
PY
grep -E "^ - (Passed|Failed|Skipped)|^Totals|Ran:" "$LOGS/tempest-run.log" >&2 || true
exit $rc
