"""Nova's own pieces around the real libvirt driver, for real guests.

Nova's test base (NoDBTestCase), its Glance fixture and its Instance
objects, with SnapextLibvirtDriver talking to the real libvirtd.  Privileged
helpers run in-process: the tests run as root, and Nova's fixtures forbid a
privsep daemon.
"""

import os
import random
import shutil
import time

import fixtures
import libvirt
from nova.compute import power_state
from nova.compute import task_states
from nova.compute import vm_states
import nova.conf
from nova import context as nova_context
from nova.network import model as network_model
from nova import objects
import nova.privsep
from nova import test as nova_test
from nova.tests import fixtures as nova_fixtures
from nova.tests.unit import fake_instance
from nova import utils as nova_utils
from nova.virt import fake as fake_virt
from oslo_utils import uuidutils

from nova_snapext.testing import guest as guest_mod
from nova_snapext.tests.functional import base
from nova_snapext.virt import driver as snapext_driver

# Nova's base test case poisons os.uname: unit tests must not look at the
# host.  These tests run a real guest on this host, on purpose.
_REAL_UNAME = os.uname


class NovaDriverMixin(object):
    """Mixed into a NoDBTestCase; call :meth:`setUpNova` from setUp."""

    def setUpNova(self, workdir, store_path, lock_path):
        objects.register_all()
        self.useFixture(fixtures.MonkeyPatch('os.uname', _REAL_UNAME))
        self.flags(connection_uri=base.URI, virt_type='qemu',
                   snapshots_directory=os.path.join(workdir, 'snaps'),
                   group='libvirt')
        self.flags(instances_path=os.path.join(workdir, 'instances'))
        self.flags(file_store_path=store_path, lock_path=lock_path,
                   group='snapext')
        nova.privsep.sys_admin_pctxt.set_client_mode(False)
        self.addCleanup(nova.privsep.sys_admin_pctxt.set_client_mode, True)
        self.glance = self.useFixture(nova_fixtures.GlanceFixture(self))
        # The fixture drops data uploaded by update(); keep it, so the
        # image can be checked and booted.
        self.uploaded = {}
        keep_metadata = self.glance.update

        def update(context, image_id, metadata, data=None, **kwargs):
            if data is not None:
                self.uploaded[image_id] = data.read()
                self.glance._imagedata[image_id] = self.uploaded[image_id]
            return keep_metadata(context, image_id, metadata, **kwargs)

        self.glance.update = update
        self.context = nova_context.RequestContext('fake-user',
                                                   'fake-project')
        self.driver = snapext_driver.SnapextLibvirtDriver(
            fake_virt.FakeVirtAPI())
        self.task_states = []

    def update_task_state(self, task_state, expected_state=None):
        self.task_states.append((task_state, expected_state))

    def create_image(self, data=None, **properties):
        return self.glance.create(self.context, {
            'name': 'snap', 'properties': properties}, data=data)['id']


class NovaTestCase(NovaDriverMixin, nova_test.NoDBTestCase):
    USES_DB = False


class NovaGuestTestCase(NovaTestCase):
    """Servers spawned by Nova's real ``driver.spawn()`` on the real libvirtd.

    Nova fetches the kernel, ramdisk and root images from its Glance
    fixture, builds the instance's disks (qcow2 over ``_base``) and its
    domain XML, and creates the domain; the project's guest runs inside.
    Only Nova's database and network pieces are stubbed.
    """

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(900, gentle=True))
        self.conn = base._connect()
        self.addCleanup(self.conn.close)
        os.makedirs(base.WORK_ROOT, exist_ok=True)
        self.workdir = os.path.join(
            base.WORK_ROOT, '%s-%s' % (self.id().split('.')[-1][:40],
                                       uuidutils.generate_uuid()[:8]))
        os.makedirs(self.workdir)
        if not os.environ.get('SNAPEXT_KEEP_TEST_DIRS'):
            self.addCleanup(shutil.rmtree, self.workdir, True)
        self.setUpNova(self.workdir, os.path.join(self.workdir, 'store'),
                       os.path.join(self.workdir, 'locks'))
        # No database here: BDMs and ports come from these lists.
        self.bdms = {}
        self.stub_out('nova.objects.BlockDeviceMappingList.'
                      'get_by_instance_uuid',
                      lambda ctx, uuid, *a, **kw:
                      objects.BlockDeviceMappingList(
                          objects=list(self.bdms.get(uuid, []))))
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
        os.unlink(root)

    def upload(self, name, path, disk_format, **properties):
        with open(path, 'rb') as data:
            return self.glance.create(self.context, {
                'name': name, 'disk_format': disk_format,
                'container_format': disk_format if disk_format in (
                    'aki', 'ari') else 'bare',
                'size': os.path.getsize(path),
                'properties': properties}, data=data)['id']

    @staticmethod
    def flavor(name='tiny', memory_mb=256, root_gb=0, flavorid=1):
        return objects.Flavor(name=name, memory_mb=memory_mb, vcpus=1,
                              root_gb=root_gb, ephemeral_gb=0, swap=0,
                              flavorid=flavorid, extra_specs={})

    def new_instance(self, image):
        """A Nova Instance of ``image``, as the database would give it."""
        flavor = self.flavor()
        sysmeta = nova_utils.get_system_metadata_from_image(image)
        # set by nova-api when the server is created
        sysmeta['image_base_image_ref'] = image['id']
        instance = fake_instance.fake_instance_obj(
            self.context, id=random.randint(1, 0xffffff),
            uuid=uuidutils.generate_uuid(), image_ref=image['id'],
            kernel_id=image['properties']['kernel_id'],
            ramdisk_id=image['properties']['ramdisk_id'],
            flavor=flavor, memory_mb=256, vcpus=1, root_gb=0,
            host=nova.conf.CONF.host, node=nova.conf.CONF.host,
            vm_state=vm_states.BUILDING, task_state=task_states.SPAWNING,
            system_metadata=sysmeta,
            expected_attrs=['system_metadata', 'flavor'])
        # what Nova's database would lazy-load
        instance.update({
            'trusted_certs': None, 'numa_topology': None,
            'vcpu_model': None, 'migration_context': None,
            'resources': None, 'device_metadata': None,
            'old_flavor': None, 'new_flavor': None,
            'pci_requests': objects.InstancePCIRequests(requests=[]),
            'pci_devices': objects.PciDeviceList(objects=[]),
            'services': objects.ServiceList(objects=[]),
            'tags': objects.TagList(objects=[]),
            'info_cache': objects.InstanceInfoCache(
                network_info=network_model.NetworkInfo([])),
            'keypairs': objects.KeyPairList(objects=[])})
        instance.save = lambda *a, **kw: None
        return instance

    def guest_of(self, instance):
        return guest_mod.Guest(self.conn, instance.name,
                               self.instance_dir(instance),
                               uuid=instance.uuid)

    def instance_dir(self, instance):
        return os.path.join(self.workdir, 'instances', instance.uuid)

    def spawn(self, image, instance=None, block_device_info=None):
        """Spawn an instance of ``image``; return (instance, guest, s)."""
        if instance is None:
            instance = self.new_instance(image)
        guest = self.guest_of(instance)
        self.addCleanup(self.undefine, instance.name)
        image_meta = objects.ImageMeta.from_dict(image)
        started = time.monotonic()
        self.driver.spawn(self.context, instance, image_meta, [], None, {},
                          network_info=network_model.NetworkInfo([]),
                          block_device_info=block_device_info)
        instance.vm_state, instance.task_state = vm_states.ACTIVE, None
        self.wait_running(instance, guest)
        return instance, guest, time.monotonic() - started

    def wait_running(self, instance, guest, after=-1):
        guest.refresh()
        guest.wait_for_agent()
        guest.wait_for_tick(after=after)
        self.assertEqual(power_state.RUNNING,
                         self.driver.get_info(instance).state)

    def undefine(self, name):
        try:
            dom = self.conn.lookupByName(name)
        except libvirt.libvirtError:
            return
        if dom.isActive():
            dom.destroy()
        try:
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                              libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError:
            pass
