"""The bench's test bed: libvirt connection with events, guests, host I/O.

Guests are the project's real test guest (nova_snapext.testing.guest) with
the root disk laid out the way Nova's qcow2 image backend lays it out: a
per-instance qcow2 overlay on a raw base image in ``_base``, with the
image's data in the base.  That layout decides what the baseline copies, so
it has to be Nova's.
"""

import os
import shutil
import subprocess
import threading
import time
import uuid

import libvirt
from oslo_config import cfg

from nova_snapext.capture import domain_xml
from nova_snapext.capture import engine as engine_mod
from nova_snapext import conf as snapext_conf
from nova_snapext.testing import guest as guest_mod

SCRATCH = '/var/tmp/snapext-bench'
URI = os.environ.get('SNAPEXT_LIBVIRT_URI', 'qemu:///system')
DOMAIN_PREFIX = 'snapext-bench-'
# Half random, half repeated text per 4 KiB: compresses about 2:1 with
# zlib, like a typical Linux root filesystem, so `qemu-img convert -c`
# does realistic work.
_TEXT = (b'snapext bench filler, compressible like an OS image. ' * 40)[:2048]


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def allocated_bytes(path):
    """Bytes the host filesystem holds for ``path`` (what was written)."""
    return os.stat(path).st_blocks * 512


def convert_compressed(src, dest, snapshot=None):
    """Nova's extract_snapshot with snapshot_compression: the Glance copy.

    Same command as nova.privsep.qemu.unprivileged_convert_image builds:
    cache mode none (the directory supports O_DIRECT), qcow2 in, qcow2 out,
    compressed.  With ``snapshot`` it copies that qcow2 internal snapshot
    of ``src`` (snapext's state) while QEMU runs on the file (-U).
    """
    cmd = ['qemu-img', 'convert', '-t', 'none', '-f', 'qcow2',
           '-O', 'qcow2', '-c', src, dest]
    if snapshot:
        cmd[2:2] = ['-U', '-l', 'snapshot.name=%s' % snapshot]
    run(*cmd)


def make_base_image(path, size_mib, used_mib):
    """A raw ext4 image of ``size_mib`` holding ``used_mib`` of files."""
    data = path + '.d'
    os.makedirs(data, exist_ok=True)
    chunk = b''.join(os.urandom(2048) + _TEXT for _ in range(256))  # 1 MiB
    for i in range(0, used_mib, 8):
        with open(os.path.join(data, 'f%04d' % i), 'wb') as f:
            for _ in range(min(8, used_mib - i)):
                f.write(os.urandom(16) + chunk[16:])
    # The host initializes inode tables and journal so that the guest's
    # ext4lazyinit does not write tens of MiB into the overlay mid-run.
    run('mkfs.ext4', '-q', '-F', '-d', data,
        '-E', 'lazy_itable_init=0,lazy_journal_init=0', path,
        '%dM' % size_mib)
    shutil.rmtree(data)


class NovaGuest(guest_mod.Guest):
    """The test guest with a Nova-style root disk: overlay on a raw base."""

    def __init__(self, conn, name, workdir, base, **kwargs):
        super().__init__(conn, name, workdir, **kwargs)
        self.base = base

    def make_disk(self, path, dev):
        if dev != 'vda':
            return super().make_disk(path, dev)
        run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o',
            'backing_file=%s,backing_fmt=raw' % self.base, path)

    def root_path(self):
        return _disk_paths(self.dom)['vda']

    def fill_page_cache(self, mib):
        """Make ``mib`` of guest RAM hold data, not zero pages.

        An idle test guest's memory is mostly zero pages, which QEMU saves
        as flags; reading the root disk into the page cache gives the
        memory image real content to write.
        """
        self.check_sh('dd if=/dev/vda of=/dev/null bs=1M count=%d 2>/dev/null'
                      % mib, timeout=300)


def _disk_paths(dom):
    return {d.target: d.path
            for d in domain_xml.writable_disks(dom.XMLDesc(0))}


class EventLog(object):
    """Host-side arrival times of libvirt lifecycle events, per domain."""

    def __init__(self, conn):
        self.events = []
        self._lock = threading.Lock()
        conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._seen, None)

    def _seen(self, conn, dom, event, detail, opaque):
        with self._lock:
            self.events.append((time.monotonic(), dom.name(), event))

    def paused_ms(self, name, since, until):
        """Longest suspended -> resumed interval of ``name`` in the window.

        0 when libvirt never suspended the domain; an unmatched suspend is
        closed at ``until``.
        """
        with self._lock:
            events = [(t, e) for t, n, e in self.events
                      if n == name and since <= t <= until]
        longest, suspended_at = 0.0, None
        for t, event in events:
            if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
                suspended_at = suspended_at or t
            elif (event == libvirt.VIR_DOMAIN_EVENT_RESUMED
                  and suspended_at is not None):
                longest = max(longest, t - suspended_at)
                suspended_at = None
        if suspended_at is not None:
            longest = max(longest, until - suspended_at)
        return round(longest * 1000, 1)


def _run_event_loop():
    while True:
        libvirt.virEventRunDefaultImpl()


class Rig(object):
    """One bench run: connection, engine, scratch directory, guests."""

    def __init__(self, keep=False):
        # Lifecycle events need libvirt's event loop registered before the
        # connection is opened.
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, daemon=True).start()
        self.conn = libvirt.open(URI)
        self.events = EventLog(self.conn)
        os.makedirs(SCRATCH, exist_ok=True)
        self.workdir = os.path.join(SCRATCH, 'run-%s' % uuid.uuid4().hex[:8])
        os.makedirs(self.workdir)
        self.keep = keep
        self.engine = engine_mod.Engine(self._conf('store', 'locks'),
                                        conn=self.conn,
                                        progress=self._progress)
        self.captured_at = None
        self._bases = {}
        self._domains = []

    def _conf(self, store, locks):
        conf = cfg.ConfigOpts()
        snapext_conf.register_opts(conf)
        conf([], project='snapext')
        conf.set_override('file_store_path', self.path(store), 'snapext')
        conf.set_override('lock_path', self.path(locks), 'snapext')
        conf.set_override('libvirt_uri', URI, 'snapext')
        return conf

    def empty_store_engine(self, name):
        """An engine on a new, empty store ``path(name)``: another host's."""
        return engine_mod.Engine(self._conf(name, name + '-locks'),
                                 conn=self.conn)

    def _progress(self, stage, **details):
        # 'captured': disks switched and filesystems thawed; the guest no
        # longer waits for anything of this snapshot.
        if stage == 'captured':
            self.captured_at = time.monotonic()

    def path(self, *parts):
        return os.path.join(self.workdir, *parts)

    def base_image(self, size_mib, used_mib):
        """Nova's _base image for a root of ``size_mib``, made once."""
        key = (size_mib, used_mib)
        if key not in self._bases:
            os.makedirs(self.path('_base'), exist_ok=True)
            path = self.path('_base', 'root-%d-%d.raw' % key)
            make_base_image(path, size_mib, used_mib)
            self._bases[key] = path
        return self._bases[key]

    def guest(self, role, root_mib=1024, used_mib=200, memory_mib=256,
              boot=True):
        name = '%s%s-%s' % (DOMAIN_PREFIX, role, uuid.uuid4().hex[:6])
        g = NovaGuest(self.conn, name, self.path(name),
                      self.base_image(root_mib, used_mib),
                      memory_mib=memory_mib)
        self.track(name)
        g.define()
        if boot:
            g.boot()
        return g

    def track(self, name):
        """Remember a domain to destroy and undefine at the end."""
        self._domains.append(name)

    def forget(self, name):
        """Destroy and undefine one of our domains now, and drop its files.

        Every domain's files live in ``path(name)``, as Guest expects.
        """
        try:
            guest_mod.Guest(self.conn, name, self.path(name)).destroy()
        except libvirt.libvirtError:
            pass  # a transient leftover is gone once destroyed

    def close(self):
        for name in self._domains:
            self.forget(name)
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.conn.close()

    def host_write_rate(self, mib):
        """Sequential direct-I/O write MB/s of the store's filesystem.

        The physical limit for saving memory images: they go to the same
        filesystem.
        """
        target = self.path('ddtest')
        started = time.monotonic()
        run('dd', 'if=/dev/zero', 'of=%s' % target, 'bs=4M',
            'count=%d' % (mib // 4), 'oflag=direct', 'status=none')
        elapsed = time.monotonic() - started
        os.unlink(target)
        return mib * 2 ** 20 / elapsed / 1e6
