"""The snapext Cinder backend on a real guest, with a real agent.

Cinder's sqlite-backed TestCase and real VolumeManager run here, in the
test process; the snapext agent runs as ``snapext-agent`` in another
process and is reached over the RabbitMQ at 127.0.0.1:5672.  The volumes
live on a local-directory "share" (``snapext_local_shares``) and are
attached as vdb and vdc of the real test guest, as Nova's NFS volume driver
would attach them: file disks on the volumes' active files.
"""

import hashlib
import os
import subprocess
import tempfile
import uuid

from xml.sax import saxutils

from cinder import privsep
import fixtures
import libvirt

from cinder_snapext.tests import base
from nova_snapext.testing import guest as guest_mod
from nova_snapext.testing import rpc as rpc_testing
from nova_snapext.tests.functional import base as nova_base

DRIVER = 'cinder_snapext.driver.SnapextNfsDriver'
GROUP = 'backend_defaults'


def guest_file_sha256(volume_file, path):
    """sha256 of ``path`` inside the ext4 of a qcow2 volume, or None.

    Read on the host with debugfs, without mounting or replaying the
    journal: what a consistent snapshot holds must be there as is.
    """
    with tempfile.TemporaryDirectory(dir='/var/tmp') as tmp:
        raw = os.path.join(tmp, 'volume.raw')
        subprocess.run(['qemu-img', 'convert', '-U', '-O', 'raw',
                        volume_file, raw], check=True)
        out = subprocess.run(['debugfs', '-R', 'cat %s' % path, raw],
                             capture_output=True, check=True)
        missing = subprocess.run(['debugfs', '-R', 'stat %s' % path, raw],
                                 capture_output=True, text=True)
        if 'File not found' in missing.stderr + missing.stdout:
            return None
        return hashlib.sha256(out.stdout).hexdigest()


class CinderGuestTestCase(base.GroupTestCase):
    """Real driver + real agent process + real guest with two volumes."""

    volume_driver = DRIVER

    def configure(self):
        self.useFixture(fixtures.Timeout(900, gentle=True))
        # Cinder's harness forbids a privsep daemon; the tests run as root,
        # so the privileged calls (qemu-img info's format check) run
        # in-process instead.
        privsep.sys_admin_pctxt.set_client_mode(False)
        self.addCleanup(privsep.sys_admin_pctxt.set_client_mode, True)
        os.makedirs(nova_base.WORK_ROOT, exist_ok=True)
        self.workdir = tempfile.mkdtemp(
            prefix='cinder-%s.' % self.id().split('.')[-1],
            dir=nova_base.WORK_ROOT)
        self.addCleanup(subprocess.run, ['rm', '-rf', self.workdir])
        self.share = os.path.join(self.workdir, 'share')
        os.makedirs(self.share)
        shares = os.path.join(self.workdir, 'shares.conf')
        with open(shares, 'w') as f:
            f.write('localhost:%s\n' % self.share)
        for name, value in (('nfs_shares_config', shares),
                            ('nfs_qcow2_volumes', True),
                            ('nfs_snapshot_support', True),
                            ('nfs_sparsed_volumes', True),
                            ('nas_secure_file_operations', 'false'),
                            ('nas_secure_file_permissions', 'false'),
                            ('snapext_local_shares', True),
                            ('snapext_freeze_timeout_ms', 30000)):
            self.override_config(name, value, group=GROUP)
        self.override_config('transport_url', rpc_testing.TRANSPORT_URL,
                             group='snapext')
        self.override_config('rpc_timeout', 30, group='snapext')
        self.host = 'snapext-cinder-%s' % uuid.uuid4().hex[:8]
        self.agent = self.useFixture(rpc_testing.AgentProcess(
            os.path.join(self.workdir, 'agent'), self.host,
            uri=nova_base.URI))

    def setUp(self):
        super().setUp()
        self.driver.do_setup(self.context)
        self.driver.check_for_setup_error()
        self.driver.set_initialized()
        self.group_type, self.group = self.make_group()
        self.plain_type, _ = self.make_group(consistent=False)
        self.volumes = [self.create_volume() for _ in range(3)]
        self.boot_guest({'vdb': self.volumes[0], 'vdc': self.volumes[1]})

    def create_volume(self, **kw):
        volume = self.make_volume(self.group, status='creating', **kw)
        self.manager.create_volume(self.context, volume)
        volume = self.reload(volume)
        self.assertEqual('available', volume.status)
        if not kw.get('snapshot_id'):
            # An ext4 the guest mounts, in place of the empty qcow2.
            guest_mod.make_disk(self.driver.local_path(volume))
        return volume

    def boot_guest(self, attach):
        self.conn = nova_base._connect()
        self.addCleanup(self.conn.close)
        name = 'snapext-cinder-%s' % uuid.uuid4().hex[:8]
        self.guest = guest_mod.Guest(self.conn, name,
                                     os.path.join(self.workdir, 'guest'),
                                     disks=('vda',))
        self.addCleanup(self.guest.destroy)
        self.guest.define()
        for dev, volume in sorted(attach.items()):
            self.guest.dom.attachDeviceFlags(
                guest_mod.DISK_XML.format(
                    path=saxutils.escape(self.driver.local_path(volume)),
                    dev=dev),
                libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        self.guest.boot()
        uuid_ = self.guest.dom.UUIDString()
        for dev, volume in sorted(attach.items()):
            self.attach(volume, uuid_, self.host, dev, {
                'export': 'localhost:%s' % self.share, 'name': volume.name,
                'format': 'qcow2'})
        self.volumes = [self.reload(v) for v in self.volumes]

    def share_files(self):
        return sorted(os.listdir(self.share))

    def internal(self, volume):
        """The internal snapshots inside the volume's file."""
        return self.driver.internal_snapshots(volume)

    def assert_untouched(self, volume):
        """Cinder's records still name the one volume file.

        No .info, no overlay, the attachment's connection_info unchanged.
        """
        self.assertFalse(os.path.exists(
            self.driver._local_path_volume_info(volume)))
        self.assertEqual([volume.name], [
            f for f in self.share_files() if f.startswith(volume.name)])
        for att in volume.volume_attachment or []:
            if att.connection_info:
                self.assertEqual(volume.name, att.connection_info['name'])
