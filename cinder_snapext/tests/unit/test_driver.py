"""SnapextNfsDriver through Cinder's VolumeManager, with no guest.

Real volume files on a local-directory share and real qemu-img; the agent
is a fake that does to the files what the engine does (an internal
snapshot ``snapext-<record id>`` in each captured disk), so every Cinder
operation is checked on real qcow2 data.  The real agent and guest are in
the functional tests.
"""

import hashlib
import json
import os
import subprocess
from unittest import mock

from cinder import exception as cinder_exception
from cinder import objects
from cinder.objects import fields
from cinder import privsep
from cinder.tests.unit import fake_snapshot
from cinder.tests.unit import fake_volume
from cinder.tests.unit import utils as tests_utils
from cinder.volume.drivers import remotefs
import fixtures
from oslo_utils import uuidutils

from cinder_snapext import driver
from cinder_snapext.tests import base

INSTANCE = '11111111-1111-4111-8111-111111111111'
HOST = 'compute-1'
MiB = 1 << 20


def qemu_img(*args):
    return subprocess.run(('qemu-img',) + args, check=True,
                          capture_output=True, text=True).stdout


def write(path, pattern, offset=0, length=MiB):
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P %d %d %d'
                    % (pattern, offset, length), path], check=True,
                   capture_output=True)


def holds(path, pattern, offset=0, length=MiB):
    out = subprocess.run(['qemu-io', '-f', 'qcow2', '-r', '-U', '-c',
                          'read -P %d %d %d' % (pattern, offset, length),
                          path], check=True, capture_output=True,
                         text=True).stdout
    return 'verification failed' not in out


def digest(path, snapshot=None):
    """sha256 of the image's raw content (at an internal snapshot)."""
    raw = path + '.raw'
    args = ['convert', '-U', '-O', 'raw']
    if snapshot:
        args += ['-l', 'snapshot.name=%s' % snapshot]
    qemu_img(*(args + [path, raw]))
    try:
        with open(raw, 'rb') as f:
            return hashlib.sha256(f.read()).hexdigest()
    finally:
        os.unlink(raw)


def internal(path):
    info = json.loads(qemu_img('info', '--output=json', '-U', path))
    return [s['name'] for s in info.get('snapshots') or ()]


class FileAgent(object):
    """The agent, doing to the volume files what the engine does."""

    def __init__(self, test):
        self.test = test
        self.calls = []
        self.records = {}
        self.fail = {}

    def _enter(self, method, host, spec):
        self.calls.append((method, host, spec))
        if method in self.fail:
            raise self.fail[method]

    def capture(self, ctxt, host, spec):
        self._enter('capture', host, spec)
        record_id = uuidutils.generate_uuid()
        name = driver.PREFIX + record_id
        disks = []
        for target in spec['targets']:
            path = self.test.devices[target]
            qemu_img('snapshot', '-c', name, path)
            role = spec['disk_roles'][target]
            disks.append({'target': target, 'role': 'volume',
                          'volume_id': role['volume_id'],
                          'cinder_snapshot_id': role.get(
                              'cinder_snapshot_id'),
                          'path': path, 'snapshot': name,
                          'format': 'qcow2', 'virtual_size': 0})
        record = {'id': record_id, 'instance_uuid': spec['instance'],
                  'memory': None, 'disks': disks}
        self.records[record_id] = record
        return {'manifest': record, 'timings_ms': {}}

    def release(self, ctxt, host, spec):
        self._enter('release', host, spec)
        for disk in spec['disks']:
            path = self.test.devices[disk['target']]
            if disk['file']:
                self.test.assertEqual(disk['file'], os.path.basename(path))
            if disk['name'] in internal(path):
                qemu_img('snapshot', '-d', disk['name'], path)
            record = self.records.get(driver.manifest_of(disk['name']))
            if record:
                for d in record['disks']:
                    if d['target'] == disk['target']:
                        d['snapshot'] = None
                if not any(d['snapshot'] for d in record['disks']):
                    del self.records[record['id']]
        return {'released': [d['target'] for d in spec['disks']],
                'records': {}}

    def adopt(self, ctxt, host, spec):
        self._enter('adopt', host, spec)
        record = self.records[spec['snapshot_id']]
        disk = next(d for d in record['disks']
                    if d['volume_id'] == spec['volume_id'])
        disk['cinder_snapshot_id'] = spec['cinder_snapshot_id']
        return {'snapshot_id': record['id'], 'target': disk['target'],
                'name': disk['snapshot']}

    def freeze(self, ctxt, host, instances, timeout_ms):
        self._enter('freeze', host, instances)
        return {'op_id': 'op-1', 'timeout_ms': timeout_ms,
                'instances': {i: {} for i in instances}}

    def thaw(self, ctxt, host, instances):
        self._enter('thaw', host, instances)
        return {'instances': {i: {'thawed_by': 'caller', 'frozen_ms': 5.0}
                              for i in instances}}


class DriverTest(base.GroupTestCase):

    volume_driver = driver.__name__ + '.SnapextNfsDriver'

    def configure(self):
        root = self.useFixture(fixtures.TempDir()).path
        self.share = os.path.join(root, 'share')
        os.mkdir(self.share)
        shares = os.path.join(root, 'shares.conf')
        with open(shares, 'w') as f:
            f.write('localhost:%s\n' % self.share)
        for name, value in (('nfs_shares_config', shares),
                            ('nfs_qcow2_volumes', True),
                            ('nfs_snapshot_support', True),
                            ('nfs_sparsed_volumes', True),
                            ('nas_secure_file_operations', 'false'),
                            ('nas_secure_file_permissions', 'false'),
                            ('snapext_local_shares', True)):
            self.override_config(name, value, group='backend_defaults')
        # Cinder's harness forbids a privsep daemon; run its privileged
        # helpers (qemu-img info's checks) in-process.
        privsep.sys_admin_pctxt.set_client_mode(False)
        self.addCleanup(privsep.sys_admin_pctxt.set_client_mode, True)

    def setUp(self):
        super().setUp()
        self.driver.do_setup(self.context)
        self.driver.set_initialized()
        self.agent = FileAgent(self)
        self.driver._agent = self.agent
        self.devices = {}
        self.group_type, self.group = self.make_group()

    def create_volume(self, size=1, **kw):
        volume = self.make_volume(self.group, status='creating', size=size,
                                  **kw)
        self.manager.create_volume(self.context, volume)
        volume = self.reload(volume)
        self.assertEqual('available', volume.status)
        return volume

    def path(self, volume):
        return self.driver.local_path(volume)

    def attach_as(self, volume, device):
        self.devices[device] = self.path(volume)
        return self.attach(volume, INSTANCE, HOST, device, {
            'export': 'localhost:%s' % self.share, 'name': volume.name,
            'format': 'qcow2'})

    def snapshot(self, volume, **kw):
        snapshot = tests_utils.create_snapshot(
            self.context, volume.id, status=fields.SnapshotStatus.CREATING,
            **kw)
        self.manager.create_snapshot(self.context, snapshot)
        return self.reload(snapshot)

    def volume_from(self, snapshot, size=1):
        new = self.make_volume(self.group, status='creating', size=size,
                               snapshot_id=snapshot.id)
        self.manager.create_volume(self.context, new)
        new = self.reload(new)
        self.assertEqual('available', new.status)
        return new

    def assert_untouched(self, volume):
        """Cinder's records still name the one volume file, unchanged."""
        self.assertFalse(os.path.exists(
            self.driver._local_path_volume_info(volume)))
        self.assertEqual([volume.name], [
            f for f in os.listdir(self.share)
            if f.startswith(volume.name)])
        self.assertIsNone(json.loads(qemu_img(
            'info', '--output=json', '-U', self.path(volume))).get(
                'backing-filename'))
        for att in volume.volume_attachment or []:
            self.assertEqual(volume.name, att.connection_info['name'])

    # -- shares, stats ------------------------------------------------------

    def test_local_share_is_used_in_place(self):
        share = 'localhost:%s' % self.share
        self.assertEqual([share], self.driver._mounted_shares)
        self.assertEqual(self.share,
                         self.driver._get_mount_point_for_share(share))
        volume = fake_volume.fake_volume_obj(self.context,
                                             provider_location=share)
        self.assertEqual(os.path.join(self.share, volume.name),
                         self.driver.local_path(volume))

    def test_stats_report_consistent_group_snapshots(self):
        stats = self.driver.get_volume_stats(refresh=True)
        self.assertTrue(stats['consistent_group_snapshot_enabled'])
        self.assertEqual('2.0.0', stats['driver_version'])

    def test_capture_spec_is_one_internal_snapshot_per_volume(self):
        volume = fake_volume.fake_volume_obj(
            self.context, provider_location='localhost:%s' % self.share)
        snapshot = fake_snapshot.fake_snapshot_obj(self.context,
                                                   volume=volume)
        spec = self.driver._capture_spec('inst', [('vdb', snapshot)],
                                         'required', 'op')
        self.assertEqual({
            'instance': 'inst', 'memory': False, 'quiesce': 'required',
            'targets': ['vdb'], 'freeze_op': 'op',
            'disk_roles': {'vdb': {'role': 'volume',
                                   'volume_id': snapshot.volume_id,
                                   'cinder_snapshot_id': snapshot.id}}},
            spec)

    # -- unattached volumes: qemu-img -------------------------------------

    def test_offline_snapshot_volume_from_it_extend_revert_delete(self):
        volume = self.create_volume()
        path = self.path(volume)
        write(path, 0x11)
        at_snapshot = digest(path)
        snapshot = self.snapshot(volume)
        self.assertEqual(fields.SnapshotStatus.AVAILABLE, snapshot.status)
        name = 'snapext-%s' % snapshot.id
        self.assertEqual(name, snapshot.provider_location)
        self.assertEqual([name], internal(path))
        write(path, 0x22, MiB)
        self.assert_untouched(self.reload(volume))

        # a volume from the snapshot holds its state and nothing else,
        # larger if asked
        new = self.volume_from(snapshot, size=2)
        new_path = self.path(new)
        self.assertEqual([], internal(new_path))
        self.assertEqual(2 << 30, json.loads(qemu_img(
            'info', '--output=json', new_path))['virtual-size'])
        qemu_img('resize', '-f', 'qcow2', '--shrink', new_path, '1G')
        self.assertEqual(at_snapshot, digest(new_path))

        # extend with the internal snapshot present (QEMU >= 5.0)
        self.driver.extend_volume(self.reload(volume), 2)
        volume.size = 2
        volume.save()
        volume = self.reload(volume)
        self.assertEqual('available', volume.status)
        self.assertEqual(2, volume.size)
        self.assertEqual([name], internal(path))
        exported = path + '.at-snapshot'
        qemu_img('convert', '-U', '-O', 'qcow2', '-l',
                 'snapshot.name=' + name, path, exported)
        self.assertTrue(holds(exported, 0x11))
        self.assertTrue(holds(exported, 0, MiB))
        os.unlink(exported)

        # Cinder's revert: the snapshot's data, the volume's size
        # (the API's part: the statuses of a revert in progress)
        volume.status = 'reverting'
        volume.save()
        snapshot.status = fields.SnapshotStatus.RESTORING
        snapshot.save()
        self.manager.revert_to_snapshot(self.context, volume, snapshot)
        snapshot = self.reload(snapshot)
        volume = self.reload(volume)
        self.assertEqual('available', volume.status)
        self.assertEqual(2 << 30, json.loads(qemu_img(
            'info', '--output=json', path))['virtual-size'])
        self.assertTrue(holds(path, 0x11))
        self.assertTrue(holds(path, 0, MiB))
        self.assertEqual([name], internal(path))

        self.manager.delete_snapshot(self.context, snapshot)
        self.assertEqual([], internal(path))
        self.assert_untouched(self.reload(volume))
        self.assertEqual([], self.agent.calls)

    def test_clone_of_unattached_volume_is_its_current_state(self):
        volume = self.create_volume()
        path = self.path(volume)
        write(path, 0x11)
        self.snapshot(volume)
        write(path, 0x22, MiB)
        clone = self.make_volume(self.group, status='creating',
                                 source_volid=volume.id)
        self.manager.create_volume(self.context, clone)
        clone = self.reload(clone)
        self.assertEqual('available', clone.status)
        self.assertEqual(digest(path), digest(self.path(clone)))
        self.assertEqual([], internal(self.path(clone)))
        self.assertEqual([], self.agent.calls)

    # -- backups: what cinder-backup reads -----------------------------------

    def backup_of(self, volume, snapshot=None):
        volume.previous_status = volume.status
        volume.status = 'backing-up'
        volume.save()
        return tests_utils.create_backup(
            self.context, volume.id,
            snapshot_id=snapshot.id if snapshot else None)

    def temporary_backup_device(self, volume, snapshot=None):
        """The device a backup reads: a temporary volume Cinder tracks."""
        backup = self.backup_of(volume, snapshot)
        device, is_snapshot = self.driver.get_backup_device(self.context,
                                                            backup)
        self.assertFalse(is_snapshot)
        self.assertNotEqual(volume.id, device.id)
        self.assertEqual(device.id, self.reload(backup).temp_volume_id)
        self.assertEqual('backing-up', device.status)
        return device

    def test_backup_of_snapshot_reads_a_temporary_export_of_it(self):
        volume = self.create_volume()
        path = self.path(volume)
        write(path, 0x11)
        snapshot = self.snapshot(volume)
        write(path, 0x22)
        device = self.temporary_backup_device(volume, snapshot)
        self.assertEqual(digest(path, 'snapext-' + snapshot.id),
                         digest(self.path(device)))
        self.assertEqual([], internal(self.path(device)))
        self.assertEqual(['snapext-' + snapshot.id], internal(path))

    def test_backup_of_volume_with_snapshots_reads_a_temporary_clone(self):
        volume = self.create_volume()
        path = self.path(volume)
        write(path, 0x11)
        self.snapshot(volume)
        write(path, 0x22, MiB)
        device = self.temporary_backup_device(volume)
        self.assertEqual(digest(path), digest(self.path(device)))
        # The backup carries the data, not the snapshot's state.
        self.assertEqual([], internal(self.path(device)))

    def test_backup_of_volume_without_snapshots_reads_it(self):
        volume = self.create_volume()
        backup = self.backup_of(volume)
        device, is_snapshot = self.driver.get_backup_device(self.context,
                                                            backup)
        self.assertEqual((volume.id, False), (device.id, is_snapshot))
        self.assertIsNone(self.reload(backup).temp_volume_id)

    def test_backup_never_attaches_a_snapshot(self):
        self.override_config('backup_use_temp_snapshot', True,
                             group='backend_defaults')
        self.assertFalse(self.driver.backup_use_temp_snapshot())
        volume = self.create_volume()
        snapshot = self.snapshot(volume)
        device, is_snapshot = self.driver.get_backup_device(
            self.context, self.backup_of(volume, snapshot))
        self.assertFalse(is_snapshot)
        self.assertNotEqual(volume.id, device.id)

    def restore(self, volume, backup_file):
        """What cinder-backup does: attach, write the bytes, detach."""
        volume.status = fields.VolumeStatus.RESTORING_BACKUP
        volume.save()
        conn = self.driver.initialize_connection(volume, {})
        target = os.path.join(self.share, conn['data']['name'])
        with open(backup_file, 'rb') as src, open(target, 'wb') as dst:
            dst.write(src.read())
        try:
            self.driver.terminate_connection(volume, {})
        finally:
            self.assertEqual([volume.name], [
                f for f in os.listdir(self.share)
                if f.startswith(volume.name)])
        return target

    def backup_file(self, fmt, pattern):
        path = os.path.join(self.share, 'backup.%s' % fmt)
        qemu_img('create', '-f', fmt, path, '1G')
        subprocess.run(['qemu-io', '-f', fmt, '-c', 'write -P %d 0 %d'
                        % (pattern, MiB), path], check=True,
                       capture_output=True)
        self.addCleanup(os.unlink, path)
        return path

    def test_restore_into_volume_with_snapshots_keeps_them(self):
        volume = self.create_volume()
        path = self.path(volume)
        write(path, 0x11)
        snapshot = self.snapshot(volume)
        before = digest(path, 'snapext-' + snapshot.id)
        write(path, 0x22, 2 * MiB)
        for fmt, pattern in (('qcow2', 0x33), ('raw', 0x44)):
            target = self.restore(volume, self.backup_file(fmt, pattern))
            self.assertNotEqual(path, target)
            self.assertTrue(holds(path, pattern))
            # The restore replaces everything, the volume's own later
            # writes included.
            self.assertTrue(holds(path, 0, 2 * MiB))
            self.assertEqual(['snapext-' + snapshot.id], internal(path))
            self.assertEqual(before, digest(path, 'snapext-' + snapshot.id))
        self.assert_untouched(volume)

    def test_restore_refuses_a_backup_naming_another_file(self):
        volume = self.create_volume()
        path = self.path(volume)
        write(path, 0x11)
        self.snapshot(volume)
        write(path, 0x22)
        backing = self.backup_file('raw', 0x55)
        crafted = os.path.join(self.share, 'crafted')
        qemu_img('create', '-f', 'qcow2', '-F', 'raw', '-b', backing,
                 crafted)
        self.addCleanup(os.unlink, crafted)
        exc = self.assertRaises(cinder_exception.VolumeDriverException,
                                self.restore, volume, crafted)
        self.assertIn('not a standalone raw or qcow2 image', str(exc))
        self.assertTrue(holds(path, 0x22))

    def test_restore_into_volume_without_snapshots_is_cinders(self):
        volume = self.create_volume()
        volume.status = fields.VolumeStatus.RESTORING_BACKUP
        conn = self.driver.initialize_connection(volume, {})
        self.assertEqual(volume.name, conn['data']['name'])

    def test_staging_file_outside_a_restore_is_dropped(self):
        volume = self.create_volume()
        write(self.path(volume), 0x11)
        staging = self.path(volume) + '.snapext-restore'
        with open(staging, 'wb') as f:
            f.write(b'\0' * 4096)
        self.driver.terminate_connection(volume, {})
        self.assertFalse(os.path.exists(staging))
        self.assertTrue(holds(self.path(volume), 0x11))

    def test_legacy_overlay_volume_refuses_new_snapshots(self):
        volume = self.create_volume()
        info = self.driver._local_path_volume_info(volume)
        with open(info, 'w') as f:
            json.dump({'active': volume.name + '.old',
                       'old': volume.name + '.old'}, f)
        snapshot = tests_utils.create_snapshot(
            self.context, volume.id, status=fields.SnapshotStatus.CREATING)
        self.assertRaises(cinder_exception.VolumeDriverException,
                          self.manager.create_snapshot, self.context,
                          snapshot)
        self.assertEqual(fields.SnapshotStatus.ERROR,
                         self.reload(snapshot).status)

    # -- attached volumes: through the agent --------------------------------

    def test_attached_snapshot_volume_from_it_clone_delete(self):
        volume = self.attach_as(self.create_volume(), 'vdb')
        path = self.path(volume)
        write(path, 0x11)
        at_snapshot = digest(path)
        snapshot = self.snapshot(volume)
        self.assertEqual(fields.SnapshotStatus.AVAILABLE, snapshot.status)
        [(method, host, spec)] = self.agent.calls
        self.assertEqual(('capture', HOST), (method, host))
        self.assertEqual(['vdb'], spec['targets'])
        self.assertNotIn('overlays', spec)
        record_id = snapshot.metadata['snapext_manifest']
        self.assertEqual('snapext-%s' % record_id, snapshot.provider_location)
        self.assertEqual({'snapext_manifest': record_id,
                          'snapext_host': HOST, 'snapext_target': 'vdb'},
                         snapshot.metadata)
        write(path, 0x22, MiB)
        self.assert_untouched(self.reload(volume))

        new = self.volume_from(snapshot)
        self.assertEqual(at_snapshot, digest(self.path(new)))

        # a clone of the attached volume: a temporary internal snapshot,
        # taken and dropped through the agent
        del self.agent.calls[:]
        clone = self.make_volume(self.group, status='creating',
                                 source_volid=volume.id)
        self.manager.create_volume(self.context, clone)
        clone = self.reload(clone)
        self.assertEqual('available', clone.status)
        self.assertEqual(['capture', 'release'],
                         [c[0] for c in self.agent.calls])
        self.assertEqual(digest(path), digest(self.path(clone)))
        self.assertEqual([snapshot.provider_location], internal(path))

        del self.agent.calls[:]
        self.manager.delete_snapshot(self.context, snapshot)
        [(method, host, spec)] = self.agent.calls
        self.assertEqual(('release', HOST), (method, host))
        self.assertEqual({'instance': INSTANCE, 'disks': [{
            'target': 'vdb', 'file': volume.name, 'volume_id': volume.id,
            'name': snapshot.provider_location}]}, spec)
        self.assertEqual([], internal(path))
        self.assert_untouched(self.reload(volume))

    def test_capture_on_the_wrong_device_is_undone(self):
        volume = self.attach_as(self.create_volume(), 'vdb')
        other = self.create_volume()
        # the guest's vdb is another file than the attachment says
        self.devices['vdb'] = self.path(other)
        snapshot = tests_utils.create_snapshot(
            self.context, volume.id, status=fields.SnapshotStatus.CREATING)
        self.assertRaises(cinder_exception.VolumeDriverException,
                          self.manager.create_snapshot, self.context,
                          snapshot)
        self.assertEqual(fields.SnapshotStatus.ERROR,
                         self.reload(snapshot).status)
        self.assertEqual(['capture', 'release'],
                         [c[0] for c in self.agent.calls])
        self.assertEqual([], internal(self.path(other)))

    def test_adopt_takes_over_a_captured_state(self):
        volume = self.attach_as(self.create_volume(), 'vda')
        path = self.path(volume)
        write(path, 0x11)
        # what nova-api's volume-backed createImage leaves: a capture
        reply = self.agent.capture(self.context.to_dict(), HOST, {
            'instance': INSTANCE, 'targets': ['vda'],
            'disk_roles': {'vda': {'volume_id': volume.id}}})
        record_id = reply['manifest']['id']
        write(path, 0x22, MiB)
        del self.agent.calls[:]

        snapshot = self.snapshot(volume, metadata={
            'snapext_adopt': record_id, 'snapext_host': HOST})
        self.assertEqual(fields.SnapshotStatus.AVAILABLE, snapshot.status)
        self.assertEqual('snapext-%s' % record_id, snapshot.provider_location)
        self.assertEqual([('adopt', HOST, {
            'snapshot_id': record_id, 'volume_id': volume.id,
            'file': volume.name, 'cinder_snapshot_id': snapshot.id})],
            self.agent.calls)
        self.assertEqual(snapshot.id, self.agent.records[record_id][
            'disks'][0]['cinder_snapshot_id'])
        self.assertNotIn('snapext_adopt', snapshot.metadata)
        self.assertEqual(record_id, snapshot.metadata['snapext_manifest'])
        self.assertEqual([snapshot.provider_location], internal(path))

        # no second owner
        second = tests_utils.create_snapshot(
            self.context, volume.id, status=fields.SnapshotStatus.CREATING,
            metadata={'snapext_adopt': record_id})
        self.assertRaises(driver.exception.AdoptFailed,
                          self.manager.create_snapshot, self.context, second)
        self.assertEqual(fields.SnapshotStatus.ERROR,
                         self.reload(second).status)
        # and nothing that is not in this volume's file
        third = tests_utils.create_snapshot(
            self.context, volume.id, status=fields.SnapshotStatus.CREATING,
            metadata={'snapext_adopt': uuidutils.generate_uuid()})
        self.assertRaises(driver.exception.AdoptFailed,
                          self.manager.create_snapshot, self.context, third)

        # a volume from the adopted snapshot holds the captured state
        new = self.volume_from(snapshot)
        self.assertEqual(digest(path, snapshot.provider_location),
                         digest(self.path(new)))
        self.manager.delete_snapshot(self.context, snapshot)
        self.assertEqual([], internal(path))
        self.assertNotIn(record_id, self.agent.records)

    # -- consistent groups ----------------------------------------------------

    def group_of(self):
        v_b = self.attach_as(self.create_volume(), 'vdb')
        v_c = self.attach_as(self.create_volume(), 'vdc')
        v_free = self.create_volume()
        return [self.reload(v) for v in (v_b, v_c, v_free)]

    def test_group_snapshot_one_capture_then_delete(self):
        volumes = self.group_of()
        group_snapshot, snapshots = self.make_group_snapshot(
            self.group_type, self.group, volumes)
        self.manager.create_group_snapshot(self.context, group_snapshot)
        self.assertEqual(fields.GroupSnapshotStatus.AVAILABLE,
                         self.reload(group_snapshot).status)
        self.assertEqual(['freeze', 'capture', 'thaw'],
                         [c[0] for c in self.agent.calls])
        snapshots = [self.reload(s) for s in snapshots]
        record_id = snapshots[0].metadata['snapext_manifest']
        self.assertEqual(record_id, snapshots[1].metadata['snapext_manifest'])
        self.assertEqual(['snapext-' + record_id] * 2,
                         [s.provider_location for s in snapshots[:2]])
        self.assertEqual('snapext-' + snapshots[2].id,
                         snapshots[2].provider_location)
        for volume, snapshot in zip(volumes, snapshots):
            self.assertEqual([snapshot.provider_location],
                             internal(self.path(volume)))
            self.assert_untouched(self.reload(volume))

        del self.agent.calls[:]
        self.manager.delete_group_snapshot(self.context,
                                           self.reload(group_snapshot))
        [(method, host, spec)] = self.agent.calls
        self.assertEqual(['vdb', 'vdc'],
                         [d['target'] for d in spec['disks']])
        for volume in volumes:
            self.assertEqual([], internal(self.path(volume)))

    def test_group_snapshot_failure_leaves_nothing(self):
        volumes = self.group_of()
        other = self.create_volume()
        # vdc of the guest is not the file the attachment says: the check
        # after the capture fails, and everything the group made goes
        self.devices['vdc'] = self.path(other)
        group_snapshot, snapshots = self.make_group_snapshot(
            self.group_type, self.group, volumes)
        e = self.assertRaises(driver.exception.GroupSnapshotFailed,
                              self.manager.create_group_snapshot,
                              self.context, group_snapshot)
        self.assertIn('names the wrong device', str(e))
        self.assertEqual(fields.GroupSnapshotStatus.ERROR,
                         self.reload(group_snapshot).status)
        for snapshot in snapshots:
            self.assertEqual(fields.SnapshotStatus.ERROR,
                             self.reload(snapshot).status)
        self.assertEqual(['freeze', 'capture', 'thaw', 'release'],
                         [c[0] for c in self.agent.calls])
        for path in [self.path(v) for v in volumes] + [self.path(other)]:
            self.assertEqual([], internal(path))

    def test_attachment_without_host_is_offline(self):
        volume = self.create_volume()
        tests_utils.attach_volume(self.context, volume.id, INSTANCE, None,
                                  '/dev/vdb')
        volume = objects.Volume.get_by_id(self.context, volume.id)
        self.assertIsNone(self.driver._attachment(volume))

    def test_a_volume_from_an_image_is_qcow2_and_takes_snapshots(self):
        volume = self.create_volume()

        def fetch_raw(drv, context, vol, *args, **kwargs):
            # what RemoteFS's fetch_to_raw leaves: a raw file
            with open(drv.local_path(vol), 'wb') as f:
                f.write(b'image data'.ljust(1 << 20, b'\0'))

        with mock.patch.object(remotefs.RemoteFSDriver,
                               'copy_image_to_volume', fetch_raw):
            self.driver.copy_image_to_volume(self.context, volume, None,
                                             'image-1')
        self.assertEqual('qcow2',
                         self.driver._image_info(self.path(volume))['format'])
        snapshot = self.snapshot(volume)
        self.assertEqual(fields.SnapshotStatus.AVAILABLE, snapshot.status)
