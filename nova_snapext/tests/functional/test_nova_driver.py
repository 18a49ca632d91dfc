"""SnapextLibvirtDriver.snapshot() on a real libvirt domain.

The domain is the project's test guest, named and identified as Nova names
its instances; the instance is a Nova Instance object; Glance is Nova's own
GlanceFixture.  The proof comes from inside the guest after reverting to
the snapshot the image points at.
"""

import random

from nova.compute import task_states
from nova import objects
from nova.tests.unit import fake_instance
from oslo_utils import uuidutils

from nova_snapext.tests.functional import base
from nova_snapext.tests.functional import interrupted
from nova_snapext.tests.functional import nova_base

VOLUMES = {'vdb': 'c0ffee00-0000-4000-8000-00000000000b',
           'vdc': 'c0ffee00-0000-4000-8000-00000000000c'}


class DriverSnapshotTest(base.GuestTestCase, nova_base.NovaTestCase,
                         interrupted.KillMixin):

    def guest_identity(self):
        self.instance_id = random.randint(1, 0xffffff)
        self.instance_uuid = uuidutils.generate_uuid()
        return 'instance-%08x' % self.instance_id, self.instance_uuid

    def setUp(self):
        super().setUp()
        self.setUpNova(self.workdir, self.conf.snapext.file_store_path,
                       self.conf.snapext.lock_path)
        self.instance = fake_instance.fake_instance_obj(
            self.context, id=self.instance_id, uuid=self.instance_uuid,
            image_ref=self.glance.image1['id'],
            system_metadata={'image_hw_qemu_guest_agent': 'yes',
                             'image_disk_format': 'qcow2'},
            expected_attrs=['system_metadata'])
        bdms = objects.BlockDeviceMappingList(objects=[
            objects.BlockDeviceMapping(
                source_type='volume', destination_type='volume',
                device_name='/dev/' + target, volume_id=volume_id,
                instance_uuid=self.instance_uuid)
            for target, volume_id in VOLUMES.items()])
        self.stub_out('nova.objects.BlockDeviceMappingList.'
                      'get_by_instance_uuid', lambda *a, **kw: bdms)

    def test_image_create_takes_a_full_snapshot_that_reverts(self):
        g = self.guest
        before = {d: g.write_file('/mnt/%s/before.bin' % d)
                  for d in g.disk_targets}
        seen = {}
        self.driver.snapext._progress = (
            lambda stage, **kw: seen.setdefault('tick', g.last_tick()[0])
            if stage == 'captured' else None)
        image_id = self.create_image(snapext_full='true')

        self.driver.snapshot(self.context, self.instance, image_id,
                             self.update_task_state)

        self.assertEqual(
            [(task_states.IMAGE_PENDING_UPLOAD, None),
             (task_states.IMAGE_UPLOADING, task_states.IMAGE_PENDING_UPLOAD)],
            self.task_states)
        image = self.glance.show(self.context, image_id)
        props = image['properties']
        self.assertEqual('active', image['status'])
        record = self.engine.store.get(props['snapext_manifest'])
        self.assertEqual('full', record['kind'])
        self.assertEqual('frozen', record['quiesce']['outcome'])
        self.assertEqual(image_id, record['image_id'])
        self.assertIn('snapext_memory', props)
        self.assertEqual('vdb=%s,vdc=%s' % (VOLUMES['vdb'], VOLUMES['vdc']),
                         props['snapext_volumes'])
        self.assertEqual({'vda': 'root', 'vdb': 'volume', 'vdc': 'volume'},
                         {d['target']: d['role'] for d in record['disks']})
        # the uploaded root disk is a standalone qcow2 that Nova can boot
        data = self.uploaded[image_id]
        self.assertEqual(b'QFI\xfb', data[:4])
        self.assertEqual(b'\0' * 8, data[8:16], 'root image has a backing')

        # the memory and disk artifacts the image points at revert the guest
        g.wait_for_tick(after=seen['tick'] + 10)
        for d in g.disk_targets:
            g.write_file('/mnt/%s/after.bin' % d)
        offset = g.console_size()
        self.engine.revert(record['id'])
        self.assertCounterContinues(offset, seen['tick'])
        for d in g.disk_targets:
            self.assertEqual(before[d], g.sha256('/mnt/%s/before.bin' % d))
            self.assertIsNone(g.sha256('/mnt/%s/after.bin' % d))

    def test_stock_snapshot_when_full_is_not_requested(self):
        image_id = self.create_image(snapext_full='false')
        self.driver.snapshot(self.context, self.instance, image_id,
                             self.update_task_state)
        props = self.glance.show(self.context, image_id)['properties']
        self.assertNotIn('snapext_manifest', props)
        self.assertEqual(b'QFI\xfb', self.uploaded[image_id][:4])
        self.assertEqual([], self.engine.list(self.guest.name))
        self.assertEqual({d: [] for d in self.guest.disk_targets},
                         self.internal_states())

    def test_compute_restart_mid_capture(self):
        """nova-compute dies after the disk states exist; init_host() recovers.

        Nova's own init_host() (CPU, host capability checks) is not what is
        under test and needs a full compute host, so it is skipped; snapext's
        part of init_host() runs for real.
        """
        self.stub_out('nova.virt.libvirt.driver.LibvirtDriver.init_host',
                      lambda driver, host: None)
        self.stub_out('nova.virt.libvirt.driver.LibvirtDriver.cleanup_host',
                      lambda driver, host: None)
        self.capture_and_kill(self.wait_for_internal_states)

        def restart():
            self.driver.init_host('compute-1')
            self.addCleanup(self.driver.cleanup_host, 'compute-1')

        self.assertRecovered(restart)
