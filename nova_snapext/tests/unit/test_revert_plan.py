"""The order of a revert, and what a failed or interrupted one turns into."""

import os

import fixtures
import testtools

from nova_snapext.capture import revert_journal
from nova_snapext.capture import revert_plan as plan
from nova_snapext.capture import save_image
from nova_snapext import manifest
from nova_snapext.tests.unit import fakes


def _phases(steps):
    return [s.phase for s in steps]


class PlanRevertTest(testtools.TestCase):

    def test_a_running_guest_is_saved_before_anything_else(self):
        self.assertEqual(['save', 'undo', 'apply', 'restore', 'finish'],
                         _phases(plan.plan_revert(True, True)))

    def test_without_the_fallback_it_is_destroyed(self):
        self.assertEqual(['destroy', 'undo', 'apply', 'restore', 'finish'],
                         _phases(plan.plan_revert(True, False)))

    def test_a_stopped_guest_has_no_memory_to_save(self):
        self.assertEqual('destroy', plan.plan_revert(False, True)[0].phase)

    def test_reached(self):
        self.assertFalse(plan.reached(None, plan.UNDO))
        self.assertFalse(plan.reached(plan.SAVE, plan.UNDO))
        self.assertFalse(plan.reached(plan.DESTROY, plan.UNDO))
        self.assertTrue(plan.reached(plan.APPLY, plan.UNDO))
        self.assertTrue(plan.reached(plan.RESTORE, plan.RESTORE))


def _imported(**kw):
    """s1 imported from a bundle: its state is a file in the store."""
    record = fakes.record('s1', imported={'at': 'x', 'since': None}, **kw)
    record['disks'][0]['path'] = '/store/i/s1/disks/vda.qcow2'
    return record


class PlanApplyTest(testtools.TestCase):

    def test_a_snapshot_applies_its_own_states(self):
        record = fakes.record('s1')
        files = plan.revert_files(record, {'vda': '/elsewhere'})
        self.assertEqual({'vda': '/srv/i/s1-vda'}, files)
        self.assertEqual([plan.ApplyState('/srv/i/s1-vda', 'snapext-s1')],
                         plan.plan_apply(record, files))

    def test_an_imported_state_is_written_into_the_live_file(self):
        record = _imported()
        files = plan.revert_files(record, {'vda': '/i/disk'})
        # the disk stays on the file Nova names
        self.assertEqual({'vda': '/i/disk'}, files)
        self.assertEqual(
            [plan.WriteState('/store/i/s1/disks/vda.qcow2', 'snapext-s1',
                             '/i/disk')],
            plan.plan_apply(record, files))

    def test_every_disk_of_the_record_is_written(self):
        record = _imported()
        record['disks'].append(dict(record['disks'][0], target='vdb',
                                    path='/store/i/s1/disks/vdb.qcow2'))
        steps = plan.plan_apply(record, plan.revert_files(
            record, {'vda': '/i/disk', 'vdb': '/v/volume-1'}))
        self.assertEqual(['/i/disk', '/v/volume-1'],
                         [s.dest for s in steps])

    def test_an_imported_state_is_never_written_over_itself(self):
        record = _imported()
        self.assertRaises(ValueError, plan.plan_apply, record,
                          {'vda': record['disks'][0]['path']})


class PlanFailureTest(testtools.TestCase):
    """A step raised; the revert gives the guest back before it reports."""

    def test_failed_restore_with_a_save_resumes_the_guest_as_it_was(self):
        r = plan.plan_failure(plan.RESTORE, active=False, save_complete=True,
                              undo_everywhere=True, was_active=True)
        self.assertEqual(plan.ROLLED_BACK, r.outcome)
        self.assertEqual([plan.APPLY_UNDO, plan.RESTORE_SAVE, plan.DISCARD],
                         r.steps)

    def test_failed_restore_without_a_save_boots_the_previous_disks(self):
        r = plan.plan_failure(plan.RESTORE, False, False, True, True)
        self.assertEqual(plan.REBOOTED, r.outcome)
        self.assertEqual([plan.APPLY_UNDO, plan.BOOT, plan.DISCARD],
                         r.steps)

    def test_a_guest_that_was_shut_off_stays_shut_off(self):
        r = plan.plan_failure(plan.RESTORE, False, False, True, False)
        self.assertEqual([plan.APPLY_UNDO, plan.DISCARD], r.steps)

    def test_disks_untouched_need_no_undo(self):
        r = plan.plan_failure(plan.UNDO, False, True, False, True)
        self.assertEqual(plan.ROLLED_BACK, r.outcome)
        self.assertEqual([plan.RESTORE_SAVE, plan.DISCARD], r.steps)

    def test_a_save_that_failed_left_the_guest_running(self):
        r = plan.plan_failure(plan.SAVE, True, False, False, True)
        self.assertEqual(plan.ABANDONED, r.outcome)
        self.assertEqual([plan.DISCARD], r.steps)

    def test_an_error_after_the_restore_took_effect_is_a_success(self):
        # e.g. libvirtd restarted while it answered restoreFlags
        r = plan.plan_failure(plan.RESTORE, True, True, True, True)
        self.assertEqual(plan.FINISHED, r.outcome)
        self.assertEqual([plan.FINISH], r.steps)

    def test_changed_disks_without_undo_are_left_alone(self):
        r = plan.plan_failure(plan.APPLY, False, True, False, True)
        self.assertEqual(plan.STUCK, r.outcome)
        self.assertEqual([], r.steps)


class PlanRecoveryTest(testtools.TestCase):
    """The reverting process died; recover() finds its journal."""

    def test_killed_after_the_save_rolls_back_with_the_ram(self):
        for phase in (plan.SAVE, plan.UNDO):
            r = plan.plan_recovery(phase, False, True, False)
            self.assertEqual(plan.ROLLED_BACK, r.outcome)
            self.assertEqual([plan.RESTORE_SAVE, plan.DISCARD], r.steps)

    def test_killed_after_applying_rolls_back_the_disks_too(self):
        for phase in (plan.APPLY, plan.RESTORE):
            r = plan.plan_recovery(phase, False, True, True)
            self.assertEqual(
                [plan.APPLY_UNDO, plan.RESTORE_SAVE, plan.DISCARD], r.steps)

    def test_killed_during_the_restore_finishes(self):
        # libvirtd completes the restore without its caller; the guest
        # runs from the snapshot, frozen if its image was taken frozen.
        for phase in (plan.RESTORE, plan.FINISH):
            r = plan.plan_recovery(phase, True, True, True)
            self.assertEqual(plan.FINISHED, r.outcome)
            self.assertEqual([plan.FINISH], r.steps)

    def test_killed_while_finishing_finishes_even_if_stopped_since(self):
        r = plan.plan_recovery(plan.FINISH, False, True, True)
        self.assertEqual(plan.FINISHED, r.outcome)

    def test_killed_before_the_save_completed(self):
        r = plan.plan_recovery(plan.SAVE, True, False, False)
        self.assertEqual(plan.ABANDONED, r.outcome)

    def test_without_a_save_the_revert_is_completed(self):
        for phase in (plan.DESTROY, plan.UNDO, plan.APPLY, plan.RESTORE):
            r = plan.plan_recovery(phase, False, False, True)
            self.assertEqual(plan.ROLLED_FORWARD, r.outcome)
            self.assertEqual([plan.UNDO, plan.APPLY, plan.RESTORE,
                              plan.FINISH], r.steps)

    def test_a_domain_started_on_half_applied_disks_is_not_touched(self):
        r = plan.plan_recovery(plan.APPLY, True, True, True)
        self.assertEqual(plan.STUCK, r.outcome)


class JournalTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.conf = fakes.conf(lock_path=self.root)

    def test_it_names_the_files_a_revert_writes(self):
        record = _imported()
        j = revert_journal.new(self.conf, object(), record, 'snapext-undo-ab',
                               {'vda': '/i/disk'}, {'/i/disk': 1}, True,
                               False)
        self.assertEqual(['/i/disk'], j['paths'])
        self.assertEqual({'vda': '/i/disk'}, revert_journal.files(j, record))
        # a journal of an older snapext reverted to the record's own files
        del j['files']
        self.assertEqual({'vda': '/store/i/s1/disks/vda.qcow2'},
                         revert_journal.files(j, record))

    def test_written_read_and_removed(self):
        record = fakes.record('s1')
        store = object()  # no local root: the journal goes under lock_path
        j = revert_journal.new(self.conf, store, record, 'snapext-undo-ab',
                               {'vda': '/d'}, {'/d': 1}, True, False)
        self.assertIsNone(revert_journal.read(self.conf, store,
                                              record['instance_uuid']))
        revert_journal.write(self.conf, store, j, plan.SAVE)
        self.assertEqual(plan.SAVE, revert_journal.read(
            self.conf, store, record['instance_uuid'])['phase'])
        open(j['save'], 'w').close()
        revert_journal.remove(self.conf, store, j)
        self.assertIsNone(revert_journal.read(self.conf, store,
                                              record['instance_uuid']))
        self.assertFalse(os.path.exists(j['save']))
        revert_journal.remove(self.conf, store, j)  # twice is harmless


class SaveImageCompleteTest(testtools.TestCase):

    def test_partial_and_complete_headers(self):
        d = self.useFixture(fixtures.TempDir()).path
        partial = os.path.join(d, 'p')
        with open(partial, 'wb') as f:
            f.write(b'LibvirtQemudPart' + b'\0' * 100)
        complete = os.path.join(d, 'c')
        with open(complete, 'wb') as f:
            f.write(b'LibvirtQemudSave' + b'\0' * 100)
        self.assertFalse(save_image.is_complete(partial))
        self.assertTrue(save_image.is_complete(complete))
        self.assertFalse(save_image.is_complete(os.path.join(d, 'none')))


class HistoryTest(testtools.TestCase):

    def test_history_is_valid_and_bounded(self):
        record = fakes.record('s1')
        for i in range(manifest.HISTORY_KEPT + 5):
            manifest.add_history(record, 'reverted', 'n%d' % i, now='t')
        manifest.validate(record)
        self.assertEqual(manifest.HISTORY_KEPT, len(record['history']))
        self.assertEqual('n%d' % (manifest.HISTORY_KEPT + 4),
                         record['history'][-1]['detail'])
