"""The mixin on another backend: freeze all -> native snapshot -> thaw all.

The backend here is Cinder's own fake driver (a backend whose snapshot is
crash-consistent); the mixin makes it application-consistent.  Driven
through Cinder's real VolumeManager.create_group_snapshot; the agents are
replaced by a recorder (the real agent over RabbitMQ is in the functional
tests).
"""

from unittest import mock

from cinder import exception as cinder_exception
from cinder.objects import fields
from cinder.tests import fake_driver

from cinder_snapext import consistency
from cinder_snapext import exception
from cinder_snapext.tests import base
from nova_snapext import exception as snapext_exception

EVENTS = []
I1 = '11111111-1111-4111-8111-111111111111'
I2 = '22222222-2222-4222-8222-222222222222'
I9 = '99999999-9999-4999-8999-999999999999'


class ConsistentFakeDriver(consistency.ConsistentGroupSnapshotMixin,
                           fake_driver.FakeLoggingVolumeDriver):

    def create_snapshot(self, snapshot):
        EVENTS.append(('snapshot', snapshot.volume_id))
        if snapshot.volume.display_name == 'broken':
            raise RuntimeError('backend snapshot failed')

    def delete_snapshot(self, snapshot):
        EVENTS.append(('delete', snapshot.volume_id))


class RecordingAgent(object):

    def __init__(self, fail_freeze_on=None):
        self.fail_freeze_on = fail_freeze_on

    def freeze(self, ctxt, host, instances, timeout_ms):
        if host == self.fail_freeze_on:
            raise snapext_exception.QuiesceRequired('guest agent of %s '
                                                    'is down' % instances)
        EVENTS.append(('freeze', host, tuple(instances)))
        return {'op_id': 'op-%s' % host, 'timeout_ms': timeout_ms,
                'instances': {i: {} for i in instances}}

    def thaw(self, ctxt, host, instances):
        EVENTS.append(('thaw', host, tuple(instances)))
        return {'instances': {i: {'thawed_by': 'caller', 'frozen_ms': 12.5}
                              for i in instances}}


class MixinTest(base.GroupTestCase):

    volume_driver = __name__ + '.ConsistentFakeDriver'

    def setUp(self):
        super().setUp()
        del EVENTS[:]
        self.agent = RecordingAgent()
        self.driver._agent = self.agent
        self.driver.set_initialized()
        self.group_type, self.group = self.make_group()
        self.v1 = self.attach(self.make_volume(self.group), I1,
                              'compute-1', 'vdb', {})
        self.v2 = self.attach(self.make_volume(self.group), I2,
                              'compute-2', 'vdb', {})
        self.v3 = self.make_volume(self.group)

    def snapshot_group(self, group_type=None):
        group_snapshot, snapshots = self.make_group_snapshot(
            group_type or self.group_type, self.group,
            [self.v1, self.v2, self.v3])
        return group_snapshot, snapshots

    def test_freeze_native_snapshot_thaw_order(self):
        group_snapshot, snapshots = self.snapshot_group()
        self.manager.create_group_snapshot(self.context, group_snapshot)
        self.assertEqual([
            ('snapshot', self.v3.id),           # unattached: before freeze
            ('freeze', 'compute-1', (I1,)),
            ('freeze', 'compute-2', (I2,)),
            ('snapshot', self.v1.id),
            ('snapshot', self.v2.id),
            ('thaw', 'compute-1', (I1,)),
            ('thaw', 'compute-2', (I2,)),
        ], EVENTS)
        self.assertEqual(fields.GroupSnapshotStatus.AVAILABLE,
                         self.reload(group_snapshot).status)
        for snapshot in snapshots:
            self.assertEqual(fields.SnapshotStatus.AVAILABLE,
                             self.reload(snapshot).status)
        self.assertEqual('12.5', self.reload(snapshots[0]).metadata[
            'snapext_frozen_ms'])

    def test_backend_failure_thaws_and_undoes(self):
        self.v2.display_name = 'broken'
        self.v2.save()
        group_snapshot, snapshots = self.snapshot_group()
        e = self.assertRaises(exception.GroupSnapshotFailed,
                              self.manager.create_group_snapshot,
                              self.context, group_snapshot)
        self.assertIn('RuntimeError: backend snapshot failed', str(e))
        self.assertEqual(('thaw', 'compute-1', (I1,)), EVENTS[-4])
        self.assertEqual(('thaw', 'compute-2', (I2,)), EVENTS[-3])
        # what was made is removed, newest first
        self.assertEqual([('delete', self.v1.id), ('delete', self.v3.id)],
                         EVENTS[-2:])
        self.assertEqual(fields.GroupSnapshotStatus.ERROR,
                         self.reload(group_snapshot).status)
        for snapshot in snapshots:
            self.assertEqual(fields.SnapshotStatus.ERROR,
                             self.reload(snapshot).status)

    def test_freeze_failure_thaws_the_frozen(self):
        self.agent.fail_freeze_on = 'compute-2'
        group_snapshot, _ = self.snapshot_group()
        e = self.assertRaises(exception.GroupSnapshotFailed,
                              self.manager.create_group_snapshot,
                              self.context, group_snapshot)
        self.assertIn('guest agent of', str(e))
        self.assertIn(('thaw', 'compute-1', (I1,)), EVENTS)
        self.assertNotIn(('snapshot', self.v1.id), EVENTS)
        self.assertEqual(fields.GroupSnapshotStatus.ERROR,
                         self.reload(group_snapshot).status)

    def test_group_type_without_the_flag_takes_the_generic_path(self):
        plain_type, _ = self.make_group(consistent=False)
        group_snapshot, snapshots = self.snapshot_group(plain_type)
        with mock.patch.object(self.agent, 'freeze') as freeze:
            self.manager.create_group_snapshot(self.context, group_snapshot)
        freeze.assert_not_called()
        self.assertEqual(
            sorted(('snapshot', v.id) for v in (self.v1, self.v2, self.v3)),
            sorted(EVENTS))
        self.assertEqual(fields.GroupSnapshotStatus.AVAILABLE,
                         self.reload(group_snapshot).status)

    def test_plan_refuses_multiattach(self):
        group_snapshot, snapshots = self.snapshot_group()
        self.attach(self.v1, I9, 'compute-9', 'vdc', {})
        snapshots = [self.reload(s) for s in snapshots]
        self.assertRaises(cinder_exception.VolumeDriverException,
                          consistency.plan, snapshots)
