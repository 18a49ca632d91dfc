"""The rules of where disk states live and what a delete does."""

import testtools

from nova_snapext.capture import states


def _record(**kw):
    record = {'id': 'S', 'disks': [
        {'target': 'vda', 'path': '/i/disk', 'snapshot': 'snapext-S'},
        {'target': 'vdb', 'path': '/v/volume-1', 'snapshot': 'snapext-S'}]}
    record.update(kw)
    return record


CURRENT = {'vda': '/i/disk', 'vdb': '/v/volume-1'}
HELD = {'/i/disk': {'snapext-S'}, '/v/volume-1': {'snapext-S', 'other'}}


class UnavailableReasonTest(testtools.TestCase):

    def test_available_when_every_disk_holds_its_state(self):
        self.assertIsNone(states.unavailable_reason(_record(), CURRENT,
                                                    HELD))

    def test_a_mark_wins(self):
        record = _record(status={'reason': 'migrated to host-b',
                                 'since': 'x'})
        self.assertEqual('migrated to host-b',
                         states.unavailable_reason(record, CURRENT, HELD))

    def test_file_gone(self):
        reason = states.unavailable_reason(
            _record(), CURRENT, {'/i/disk': {'snapext-S'}})
        self.assertIn('vdb: /v/volume-1 no longer exists', reason)

    def test_disk_replaced(self):
        # rebuild, resize confirm: the same name, a new file
        reason = states.unavailable_reason(
            _record(), CURRENT, dict(HELD, **{'/i/disk': set()}))
        self.assertIn('vda: /i/disk no longer holds', reason)

    def test_no_domain(self):
        self.assertIn('no domain', states.unavailable_reason(
            _record(), None, HELD))

    def test_volume_detached_or_attached_since(self):
        reason = states.unavailable_reason(
            _record(), {'vda': '/i/disk'}, HELD)
        self.assertIn('covers disks vda, vdb, the instance now has vda',
                      reason)
        reason = states.unavailable_reason(
            _record(), dict(CURRENT, vdc='/v/x'), HELD)
        self.assertIn('attach or detach', reason)

    def test_a_partial_snapshot_need_not_cover_every_disk(self):
        record = _record(partial=True)
        self.assertIsNone(states.unavailable_reason(
            record, dict(CURRENT, vdc='/v/x'), HELD))
        self.assertIn('covers disks', states.unavailable_reason(
            record, {'vda': '/i/disk'}, HELD))

    def test_disk_runs_on_another_file(self):
        # e.g. a Cinder snapshot put an overlay on top of the volume
        reason = states.unavailable_reason(
            _record(), dict(CURRENT, vdb='/v/volume-1.cafe'), HELD)
        self.assertIn('vdb now runs on /v/volume-1.cafe', reason)

    def test_an_imported_snapshot_is_written_into_the_live_files(self):
        # its states are files in the store, not the files the disks run
        # on: only the disk set and each size must match
        record = _record(imported={'at': 'x', 'since': None})
        sizes = {'vda': 1 << 30, 'vdb': 1 << 30}
        for disk in record['disks']:
            disk['virtual_size'] = 1 << 30
        live = {'vda': '/live/disk', 'vdb': '/live/volume-1'}
        self.assertIsNone(states.unavailable_reason(record, live, HELD,
                                                    sizes))
        reason = states.unavailable_reason(record, live, HELD,
                                           dict(sizes, vdb=2 << 30))
        self.assertIn('disk vdb is 2147483648 bytes now, its imported '
                      'state 1073741824', reason)
        self.assertIn('attach or detach', states.unavailable_reason(
            record, {'vda': '/live/disk'}, HELD, {'vda': 1 << 30}))
        self.assertIn('no longer holds', states.unavailable_reason(
            record, live, dict(HELD, **{'/i/disk': set()}), sizes))


class PlanDeleteTest(testtools.TestCase):

    def test_live_and_offline(self):
        steps = states.plan_delete(
            states.record_states(_record()), {'vda': '/i/disk'}, HELD)
        self.assertEqual(
            [states.DeleteLive('vda', '/i/disk', 'snapext-S'),
             states.DeleteOffline('/v/volume-1', 'snapext-S')], steps)

    def test_a_state_cinder_owns_is_left_to_cinder(self):
        record = _record()
        record['disks'][1]['cinder_snapshot_id'] = 'cs-1'
        self.assertEqual([('/i/disk', 'snapext-S')],
                         states.record_states(record))

    def test_state_already_gone_needs_nothing(self):
        steps = states.plan_delete(
            states.record_states(_record()), {},
            {'/i/disk': set(), '/v/volume-1': {'snapext-S'}})
        self.assertEqual(
            [states.DeleteOffline('/v/volume-1', 'snapext-S')], steps)


class OrphansAndCurrentTest(testtools.TestCase):

    def test_orphans_are_unrecorded_snapext_states_only(self):
        held = {'/i/disk': {'snapext-S', 'snapext-T', 'snapext-undo-1a',
                            'operator-own'}}
        self.assertEqual([('/i/disk', 'snapext-T')],
                         states.orphan_states(held, {'snapext-S'}))

    def test_current_is_the_head_while_available(self):
        by_id = {'S': {}, 'T': {}}
        self.assertEqual('S', states.current_snapshot('S', by_id,
                                                      {'S': None}))
        self.assertIsNone(states.current_snapshot('S', by_id,
                                                  {'S': 'disk replaced'}))
        self.assertIsNone(states.current_snapshot('gone', by_id, {}))
        self.assertIsNone(states.current_snapshot(None, by_id, {}))


class SizesToKeepTest(testtools.TestCase):

    def test_a_disk_extended_since_the_snapshot_grows_back(self):
        self.assertEqual({'/v': 128}, states.sizes_to_keep(
            {'/v': 128, '/d': 64}, {'/v': 64, '/d': 64}))

    def test_nothing_shrinks_and_nothing_else_changes(self):
        self.assertEqual({}, states.sizes_to_keep({'/v': 64}, {'/v': 128}))
        self.assertEqual({}, states.sizes_to_keep({'/v': 64}, {'/v': 64}))
