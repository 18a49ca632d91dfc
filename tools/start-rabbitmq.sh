#!/bin/bash
# Start Debian's rabbitmq-server when nothing listens on 127.0.0.1:5672.
#
# The RPC tests talk to a real broker with the default guest/guest user,
# which RabbitMQ only accepts from localhost.  No systemd here, so the
# server runs detached; it keeps running after the tests (idempotent).
set -euo pipefail

listening() {
    (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null
}

if listening; then
    exit 0
fi
if ! command -v rabbitmq-server >/dev/null; then
    echo "rabbitmq-server is not installed: run tools/setup-host.sh" >&2
    exit 1
fi
echo "starting rabbitmq-server"
rabbitmq-server -detached >>/var/log/snapext-rabbitmq.log 2>&1
# "-detached" returns before the broker accepts AMQP connections.
for _ in $(seq 300); do
    if listening; then
        rabbitmqctl -q await_startup >/dev/null 2>&1 || true
        exit 0
    fi
    sleep 0.1
done
echo "rabbitmq-server did not listen on 127.0.0.1:5672 within 30 s" \
     "(see /var/log/snapext-rabbitmq.log)" >&2
exit 1
