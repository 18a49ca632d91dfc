"""A revert that fails or dies never leaves the guest worse than it was.

Faults are injected for real: a memory image that libvirt cannot load, the
reverting process SIGKILLed at points chosen by watching the domain (or
where it stops at a reported stage), libvirtd restarted midway.  Every
proof comes from inside the guest: the counter, file checksums, the
agent's freeze status.
"""

import hashlib
import os
import threading
import time

import libvirt
import testtools

from nova_snapext.capture import revert_journal
from nova_snapext import exception
from nova_snapext.testing import libvirtd
from nova_snapext.tests.functional import base
from nova_snapext.tests.functional import interrupted

BEFORE = '/mnt/%s/before.bin'
AFTER = '/mnt/%s/after.bin'


class RevertFaultBase(base.GuestTestCase, interrupted.KillMixin):

    def keep_memory(self, keep):
        # oslo.config overrides outlive a ConfigOpts (they sit on the
        # shared Opt objects): cleared after the test.
        self.conf.set_override('revert_keeps_memory', keep, 'snapext')
        self.addCleanup(self.conf.clear_override, 'revert_keeps_memory',
                        'snapext')

    def prepare(self):
        """A full quiesced snapshot, then a guest that moved on from it.

        Returns (record, its tick, {file: sha256} of the snapshot instant,
        {file: sha256} the guest has now).  HEAD is noted as ``self.head``.
        """
        g = self.guest
        before = {BEFORE % d: g.write_file(BEFORE % d)
                  for d in ('vda', 'vdb')}
        record, tick = self.take_noting_tick(quiesce_policy='required')
        self.assertEqual('frozen', record['quiesce']['outcome'])
        g.wait_for_tick(after=tick + 15)
        now = dict(before)
        for d in ('vda', 'vdb'):
            now[AFTER % d] = g.write_file(AFTER % d)
            now[BEFORE % d] = g.write_file(BEFORE % d)
        self.head = self.engine.store.head(g.uuid)
        return record, tick, before, now

    def files(self, names):
        return {name: self.guest.sha256(name) for name in names}

    def assertAsBefore(self, record, offset, now):
        """The guest runs exactly as before the revert: RAM and disks.

        Its counter never dropped back (a restored snapshot would restart
        at the snapshot's tick, a cold boot at 0), and its files are the
        pre-revert ones.
        """
        g = self.guest
        g.refresh()
        last = g.last_tick()[0]
        g.wait_for_tick(after=last + 3, timeout=60)
        ticks = [n for n, _ in g.ticks_since(offset)]
        self.assertEqual(ticks, sorted(ticks),
                         'the counter dropped back: %s' % ticks)
        self.assertEqual(now, self.files(now))
        self.assertEqual('thawed', g.freeze_status())
        self.assertLeftNothing(record)
        self.assertEqual(self.head, self.engine.store.head(g.uuid))

    def assertFromSnapshot(self, record, offset, tick, before, now):
        """The guest runs from the snapshot's instant, thawed."""
        g = self.guest
        self.assertCounterContinues(offset, tick)
        self.assertRunningAndThawed()
        self.assertEqual('thawed', g.freeze_status())
        self.assertEqual(before, self.files(before))
        for name in now:
            if name.startswith('/mnt/') and 'after' in name:
                self.assertIsNone(g.sha256(name))
        self.assertLeftNothing(record)
        self.assertEqual(record['id'], self.engine.store.head(g.uuid))

    def assertLeftNothing(self, record):
        """No undo state, no pending save, no journal."""
        self.assertEqual({d['target']: [d['snapshot']]
                          for d in record['disks']}, self.internal_states())
        directory = revert_journal.directory(self.conf, self.engine.store,
                                             self.guest.uuid)
        self.assertEqual([], [n for n in os.listdir(directory)
                              if n.startswith('.revert')])

    def history(self, record):
        return [h['event'] for h in
                self.engine.store.get(record['id']).get('history', [])]


class FailedRestoreTest(RevertFaultBase):

    def truncate_memory(self, record):
        """Half the memory image, and a record that matches it.

        An image damaged before its checksum was taken: every check passes
        and libvirt's load fails (`error while loading state section id
        3(ram)`).
        """
        path = self.engine.store.local_path(record,
                                            record['memory']['location'])
        with open(path, 'r+b') as f:
            f.truncate(os.path.getsize(path) // 2)
        with open(path, 'rb') as f:
            record['memory']['sha256'] = hashlib.sha256(f.read()).hexdigest()
        record['memory']['bytes'] = os.path.getsize(path)
        self.engine.store.update(record)

    def test_a_memory_image_libvirt_cannot_load_gives_the_guest_back(self):
        """`error while loading state section id 3(ram)`: RAM kept."""
        record, tick, before, now = self.prepare()
        self.truncate_memory(record)
        offset = self.guest.console_size()
        self.progress[:] = []

        e = self.assertRaises(exception.RevertFailed, self.engine.revert,
                              record['id'])

        self.assertIn('resumes as it was before the revert', str(e))
        self.addDetail('error', testtools.content.text_content(str(e)))
        self.assertAsBefore(record, offset, now)
        self.assertEqual(['revert-rolled-back'], self.history(record))
        # and the guest reverts to another, intact snapshot afterwards
        good, good_tick = self.take_noting_tick(quiesce_policy='required')
        self.guest.wait_for_tick(after=good_tick + 5)
        offset = self.guest.console_size()
        self.engine.revert(good['id'])
        self.assertCounterContinues(offset, good_tick)

    def test_without_the_memory_save_it_boots_the_previous_disks(self):
        self.keep_memory(False)
        record, tick, before, now = self.prepare()
        self.truncate_memory(record)

        e = self.assertRaises(exception.RevertFailed, self.engine.revert,
                              record['id'])

        self.assertIn('boots on its previous disks', str(e))
        self.guest.wait_for_agent()
        self.assertEqual(now, self.files(now))
        self.assertLeftNothing(record)
        self.assertEqual(['revert-rebooted'], self.history(record))


class CostTest(RevertFaultBase):

    def test_with_and_without_the_fallback_point(self):
        """Both modes revert; their step timings are kept as details.

        (How long each step takes is the bench's business, not a pass/fail
        bound here.)
        """
        g = self.guest
        record, tick = self.take_noting_tick()
        timings = {}
        for keep in (True, False):
            self.keep_memory(keep)
            g.wait_for_tick(after=g.last_tick()[0] + 5)
            seen = []
            self.engine._progress = lambda stage, **kw: seen.append(
                (stage, kw))
            offset = g.console_size()
            self.engine.revert(record['id'])
            self.assertCounterContinues(offset, tick)
            done = dict(seen)['reverted']
            timings.setdefault(keep, []).append(
                {k: v for k, v in done.items() if k.endswith('_ms')})
        self.addDetail('timings', testtools.content.text_content(
            repr(timings)))
        for run in timings[True]:
            self.assertIn('save_ms', run)
        for run in timings[False]:
            self.assertIn('destroy_ms', run)


class KilledRevertTest(RevertFaultBase):
    """The reverting process is SIGKILLed; recover() at the next start."""

    def recover(self):
        done = self.engine.recover()
        self.addDetail('recovered', testtools.content.text_content(
            repr(done)))
        return done

    def test_killed_once_the_guest_is_saved(self):
        record, tick, before, now = self.prepare()
        offset = self.guest.console_size()
        self.revert_and_kill(record['id'], kill_when=lambda: (
            self.wait_for_domain(lambda s: s == libvirt.VIR_DOMAIN_SHUTOFF)))
        self.assertFalse(self.guest.dom.isActive())

        done = self.recover()

        self.assertEqual(['%s:rolled-back' % self.guest.name],
                         done['reverts'])
        self.assertAsBefore(record, offset, now)
        self.assertEqual(['revert-rolled-back'], self.history(record))

    def test_killed_after_the_disk_states_were_applied(self):
        record, tick, before, now = self.prepare()
        offset = self.guest.console_size()
        self.revert_and_kill(record['id'], pause_at='revert-apply')

        done = self.recover()

        self.assertEqual(['%s:rolled-back' % self.guest.name],
                         done['reverts'])
        self.assertAsBefore(record, offset, now)

    def test_killed_while_libvirtd_restores(self):
        record, tick, before, now = self.prepare()
        offset = self.guest.console_size()
        seen = []

        def during_restore():
            self.wait_for_domain(lambda s: s == libvirt.VIR_DOMAIN_SHUTOFF)
            self.wait_for_domain(lambda s: s != libvirt.VIR_DOMAIN_SHUTOFF)
            seen.append(self.guest.dom.state()[0])

        self.revert_and_kill(record['id'], kill_when=during_restore)

        done = self.recover()

        self.addDetail('state_at_kill', testtools.content.text_content(
            repr(seen)))
        self.assertEqual(['%s:finished' % self.guest.name], done['reverts'])
        self.assertFromSnapshot(record, offset, tick, before, now)
        self.assertEqual(['revert-finished'], self.history(record))

    def test_killed_after_the_restore_before_the_thaw(self):
        record, tick, before, now = self.prepare()
        offset = self.guest.console_size()
        self.revert_and_kill(record['id'], pause_at='revert-restore')
        # what the issue found: the snapshot's guest runs, frozen
        self.guest.wait_for_agent(60)
        self.assertEqual('frozen', self.guest.freeze_status())

        done = self.recover()

        self.assertEqual(['%s:finished' % self.guest.name], done['reverts'])
        self.assertFromSnapshot(record, offset, tick, before, now)

    def test_killed_after_a_destroy_without_memory_save(self):
        # Nothing of the guest's RAM is left: recovery completes the revert.
        self.keep_memory(False)
        record, tick, before, now = self.prepare()
        offset = self.guest.console_size()
        self.revert_and_kill(record['id'], pause_at='revert-destroy')
        self.assertFalse(self.guest.dom.isActive())

        done = self.recover()

        self.assertEqual(['%s:rolled-forward' % self.guest.name],
                         done['reverts'])
        self.assertFromSnapshot(record, offset, tick, before, now)
        self.assertEqual(['revert-rolled-forward'], self.history(record))


class LibvirtdRestartTest(RevertFaultBase):
    """libvirtd restarted midway (it disturbs every guest of the host)."""

    def reconnect(self):
        broken, self.conn = self.conn, libvirt.open(base.URI)
        broken.close()
        self.guest.conn = self.conn
        self.engine._conn = self.conn
        self.guest.refresh()

    def restart_libvirtd_during(self, operation, when):
        """Run ``operation`` in a thread; restart libvirtd at ``when()``."""
        outcome = {}

        def run():
            try:
                outcome['result'] = operation()
            except Exception as exc:
                outcome['error'] = exc

        worker = threading.Thread(target=run)
        worker.start()
        when()
        seconds = libvirtd.restart(base.URI)
        worker.join(120)
        self.assertFalse(worker.is_alive())
        self.addDetail('libvirtd_restart_s', testtools.content.text_content(
            '%.1f' % seconds))
        self.addDetail('outcome', testtools.content.text_content(
            repr(outcome)))
        self.reconnect()
        return outcome

    def at_stage(self, wanted):
        """An event set when the engine reports ``wanted``."""
        event = threading.Event()
        self.engine._progress = (
            lambda stage, **kw: event.set() if stage == wanted else None)
        return event

    def test_restarted_during_a_revert(self):
        record, tick, before, now = self.prepare()
        offset = self.guest.console_size()
        # The revert's engine has its own connection, as the agent has.
        self.engine._conn = None
        planned = self.at_stage('revert-planned')
        dom = self.guest.dom

        def when():
            # as soon as the guest stops (its memory being saved)
            planned.wait(60)
            deadline = time.monotonic() + 60
            while dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.002)

        outcome = self.restart_libvirtd_during(
            lambda: self.engine.revert(record['id']), when)

        done = self.engine.recover()
        self.addDetail('recovered', testtools.content.text_content(
            repr(done)))
        if 'error' in outcome:
            self.assertIsInstance(outcome['error'], exception.RevertFailed)
            self.assertAsBefore(record, offset, now)
        else:
            self.assertFromSnapshot(record, offset, tick, before, now)

    def test_restarted_during_a_take(self):
        self.guest.write_file(BEFORE % 'vdb')
        self.engine._conn = None
        frozen = self.at_stage('frozen')
        # The take fails (its connection broke) or completes; either way
        # recover() leaves the guest running, thawed, with no stray state.
        self.restart_libvirtd_during(
            lambda: self.engine.take(self.guest.name,
                                     quiesce_policy='required'),
            lambda: frozen.wait(60))
        self.engine._conn = self.conn
        self.assertRecovered(self.engine.recover)
