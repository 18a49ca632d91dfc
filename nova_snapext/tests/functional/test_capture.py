"""The capture engine proven from inside the real guest."""

import os
import time
import uuid

import fixtures
import libvirt
import testtools

from nova_snapext.capture import domain_xml
from nova_snapext import exception
from nova_snapext.testing import guest as guest_mod
from nova_snapext.tests.functional import base
from nova_snapext.tests.functional import interrupted

BEFORE = '/mnt/%s/before.bin'
AFTER = '/mnt/%s/after.bin'


class FullSnapshotRevertTest(base.GuestTestCase):

    def test_full_snapshot_quiesced_and_reverted(self):
        g = self.guest
        before = {d: g.write_file(BEFORE % d) for d in g.disk_targets}
        seen = {}

        def watch(stage, **kw):
            if stage == 'frozen':
                seen['during'] = g.freeze_status()
            elif stage == 'captured':
                seen['tick'] = g.last_tick()[0]

        self.engine._progress = watch
        record = self.engine.take(g.name, memory=True,
                                  quiesce_policy='required')

        # quiesce really happened, and for a bounded window
        self.assertEqual('frozen', seen['during'])
        self.assertEqual('thawed', g.freeze_status())
        self.assertEqual('frozen', record['quiesce']['outcome'])
        self.assertGreater(record['quiesce']['frozen_ms'], 0)
        self.assertLess(record['quiesce']['frozen_ms'], 1000)
        self.assertEqual('full', record['kind'])
        self.assertEqual(sorted(g.disk_targets),
                         sorted(d['target'] for d in record['disks']))
        self.assertEqual(record['id'], self.engine.current(g.name))

        # the guest moves on: counter, new files, a changed old file
        g.wait_for_tick(after=seen['tick'] + 20)
        for d in g.disk_targets:
            g.write_file(AFTER % d)
            g.check_sh('echo changed >> %s; sync' % (BEFORE % d))
        offset = g.console_size()

        self.engine.revert(record['id'])

        self.assertCounterContinues(offset, seen['tick'])
        self.assertRunningAndThawed()
        self.assertEqual('thawed', g.freeze_status())
        for d in g.disk_targets:
            self.assertIsNone(g.sha256(AFTER % d), 'disk %s kept %s'
                              % (d, AFTER % d))
            self.assertEqual(before[d], g.sha256(BEFORE % d))
        # the disks kept their files; the revert left no state of its own
        self.assertDisksHold(record)
        self.assertEqual({d: [record['disks'][0]['snapshot']]
                          for d in g.disk_targets}, self.internal_states())
        self.assertEqual(['vda.qcow2', 'vdb.qcow2', 'vdc.qcow2'],
                         self.disk_files())
        self.assertEqual(record['id'], self.engine.current(g.name))


class DomainRestartTest(base.GuestTestCase):
    """What Nova's hard reboot and stop/start do: a new QEMU, same XML."""

    def test_writes_after_a_snapshot_survive_a_restart(self):
        g = self.guest
        before = g.write_file(BEFORE % 'vdb')
        record, tick = self.take_noting_tick()
        after = g.write_file(AFTER % 'vdb')
        g.dom.destroy()
        g.dom.create()
        g.wait_for_agent()
        self.assertEqual(after, g.sha256(AFTER % 'vdb'))
        self.assertDisksHold(record)
        self.assertEqual((True, None), self.engine.availability(record))
        # and the snapshot still reverts, memory included (the restarted
        # guest counts from 0: let it pass the snapshot's tick first)
        g.wait_for_tick(after=tick + 10)
        offset = g.console_size()
        self.engine.revert(record['id'])
        self.assertCounterContinues(offset, tick)
        self.assertEqual(before, g.sha256(BEFORE % 'vdb'))
        self.assertIsNone(g.sha256(AFTER % 'vdb'))


class QuiesceWithoutAgentTest(base.GuestTestCase):

    def test_required_fails_cleanly_and_preferred_proceeds(self):
        g = self.guest
        g.stop_agent(600)

        e = self.assertRaises(exception.QuiesceRequired, self.engine.take,
                              g.name, quiesce_policy='required')
        self.assertIn('could not freeze', str(e))
        self.assertEqual({d: [] for d in g.disk_targets},
                         self.internal_states())
        self.assertEqual([], self.engine.list(g.name))
        self.assertEqual([], self.staging_dirs())
        self.assertEqual(libvirt.VIR_DOMAIN_RUNNING, g.dom.state()[0])
        self.assertRunningAndThawed()

        record = self.engine.take(g.name, quiesce_policy='preferred')
        self.assertEqual('agent-unavailable', record['quiesce']['outcome'])
        self.assertIsNone(record['quiesce']['frozen_ms'])
        self.assertDisksHold(record)
        self.assertRunningAndThawed()


class BranchesTest(base.GuestTestCase):
    """Two branches under one root, and deleting the root.

    A, change, B; revert to A, change, C; revert to B and to C; delete A;
    B and C still revert.
    """

    def marker(self, name):
        for d in self.guest.disk_targets:
            self.guest.check_sh('echo %s > /mnt/%s/%s; sync' % (name, d, name))

    def markers(self):
        return {d: sorted(self.guest.check_sh(
            'ls /mnt/%s | grep -x "[ABC]" || true' % d).split())
            for d in self.guest.disk_targets}

    def revert(self, record, tick, expect):
        g = self.guest
        g.wait_for_tick(after=g.last_tick()[0] + 10)
        offset = g.console_size()
        self.engine.revert(record['id'])
        self.assertCounterContinues(offset, tick)
        self.assertEqual({d: expect for d in g.disk_targets}, self.markers())

    def test_branches_and_delete(self):
        self.marker('A')
        a, a_tick = self.take_noting_tick()
        self.marker('B')
        b, b_tick = self.take_noting_tick()
        self.assertEqual(a['id'], b['parent_id'])
        self.revert(a, a_tick, ['A'])
        self.marker('C')
        c, c_tick = self.take_noting_tick()
        self.assertEqual(a['id'], c['parent_id'])

        tree = self.engine.tree(self.guest.name)
        self.assertEqual(c['id'], tree['current'])
        self.assertEqual([b['id'], c['id']],
                         [n['id'] for n in tree['snapshots'][0]['children']])

        self.revert(b, b_tick, ['A', 'B'])
        self.revert(c, c_tick, ['A', 'C'])

        self.engine.delete(a['id'])
        self.assertEqual(sorted([b['id'], c['id']]),
                         sorted(m['id'] for m in self.engine.list(
                             self.guest.name)))
        self.assertTrue(all(m['parent_id'] is None
                            for m in self.engine.list(self.guest.name)))
        # A's states are gone from every disk, B's and C's are there
        for names in self.internal_states().values():
            self.assertEqual(sorted([b['disks'][0]['snapshot'],
                                     c['disks'][0]['snapshot']]), names)

        self.revert(b, b_tick, ['A', 'B'])
        self.revert(c, c_tick, ['A', 'C'])
        self.assertRaises(exception.NotFound, self.engine.revert, a['id'])


class CaptureFailureTest(base.GuestTestCase):

    def test_libvirt_failure_leaves_nothing_and_guest_thawed(self):
        # The memory save fails in libvirt after QEMU made the disks'
        # internal snapshots, with the guest frozen and paused.
        real = domain_xml.memory_snapshot_xml

        def unwritable(name, memory_file, disk_targets):
            return real(name, '/nonexistent-dir/memory.save', disk_targets)

        self.useFixture(fixtures.MonkeyPatch(
            'nova_snapext.capture.domain_xml.memory_snapshot_xml',
            unwritable))
        e = self.assertRaises(exception.CaptureFailed, self.engine.take,
                              self.guest.name, quiesce_policy='required')
        self.assertIn('snapshot of %s failed' % self.guest.name, str(e))
        self.assertEqual('thawed', self.guest.freeze_status())
        self.assertEqual({d: [] for d in self.guest.disk_targets},
                         self.internal_states())
        self.assertEqual([], self.staging_dirs())
        self.assertEqual([], self.engine.list(self.guest.name))
        self.assertRunningAndThawed()
        # the guest still writes to its original disks
        self.guest.write_file('/mnt/vdc/still-writable.bin')


class DiskOnlyTest(base.GuestTestCase):

    def test_disk_only_snapshots_revert_and_delete_offline(self):
        g = self.guest
        before = g.write_file(BEFORE % 'vdb')
        first = self.engine.take(g.name, memory=False,
                                 quiesce_policy='required')
        self.assertEqual('disks', first['kind'])
        self.assertIsNone(first['memory'])
        self.assertEqual('frozen', first['quiesce']['outcome'])
        g.write_file(AFTER % 'vdb')
        second = self.engine.take(g.name, memory=False)
        self.assertEqual(first['id'], second['parent_id'])

        # a disk-only revert boots the disks cold
        self.engine.revert(first['id'])
        g.wait_for_agent()
        self.assertEqual(before, g.sha256(BEFORE % 'vdb'))
        self.assertIsNone(g.sha256(AFTER % 'vdb'))

        # delete the root while the domain is off: qemu-img
        g.dom.destroy()
        self.engine.delete(first['id'])
        self.assertEqual([second['id']],
                         [m['id'] for m in self.engine.list(g.name)])
        self.engine.revert(second['id'])
        g.refresh().create()
        g.wait_for_agent()
        self.assertEqual(before, g.sha256(BEFORE % 'vdb'))
        self.assertIsNotNone(g.sha256(AFTER % 'vdb'))

        # a subset of the disks, as a Cinder group of volumes asks for
        self.assertRaises(exception.InvalidRequest, self.engine.take,
                          g.name, memory=True, targets=['vdc'])
        subset = self.engine.take(g.name, memory=False, targets=['vdc'])
        self.assertEqual(['vdc'], [d['target'] for d in subset['disks']])
        held = self.internal_states()
        name = subset['disks'][0]['snapshot']
        self.assertEqual({'vda': False, 'vdb': False, 'vdc': True},
                         {t: name in n for t, n in held.items()})


class CloneTest(base.GuestTestCase):
    disks = ('vda', 'vdb')

    def test_clone_resumes_memory_as_a_new_domain(self):
        g = self.guest
        before = g.write_file(BEFORE % 'vdb')
        seen = {}
        self.engine._progress = (
            lambda stage, **kw: seen.setdefault('tick', g.last_tick()[0])
            if stage == 'captured' else None)
        record = self.engine.take(g.name, quiesce_policy='required')
        g.write_file(AFTER % 'vdb')

        # The clone's disks are standalone copies, as Nova makes them from
        # the snapshot image.
        clone = guest_mod.Guest(self.conn, g.name + '-clone',
                                os.path.join(self.workdir, 'clone'),
                                disks=self.disks)
        os.makedirs(clone.workdir)
        self.addCleanup(clone.destroy)
        sources = {}
        for d in self.disks:
            sources[d] = os.path.join(clone.workdir, '%s.qcow2' % d)
            self.engine.export_disk(record['id'], d, sources[d])
        new_uuid = str(uuid.uuid4())
        started = time.monotonic()
        clone.dom = self.engine.clone(record['id'], clone.name, new_uuid,
                                      sources,
                                      path_moves={g.workdir: clone.workdir})
        running_s = time.monotonic() - started
        clone.wait_for_agent()
        self.addDetail('clone_vs_boot', testtools.content.text_content(
            'clone running after %.2f s; cold boot took %.2f s'
            % (running_s, self.boot_seconds)))

        self.assertEqual(new_uuid, clone.dom.UUIDString())
        self.assertTrue(clone.dom.isPersistent())
        first = clone.wait_for_tick()[0]
        self.assertLessEqual(clone.ticks()[0][0] - seen['tick'], 3)
        self.assertGreaterEqual(first, seen['tick'])
        self.assertEqual('thawed', clone.freeze_status())
        self.assertEqual(before, clone.sha256(BEFORE % 'vdb'))
        self.assertIsNone(clone.sha256(AFTER % 'vdb'))
        # the source runs on, untouched, with its own files
        self.assertIsNotNone(g.sha256(AFTER % 'vdb'))
        clone.check_sh('echo clone > /mnt/vdb/clone-only; sync')
        self.assertIsNone(g.sha256('/mnt/vdb/clone-only'))
        self.assertRunningAndThawed()


class InterruptedCaptureTest(base.GuestTestCase, interrupted.KillMixin):
    """The capturing process dies midway; recover() cleans up after it."""

    def test_killed_while_frozen(self):
        self.capture_and_kill(lambda: None)
        # libvirtd finishes a memory save its killed client started and
        # resumes the guest at its end, usually within seconds; once (a CI
        # run) it left it paused for over a minute.  A running guest shows
        # the freeze the kill left; recover() resumes a paused one and
        # thaws it either way.
        deadline = time.monotonic() + 30
        while (self.guest.dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING and
               time.monotonic() < deadline):
            time.sleep(0.1)
        paused = self.guest.dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING
        if not paused:
            self.assertEqual('frozen', self.guest.freeze_status())
        done = self.assertRecovered(self.engine.recover)
        self.assertEqual([self.guest.name], done['thawed'])
        self.assertEqual([self.guest.name] if paused else [],
                         done['resumed'])
        self.assertEqual(1, len(done['aborted']))

    def test_killed_after_the_disk_states_exist(self):
        self.capture_and_kill(self.wait_for_internal_states)
        done = self.assertRecovered(self.engine.recover)
        self.assertEqual(1, len(done['aborted']))
