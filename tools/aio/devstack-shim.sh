#!/bin/bash
# The few devstack helpers devstack/lib/snapext uses, for tools/aio.
# The AIO runs as root on one host: sudo is the command itself.

AIO_HERE=${AIO_HERE:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}

function iniset {
    python3 "$AIO_HERE/ini.py" set "$@"
}

function iniget {
    python3 "$AIO_HERE/ini.py" get "$@"
}

# Every service the AIO runs is enabled: n-api n-cpu c-api c-vol ...
function is_service_enabled {
    local svc
    for svc in "$@"; do
        [[ " $AIO_ENABLED_SERVICES " == *" $svc "* ]] && return 0
    done
    return 1
}

function echo_summary {
    echo "aio: $*"
}

function sudo {
    "$@"
}
