#!/bin/bash
# A real single-node OpenStack with snapext, for the integration tier.
#
#   tools/aio/aio.sh up       install (once) and start everything; idempotent
#   tools/aio/aio.sh down     stop every service and the AIO's servers
#   tools/aio/aio.sh clean    down, then drop the databases and the data
#   tools/aio/aio.sh status   which services run, with their PIDs
#   tools/aio/aio.sh rss      the resident memory of all services now
#   tools/aio/aio.sh host-reboot  what a compute host's reboot does: stop
#                             nova-compute, destroy the servers' domains,
#                             start nova-compute
#
# From PyPI, pinned (tools/aio/constraints-*.txt): Keystone, Glance (file
# store), Placement, Nova (api, conductor, scheduler, compute with the
# snapext driver on this machine's libvirtd, TCG), the Neutron API server,
# Cinder (api, scheduler, volume with the snapext NFS driver on a local
# share) and tempest, each group in its own venv under /opt/snapext-aio;
# MariaDB and RabbitMQ from Debian.  snapext is installed as an operator
# would: its built wheel, into the Nova and the Cinder venvs, and configured
# by the devstack plugin's own functions (devstack/lib/snapext).
#
# Everything listens on 127.0.0.1.  Data: /var/lib/snapext-aio; logs, one
# per service: /var/log/snapext-aio; PIDs: /opt/snapext-aio/run.  After
# "up", ". /opt/snapext-aio/openrc admin" (or demo) sets OS_* for the CLI.
set -euo pipefail

AIO_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$AIO_HERE/../.." && pwd)
AIO=${SNAPEXT_AIO_DIR:-/opt/snapext-aio}
DATA=${SNAPEXT_AIO_DATA:-/var/lib/snapext-aio}
LOGS=${SNAPEXT_AIO_LOGS:-/var/log/snapext-aio}
ETC=$AIO/etc
RUN=$AIO/run
VENV=$AIO/openstack
CVENV=$AIO/cinder
TVENV=$AIO/tempest
PW=snapext-aio
DB="mysql+pymysql://snapext:$PW@127.0.0.1"
VHOST=snapext-aio
TRANSPORT="rabbit://guest:guest@127.0.0.1:5672/$VHOST"
KEYSTONE=http://127.0.0.1:5000
GUEST_DIR=${SNAPEXT_GUEST_DIR:-/var/cache/snapext/guest}
CINDER_SHARE_DIR=$DATA/cinder-share
CINDER_SHARE="127.0.0.1:$CINDER_SHARE_DIR"
NOVA_MNT=$DATA/nova/mnt
# The backend's nfs_mount_point_base ($state_path/mnt), where cinder-backup
# (os-brick) looks for the share.
CINDER_MNT=$DATA/cinder/mnt
# Nova unmounts the share's mount point after a volume's last detach; a
# stack of bind mounts keeps one there (see mount_share).
SHARE_STACK=32
DATABASES="keystone glance placement nova_api nova nova_cell0 neutron cinder"

log() { echo "aio: $*" >&2; }
die() { log "error: $*"; exit 1; }

# -- phases and their times ------------------------------------------------

PHASES=$LOGS/phases.txt
phase() {
    local name=$1 start end
    shift
    start=$(date +%s.%N)
    log "== $name"
    "$@"
    end=$(date +%s.%N)
    awk -v n="$name" -v s="$start" -v e="$end" 'BEGIN{printf "%-22s %6.1f s\n", n, e - s}' \
        | tee -a "$PHASES" >&2
}

# -- processes -----------------------------------------------------------

alive() {
    local pid
    pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

# stop NAME [grace seconds]: the whole process group (gunicorn's workers,
# privsep daemons), SIGKILL after the grace period (nova-compute ignores
# SIGTERM).
stop_service() {
    local name=$1 grace=${2:-10} pid
    pid=$(cat "$RUN/$name.pid" 2>/dev/null) || return 0
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        log "stopping $name ($pid)"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq $((grace * 10))); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$name.pid" "$RUN/$name.hash"
}

# close_inherited_fds: for a subshell about to start a daemon.  A daemon
# must not keep what its starter holds open beyond stdin/out/err: under
# `flock -x LOCK aio.sh up` that is the lock, which the daemon would hold for
# as long as it runs, so no test or restart could take the lock again.
close_inherited_fds() {
    local fd
    for fd in $(ls /proc/$BASHPID/fd); do
        if ((fd > 2)); then
            eval "exec $fd>&-"
        fi
    done
}

# start NAME HASH ENV... -- CMD...: leaves a running service alone when
# its command, configuration and snapext build are what it was started with;
# restarts it otherwise.
start_service() {
    local name=$1 hash=$2
    shift 2
    if alive "$name" && [[ "$(cat "$RUN/$name.hash" 2>/dev/null)" == "$hash" ]]; then
        log "$name is running ($(cat "$RUN/$name.pid")), unchanged"
        return 0
    fi
    stop_service "$name" 15
    log "starting $name"
    (cd "$RUN" && close_inherited_fds && exec setsid env "$@" >>"$LOGS/$name.stdout" 2>&1 </dev/null) &
    echo $! >"$RUN/$name.pid"
    echo "$hash" >"$RUN/$name.hash"
}

# hash FILE...: of the files' contents (and of the installed snapext for
# the services that load it).
hash_of() {
    cat "$@" | sha256sum | cut -d' ' -f1
}
snapext_hash_of() {
    cat "$@" "$RUN/snapext.stamp" | sha256sum | cut -d' ' -f1
}

gunicorn_service() {
    # [LAUNCHER="cmd args"] gunicorn_service name port module workers venv
    #     config-files... -- env...
    # LAUNCHER: words put before gunicorn (it must exec it).
    local name=$1 port=$2 module=$3 workers=$4 venv=${5:-$VENV}
    local launcher=()
    read -ra launcher <<<"${LAUNCHER:-}"
    shift 5
    local files=() envs=()
    while [[ $# -gt 0 && "$1" != -- ]]; do files+=("$1"); shift; done
    [[ $# -gt 0 ]] && shift
    envs=("$@")
    local hasher=hash_of
    [[ $name == nova-* || $name == cinder-* ]] && hasher=snapext_hash_of
    # NOTE: gunicorn closes an idle keep-alive connection after 2 s by
    # default, the very interval at which openstacksdk and the clients
    # poll a server's status: a poll sent as the server closes the
    # connection fails with "Connection aborted" (RemoteDisconnected),
    # which keystoneauth does not retry.  A keep-alive longer than any
    # poll interval (as a load balancer in front of the APIs has) closes
    # that window.
    # NOTE: --timeout does not bound a request.  With --threads the worker
    # is gunicorn's gthread one, whose main loop tells the arbiter it is
    # alive every second whatever its threads serve, so a long request
    # (POST /snapext-snapshots/import waits for the agent to read, verify
    # and store a whole bundle; a revert or a volume-backed capture too)
    # runs until the agent answers, bounded by [snapext]
    # rpc_capture_timeout, not by gunicorn; an import whose body is the
    # bundle streams it first, and gunicorn de-chunks a chunked body, as
    # the snapext filter needs.  (A sync worker would be
    # killed after --timeout seconds in one request; a proxy in front of
    # nova-api needs a read timeout at least as long.)
    local cmd=("${launcher[@]}" "$venv/bin/gunicorn" --pythonpath "$AIO_HERE/wsgi"
               --chdir "$RUN" --bind "127.0.0.1:$port" --workers "$workers"
               --threads 4 --timeout 600 --graceful-timeout 5 --keep-alive 75
               --name "$name"
               --error-logfile "$LOGS/$name.gunicorn.log" "$module:application")
    start_service "$name" "$(echo "${cmd[*]} ${envs[*]}" | cat - "${files[@]}" | $hasher /dev/stdin)" \
        "${envs[@]}" "${cmd[@]}"
}

wait_port() {
    local name=$1 port=$2 timeout=${3:-90}
    for _ in $(seq $((timeout * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        alive "$name" || die "$name died (see $LOGS/$name*.log)"
        sleep 0.1
    done
    die "$name did not listen on $port within $timeout s (see $LOGS/$name*)"
}

wait_http() {
    local name=$1 url=$2 timeout=${3:-90} code
    for _ in $(seq $((timeout * 4))); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
        [[ "$code" =~ ^[234] ]] && return 0
        alive "$name" || die "$name died (see $LOGS/$name*)"
        sleep 0.25
    done
    die "$name did not answer $url within $timeout s (last $code; see $LOGS/$name*)"
}

# -- host packages, MariaDB, RabbitMQ ------------------------------------

install_packages() {
    bash "$REPO/tools/setup-host.sh"
    local need=()
    command -v mysqld_safe >/dev/null || need+=(mariadb-server)
    command -v curl >/dev/null || need+=(curl)
    command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
    if [[ ${#need[@]} -gt 0 ]]; then
        log "apt-get install ${need[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
    fi
}

start_mariadb() {
    if ! mysqladmin ping >/dev/null 2>&1; then
        log "starting MariaDB"
        mkdir -p /run/mysqld
        chown mysql:mysql /run/mysqld 2>/dev/null || true
        (close_inherited_fds; setsid mysqld_safe --bind-address=127.0.0.1 >>"$LOGS/mariadb.log" 2>&1 </dev/null &)
        for _ in $(seq 300); do
            mysqladmin ping >/dev/null 2>&1 && break
            sleep 0.1
        done
        mysqladmin ping >/dev/null 2>&1 || die "MariaDB did not start ($LOGS/mariadb.log)"
    fi
    local sql="" db
    for db in $DATABASES; do
        sql+="CREATE DATABASE IF NOT EXISTS $db CHARACTER SET utf8mb4;"
    done
    sql+="CREATE USER IF NOT EXISTS 'snapext'@'127.0.0.1' IDENTIFIED BY '$PW';"
    sql+="CREATE USER IF NOT EXISTS 'snapext'@'localhost' IDENTIFIED BY '$PW';"
    sql+="GRANT ALL ON *.* TO 'snapext'@'127.0.0.1'; GRANT ALL ON *.* TO 'snapext'@'localhost';"
    mysql -e "$sql"
}

start_rabbitmq() {
    (close_inherited_fds; exec bash "$REPO/tools/start-rabbitmq.sh")
    if ! rabbitmqctl -q list_vhosts 2>/dev/null | grep -x "$VHOST" >/dev/null; then
        rabbitmqctl -q add_vhost "$VHOST" >/dev/null
    fi
    rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null
    # Glance's notifications also fill the default queue notifications.info,
    # which nothing here reads (the snapext agents read their own pools,
    # snapext-<host>): keep it short.
    rabbitmqctl -q set_policy -p "$VHOST" --apply-to queues notifications \
        '^notifications\.' '{"max-length": 1000}' >/dev/null
}

# -- venvs and the snapext wheel -------------------------------------------

venv_install() {
    # venv constraints packages...
    local venv=$1 constraints=$2
    shift 2
    local stamp
    stamp=$(echo "$*" | cat - "$constraints" | sha256sum | cut -d' ' -f1)
    if [[ -x "$venv/bin/python" && "$(cat "$venv/.aio-stamp" 2>/dev/null)" == "$stamp" ]]; then
        return 0
    fi
    log "installing $* into $venv"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q -c "$constraints" "$@"
    echo "$stamp" >"$venv/.aio-stamp"
}

OS_PACKAGES=(keystone glance openstack-placement nova neutron
             python-openstackclient python-novaclient python-cinderclient
             osc-lib gunicorn pymysql python-memcached wheel)
CINDER_PACKAGES=(cinder gunicorn pymysql python-memcached)
TEMPEST_PACKAGES=(tempest)

install_venvs() {
    # In parallel: pip waits on the index most of the time.
    local pids=() pid rc=0
    venv_install "$VENV" "$AIO_HERE/constraints-openstack.txt" "${OS_PACKAGES[@]}" &
    pids+=($!)
    venv_install "$CVENV" "$AIO_HERE/constraints-cinder.txt" "${CINDER_PACKAGES[@]}" &
    pids+=($!)
    venv_install "$TVENV" "$AIO_HERE/constraints-tempest.txt" "${TEMPEST_PACKAGES[@]}" &
    pids+=($!)
    for pid in "${pids[@]}"; do
        wait "$pid" || rc=1
    done
    [[ $rc == 0 ]] || die "a venv failed to install"
}

# The wheel, built from this checkout, installed without dependencies (its
# requirements come with Nova and Cinder).  RUN/snapext.stamp is a hash of
# what is installed: a service restarts when it changes.
install_snapext() {
    local wheels=$AIO/wheels
    rm -rf "$wheels"
    mkdir -p "$wheels"
    # pbr and setuptools come with the venv: no isolated build env to fetch.
    "$VENV/bin/pip" wheel -q --no-deps --no-build-isolation -w "$wheels" \
        "$REPO" >/dev/null
    local wheel
    wheel=$(ls "$wheels"/snapext-*.whl)
    local venv constraints
    for venv in "$VENV" "$CVENV"; do
        constraints=$AIO_HERE/constraints-$(basename "$venv").txt
        "$venv/bin/pip" install -q --no-deps --force-reinstall "$wheel"
        # Its requirements (libvirt-python), pinned like the rest.
        "$venv/bin/pip" install -q -c "$constraints" "$wheel"
    done
    # The wheel's files, not the wheel: its zip is not byte-reproducible.
    "$VENV/bin/python" -c 'import hashlib, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = sorted(n for n in z.namelist() if not n.endswith(("RECORD", "pbr.json")))
print(hashlib.sha256(b"".join(n.encode() + z.read(n) for n in names)).hexdigest())' \
        "$wheel" >"$RUN/snapext.stamp"
    log "installed $(basename "$wheel")"
}

# noVNC's web files for nova-novncproxy: Debian's novnc package, its files
# only (the package itself would pull in nodejs).
install_novnc() {
    [[ -f "$AIO/novnc/vnc_lite.html" ]] && return 0
    local tmp
    tmp=$(mktemp -d)
    chmod 755 "$tmp"
    chown _apt "$tmp" 2>/dev/null || true
    (cd "$tmp" && apt-get download -q novnc >/dev/null 2>&1) \
        || { apt-get update -qq && (cd "$tmp" && apt-get download -q novnc >/dev/null); } \
        || die "cannot download the novnc package"
    dpkg -x "$tmp"/novnc_*.deb "$tmp/x"
    rm -rf "$AIO/novnc.tmp"
    cp -a "$tmp/x/usr/share/novnc" "$AIO/novnc.tmp"
    mv "$AIO/novnc.tmp" "$AIO/novnc"
    rm -rf "$tmp"
    log "installed noVNC's web files in $AIO/novnc"
}

# -- configuration ---------------------------------------------------------

authtoken() {
    # file user
    cat >>"$1" <<EOF

[keystone_authtoken]
www_authenticate_uri = $KEYSTONE
auth_url = $KEYSTONE
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $2
password = $PW
service_token_roles_required = true
EOF
}

credentials() {
    # file section user
    cat >>"$1" <<EOF

[$2]
auth_url = $KEYSTONE
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $3
password = $PW
region_name = RegionOne
EOF
}

configure_keystone() {
    local d=$ETC/keystone
    mkdir -p "$d" "$DATA/keystone"
    cat >"$d/keystone.conf" <<EOF
[DEFAULT]
log_file = $LOGS/keystone.log
[database]
connection = $DB/keystone
[token]
provider = fernet
[fernet_tokens]
key_repository = $DATA/keystone/fernet-keys
[credential]
key_repository = $DATA/keystone/credential-keys
EOF
}

configure_glance() {
    local d=$ETC/glance
    mkdir -p "$d" "$DATA/glance/images" "$DATA/glance/staging" "$DATA/glance/tasks"
    cp "$VENV/etc/glance/glance-api-paste.ini" "$d/"
    cat >"$d/glance-api.conf" <<EOF
[DEFAULT]
log_file = $LOGS/glance-api.log
enabled_backends = fs:file
transport_url = $TRANSPORT
[database]
connection = $DB/glance
[paste_deploy]
flavor = keystone
config_file = $d/glance-api-paste.ini
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $DATA/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $DATA/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $DATA/glance/tasks
[oslo_concurrency]
lock_path = $DATA/glance/lock
EOF
    authtoken "$d/glance-api.conf" glance
}

configure_placement() {
    local d=$ETC/placement
    mkdir -p "$d"
    cat >"$d/placement.conf" <<EOF
[DEFAULT]
log_file = $LOGS/placement-api.log
[placement_database]
connection = $DB/placement
[api]
auth_strategy = keystone
EOF
    authtoken "$d/placement.conf" placement
}

configure_neutron() {
    local d=$ETC/neutron
    mkdir -p "$d/plugins/ml2" "$DATA/neutron"
    cp "$VENV/etc/neutron/api-paste.ini" "$d/"
    cat >"$d/neutron.conf" <<EOF
[DEFAULT]
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
transport_url = $TRANSPORT
state_path = $DATA/neutron
api_paste_config = $d/api-paste.ini
api_workers = 1
rpc_workers = 0
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
[database]
connection = $DB/neutron
[oslo_concurrency]
lock_path = $DATA/neutron/lock
EOF
    authtoken "$d/neutron.conf" neutron
    credentials "$d/neutron.conf" nova nova
    # The API server alone: no agent, no port can bind (--nic none only).
    cat >"$d/plugins/ml2/ml2_conf.ini" <<EOF
[ml2]
type_drivers = flat
tenant_network_types =
mechanism_drivers =
extension_drivers = port_security
[ml2_type_flat]
flat_networks = *
EOF
    echo "[DEFAULT]
log_file = $LOGS/neutron-api.log" >"$d/neutron-api.conf"
}

configure_nova() {
    local d=$ETC/nova
    mkdir -p "$d" "$DATA/nova/instances" "$NOVA_MNT"
    cp "$VENV/etc/nova/api-paste.ini" "$d/api-paste.ini"
    cat >"$d/nova.conf" <<EOF
[DEFAULT]
transport_url = $TRANSPORT
my_ip = 127.0.0.1
state_path = $DATA/nova
instances_path = $DATA/nova/instances
# One host: resize and cold migration can only stay on it.
allow_resize_to_same_host = true
[wsgi]
api_paste_config = $d/api-paste.ini
[api]
auth_strategy = keystone
[api_database]
connection = $DB/nova_api
[database]
connection = $DB/nova
[conductor]
workers = 1
[scheduler]
workers = 1
[libvirt]
virt_type = qemu
connection_uri = qemu:///system
nfs_mount_point_base = $NOVA_MNT
[oslo_concurrency]
lock_path = $DATA/nova/lock
[vnc]
# The console over noVNC: nova-novncproxy on 6080 (see start_nova).
enabled = true
server_listen = 127.0.0.1
server_proxyclient_address = 127.0.0.1
novncproxy_host = 127.0.0.1
novncproxy_port = 6080
novncproxy_base_url = http://127.0.0.1:6080/vnc_lite.html
[nova_sys_admin]
helper_command = $VENV/bin/privsep-helper --config-file $d/nova.conf --config-file $d/nova-cpu.conf
[privsep_osbrick]
helper_command = $VENV/bin/privsep-helper --config-file $d/nova.conf --config-file $d/nova-cpu.conf
[cinder]
os_region_name = RegionOne
EOF
    authtoken "$d/nova.conf" nova
    credentials "$d/nova.conf" service_user nova
    iniset "$d/nova.conf" service_user send_service_user_token true
    credentials "$d/nova.conf" placement placement
    credentials "$d/nova.conf" neutron neutron
    # A host reboot (aio.sh host-reboot) brings the servers back as Nova
    # found them.
    echo "[DEFAULT]
resume_guests_state_on_host_boot = true" >"$d/nova-cpu.conf"
    echo "[DEFAULT]
log_file = $LOGS/nova-api.log" >"$d/nova-api.conf"
}

configure_cinder() {
    local d=$ETC/cinder
    mkdir -p "$d" "$DATA/cinder" "$CINDER_SHARE_DIR" "$DATA/cinder-backups"
    cp "$CVENV/etc/cinder/api-paste.ini" "$d/"
    cat >"$d/cinder.conf" <<EOF
[DEFAULT]
transport_url = $TRANSPORT
auth_strategy = keystone
state_path = $DATA/cinder
my_ip = 127.0.0.1
glance_api_servers = http://127.0.0.1:9292
api_paste_config = $d/api-paste.ini
osapi_volume_workers = 1
# cinder-backup: to files here, no external service.  It reads a volume
# where the backend's connection info says (see mount_share).
backup_driver = cinder.backup.drivers.posix.PosixBackupDriver
backup_posix_path = $DATA/cinder-backups
[database]
connection = $DB/cinder
[oslo_concurrency]
lock_path = $DATA/cinder/lock
[coordination]
backend_url = file://$DATA/cinder/coordination
[cinder_sys_admin]
helper_command = $CVENV/bin/privsep-helper --config-file $d/cinder.conf
[privsep_osbrick]
helper_command = $CVENV/bin/privsep-helper --config-file $d/cinder.conf
EOF
    authtoken "$d/cinder.conf" cinder
    credentials "$d/cinder.conf" nova nova
    credentials "$d/cinder.conf" service_user cinder
    iniset "$d/cinder.conf" service_user send_service_user_token true
}

# The devstack plugin's own configuration steps (devstack/lib/snapext),
# among them both nova-api filters: snapext after keystonecontext and
# snapext_upload before sizelimit (bundle uploads to the import).
configure_snapext() {
    NOVA_CONF=$ETC/nova/nova.conf
    NOVA_CPU_CONF=$ETC/nova/nova-cpu.conf
    NOVA_API_PASTE_INI=$ETC/nova/api-paste.ini
    CINDER_CONF=$ETC/cinder/cinder.conf
    CINDER_CONF_DIR=$ETC/cinder
    GLANCE_API_CONF=$ETC/glance/glance-api.conf
    STACK_USER=root
    SNAPEXT_FULL_SNAPSHOT_DEFAULT=True
    SNAPEXT_STORE_PATH=$DATA/snapext
    SNAPEXT_STORE=glance
    SNAPEXT_CINDER_BACKEND=snapext
    SNAPEXT_CINDER_SHARE=$CINDER_SHARE
    SNAPEXT_CINDER_LOCAL_SHARES=True
    SNAPEXT_VOLUME_TYPE=snapext
    SNAPEXT_GROUP_TYPE=snapext-consistent
    AIO_ENABLED_SERVICES="key g-api placement-api n-api n-cond n-sch n-cpu q-svc c-api c-sch c-vol"
    if is_service_enabled n-cpu n-api; then
        snapext_configure_nova
    fi
    if is_service_enabled c-vol; then
        snapext_configure_cinder
    fi
    if is_service_enabled g-api; then
        snapext_configure_glance
    fi
}

configure() {
    mkdir -p "$ETC" "$DATA"
    configure_keystone
    configure_glance
    configure_placement
    configure_neutron
    configure_nova
    configure_cinder
    configure_snapext
    write_openrc
}

write_openrc() {
    cat >"$AIO/openrc" <<EOF
# . $AIO/openrc [admin|demo|demo-reader|alt]
_aio_user=\${1:-admin}
case \$_aio_user in
    admin) _aio_project=admin; _aio_password=admin ;;
    alt) _aio_project=alt; _aio_password=$PW ;;
    *) _aio_project=demo; _aio_password=$PW ;;
esac
export OS_AUTH_URL=$KEYSTONE/v3 OS_IDENTITY_API_VERSION=3 OS_REGION_NAME=RegionOne
export OS_USERNAME=\$_aio_user OS_PASSWORD=\$_aio_password OS_PROJECT_NAME=\$_aio_project
export OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default
export OS_AUTH_TYPE=password
export PATH=$VENV/bin:\$PATH
unset _aio_user _aio_project _aio_password
EOF
}

# -- services ----------------------------------------------------------------

# once NAME CMD...: a database step that only needs to run once per
# installed version of the service.
once() {
    local name=$1
    shift
    local stamp
    stamp=$(echo "$*"; cat "$VENV/.aio-stamp" "$CVENV/.aio-stamp" 2>/dev/null)
    stamp=$(echo "$stamp" | sha256sum | cut -d' ' -f1)
    if [[ "$(cat "$RUN/$name.once" 2>/dev/null)" == "$stamp" ]]; then
        return 0
    fi
    log "$name"
    "$@" >>"$LOGS/$name.log" 2>&1 || die "$name failed (see $LOGS/$name.log)"
    echo "$stamp" >"$RUN/$name.once"
}

admin_env() {
    export OS_AUTH_URL=$KEYSTONE/v3 OS_IDENTITY_API_VERSION=3
    export OS_USERNAME=admin OS_PASSWORD=admin OS_PROJECT_NAME=admin
    export OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default
    export OS_REGION_NAME=RegionOne OS_AUTH_TYPE=password
}

start_keystone() {
    local conf=$ETC/keystone/keystone.conf
    once keystone-db-sync "$VENV/bin/keystone-manage" --config-file "$conf" db_sync
    if [[ ! -d "$DATA/keystone/fernet-keys" ]]; then
        "$VENV/bin/keystone-manage" --config-file "$conf" fernet_setup \
            --keystone-user root --keystone-group root
        "$VENV/bin/keystone-manage" --config-file "$conf" credential_setup \
            --keystone-user root --keystone-group root
    fi
    once keystone-bootstrap "$VENV/bin/keystone-manage" --config-file "$conf" \
        bootstrap --bootstrap-password admin \
        --bootstrap-admin-url "$KEYSTONE/v3/" \
        --bootstrap-internal-url "$KEYSTONE/v3/" \
        --bootstrap-public-url "$KEYSTONE/v3/" \
        --bootstrap-region-id RegionOne
    gunicorn_service keystone 5000 aio_keystone 2 "$VENV" "$conf" -- \
        OS_KEYSTONE_CONFIG_DIR="$ETC/keystone"
    wait_http keystone "$KEYSTONE/v3"
    admin_env
    once keystone-resources "$VENV/bin/python" "$AIO_HERE/bootstrap.py" identity
}

start_glance_placement_neutron() {
    once glance-db-sync "$VENV/bin/glance-manage" --config-file \
        "$ETC/glance/glance-api.conf" db_sync
    once placement-db-sync "$VENV/bin/placement-manage" \
        --config-file "$ETC/placement/placement.conf" db sync
    once neutron-db-sync "$VENV/bin/neutron-db-manage" \
        --config-file "$ETC/neutron/neutron.conf" \
        --config-file "$ETC/neutron/plugins/ml2/ml2_conf.ini" upgrade heads
    gunicorn_service glance-api 9292 aio_glance 1 "$VENV" \
        "$ETC/glance/glance-api.conf" -- OS_GLANCE_CONFIG_DIR="$ETC/glance"
    gunicorn_service placement-api 8778 aio_placement 1 "$VENV" \
        "$ETC/placement/placement.conf" -- OS_PLACEMENT_CONFIG_DIR="$ETC/placement"
    gunicorn_service neutron-api 9696 aio_neutron 1 "$VENV" \
        "$ETC/neutron/neutron.conf" "$ETC/neutron/plugins/ml2/ml2_conf.ini" -- \
        OS_NEUTRON_CONFIG_DIR="$ETC/neutron" \
        OS_NEUTRON_CONFIG_FILES="neutron.conf;plugins/ml2/ml2_conf.ini;neutron-api.conf"
    wait_http glance-api http://127.0.0.1:9292/
    wait_http placement-api http://127.0.0.1:8778/
    wait_http neutron-api http://127.0.0.1:9696/
}

nova_manage() {
    "$VENV/bin/nova-manage" --config-file "$ETC/nova/nova.conf" "$@"
}

start_nova() {
    local conf=$ETC/nova/nova.conf cpu=$ETC/nova/nova-cpu.conf
    once nova-api-db-sync nova_manage api_db sync
    once nova-map-cell0 nova_manage cell_v2 map_cell0 --database_connection "$DB/nova_cell0"
    if ! nova_manage cell_v2 list_cells 2>/dev/null | grep ' cell1 ' >/dev/null; then
        nova_manage cell_v2 create_cell --name cell1 >>"$LOGS/nova-create-cell.log" 2>&1
    fi
    once nova-db-sync nova_manage db sync
    # nova-api sees no snapext store (tools/aio/without-store.sh): it
    # serves the snapext API over RPC, as on a controller of its own.
    local store
    store=$(iniget "$cpu" snapext file_store_path)
    [[ -n "$store" ]] || die "no [snapext] file_store_path in $cpu"
    LAUNCHER="$AIO_HERE/without-store.sh $store" \
        gunicorn_service nova-api 8774 aio_nova 2 "$VENV" \
        "$conf" "$ETC/nova/api-paste.ini" -- OS_NOVA_CONFIG_DIR="$ETC/nova" \
        OS_NOVA_CONFIG_FILES="api-paste.ini;nova.conf;nova-api.conf"
    local svc
    for svc in conductor scheduler; do
        start_service "nova-$svc" "$(snapext_hash_of "$conf")" \
            "$VENV/bin/nova-$svc" --config-file "$conf" \
            --log-file "$LOGS/nova-$svc.log"
    done
    start_nova_compute
    # The VNC console's proxy, with noVNC's web files (install_novnc).
    start_service nova-novncproxy "$(snapext_hash_of "$conf")" \
        "$VENV/bin/nova-novncproxy" --config-file "$conf" --web "$AIO/novnc" \
        --log-file "$LOGS/nova-novncproxy.log"
    wait_http nova-api http://127.0.0.1:8774/
    wait_http nova-novncproxy http://127.0.0.1:6080/vnc_lite.html
}

start_nova_compute() {
    local conf=$ETC/nova/nova.conf cpu=$ETC/nova/nova-cpu.conf
    # The shared libvirtd may hold others' domains: see the script.
    "$VENV/bin/python" "$AIO_HERE/nova_compute_service.py" \
        --config-file "$conf" --config-file "$cpu" >>"$LOGS/nova-compute-service.log" 2>&1 \
        || die "cannot register nova-compute (see $LOGS/nova-compute-service.log)"
    start_service nova-compute "$(snapext_hash_of "$conf" "$cpu")" \
        "$VENV/bin/nova-compute" --config-file "$conf" --config-file "$cpu" \
        --log-file "$LOGS/nova-compute.log"
    # The compute service registers some seconds after it starts.
    local host
    host=$(hostname)
    for _ in $(seq 120); do
        if "$VENV/bin/openstack" compute service list --service nova-compute \
                -f value -c State 2>/dev/null | grep -x up >/dev/null; then
            break
        fi
        alive nova-compute || die "nova-compute died (see $LOGS/nova-compute.log)"
        sleep 1
    done
    nova_manage cell_v2 discover_hosts >>"$LOGS/nova-discover-hosts.log" 2>&1
    "$VENV/bin/openstack" hypervisor list -f value -c 'Hypervisor Hostname' \
        | grep . >/dev/null || die "no hypervisor registered for $host"
}

# The Cinder share: its own filesystem (a tmpfs), the same files at
# Nova's NFS mount point for it (Nova skips mount.nfs when os.path.ismount()
# is true) and at cinder-backup's (os-brick skips it when /proc/mounts
# lists the mount point; it never unmounts).  libvirt gives each QEMU a
# private copy of the mounts when it starts: the mount must be there before
# the first server boots.
mount_share() {
    if ! mountpoint -q "$CINDER_SHARE_DIR"; then
        mount -t tmpfs -o size=8g,mode=0755 snapext-aio-share "$CINDER_SHARE_DIR"
    fi
    local md5
    md5=$(printf '%s' "$CINDER_SHARE" | md5sum | cut -d' ' -f1)
    bind_share "$NOVA_MNT/$md5" "$SHARE_STACK"
    bind_share "$CINDER_MNT/$md5" 1
}

bind_share() {
    local target=$1 stack=$2 have
    mkdir -p "$target"
    have=$(grep -c " $target " /proc/self/mounts || true)
    while [[ $have -lt $stack ]]; do
        mount --bind "$CINDER_SHARE_DIR" "$target"
        have=$((have + 1))
    done
}

start_cinder() {
    local conf=$ETC/cinder/cinder.conf
    mount_share
    once cinder-db-sync "$CVENV/bin/cinder-manage" --config-file "$conf" db sync
    gunicorn_service cinder-api 8776 aio_cinder 1 "$CVENV" "$conf" -- \
        AIO_CINDER_CONF="$conf" AIO_CINDER_API_LOG="$LOGS/cinder-api.log"
    local svc
    for svc in scheduler volume backup; do
        start_service "cinder-$svc" "$(snapext_hash_of "$conf")" \
            "$CVENV/bin/cinder-$svc" --config-file "$conf" \
            --log-file "$LOGS/cinder-$svc.log"
    done
    wait_http cinder-api http://127.0.0.1:8776/
    for _ in $(seq 90); do
        if "$VENV/bin/openstack" volume service list --service cinder-volume \
                -f value -c State 2>/dev/null | grep -x up >/dev/null; then
            break
        fi
        alive cinder-volume || die "cinder-volume died (see $LOGS/cinder-volume.log)"
        sleep 1
    done
    PATH=$VENV/bin:$PATH snapext_create_cinder_types
}

guest_images() {
    bash "$REPO/tools/guest/build.sh" "$GUEST_DIR" >/dev/null
    # The root disk: an ext4 filesystem the guest mounts at /mnt/vda.
    local root=$DATA/guest-root.qcow2
    if [[ ! -f "$root" ]]; then
        truncate -s 64M "$root.raw"
        mkfs.ext4 -q -F "$root.raw"
        qemu-img convert -q -O qcow2 "$root.raw" "$root.tmp"
        rm -f "$root.raw"
        mv "$root.tmp" "$root"
    fi
    "$VENV/bin/python" "$AIO_HERE/bootstrap.py" compute "$GUEST_DIR" "$root"
}

configure_tempest() {
    "$VENV/bin/python" "$AIO_HERE/tempest_conf.py" "$AIO/tempest-workspace"
}

# -- verbs -------------------------------------------------------------------

SERVICES="keystone glance-api placement-api neutron-api nova-api
          nova-conductor nova-scheduler nova-compute nova-novncproxy
          cinder-api cinder-scheduler cinder-volume cinder-backup"

up() {
    mkdir -p "$AIO" "$RUN" "$LOGS"
    : >"$PHASES"
    local t0
    t0=$(date +%s)
    # shellcheck source=tools/aio/devstack-shim.sh
    source "$AIO_HERE/devstack-shim.sh"
    # shellcheck source=devstack/lib/snapext
    source "$REPO/devstack/lib/snapext"
    phase packages install_packages
    phase mariadb start_mariadb
    phase rabbitmq start_rabbitmq
    phase venvs install_venvs
    phase novnc install_novnc
    phase snapext-wheel install_snapext
    phase configure configure
    phase keystone start_keystone
    phase glance-placement-neutron start_glance_placement_neutron
    phase nova start_nova
    phase cinder start_cinder
    phase guest-images guest_images
    phase tempest-config configure_tempest
    printf '%-22s %6d s\n' total $(($(date +%s) - t0)) | tee -a "$PHASES" >&2
    log "up; . $AIO/openrc admin (or demo) to use it"
}

# The AIO's domains: their disks live under $DATA (the shared libvirtd
# may hold others').
aio_domains() {
    local dom
    for dom in $(virsh -q list --all --name 2>/dev/null | grep '^instance-' || true); do
        if virsh -q domblklist "$dom" 2>/dev/null | grep "$DATA" >/dev/null; then
            echo "$dom"
        fi
    done
}

destroy_servers() {
    local dom
    for dom in $(aio_domains); do
        log "destroying $dom"
        virsh -q destroy "$dom" >/dev/null 2>&1 || true
        virsh -q undefine "$dom" --nvram >/dev/null 2>&1 \
            || virsh -q undefine "$dom" >/dev/null 2>&1 || true
    done
}

# What a compute host's reboot does to Nova: nova-compute stops, every
# domain is gone (destroyed, still defined), nova-compute starts again and
# its init_host finds them.
host_reboot() {
    stop_service nova-compute 10
    local dom
    for dom in $(aio_domains); do
        log "destroying $dom (host reboot)"
        virsh -q destroy "$dom" >/dev/null 2>&1 || true
    done
    admin_env
    start_nova_compute
}

down() {
    local svc
    for svc in $SERVICES; do
        stop_service "$svc" 10
    done
    destroy_servers
}

clean() {
    down
    if mysqladmin ping >/dev/null 2>&1; then
        local db
        for db in $DATABASES; do
            mysql -e "DROP DATABASE IF EXISTS $db"
        done
    fi
    rm -f "$RUN"/*.once
    local m
    while read -r m; do umount "$m" 2>/dev/null || true; done \
        < <(awk -v d="$DATA" '$2 ~ "^"d {print $2}' /proc/self/mounts | sort -r)
    umount "$CINDER_SHARE_DIR" 2>/dev/null || true
    rm -rf "$DATA" "$ETC" "$AIO/tempest-workspace"
}

status() {
    local svc rc=0
    for svc in $SERVICES; do
        if alive "$svc"; then
            printf '%-18s running %s\n' "$svc" "$(cat "$RUN/$svc.pid")"
        else
            printf '%-18s stopped\n' "$svc"
            rc=1
        fi
    done
    return $rc
}

rss() {
    python3 "$AIO_HERE/rss.py" "$RUN"
}

# Sourced (tools/aio/hosts.sh), it only defines its paths and functions.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    case "${1:-}" in
        up) up ;;
        down) down ;;
        clean) clean ;;
        status) status ;;
        rss) rss ;;
        host-reboot) host_reboot ;;
        *) echo "usage: $0 up|down|clean|status|rss|host-reboot" >&2; exit 2 ;;
    esac
fi
