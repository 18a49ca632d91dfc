"""Real-guest functional tests: real libvirtd, real QEMU, the real guest.

These never mock libvirt.  They skip only when no libvirtd answers, and
say why; CI sets SNAPEXT_REQUIRE_GUEST=1 so that a missing libvirtd fails
the run instead.
"""

import contextlib
import io
import os
import shutil
import tempfile
import uuid

import fixtures
import libvirt
from oslo_config import cfg
import testtools

from nova_snapext.capture import domain_xml
from nova_snapext.capture import engine
from nova_snapext.capture import qemu_img
from nova_snapext.cmd import snapext as cli
from nova_snapext import conf as snapext_conf
from nova_snapext.testing import guest as guest_mod

URI = os.environ.get('SNAPEXT_LIBVIRT_URI', 'qemu:///system')
WORK_ROOT = os.environ.get('SNAPEXT_TEST_DIR', '/var/tmp/snapext-tests')


def _connect():
    try:
        return libvirt.open(URI)
    except libvirt.libvirtError as exc:
        if os.environ.get('SNAPEXT_REQUIRE_GUEST'):
            raise
        raise testtools.TestCase.skipException(
            'no libvirtd at %s (%s); run tools/setup-host.sh' % (URI, exc))


class GuestTestCase(testtools.TestCase):
    """Boots one fresh guest per test and an engine with its own store."""

    disks = guest_mod.DISKS
    # Several engineers share one libvirtd: each suite names its domains.
    name_prefix = 'snapext-ft'

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(900, gentle=True))
        self.conn = _connect()
        # Whatever connection the test holds at its end (one that restarts
        # libvirtd reconnects): closed after the guest is destroyed.
        self.addCleanup(lambda: self.conn.close())
        os.makedirs(WORK_ROOT, exist_ok=True)
        self.workdir = tempfile.mkdtemp(
            prefix='%s.' % self.id().split('.')[-1], dir=WORK_ROOT)
        # Memory images are ~100 MiB each: a run must not fill the disk.
        # SNAPEXT_KEEP_TEST_DIRS=1 keeps them for a post-mortem.
        if not os.environ.get('SNAPEXT_KEEP_TEST_DIRS'):
            self.addCleanup(shutil.rmtree, self.workdir, True)
        self.conf = cfg.ConfigOpts()
        snapext_conf.register_opts(self.conf)
        self.conf([], project='snapext')
        self.conf.set_override('file_store_path',
                               os.path.join(self.workdir, 'store'), 'snapext')
        self.conf.set_override('lock_path',
                               os.path.join(self.workdir, 'locks'), 'snapext')
        self.conf.set_override('libvirt_uri', URI, 'snapext')
        self.progress = []
        self.engine = engine.Engine(
            self.conf, conn=self.conn,
            progress=lambda stage, **kw: self.progress.append((stage, kw)))
        name, guest_uuid = self.guest_identity()
        self.guest = guest_mod.Guest(self.conn, name,
                                     os.path.join(self.workdir, 'guest'),
                                     disks=self.disks, uuid=guest_uuid)
        self.addCleanup(self.guest.destroy)
        self.guest.define()
        self.before_boot()
        self.boot_seconds = self.guest.boot()
        self.addDetail('boot_seconds',
                       testtools.content.text_content(
                           '%.1f' % self.boot_seconds))

    def before_boot(self):
        """Hook between define and boot (e.g. attach more disks)."""

    def guest_identity(self):
        """(domain name, domain UUID or None for a random one)."""
        return '%s-%s' % (self.name_prefix, uuid.uuid4().hex[:8]), None

    def run_cli(self, *args):
        """``snapext ARGS`` on this test's store: (rc, stdout, stderr)."""
        config = os.path.join(self.workdir, 'snapext.conf')
        with open(config, 'w') as f:
            f.write('[snapext]\nfile_store_path = %s\nlock_path = %s\n'
                    'libvirt_uri = %s\n'
                    % (self.conf.snapext.file_store_path,
                       self.conf.snapext.lock_path, URI))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(['--config-file', config] + list(args))
        return rc, out.getvalue(), err.getvalue()

    def take_noting_tick(self, **kwargs):
        """engine.take(); (record, the counter when it was captured)."""
        tick = {}
        self.engine._progress = (
            lambda stage, **kw: tick.setdefault(
                'n', self.guest.last_tick()[0]) if stage == 'captured'
            else None)
        record = self.engine.take(self.guest.name, **kwargs)
        return record, tick['n']

    def disk_files(self):
        """Files in the guest's directory other than its console log.

        Snapshots live inside the disk files: none is ever added.
        """
        return sorted(f for f in os.listdir(self.guest.workdir)
                      if f != 'console.log')

    def internal_states(self, guest=None):
        """{target: internal snapshot names in the disk's file}."""
        guest = guest or self.guest
        return {d.target: sorted(qemu_img.snapshot_names(d.path))
                for d in domain_xml.writable_disks(guest.dom.XMLDesc(0))}

    def assertDisksHold(self, record, guest=None):
        """Each disk runs on its original file, which holds the state."""
        guest = guest or self.guest
        disks = domain_xml.writable_disks(guest.dom.XMLDesc(0))
        self.assertEqual(
            {d.target: os.path.join(guest.workdir, '%s.qcow2' % d.target)
             for d in disks},
            {d.target: d.path for d in disks})
        held = self.internal_states(guest)
        for disk in record['disks']:
            self.assertIn(disk['snapshot'], held[disk['target']])
            self.assertEqual(os.path.join(guest.workdir,
                                          '%s.qcow2' % disk['target']),
                             disk['path'])

    def staging_dirs(self):
        root = self.conf.snapext.file_store_path
        found = []
        for dirpath, dirnames, _ in os.walk(root):
            found.extend(os.path.join(dirpath, d) for d in dirnames
                         if d.endswith('.staging'))
        return found

    def assertRunningAndThawed(self):
        self.guest.refresh()
        self.assertEqual(libvirt.VIR_DOMAIN_RUNNING,
                         self.guest.dom.state()[0])
        before = self.guest.last_tick()[0]
        self.guest.wait_for_tick(after=before + 2, timeout=30)

    def assertCounterContinues(self, offset, snap_tick, slack=2):
        resumed = self.guest.resumed_tick(offset)
        self.assertIsNotNone(resumed, 'the counter never dropped back after '
                             'the revert')
        self.assertLessEqual(abs(resumed - (snap_tick + 1)), slack,
                             'counter resumed at %d, snapshot was at %d'
                             % (resumed, snap_tick))
        return resumed
