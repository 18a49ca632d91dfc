#!/bin/bash
# The project's test command: sets up the host (packages, libvirtd, venv,
# the guest image) and runs style checks, unit tests, the real-guest
# functional tests, then brings up the AIO cloud (tools/aio) and runs the
# integration tier and the tempest subset against it.  Exits non-zero on
# any failure.  SNAPEXT_SKIP_AIO=1 stops after the functional tests (for a
# quick local run; CI never sets it).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

bash tools/setup-host.sh
bash tools/guest/build.sh >/dev/null
# The RPC tests talk to a real RabbitMQ at 127.0.0.1:5672.
bash tools/start-rabbitmq.sh
# Setup guarantees libvirtd: a real-guest test must fail, never skip.
export SNAPEXT_REQUIRE_GUEST=1
# shellcheck disable=SC1091
. "${SNAPEXT_VENV:-$REPO/.venv}/bin/activate"

passed=0
failed=0
failing=()
run_stestr() {
    local name=$1; shift
    echo "== $name"
    local out rc=0
    out=$(mktemp)
    stestr "$@" 2>&1 | tee "$out" || rc=$?
    passed=$((passed + $(sed -n 's/^ - Passed: //p' "$out" | tail -1)))
    failed=$((failed + $(sed -n 's/^ - Failed: //p' "$out" | tail -1)))
    rm -f "$out"
    if [[ $rc != 0 ]]; then
        # Named again at the end: CI shows only the tail of a long run.
        mapfile -t -O "${#failing[@]}" failing < <(
            stestr failing --list 2>/dev/null | sed "s/^/$name: /")
    fi
    return $rc
}

status=0
echo "== pep8"
flake8 || { status=1; failing+=("pep8"); }
echo "== genconfig (the sample config must be current)"
sample=$(mktemp)
for generator in etc/*config-generator.conf; do
    oslo-config-generator --config-file "$generator" --output-file "$sample"
    current=$(sed -n 's/^output_file *= *//p' "$generator")
    if ! diff -u "$current" "$sample"; then
        echo "$current is stale: run 'tox -e genconfig'"
        status=1
        failing+=("genconfig: $current is stale")
    fi
done
rm -f "$sample"
run_stestr unit --test-path ./nova_snapext/tests/unit run || status=1
# One guest at a time: the frozen-window and watchdog bounds the tests
# check must not depend on a second TCG guest booting on the same 2 cores.
run_stestr functional --test-path ./nova_snapext/tests/functional \
    run --concurrency 1 || status=1
# Cinder's test harness owns the global config and a sqlite database, so
# the Cinder tests run in their own stestr run.
run_stestr cinder-unit --test-path ./cinder_snapext/tests/unit run \
    || status=1
run_stestr cinder-functional --test-path ./cinder_snapext/tests/functional \
    run --concurrency 1 || status=1

if [[ "${SNAPEXT_SKIP_AIO:-0}" != 1 ]]; then
    # The real cloud: brought up (or left as it is when it already runs),
    # then the integration tier, which fails, never skips, without it.
    echo "== aio up"
    if bash tools/aio/aio.sh up; then
        cat /var/log/snapext-aio/phases.txt
        python3 tools/aio/rss.py /opt/snapext-aio/run --peak \
            /var/log/snapext-aio/rss-peak.txt 2 &
        rss_pid=$!
    else
        echo "aio up failed"
        status=1
        failing+=("aio up")
    fi
    # test_two_hosts brings up an extra compute host (tools/aio/hosts.sh)
    # for its own tests and takes it down after them (about 3 minutes).
    run_stestr integration --test-path ./nova_snapext/tests/integration \
        run --concurrency 1 || status=1
    echo "== tempest"
    tempest_out=$(mktemp)
    bash tools/aio/tempest.sh | tee "$tempest_out" || {
        status=1; failing+=("tempest: see its output above"); }
    tempest_line=$(grep '^tempest:' "$tempest_out" || true)
    for kind in pass fail; do
        n=$(echo "$tempest_line" | grep -o "[0-9]* $kind" | cut -d' ' -f1 || true)
        [[ $kind == pass ]] && passed=$((passed + ${n:-0}))
        [[ $kind == fail ]] && failed=$((failed + ${n:-0}))
    done
    rm -f "$tempest_out"
    if [[ -n "${rss_pid:-}" ]]; then
        kill "$rss_pid" 2>/dev/null || true
        wait "$rss_pid" 2>/dev/null || true
        echo "== peak memory of the AIO's services"
        cat /var/log/snapext-aio/rss-peak.txt
    fi
fi

echo "tests: $passed passed, $failed failed"
for test in "${failing[@]}"; do
    echo "failed: $test"
done
exit $status
