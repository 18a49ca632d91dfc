#!/bin/bash
# Extra compute hosts for the AIO (tools/aio/aio.sh), on this machine.
#
#   tools/aio/hosts.sh up [N]   bring up hosts snapext-h1..N (default 1);
#                               idempotent.  The AIO must be up.
#   tools/aio/hosts.sh down     delete their servers, domains and Nova
#                               services, stop their daemons, drop their
#                               namespaces
#   tools/aio/hosts.sh status   which hosts run, with their addresses
#
# Each host is a nova-compute of the AIO's Nova venv with its own libvirtd
# and virtlogd, in its own network, mount and UTS namespaces:
#  - network: namespace snapext-hK, its eth0 (10.254.0.10+K) on the bridge
#    snapext-br0, whose address 10.254.0.1 is the machine's, so the AIO's
#    own nova-compute (on the machine's libvirtd, root namespaces) is host
#    A of every migration, reached by the hosts' libvirtd and QEMU at
#    10.254.0.1; the hosts reach each other directly on the bridge.
#  - controller: the AIO's services listen on 127.0.0.1 of the machine's
#    namespace; tools/aio/netns_forward.py listens on 127.0.0.1 of the
#    host's namespace on each of their ports and connects to them, so the
#    host's configuration and every URL in Keystone's catalog are the AIO's.
#  - mounts: private copies of /etc/libvirt and empty run, lib, cache and
#    log directories over libvirt's; the host's own instances directory at
#    the AIO's instances_path (Nova writes that path into the domain XML it
#    migrates, so every host must use the same path: behind it, different
#    directories, i.e. not shared storage, block migration); the Cinder
#    share's mounts (aio.sh mount_share) are copied when the namespace is
#    made.
#  - libvirtd listens on TCP (auth none) on the host's address only, with a
#    host_uuid of its own; QEMU's migration address is the host's address.
#  - nova-compute: nova.conf of the AIO plus the host's nova-cpu.conf (the
#    AIO's, with its own host, my_ip, state_path, lock paths, snapext store,
#    live_migration_inbound_addr).
#
# The hosts are schedulable as soon as they are up: on a shared AIO bring
# them up, use them and take them down inside one exclusive hold of
# /tmp/snapext-aio.lock.
set -euo pipefail

HOSTS_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/aio/aio.sh
source "$HOSTS_HERE/aio.sh"
# shellcheck source=tools/aio/devstack-shim.sh
source "$AIO_HERE/devstack-shim.sh"
# shellcheck source=devstack/lib/snapext
source "$REPO/devstack/lib/snapext"

BRIDGE=snapext-br0
SUBNET=10.254.0
PREFIX=snapext-h
HOSTS_DATA=$DATA/hosts
INSTANCES=$DATA/nova/instances
# What nova-compute and its clients reach on 127.0.0.1: Keystone, Glance,
# Nova, Cinder, Placement, Neutron, MariaDB, RabbitMQ.
PORTS="5000 9292 8774 8776 8778 9696 3306 5672"

host_ip() { echo "$SUBNET.$((10 + ${1#"$PREFIX"}))"; }
host_uri() { echo "qemu+tcp://$(host_ip "$1")/system"; }

# The hosts that exist now (a namespace or a pid file), by name.
hosts_now() {
    { ip netns list | awk '{print $1}'
      find "$RUN" -maxdepth 1 -name "$PREFIX*-libvirtd.pid" -printf '%f\n' \
          | sed 's/-libvirtd.pid$//'
    } | grep -E "^$PREFIX[0-9]+$" | sort -u
}

# -- network ---------------------------------------------------------------

network_up() {
    local name=$1 ip veth
    ip=$(host_ip "$name")
    veth=v-$name
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        ip addr add "$SUBNET.1/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
    fi
    ip netns list | awk '{print $1}' | grep -x "$name" >/dev/null || ip netns add "$name"
    if ! ip -n "$name" link show eth0 >/dev/null 2>&1; then
        ip link del "$veth" 2>/dev/null || true
        ip link add "$veth" type veth peer name eth0 netns "$name"
        ip link set "$veth" master "$BRIDGE" up
        ip -n "$name" addr add "$ip/24" dev eth0
        ip -n "$name" link set eth0 up
        ip -n "$name" link set lo up
    fi
}

# -- libvirt ---------------------------------------------------------------

configure_libvirt() {
    local name=$1 d=$HOSTS_DATA/$1 ip
    ip=$(host_ip "$name")
    mkdir -p "$d"/libvirt/{run,lib,cache,log} "$d/instances"
    [[ -f "$d/host_uuid" ]] || cat /proc/sys/kernel/random/uuid >"$d/host_uuid"
    # The machine's configuration without its domains and networks.
    rm -rf "$d/libvirt/etc"
    cp -a /etc/libvirt "$d/libvirt/etc"
    rm -rf "$d/libvirt/etc/qemu"/*.xml "$d/libvirt/etc/qemu/autostart" \
        "$d/libvirt/etc/qemu/networks/autostart"
    cat >>"$d/libvirt/etc/libvirtd.conf" <<EOF

# tools/aio/hosts.sh: host $name
listen_tcp = 1
listen_tls = 0
listen_addr = "$ip"
auth_tcp = "none"
# libvirt refuses to migrate to a host with its own UUID ("itself").
host_uuid = "$(cat "$d/host_uuid")"
EOF
    cat >>"$d/libvirt/etc/qemu.conf" <<EOF

# tools/aio/hosts.sh: host $name
migration_address = "$ip"
migration_host = "$ip"
cgroup_controllers = [ ]
EOF
}

# The host's libvirtd: the first process of its mount and UTS namespaces,
# whose PID nova-compute's nsenter targets.  virtlogd and libvirtd get pid
# files of their own (the default ones are the machine's daemons').
start_libvirt() {
    local name=$1 d=$HOSTS_DATA/$1
    alive "$name-libvirtd" && return 0
    configure_libvirt "$name"
    # shellcheck disable=SC2016
    local script='set -e
        name=$1 d=$2 instances=$3
        hostname "$name"
        mount --bind "$d/libvirt/etc" /etc/libvirt
        mount --bind "$d/libvirt/run" /run/libvirt
        mount --bind "$d/libvirt/lib" /var/lib/libvirt
        mount --bind "$d/libvirt/cache" /var/cache/libvirt
        mount --bind "$d/libvirt/log" /var/log/libvirt
        mount --bind "$d/instances" "$instances"
        virtlogd -d --pid-file "$d/virtlogd.pid"
        exec libvirtd --listen --pid-file "$d/libvirtd.pid"'
    mkdir -p "$HOSTS_DATA/$name/libvirt/lib"/{qemu,images,boot}
    start_service "$name-libvirtd" "-" \
        ip netns exec "$name" unshare --mount --uts --propagation private \
        bash -c "$script" libvirtd "$name" "$d" "$INSTANCES"
    local uri
    uri=$(host_uri "$name")
    for _ in $(seq 600); do
        virsh -c "$uri" version >/dev/null 2>&1 && return 0
        alive "$name-libvirtd" || die "libvirtd of $name died (see $LOGS/$name-libvirtd.stdout)"
        sleep 0.1
    done
    die "libvirtd of $name does not answer on $uri"
}

# -- nova-compute ------------------------------------------------------------

configure_nova_compute() {
    local name=$1 d=$HOSTS_DATA/$1 ip conf cpu
    ip=$(host_ip "$name")
    conf=$ETC/nova/nova.conf
    cpu=$ETC/hosts/$name/nova-cpu.conf
    mkdir -p "$ETC/hosts/$name" "$d/nova/lock"
    cp "$ETC/nova/nova-cpu.conf" "$cpu"
    iniset "$cpu" DEFAULT host "$name"
    iniset "$cpu" DEFAULT my_ip "$ip"
    iniset "$cpu" DEFAULT state_path "$d/nova"
    iniset "$cpu" oslo_concurrency lock_path "$d/nova/lock"
    iniset "$cpu" libvirt live_migration_inbound_addr "$ip"
    # A block migration's destination fetches the kernel and ramdisk with
    # Nova's deep image inspection (fetch_image), which a boot does not
    # (fetch_raw_image): the guest's bzImage has a legacy boot sector the
    # inspector takes for an MBR and refuses ("Safety checks failed: mbr").
    iniset "$cpu" workarounds disable_deep_image_inspection True
    local helper="$VENV/bin/privsep-helper --config-file $conf --config-file $cpu"
    iniset "$cpu" nova_sys_admin helper_command "$helper"
    iniset "$cpu" privsep_osbrick helper_command "$helper"
    SNAPEXT_STORE_PATH=$d/snapext STACK_USER=root snapext_set_store_options "$cpu"
    mkdir -p "$d/snapext/locks"
}

# nsenter COMMAND: the command inside the host's namespaces.
in_host() {
    local name=$1
    shift
    echo nsenter -t "$(cat "$RUN/$name-libvirtd.pid")" -m -n -u -- "$@"
}

start_nova_compute_on() {
    local name=$1 conf=$ETC/nova/nova.conf cpu=$ETC/hosts/$1/nova-cpu.conf
    configure_nova_compute "$name"
    start_service "$name-forward" "$(echo "$PORTS" | hash_of "$HOSTS_HERE/netns_forward.py" /dev/stdin)" \
        "$VENV/bin/python" "$HOSTS_HERE/netns_forward.py" "/run/netns/$name" $PORTS
    "$VENV/bin/python" "$AIO_HERE/nova_compute_service.py" \
        --config-file "$conf" --config-file "$cpu" >>"$LOGS/$name-nova-compute-service.log" 2>&1 \
        || die "cannot register nova-compute of $name (see $LOGS/$name-nova-compute-service.log)"
    # shellcheck disable=SC2046
    start_service "$name-nova-compute" "$(snapext_hash_of "$conf" "$cpu")" \
        $(in_host "$name") "$VENV/bin/nova-compute" --config-file "$conf" \
        --config-file "$cpu" --log-file "$LOGS/$name-nova-compute.log"
    for _ in $(seq 120); do
        if openstack compute service list --service nova-compute --host "$name" \
                -f value -c State 2>/dev/null | grep -x up >/dev/null; then
            break
        fi
        alive "$name-nova-compute" || die "nova-compute of $name died (see $LOGS/$name-nova-compute.log)"
        sleep 1
    done
    nova_manage cell_v2 discover_hosts >>"$LOGS/nova-discover-hosts.log" 2>&1
    openstack hypervisor list -f value -c 'Hypervisor Hostname' | grep -x "$name" >/dev/null \
        || die "no hypervisor registered for $name"
}

# -- verbs -------------------------------------------------------------------

hosts_up() {
    local count=${1:-1} k name t0
    mountpoint -q "$CINDER_SHARE_DIR" || die "the AIO is not up (no Cinder share): aio.sh up first"
    admin_env
    export PATH=$VENV/bin:$PATH
    for k in $(seq "$count"); do
        name=$PREFIX$k
        t0=$(date +%s.%N)
        network_up "$name"
        start_libvirt "$name"
        start_nova_compute_on "$name"
        awk -v n="$name" -v s="$t0" -v e="$(date +%s.%N)" \
            'BEGIN{printf "hosts: %s up in %.1f s\n", n, e - s}' >&2
    done
}

host_down() {
    local name=$1 uri id dom
    uri=$(host_uri "$name")
    # Nova refuses to delete a service that still hosts servers.
    for id in $(openstack server list --all-projects --host "$name" -f value -c ID 2>/dev/null); do
        log "deleting server $id on $name"
        openstack server delete --wait "$id" || true
    done
    # It ignores SIGTERM (aio.sh stop_service) and has nothing left to do.
    stop_service "$name-nova-compute" 1
    if alive "$name-libvirtd"; then
        for dom in $(virsh -c "$uri" list --all --name 2>/dev/null); do
            log "destroying $dom on $name"
            virsh -c "$uri" destroy "$dom" >/dev/null 2>&1 || true
            virsh -c "$uri" undefine "$dom" --nvram >/dev/null 2>&1 \
                || virsh -c "$uri" undefine "$dom" >/dev/null 2>&1 || true
        done
    fi
    for id in $(openstack compute service list --service nova-compute --host "$name" -f value -c ID); do
        openstack compute service delete "$id"
    done
    stop_service "$name-libvirtd" 10
    local pid
    pid=$(cat "$HOSTS_DATA/$name/virtlogd.pid" 2>/dev/null || true)
    [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true
    stop_service "$name-forward" 5
    ip netns pids "$name" 2>/dev/null | xargs -r kill -KILL
    ip netns del "$name" 2>/dev/null || true
    ip link del "v-$name" 2>/dev/null || true
    # The QEMU capability cache stays: the next bring-up is 8 s faster.
    rm -rf "$HOSTS_DATA/$name"/{instances,nova,snapext,libvirt/run,libvirt/lib,libvirt/log} \
        "$HOSTS_DATA/$name"/*.pid "$ETC/hosts/$name"
    log "$name is down"
}

hosts_down() {
    admin_env
    export PATH=$VENV/bin:$PATH
    local name
    for name in $(hosts_now); do
        host_down "$name"
    done
    ip link del "$BRIDGE" 2>/dev/null || true
}

hosts_status() {
    local name rc=0 svc
    for name in $(hosts_now); do
        for svc in libvirtd forward nova-compute; do
            if alive "$name-$svc"; then
                printf '%-12s %-14s running %s\n' "$name" "$svc" "$(cat "$RUN/$name-$svc.pid")"
            else
                printf '%-12s %-14s stopped\n' "$name" "$svc"
                rc=1
            fi
        done
        printf '%-12s %-14s %s\n' "$name" address "$(host_ip "$name")"
    done
    return $rc
}

case "${1:-}" in
    up) hosts_up "${2:-1}" ;;
    down) hosts_down ;;
    status) hosts_status ;;
    *) echo "usage: $0 up [N]|down|status" >&2; exit 2 ;;
esac
