"""Nova's own pieces around the real libvirt driver, for real guests.

Nova's test base (NoDBTestCase), its Glance fixture and its Instance
objects, with SnapextLibvirtDriver talking to the real libvirtd.  Privileged
helpers run in-process: the tests run as root, and Nova's fixtures forbid a
privsep daemon.
"""

import os

import fixtures
from nova import context as nova_context
from nova import objects
import nova.privsep
from nova import test as nova_test
from nova.tests import fixtures as nova_fixtures
from nova.virt import fake as fake_virt

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
