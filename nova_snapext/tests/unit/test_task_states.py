"""Task states snapext's actions leave behind after a crash."""

from unittest import mock

from nova import exception as nova_exception
from nova import objects
import testtools

from nova_snapext import task_states
from nova_snapext.tests.unit.api import fakes


class ClearStaleTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        objects.register_all()
        self.db = fakes.TaskStateDB()
        patcher = mock.patch('nova.objects.Instance.save', autospec=True,
                             side_effect=lambda inst, expected_task_state=None:
                             self.db.save(inst, expected_task_state))
        patcher.start()
        self.addCleanup(patcher.stop)

    def instances(self, *states):
        found = []
        for state in states:
            inst = fakes.instance(task_state=state)
            self.db.states[inst.uuid] = state
            found.append(inst)
        return found

    def test_only_snapext_states_are_cleared(self):
        found = self.instances('snapext_reverting', 'snapext_deleting',
                               'powering-off', None, 'image_snapshot')
        with mock.patch('nova.objects.InstanceList.get_by_host',
                        return_value=found):
            cleared = task_states.clear_stale(mock.sentinel.ctxt, 'c1')
        self.assertEqual([found[0].uuid, found[1].uuid], cleared)
        self.assertEqual([None, None, 'powering-off', None,
                          'image_snapshot'],
                         [self.db.states[i.uuid] for i in found])

    def test_a_state_changed_meanwhile_is_left(self):
        [inst] = self.instances('snapext_reverting')
        self.db.states[inst.uuid] = 'deleting'
        with mock.patch('nova.objects.InstanceList.get_by_host',
                        return_value=[inst]):
            self.assertEqual([], task_states.clear_stale(
                mock.sentinel.ctxt, 'c1'))
        self.assertEqual('deleting', self.db.states[inst.uuid])

    def test_no_database_never_stops_the_compute_service(self):
        with mock.patch('nova.objects.InstanceList.get_by_host',
                        side_effect=nova_exception.NovaException('no db')):
            self.assertEqual([], task_states.clear_stale(
                mock.sentinel.ctxt, 'c1'))
