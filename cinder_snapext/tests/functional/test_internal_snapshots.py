"""Cinder's own operations on a volume with a snapext full snapshot.

The real guest with two snapext volumes, the real agent in another process
over RabbitMQ, Cinder's real VolumeManager.  The full snapshot is the
capture Nova's driver makes for ``nova image-create`` (memory, the root
disk and every volume at one instant, through the same agent and engine);
Cinder's snapshot, volume-from-snapshot, clone and delete follow, then a
revert to the full snapshot, then a detach and an attach to another server
the way Nova attaches a Cinder NFS volume (the file Cinder's
``initialize_connection`` names).  Every check of data is a sha256 from
inside a guest, or of the file system inside the volume file.
"""

import glob
import json
import os
import uuid

from cinder.objects import fields
from cinder.tests.unit import utils as tests_utils
import libvirt
from xml.sax import saxutils

from cinder_snapext.tests.functional import base
from nova_snapext.testing import guest as guest_mod


class InternalSnapshotTest(base.CinderGuestTestCase):

    def full_snapshot(self):
        """The capture SnapextLibvirtDriver.snapshot() asks the engine for."""
        v_b, v_c = self.volumes[:2]
        return self.agent_api.capture(self.context.to_dict(), self.host, {
            'instance': self.guest.dom.UUIDString(), 'memory': True,
            'quiesce': 'preferred', 'targets': None,
            'disk_roles': {'vda': {'role': 'root'},
                           'vdb': {'role': 'volume', 'volume_id': v_b.id},
                           'vdc': {'role': 'volume', 'volume_id': v_c.id}},
            'extra': {'nova': {'flavor': 'test'}}})['manifest']

    def snapshot(self, volume):
        snapshot = tests_utils.create_snapshot(
            self.context, volume.id, status=fields.SnapshotStatus.CREATING)
        self.manager.create_snapshot(self.context, snapshot)
        snapshot = self.reload(snapshot)
        self.assertEqual(fields.SnapshotStatus.AVAILABLE, snapshot.status)
        return snapshot

    def test_cinder_operations_then_detach_attach_after_a_full_snapshot(self):
        g = self.guest
        self.agent_api = self.driver._agent_api()
        v_b = self.volumes[0]
        before = g.write_file('/mnt/vdb/before.bin')

        full = self.full_snapshot()
        self.assertEqual('full', full['kind'])
        self.assertEqual(['snapext-' + full['id']], self.internal(v_b))
        self.assert_untouched(self.reload(v_b))
        after = g.write_file('/mnt/vdb/after.bin')

        # A Cinder snapshot of the attached volume: another internal
        # snapshot, taken through the agent
        snap = self.snapshot(v_b)
        self.assertEqual(['snapext-' + full['id'], snap.provider_location],
                         self.internal(v_b))
        self.assertEqual(self.host, snap.metadata['snapext_host'])
        self.assert_untouched(self.reload(v_b))
        later = g.write_file('/mnt/vdb/later.bin')

        # A volume from it holds the snapshot's instant
        from_snap = self.create_volume(snapshot_id=snap.id)
        path = self.driver.local_path(from_snap)
        self.assertEqual(before, base.guest_file_sha256(path, '/before.bin'))
        self.assertEqual(after, base.guest_file_sha256(path, '/after.bin'))
        self.assertIsNone(base.guest_file_sha256(path, '/later.bin'))
        self.assertEqual([], self.driver.internal_snapshots(from_snap))

        # A clone of the attached volume holds its current state, through
        # a temporary internal snapshot the agent takes and drops
        clone = self.make_volume(self.group, status='creating',
                                 source_volid=v_b.id)
        self.manager.create_volume(self.context, clone)
        clone = self.reload(clone)
        self.assertEqual('available', clone.status)
        path = self.driver.local_path(clone)
        self.assertEqual(later, base.guest_file_sha256(path, '/later.bin'))
        self.assertEqual([], self.driver.internal_snapshots(clone))
        self.assertEqual(['snapext-' + full['id'], snap.provider_location],
                         self.internal(v_b))

        # Deleting the Cinder snapshot drops it live; the guest keeps every
        # byte and the full snapshot stays revertable
        self.manager.delete_snapshot(self.context, snap)
        self.assertEqual(['snapext-' + full['id']], self.internal(v_b))
        for name, digest in (('before', before), ('after', after),
                             ('later', later)):
            self.assertEqual(digest, g.sha256('/mnt/vdb/%s.bin' % name))

        self.agent_api.revert(self.context.to_dict(), self.host,
                              {'snapshot_id': full['id']})
        g.refresh()
        g.wait_for_agent()
        self.assertEqual(before, g.sha256('/mnt/vdb/before.bin'))
        self.assertIsNone(g.sha256('/mnt/vdb/after.bin'))
        self.assertIsNone(g.sha256('/mnt/vdb/later.bin'))
        self.assert_untouched(self.reload(v_b))

        # A Cinder snapshot now, then every byte written after it survives
        # a detach and an attach to another server
        snap2 = self.snapshot(v_b)
        kept = g.write_file('/mnt/vdb/kept.bin')
        self.detach_and_stop(v_b)
        g2 = self.attach_to_new_server(v_b, 'vdb')
        self.assertEqual(kept, g2.sha256('/mnt/vdb/kept.bin'))
        self.assertEqual(before, g2.sha256('/mnt/vdb/before.bin'))
        # and the snapshot taken on the first server is deleted through the
        # second one's QEMU
        self.manager.delete_snapshot(self.context, self.reload(snap2))
        self.assertEqual(['snapext-' + full['id']], self.internal(v_b))
        self.assertEqual(kept, g2.sha256('/mnt/vdb/kept.bin'))
        g2.write_file('/mnt/vdb/still-writable.bin')

    def detach_and_stop(self, volume):
        """Nova's detach: the server stops, the attachment ends."""
        self.guest.dom.destroy()
        self.guest.dom.detachDeviceFlags(
            guest_mod.DISK_XML.format(
                path=saxutils.escape(self.driver.local_path(volume)),
                dev='vdb'),
            libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        for att in volume.volume_attachment:
            self.manager.detach_volume(self.context, volume.id, att.id)
        volume = self.reload(volume)
        self.assertEqual('available', volume.status)

    def attach_to_new_server(self, volume, dev):
        """Nova's attach of a Cinder NFS volume: the file Cinder names."""
        connection = self.driver.initialize_connection(
            volume, {'host': self.host})
        self.assertEqual('nfs', connection['driver_volume_type'])
        data = connection['data']
        self.assertEqual(volume.name, data['name'])
        self.assertEqual('qcow2', data['format'])
        path = os.path.join(self.share, data['name'])
        name = 'snapext-cinder2-%s' % uuid.uuid4().hex[:8]
        g2 = guest_mod.Guest(self.conn, name,
                             os.path.join(self.workdir, 'guest2'),
                             disks=('vda',))
        self.addCleanup(g2.destroy)
        g2.define()
        g2.dom.attachDeviceFlags(
            guest_mod.DISK_XML.format(path=saxutils.escape(path), dev=dev),
            libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        self.guest.destroy()
        g2.boot()
        self.attach(volume, g2.dom.UUIDString(), self.host, dev, data)
        return g2


class AdoptTest(base.CinderGuestTestCase):

    def test_cinder_snapshots_adopt_a_full_capture(self):
        """nova-api's volume-backed createImage, its Cinder half.

        One capture of memory and every disk, then one Cinder snapshot per
        volume that adopts the captured state; the snapext record then
        refers to Cinder's snapshots, and each side's delete keeps the
        other's state.
        """
        g = self.guest
        agent = self.driver._agent_api()
        v_b, v_c = self.volumes[:2]
        before = g.write_file('/mnt/vdb/before.bin')
        record = agent.capture(self.context.to_dict(), self.host, {
            'instance': g.dom.UUIDString(), 'memory': True,
            'quiesce': 'preferred', 'targets': None,
            'disk_roles': {'vda': {'role': 'root'},
                           'vdb': {'role': 'volume', 'volume_id': v_b.id},
                           'vdc': {'role': 'volume', 'volume_id': v_c.id}},
            'extra': {}})['manifest']
        g.write_file('/mnt/vdb/after.bin')
        adopted = {}
        for volume in (v_b, v_c):
            snapshot = tests_utils.create_snapshot(
                self.context, volume.id,
                status=fields.SnapshotStatus.CREATING,
                metadata={'snapext_adopt': record['id'],
                          'snapext_host': self.host})
            self.manager.create_snapshot(self.context, snapshot)
            snapshot = self.reload(snapshot)
            self.assertEqual(fields.SnapshotStatus.AVAILABLE,
                             snapshot.status)
            self.assertEqual('snapext-' + record['id'],
                             snapshot.provider_location)
            adopted[volume.id] = snapshot
        # no new internal snapshot: the capture's own
        self.assertEqual(['snapext-' + record['id']], self.internal(v_b))
        owners = {d['volume_id']: d['cinder_snapshot_id']
                  for d in self.agent_record(record['id'])['disks']}
        self.assertEqual({None: None, v_b.id: adopted[v_b.id].id,
                          v_c.id: adopted[v_c.id].id}, owners)

        # a volume from the adopted snapshot holds the capture's instant
        new = self.create_volume(snapshot_id=adopted[v_b.id].id)
        path = self.driver.local_path(new)
        self.assertEqual(before, base.guest_file_sha256(path, '/before.bin'))
        self.assertIsNone(base.guest_file_sha256(path, '/after.bin'))

        # deleting the snapext record (image gone, or DELETE
        # /snapext-snapshots) leaves the states Cinder owns
        agent.delete(self.context.to_dict(), self.host,
                     {'snapshot_id': record['id']})
        self.assertEqual(['snapext-' + record['id']], self.internal(v_b))
        self.assertEqual(['snapext-' + record['id']], self.internal(v_c))
        new2 = self.create_volume(snapshot_id=adopted[v_c.id].id)
        self.assertEqual([], self.driver.internal_snapshots(new2))
        # and Cinder's delete removes them, live
        for snapshot in adopted.values():
            self.manager.delete_snapshot(self.context, snapshot)
        self.assertEqual([], self.internal(v_b))
        self.assertEqual([], self.internal(v_c))
        self.assertIsNotNone(g.sha256('/mnt/vdb/after.bin'))

    def agent_record(self, record_id):
        path = os.path.join(self.agent.store_path, '*', record_id,
                            'manifest.json')
        [found] = glob.glob(path)
        with open(found) as f:
            return json.load(f)
