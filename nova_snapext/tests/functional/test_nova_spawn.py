"""Fast clone through Nova: spawn() from a full-snapshot image resumes.

Everything is Nova's real spawn path on the real libvirtd: Nova fetches the
kernel, ramdisk and root images from its Glance fixture, builds the
instance's disks and domain XML, and creates the domain; the project's
guest runs inside.  Instance A boots cold from a plain image; ``nova
image-create`` of A gives a full-snapshot image; instance B boots from it
and must continue A's counter and see A's files.
"""

import os
import random
import shutil
import time

import libvirt
from nova.compute import power_state
from nova.network import model as network_model
from nova import objects
from nova.tests.unit import fake_instance
from nova import utils as nova_utils
from oslo_utils import uuidutils
import testtools

from nova_snapext.testing import guest as guest_mod
from nova_snapext.tests.functional import base
from nova_snapext.tests.functional import nova_base


class SpawnFromSnapshotTest(nova_base.NovaTestCase):

    def setUp(self):
        super().setUp()
        self.conn = base._connect()
        self.addCleanup(self.conn.close)
        os.makedirs(base.WORK_ROOT, exist_ok=True)
        self.workdir = os.path.join(base.WORK_ROOT,
                                    'spawn-%s' % uuidutils.generate_uuid())
        os.makedirs(self.workdir)
        self.addCleanup(shutil.rmtree, self.workdir, True)
        self.setUpNova(self.workdir, os.path.join(self.workdir, 'store'),
                       os.path.join(self.workdir, 'locks'))
        # No database here: the instance has no volumes and no ports.
        self.stub_out('nova.objects.BlockDeviceMappingList.'
                      'get_by_instance_uuid',
                      lambda *a, **kw: objects.BlockDeviceMappingList())
        self.stub_out('nova.objects.VirtualInterfaceList.'
                      'get_by_instance_uuid',
                      lambda *a, **kw: objects.VirtualInterfaceList())
        self.stub_out('nova.objects.ShareMappingList.get_by_instance_uuid',
                      lambda *a, **kw: objects.ShareMappingList(objects=[]))
        image_dir = guest_mod.build_image()
        kernel = self.upload('kernel', os.path.join(image_dir, 'vmlinuz'),
                             'aki')
        ramdisk = self.upload('ramdisk',
                              os.path.join(image_dir, 'initrd.img'), 'ari')
        root = os.path.join(self.workdir, 'root.qcow2')
        guest_mod.make_disk(root)
        self.image = self.glance.show(self.context, self.upload(
            'root', root, 'qcow2', kernel_id=kernel, ramdisk_id=ramdisk,
            os_command_line='console=ttyS0 quiet panic=-1',
            hw_qemu_guest_agent='yes'))

    def upload(self, name, path, disk_format, **properties):
        with open(path, 'rb') as data:
            return self.glance.create(self.context, {
                'name': name, 'disk_format': disk_format,
                'container_format': disk_format if disk_format in (
                    'aki', 'ari') else 'bare',
                'size': os.path.getsize(path),
                'properties': properties}, data=data)['id']

    def spawn(self, image):
        """Spawn an instance of ``image``; return (guest, seconds)."""
        instance_id = random.randint(1, 0xffffff)
        flavor = objects.Flavor(name='tiny', memory_mb=256, vcpus=1,
                                root_gb=0, ephemeral_gb=0, swap=0, flavorid=1,
                                extra_specs={})
        instance = fake_instance.fake_instance_obj(
            self.context, id=instance_id,
            uuid=uuidutils.generate_uuid(), image_ref=image['id'],
            kernel_id=image['properties']['kernel_id'],
            ramdisk_id=image['properties']['ramdisk_id'],
            flavor=flavor, memory_mb=256, vcpus=1, root_gb=0,
            system_metadata=nova_utils.get_system_metadata_from_image(image),
            expected_attrs=['system_metadata', 'flavor'])
        # what Nova's database would lazy-load
        instance.update({
            'trusted_certs': None, 'numa_topology': None,
            'vcpu_model': None, 'migration_context': None,
            'resources': None, 'device_metadata': None,
            'pci_requests': objects.InstancePCIRequests(requests=[]),
            'pci_devices': objects.PciDeviceList(objects=[]),
            'services': objects.ServiceList(objects=[]),
            'tags': objects.TagList(objects=[]),
            'info_cache': objects.InstanceInfoCache(
                network_info=network_model.NetworkInfo([])),
            'keypairs': objects.KeyPairList(objects=[])})
        instance.save = lambda *a, **kw: None
        instance_dir = os.path.join(self.workdir, 'instances', instance.uuid)
        guest = guest_mod.Guest(self.conn, instance.name, instance_dir)
        self.addCleanup(self.undefine, instance.name)
        image_meta = objects.ImageMeta.from_dict(image)
        started = time.monotonic()
        self.driver.spawn(self.context, instance, image_meta, [], None, {},
                          network_info=network_model.NetworkInfo([]))
        guest.refresh()
        guest.wait_for_agent()
        guest.wait_for_tick()
        self.assertEqual(power_state.RUNNING,
                         self.driver.get_info(instance).state)
        return instance, guest, time.monotonic() - started

    def undefine(self, name):
        try:
            dom = self.conn.lookupByName(name)
        except libvirt.libvirtError:
            return
        if dom.isActive():
            dom.destroy()
        dom.undefine()

    def test_boot_from_full_snapshot_resumes_memory(self):
        a, guest_a, cold_s = self.spawn(self.image)
        before = guest_a.write_file('/mnt/vda/before.bin')
        seen = {}
        self.driver.snapext._progress = (
            lambda stage, **kw: seen.setdefault('tick',
                                                guest_a.last_tick()[0])
            if stage == 'captured' else None)
        snap_id = self.glance.create(self.context, {
            'name': 'a-full', 'properties': {'snapext_full': 'true'}})['id']
        self.driver.snapshot(self.context, a, snap_id,
                             self.update_task_state)
        guest_a.write_file('/mnt/vda/after.bin')
        snapshot_image = self.glance.show(self.context, snap_id)
        self.assertEqual('full',
                         snapshot_image['properties']['snapext_kind'])

        b, guest_b, resume_s = self.spawn(snapshot_image)
        self.addDetail('boot_times', testtools.content.text_content(
            'cold boot %.2f s, resumed from snapshot %.2f s'
            % (cold_s, resume_s)))
        print('cold boot %.2f s, resumed from snapshot %.2f s'
              % (cold_s, resume_s))

        first = guest_b.ticks()[0][0]
        self.assertLessEqual(abs(first - (seen['tick'] + 1)), 2,
                             'B started counting at %d, A was at %d'
                             % (first, seen['tick']))
        self.assertEqual(before, guest_b.sha256('/mnt/vda/before.bin'))
        self.assertIsNone(guest_b.sha256('/mnt/vda/after.bin'))
        self.assertEqual('thawed', guest_b.freeze_status())
        self.assertEqual(b.uuid, guest_b.dom.UUIDString())
        self.assertLess(resume_s, cold_s)
        # A runs on with its own files and console
        self.assertIsNotNone(guest_a.sha256('/mnt/vda/after.bin'))
        self.assertNotEqual(guest_a.console, guest_b.console)

    def test_plain_image_boots_cold(self):
        instance, guest, seconds = self.spawn(self.image)
        self.assertEqual(0, guest.ticks()[0][0])
