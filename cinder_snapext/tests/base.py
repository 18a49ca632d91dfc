"""Cinder's own sqlite-backed test case, set up for a group snapshot.

Uses the harness Cinder ships in its wheel (cinder.tests.unit): a real
VolumeManager with the driver under test, real objects in sqlite, the real
group type / group / group snapshot records.
"""

from cinder import context
from cinder import objects
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as tests_utils
from cinder.volume import group_types
from cinder.volume import manager
from oslo_config import cfg

CONF = cfg.CONF
CONSISTENT = {'consistent_group_snapshot_enabled': '<is> True'}


class GroupTestCase(test.TestCase):
    """Builds records; subclasses set ``volume_driver`` (a class path)."""

    volume_driver = None

    def setUp(self):
        super().setUp()
        self.configure()
        self.manager = manager.VolumeManager(volume_driver=self.volume_driver)
        self.driver = self.manager.driver
        # What init_host would have gathered (as Cinder's own tests do).
        self.manager.stats = {'allocated_capacity_gb': 0, 'pools': {}}
        self.context = context.get_admin_context()
        self.context.user_id = fake.USER_ID
        self.context.project_id = fake.PROJECT_ID

    def configure(self):
        """Hook: more overrides before the manager builds the driver."""

    def make_group(self, consistent=True):
        group_type = group_types.create(
            self.context, 'snapext-%s' % ('cg' if consistent else 'plain'),
            group_specs=CONSISTENT if consistent else {})
        group = tests_utils.create_group(
            self.context, group_type_id=group_type['id'],
            volume_type_ids=[self.vt['id']], host=CONF.host)
        return group_type, group

    def make_volume(self, group, **kw):
        return tests_utils.create_volume(
            self.context, group_id=group.id, volume_type_id=self.vt['id'],
            host=CONF.host, **kw)

    def attach(self, volume, instance_uuid, host, device, connection_info):
        tests_utils.attach_volume(self.context, volume.id, instance_uuid,
                                  host, '/dev/%s' % device)
        volume = objects.Volume.get_by_id(self.context, volume.id)
        attachment = volume.volume_attachment[0]
        attachment.connection_info = connection_info
        attachment.save()
        volume.status = 'in-use'
        volume.save()
        return objects.Volume.get_by_id(self.context, volume.id)

    def make_group_snapshot(self, group_type, group, volumes):
        group_snapshot = tests_utils.create_group_snapshot(
            self.context, group.id, group_type_id=group_type['id'])
        snapshots = [tests_utils.create_snapshot(
            self.context, v.id, group_snapshot_id=group_snapshot.id,
            status=fields.SnapshotStatus.CREATING) for v in volumes]
        return group_snapshot, snapshots

    def reload(self, obj):
        return type(obj).get_by_id(self.context, obj.id)
