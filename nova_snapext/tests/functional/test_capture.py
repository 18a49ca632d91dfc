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
        # the post-snapshot overlays were discarded: one fresh one per disk
        # sits on the snapshot's state files (the original disks)
        self.assertEqual(len(g.disk_targets), len(self.overlay_files()))
        self.assertEqual(record['id'], self.engine.current(g.name))


class QuiesceWithoutAgentTest(base.GuestTestCase):

    def test_required_fails_cleanly_and_preferred_proceeds(self):
        g = self.guest
        g.stop_agent(600)

        e = self.assertRaises(exception.QuiesceRequired, self.engine.take,
                              g.name, quiesce_policy='required')
        self.assertIn('could not freeze', str(e))
        self.assertEqual([], self.overlay_files())
        self.assertEqual([], self.engine.list(g.name))
        self.assertEqual([], self.staging_dirs())
        self.assertEqual(libvirt.VIR_DOMAIN_RUNNING, g.dom.state()[0])
        self.assertRunningAndThawed()

        record = self.engine.take(g.name, quiesce_policy='preferred')
        self.assertEqual('agent-unavailable', record['quiesce']['outcome'])
        self.assertIsNone(record['quiesce']['frozen_ms'])
        self.assertEqual(len(g.disk_targets), len(self.overlay_files()))
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

    def take(self):
        tick = {}
        self.engine._progress = (
            lambda stage, **kw: tick.setdefault(
                'n', self.guest.last_tick()[0]) if stage == 'captured'
            else None)
        record = self.engine.take(self.guest.name)
        return record, tick['n']

    def revert(self, record, tick, expect):
        g = self.guest
        g.wait_for_tick(after=g.last_tick()[0] + 10)
        offset = g.console_size()
        self.engine.revert(record['id'])
        self.assertCounterContinues(offset, tick)
        self.assertEqual({d: expect for d in g.disk_targets}, self.markers())

    def test_branches_and_delete(self):
        self.marker('A')
        a, a_tick = self.take()
        self.marker('B')
        b, b_tick = self.take()
        self.assertEqual(a['id'], b['parent_id'])
        self.revert(a, a_tick, ['A'])
        self.marker('C')
        c, c_tick = self.take()
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
        for d in a['disks']:
            self.assertFalse(os.path.exists(d['path']) and d['path'] not in
                             {x['path'] for m in self.engine.list(
                                 self.guest.name) for x in m['disks']})

        self.revert(b, b_tick, ['A', 'B'])
        self.revert(c, c_tick, ['A', 'C'])
        self.assertRaises(exception.NotFound, self.engine.revert, a['id'])


class CaptureFailureTest(base.GuestTestCase):

    def test_libvirt_failure_leaves_nothing_and_guest_thawed(self):
        # One overlay libvirt cannot create: it fails after the freeze and
        # after it may have created the others.
        real = domain_xml.snapshot_xml

        def unwritable_vdc(name, overlays, excluded=(), memory_file=None):
            overlays = dict(overlays, vdc='/nonexistent-dir/vdc.overlay')
            return real(name, overlays, excluded, memory_file)

        self.useFixture(fixtures.MonkeyPatch(
            'nova_snapext.capture.domain_xml.snapshot_xml', unwritable_vdc))
        e = self.assertRaises(exception.CaptureFailed, self.engine.take,
                              self.guest.name, quiesce_policy='required')
        self.assertIn('snapshot of %s failed' % self.guest.name, str(e))
        self.assertEqual('thawed', self.guest.freeze_status())
        self.assertEqual([], self.overlay_files())
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

        # delete the root while the domain is off: offline rebase
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
        self.assertEqual(1, len([f for f in self.overlay_files()
                                 if subset['id'][:8] in f]))


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
        self.assertEqual('frozen', self.guest.freeze_status())
        done = self.assertRecovered(self.engine.recover)
        self.assertEqual([self.guest.name], done['thawed'])
        self.assertEqual(1, len(done['aborted']))

    def test_killed_after_the_overlays_exist(self):
        self.capture_and_kill(self.wait_for_overlays)
        self.assertRecovered(self.engine.recover)
