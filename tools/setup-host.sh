#!/bin/bash
# Prepare a Debian 12/13 host (as root) for snapext: packages, libvirt
# daemons, and the project's virtualenv.  Safe to run repeatedly.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${SNAPEXT_VENV:-$REPO/.venv}
PYTHON=${PYTHON:-python3}

log() { echo "setup-host: $*"; }

PACKAGES=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients
          libvirt-dev pkg-config qemu-guest-agent busybox-static gcc
          libc6-dev cpio xz-utils zstd kmod e2fsprogs rabbitmq-server
          python3-venv python3-dev git tini)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
fi

# QEMU as root: /dev/kvm is 0600 root here, and with an unprivileged QEMU user
# libvirtd re-probes QEMU's capabilities at every domain start or restore
# (seconds each time).  Running QEMU as root makes the probe cache stick.
conf=/etc/libvirt/qemu.conf
for kv in 'user = "root"' 'group = "root"'; do
    key=${kv%% *}
    if ! grep -qx "$kv" "$conf"; then
        sed -i "/^#\?$key = /d" "$conf"
        echo "$kv" >> "$conf"
        restart_libvirtd=1
    fi
done

if [ -d /run/systemd/system ]; then
    # A host booted with systemd: its units run the daemons.
    systemctl start virtlogd.socket
    if [ -n "${restart_libvirtd:-}" ]; then
        systemctl restart libvirtd
    else
        systemctl start libvirtd
    fi
else
    if ! pgrep -x virtlogd >/dev/null; then
        log "starting virtlogd"
        virtlogd -d
    fi
    if [ -n "${restart_libvirtd:-}" ] && pgrep -x libvirtd >/dev/null; then
        log "restarting libvirtd for the new qemu.conf"
        pkill -x libvirtd
        for _ in $(seq 50); do
            pgrep -x libvirtd >/dev/null || break
            sleep 0.1
        done
    fi
    if ! pgrep -x libvirtd >/dev/null; then
        # QEMU, daemonized by libvirtd, is re-parented to PID 1; a container
        # init that reaps late makes libvirtd wait ~1.4 s for every QEMU
        # exit (destroy, revert).  tini as a subreaper reaps at once.
        log "starting libvirtd under tini"
        setsid tini -s -- libvirtd </dev/null \
            >>/var/log/snapext-libvirtd.log 2>&1 &
    fi
fi
for _ in $(seq 100); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.1
done
virsh -c qemu:///system version >/dev/null

# The requirements are reinstalled only when they or the entry points change.
stamp=$VENV/.snapext-requirements
want=$(cat "$REPO"/requirements.txt "$REPO"/test-requirements.txt \
       "$REPO"/setup.cfg | sha256sum)
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
    log "creating the virtualenv in $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing the requirements into $VENV"
    piplog=$(mktemp)
    if ! { "$VENV/bin/pip" install -U pip wheel setuptools &&
           "$VENV/bin/pip" install -r "$REPO/requirements.txt" \
               -r "$REPO/test-requirements.txt" &&
           "$VENV/bin/pip" install --no-deps -e "$REPO"; } >"$piplog" 2>&1
    then
        tail -n 40 "$piplog"
        log "error: pip failed (full log: $piplog)"
        exit 1
    fi
    rm -f "$piplog"
    echo "$want" > "$stamp"
fi
# An editable install cannot add a module to nova.virt (a regular package);
# link the shim where a wheel install puts it, so that
# compute_driver = snapext.SnapextLibvirtDriver loads from this checkout.
novavirt=$("$VENV/bin/python" -c 'import nova.virt, os; print(os.path.dirname(nova.virt.__file__))')
if [ "$(readlink "$novavirt/snapext" 2>/dev/null)" != "$REPO/nova/virt/snapext" ]; then
    rm -rf "${novavirt:?}/snapext"
    ln -s "$REPO/nova/virt/snapext" "$novavirt/snapext"
fi

versions=$(virsh -c qemu:///system version --daemon)
log "host ready: libvirt $(awk '/daemon:/{print $NF}' <<<"$versions"),\
 QEMU $(awk '/hypervisor:/{print $NF}' <<<"$versions")"
