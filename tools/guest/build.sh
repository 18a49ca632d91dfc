#!/bin/bash
# Build the snapext test guest: a Debian cloud kernel plus a tiny initramfs
# (busybox, qemu-ga, the RAM ticker and our /init), from Debian packages only.
#
#   tools/guest/build.sh [OUTDIR]
#
# OUTDIR defaults to $SNAPEXT_GUEST_DIR, else /var/cache/snapext/guest.
# Prints OUTDIR/vmlinuz and OUTDIR/initrd.img on stdout (logs go to stderr).
#
# The result is cached: OUTDIR/.stamp holds a hash of every input (these
# scripts, the kernel package chosen by apt, qemu-ga/busybox and the libraries
# copied into the image).  While it matches, the script only prints the paths.
# Outputs are built in a temp dir inside OUTDIR and renamed into place, with
# the stamp removed first and written last, so an interrupted build is simply
# redone next time.  Needs root (apt-get download works without, but mknod,
# the chroot self-test and the default OUTDIR don't).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUTDIR=${1:-${SNAPEXT_GUEST_DIR:-/var/cache/snapext/guest}}

KERNEL_META=linux-image-cloud-amd64
# virtio-pci transport, disks, and virtio-serial (for the agent's port).
WANT_MODULES=(virtio_pci virtio_blk virtio_console)
# The init script and the tests rely on these busybox applets.
NEED_APPLETS=(sh mount insmod mkdir ln cat sleep sha256sum dd sync kill pidof
              ls rm echo date head tail grep cp mv touch stat df cmp awk
              mkpasswd cut)
QEMU_GA=/usr/sbin/qemu-ga
BUSYBOX=/bin/busybox

log() { echo "guest-build: $*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
VMLINUZ=$OUTDIR/vmlinuz
INITRD=$OUTDIR/initrd.img
STAMP=$OUTDIR/.stamp
# apt-cache has to parse every package list (~1 s here: this host has apt's
# binary cache disabled), which alone would blow the cache-hit budget.  So
# its answer is remembered together with a fingerprint of the lists.
KERNEL_MEMO=$OUTDIR/.kernel-pkg

eval "$(apt-config shell APT_LISTS Dir::State::Lists/d DPKG_STATUS Dir::State::status/f)"

apt_fingerprint() {
    local lists=${APT_LISTS:-/var/lib/apt/lists/}
    stat -c '%n %s %Y' "$lists"*Release "$lists"*Packages* \
        "${DPKG_STATUS:-/var/lib/dpkg/status}" 2>/dev/null | sha256sum | cut -d' ' -f1
}

# Sets KPKG/KVER to the versioned kernel image package that the cloud meta
# package currently depends on.
resolve_kernel() {
    local fp memo_fp memo_pkg memo_ver info dep
    fp=$(apt_fingerprint)
    if [ -r "$KERNEL_MEMO" ] && read -r memo_fp memo_pkg memo_ver < "$KERNEL_MEMO" \
            && [ "$memo_fp" = "$fp" ] && [ -n "$memo_ver" ]; then
        KPKG=$memo_pkg KVER=$memo_ver
        return
    fi
    if ! info=$(apt-cache show --no-all-versions "$KERNEL_META" 2>/dev/null) \
            || [ -z "$info" ]; then
        log "$KERNEL_META unknown to apt; running apt-get update"
        apt-get update -qq >&2
        fp=$(apt_fingerprint)
        info=$(apt-cache show --no-all-versions "$KERNEL_META") \
            || die "apt knows no $KERNEL_META"
    fi
    # "Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)"
    dep=$(sed -n 's/^Depends: //p' <<<"$info" | tr ',' '\n' \
          | sed -n 's/^ *\(linux-image-[^ ]*\)\( (= \([^)]*\))\)\?.*/\1 \3/p' | head -n1)
    KPKG=${dep%% *} KVER=${dep#* }
    [ -n "$KPKG" ] || die "cannot find the kernel package $KERNEL_META depends on"
    if [ -z "$KVER" ] || [ "$KVER" = "$KPKG" ]; then
        KVER=$(apt-cache show --no-all-versions "$KPKG" | sed -n 's/^Version: //p')
    fi
    [ -n "$KVER" ] || die "no installable version of $KPKG"
    # Best effort: a reader without write access just pays the apt-cache time.
    { echo "$fp $KPKG $KVER" > "$KERNEL_MEMO.tmp.$$" \
        && mv -f "$KERNEL_MEMO.tmp.$$" "$KERNEL_MEMO"; } 2>/dev/null || true
}

# Shared libraries and dynamic loader of qemu-ga, as ldd lists them.
qemu_ga_libs() {
    ldd "$QEMU_GA" | awk '$2 == "=>" && $3 ~ /^\// { print $3; next }
                          $1 ~ /^\// { print $1 }'
}

# Sets HASH (the stamp) and MANIFEST (what went into it, for humans).
compute_inputs() {
    resolve_kernel
    local libs
    libs=$(qemu_ga_libs)
    [ -n "$libs" ] || die "ldd found no libraries for $QEMU_GA"
    MANIFEST=$(
        echo "kernel $KPKG $KVER"
        echo "qemu-ga $(dpkg-query -W -f '${Version}' qemu-guest-agent 2>/dev/null || echo '?')"
        echo "busybox $(dpkg-query -W -f '${Version}' busybox-static 2>/dev/null || echo '?')"
        cd "$HERE" && sha256sum build.sh init ticker.c
        # shellcheck disable=SC2086 # one path per line, no spaces
        sha256sum "$QEMU_GA" "$BUSYBOX" $libs
    )
    HASH=$(sha256sum <<<"$MANIFEST" | cut -d' ' -f1)
}

cache_hit() {
    local have=
    [ -s "$VMLINUZ" ] && [ -s "$INITRD" ] && [ -r "$STAMP" ] || return 1
    read -r have < "$STAMP" || return 1
    [ "$have" = "$HASH" ]
}

done_print() {
    echo "$VMLINUZ"
    echo "$INITRD"
    exit 0
}

compute_inputs
cache_hit && done_print

# Serialize concurrent builders (parallel test runs); whoever waited gets
# the fresh result.
exec 9>"$OUTDIR/.lock"
flock 9
cache_hit && done_print

start=$SECONDS
# Leftovers of builds that were killed before their EXIT trap could run.
rm -rf "$OUTDIR"/.build.*
TMP=$(mktemp -d "$OUTDIR/.build.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
# apt-get download drops to the _apt user and warns unless it can write here.
chmod 755 "$TMP"
mkdir "$TMP/deb"
chown _apt "$TMP/deb" 2>/dev/null || true

# --- kernel -----------------------------------------------------------------

download_kernel() {
    (cd "$TMP/deb" && apt-get download -q "$KPKG=$KVER") >&2
}
if ! download_kernel; then
    # The local lists may point at a version the mirror no longer carries
    # (security updates replace kernel ABIs); refresh and re-resolve.
    log "download of $KPKG=$KVER failed; running apt-get update"
    apt-get update -qq >&2
    rm -f "$KERNEL_MEMO"
    compute_inputs
    download_kernel || die "cannot download $KPKG=$KVER"
fi
log "kernel package $KPKG $KVER"
dpkg -x "$TMP"/deb/*.deb "$TMP/kroot"

vmlinuz=$(find "$TMP/kroot/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
[ -n "$vmlinuz" ] || die "no vmlinuz in $KPKG"
kver=${vmlinuz##*/vmlinuz-}
# bookworm ships /lib/modules, later releases may use /usr/lib/modules.
moddir=$(find "$TMP/kroot" -maxdepth 4 -type d -path "*/modules/$kver" | head -n1)
[ -n "$moddir" ] || die "no modules directory for $kver in $KPKG"

# modules.dep is generated by the package's postinst, not shipped: run depmod
# ourselves.  Give it both module roots so it works whichever one this host's
# kmod was built for.
mkdir -p "$TMP/depmod/lib/modules" "$TMP/depmod/usr/lib/modules"
ln -s "$moddir" "$TMP/depmod/lib/modules/$kver"
ln -s "$moddir" "$TMP/depmod/usr/lib/modules/$kver"
depmod -b "$TMP/depmod" "$kver"
[ -s "$moddir/modules.dep" ] || die "depmod produced no modules.dep"

declare -A mod_path=() mod_deps=() builtin=() added=()
modname() { local b=${1##*/}; b=${b%%.ko*}; REPLY=${b//-/_}; }
while IFS= read -r line; do
    modname "${line%%:*}"
    mod_path[$REPLY]=${line%%:*}
    mod_deps[${line%%:*}]=${line#*:}
done < "$moddir/modules.dep"
while IFS= read -r line; do
    modname "$line"
    builtin[$REPLY]=1
done < "$moddir/modules.builtin"

# The guest has no modprobe, so ext4 must be built in, or we ship it with its
# dependencies and the crc32c implementation it asks the crypto API for.
want=("${WANT_MODULES[@]}")
if [ -z "${builtin[ext4]:-}" ]; then
    log "ext4 is a module in $kver; adding it"
    want+=(crc32c_generic ext4)
fi

# Depth-first over modules.dep: every module comes after its dependencies.
load_order=()
add_module() {
    local path=$1 dep
    [ -z "${added[$path]:-}" ] || return 0
    added[$path]=1
    for dep in ${mod_deps[$path]}; do
        add_module "$dep"
    done
    load_order+=("$path")
}
for m in "${want[@]}"; do
    if [ -n "${builtin[$m]:-}" ]; then
        log "$m is built in"
    elif [ -n "${mod_path[$m]:-}" ]; then
        add_module "${mod_path[$m]}"
    else
        die "module $m is neither built into $kver nor shipped as a module"
    fi
done

# --- initramfs tree ---------------------------------------------------------

root=$TMP/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,mnt,root,var}
chmod 1777 "$root/tmp"
ln -s ../run "$root/var/run"  # qemu-ga's compiled-in default paths
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
# Locked until the agent sets a password (/usr/sbin/chpasswd below).
printf 'root:*:0:0:99999:7:::\n' > "$root/etc/shadow"
chmod 600 "$root/etc/shadow"
# The kernel opens /dev/console for init before /init can mount devtmpfs.
# Its built-in initramfs normally provides the node too; this is belt and
# braces, and needs root.
if [ "$(id -u)" = 0 ]; then
    mknod -m 600 "$root/dev/console" c 5 1
fi

# Busybox can't be relied on to insmod compressed modules, so decompress
# here.  Keep the kernel's layout; /etc/snapext-modules lists the load order.
: > "$root/etc/snapext-modules"
for path in "${load_order[@]}"; do
    dest=lib/modules/$kver/${path%.ko*}.ko
    mkdir -p "$root/${dest%/*}"
    case $path in
    *.ko)     cp "$moddir/$path" "$root/$dest" ;;
    *.ko.xz)  xz -dc "$moddir/$path" > "$root/$dest" ;;
    *.ko.zst) zstd -dcq "$moddir/$path" > "$root/$dest" ;;
    *.ko.gz)  gzip -dc "$moddir/$path" > "$root/$dest" ;;
    *) die "unknown module format: $path" ;;
    esac
    echo "/$dest" >> "$root/etc/snapext-modules"
done
log "modules: $(sed 's|.*/||' "$root/etc/snapext-modules" | tr '\n' ' ')"

cp "$BUSYBOX" "$root/bin/busybox"
applets=$("$BUSYBOX" --list-full)
for a in "${NEED_APPLETS[@]}"; do
    grep -Eq "(^|/)$a\$" <<<"$applets" || die "busybox lacks the $a applet"
done
while IFS= read -r a; do
    [ -e "$root/$a" ] || [ -L "$root/$a" ] || ln -s /bin/busybox "$root/$a"
done <<<"$applets"

# qemu-ga and its libraries at the paths ldd reported, so the loader finds
# them through its built-in multiarch search path without an ld.so.cache.
cp "$QEMU_GA" "$root/usr/sbin/qemu-ga"
for lib in $(qemu_ga_libs); do
    mkdir -p "$root/${lib%/*}"
    cp -L "$lib" "$root/$lib"
done

# qemu-ga's guest-shutdown (also what a plain "virsh shutdown" tries first)
# runs "/sbin/shutdown -h -P|-H|-r +0 <msg>" and wants it to return 0.  No
# init system here to ask, so act like one: return, then go down.  Powering
# off needs <acpi/> in the domain XML; without it the guest only halts.
cat > "$root/sbin/shutdown" <<'SHUTDOWN'
#!/bin/sh
case " $* " in
*" -r "*) action=reboot ;;
*" -H "*) action=halt ;;
*) action=poweroff ;;
esac
(
    sleep 0.5
    sync
    for m in /mnt/vd?; do umount "$m" 2>/dev/null; done
    "$action" -f
) < /dev/null > /dev/null 2>&1 &
exit 0
SHUTDOWN
chmod 755 "$root/sbin/shutdown"

# qemu-ga's guest-set-user-password (Nova's "change password": libvirt's
# virDomainSetUserPassword) writes "user:password" lines to "chpasswd" or,
# for a crypted password, "chpasswd -e".  Debian's busybox has no chpasswd
# applet: this one sets the user's hash in /etc/shadow.
cat > "$root/usr/sbin/chpasswd" <<'CHPASSWD'
#!/bin/sh
crypted=
case "${1:-}" in
-e|--encrypted) crypted=1 ;;
'') ;;
*) echo "usage: chpasswd [-e] < user:password lines" >&2; exit 2 ;;
esac
rc=0
while IFS= read -r line || [ -n "$line" ]; do
    user=${line%%:*}
    pass=${line#*:}
    if [ -z "$user" ] || [ "$user" = "$line" ]; then
        echo "chpasswd: not user:password: '$line'" >&2; rc=1; continue
    fi
    if ! grep -q "^$user:" /etc/passwd; then
        echo "chpasswd: no user $user" >&2; rc=1; continue
    fi
    if [ -n "$crypted" ]; then
        hash=$pass
    else
        hash=$(printf '%s\n' "$pass" | mkpasswd -m sha512 -P 0) || { rc=1; continue; }
    fi
    grep -q "^$user:" /etc/shadow || echo "$user:*:0:0:99999:7:::" >> /etc/shadow
    U=$user H=$hash awk 'BEGIN { FS = OFS = ":" }
        $1 == ENVIRON["U"] { $2 = ENVIRON["H"] } { print }' \
        /etc/shadow > /etc/shadow.new && chmod 600 /etc/shadow.new \
        && mv /etc/shadow.new /etc/shadow || rc=1
done
exit $rc
CHPASSWD
chmod 755 "$root/usr/sbin/chpasswd"

gcc -static -O2 -s -Wall -Wextra -o "$root/bin/ticker" "$HERE/ticker.c"
install -m 755 "$HERE/init" "$root/init"

# Catch a missing library or broken applet now rather than in a 10 s boot.
if [ "$(id -u)" = 0 ]; then
    chroot "$root" /usr/sbin/qemu-ga --version > /dev/null \
        || die "qemu-ga does not run inside the image"
    chroot "$root" /bin/sh -c 'echo ok | sha256sum' > /dev/null \
        || die "busybox does not run inside the image"
    # chpasswd sets a hash that busybox's own crypt accepts; then the image
    # goes back to a locked root.
    cp "$root/etc/shadow" "$TMP/shadow"
    echo root:snapext | chroot "$root" /usr/sbin/chpasswd \
        || die "chpasswd fails inside the image"
    chroot "$root" /bin/sh -c '
        h=$(awk -F: "\$1 == \"root\" { print \$2 }" /etc/shadow)
        salt=$(echo "$h" | cut -d"\$" -f3)
        [ -n "$salt" ] && [ "$(echo snapext | mkpasswd -m sha512 -P 0 -S "$salt")" = "$h" ]' \
        || die "chpasswd set a wrong hash inside the image"
    cp "$TMP/shadow" "$root/etc/shadow"
fi

# Same inputs, same bytes: fixed mtimes (plus --reproducible and gzip -n).
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort \
    | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9 -n > "$TMP/initrd.img"
cp "$vmlinuz" "$TMP/vmlinuz"

# --- publish ----------------------------------------------------------------

rm -f "$STAMP"
mv -f "$TMP/vmlinuz" "$VMLINUZ"
mv -f "$TMP/initrd.img" "$INITRD"
{ echo "$HASH"; echo "$MANIFEST"; } > "$TMP/stamp"
mv -f "$TMP/stamp" "$STAMP"
log "built $kver guest in $((SECONDS - start)) s:" \
    "vmlinuz $(stat -c %s "$VMLINUZ") B, initrd.img $(stat -c %s "$INITRD") B"
done_print
