"""Verify before you destroy, with the damage done for real.

Bytes are changed in the store's memory image and inside a disk's internal
snapshot (a cluster only that snapshot maps, as bit rot on a storage server
would); revert, clone and ``snapext verify`` are then run against them and
the guest is checked from inside: it runs on, unfrozen, counting on from
where it was, its files as it left them.
"""

import json
import os
import uuid

import libvirt
import testtools

from nova_snapext.capture import qcow2
from nova_snapext import exception
from nova_snapext.tests.functional import base

BEFORE = '/mnt/vdb/before.bin'
AFTER = '/mnt/vdb/after.bin'


def flip(path, offset, count=16):
    """Invert ``count`` bytes of ``path`` at ``offset`` (no QEMU reads it)."""
    fd = os.open(path, os.O_RDWR)
    try:
        old = os.pread(fd, count, offset)
        os.pwrite(fd, bytes(b ^ 0xff for b in old), offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def snapshot_only_cluster(path, name):
    """(guest offset, host offset) of a data cluster only ``name`` maps.

    Neither the live data nor another snapshot uses it (the guest has
    rewritten that guest cluster since), so no running QEMU reads or
    writes it: changing it damages that snapshot and nothing else.
    """
    with qcow2.File(path) as f:
        h = f.header
        others = {e & qcow2.OFFSET_MASK for _, e in qcow2.clusters(
            f.read, h.cluster_bits, h.l1_table_offset, h.l1_size, h.size)}
        for snap in qcow2.snapshots(f.read, h):
            if snap.name != name:
                others |= {e & qcow2.OFFSET_MASK
                           for _, e in f.snapshot_clusters(snap)}
        for index, entry in f.snapshot_clusters(f.snapshot(name)):
            host = entry & qcow2.OFFSET_MASK
            if not (entry & (qcow2.COMPRESSED | qcow2.ZERO)) and (
                    host not in others):
                return index * f.cluster_size, host
    raise AssertionError('no cluster of %s is %s\'s alone' % (path, name))


class VerifyTestCase(base.GuestTestCase):
    disks = ('vda', 'vdb')

    def note(self, name, text):
        """What the user sees, kept as a test detail for the record."""
        self.addDetail('user sees: %s' % name,
                       testtools.content.text_content(text))

    def assertUntouched(self, offset, states, after):
        """The refused revert left the guest exactly as it ran."""
        self.assertEqual(libvirt.VIR_DOMAIN_RUNNING,
                         self.guest.dom.state()[0])
        last = self.guest.last_tick()[0]
        self.guest.wait_for_tick(after=last + 2, timeout=30)
        ticks = [n for n, _ in self.guest.ticks_since(offset)]
        self.assertEqual(sorted(ticks), ticks, 'the counter dropped back: '
                         'the guest was restored or rebooted')
        self.assertEqual('thawed', self.guest.freeze_status())
        self.assertEqual(after, self.guest.sha256(AFTER))
        self.assertEqual(states, self.internal_states())


class MemoryImageDamagedTest(VerifyTestCase):

    def test_flipped_memory_is_refused_then_reverts_once_repaired(self):
        g = self.guest
        before = g.write_file(BEFORE)
        record, tick = self.take_noting_tick(quiesce_policy='required')
        g.wait_for_tick(after=tick + 10)
        after = g.write_file(AFTER)
        memory = os.path.join(self.conf.snapext.file_store_path,
                              record['instance_uuid'], record['id'],
                              'memory.save')
        middle = os.path.getsize(memory) // 2
        flip(memory, middle)
        states = self.internal_states()
        offset = g.console_size()

        e = self.assertRaises(exception.VerificationFailed,
                              self.engine.revert, record['id'])
        self.note('revert (memory flipped)', str(e))
        self.assertIn('memory image (%s): content does not match its '
                      'sha256' % memory, str(e))
        self.assertIn('nothing was changed', str(e))
        self.assertUntouched(offset, states, after)
        kept = self.engine.store.get(record['id'])['verification']
        self.assertEqual('failed', kept['result'])

        rc, out, err = self.run_cli('verify', record['id'])
        self.note('snapext verify (memory flipped), rc %d' % rc, out + err)
        self.assertEqual(1, rc)
        report = json.loads(out)
        self.assertEqual(
            {'memory image': 'mismatch', 'disk vda': 'ok', 'disk vdb': 'ok'},
            {a['artifact']: a['status'] for a in report['artifacts']})
        self.assertEqual(1, len(err.strip().splitlines()), err)
        self.assertIn('snapext: error: snapshot %s is damaged: memory '
                      'image (%s)' % (record['id'], memory), err)

        # repaired, the same snapshot verifies and reverts
        flip(memory, middle)
        rc, out, _ = self.run_cli('verify', record['id'])
        self.assertEqual((0, 'ok'), (rc, json.loads(out)['result']))
        offset = g.console_size()
        self.engine.revert(record['id'])
        self.assertCounterContinues(offset, tick)
        self.assertEqual(before, g.sha256(BEFORE))
        self.assertIsNone(g.sha256(AFTER))
        self.assertEqual('thawed', g.freeze_status())


class DiskStateDamagedTest(VerifyTestCase):

    def test_damaged_internal_snapshot_is_refused_and_named(self):
        g = self.guest
        seen = []
        self.engine._progress = lambda stage, **kw: seen.append(
            (stage, kw, g.freeze_status() if stage == 'digested' else None))
        g.write_file(BEFORE)
        first = self.engine.take(g.name, quiesce_policy='required')
        # the guest rewrites what it had: the first snapshot's clusters
        # of before.bin become its own
        g.check_sh('dd if=/dev/urandom of=%s bs=1M count=1 conv=notrunc '
                   '2>/dev/null; sync' % BEFORE)
        after = g.write_file(AFTER, mib=4)
        second = self.engine.take(g.name, quiesce_policy='required')

        # digests: computed while the guest ran thawed, and the child
        # hashed about what changed since its parent, not the disk
        digested = [s for s in seen if s[0] == 'digested']
        self.assertEqual(['thawed', 'thawed'], [s[2] for s in digested])
        stages = [s[0] for s in seen]
        self.assertLess(stages.index('captured'), stages.index('digested'))
        vdb = {r['id']: r['disks'][1]['digest'] for r in (first, second)}
        self.assertLess(vdb[second['id']]['hashed_bytes'], 8 << 20)
        self.assertGreaterEqual(vdb[second['id']]['hashed_bytes'], 5 << 20)
        self.assertIn('digest', second['timings_ms'])
        self.note('digests', json.dumps(vdb, indent=1))
        for record in (first, second):
            rc, out, _ = self.run_cli('verify', record['id'])
            self.assertEqual((0, 'ok'), (rc, json.loads(out)['result']))

        path = first['disks'][1]['path']
        guest_offset, host = snapshot_only_cluster(
            path, first['disks'][1]['snapshot'])
        flip(path, host + 100)
        states = self.internal_states()
        offset = g.console_size()

        e = self.assertRaises(exception.VerificationFailed,
                              self.engine.revert, first['id'])
        self.note('revert (disk state damaged)', str(e))
        self.assertIn('disk vdb (%s): internal snapshot %s does not match '
                      'its digest, first at guest offset %#x: content '
                      'differs' % (path, first['disks'][1]['snapshot'],
                                   guest_offset), str(e))
        self.assertUntouched(offset, states, after)

        rc, out, err = self.run_cli('verify', first['id'])
        self.note('snapext verify (disk state damaged), rc %d' % rc,
                  out + err)
        self.assertEqual(1, rc)
        self.assertEqual(
            {'memory image': 'ok', 'disk vda': 'ok', 'disk vdb': 'mismatch'},
            {a['artifact']: a['status']
             for a in json.loads(out)['artifacts']})
        self.assertIn('disk vdb (%s)' % path, err)
        # the damage is the first snapshot's alone
        rc, out, _ = self.run_cli('verify', second['id'])
        self.assertEqual((0, 'ok'), (rc, json.loads(out)['result']))

        # a clone made from the damaged state is refused before it is
        # defined, naming the copy that holds the damage
        clone_dir = os.path.join(self.workdir, 'clone')
        os.makedirs(clone_dir)
        sources = {}
        for d in self.disks:
            sources[d] = os.path.join(clone_dir, '%s.qcow2' % d)
            self.engine.export_disk(first['id'], d, sources[d])
        name = g.name + '-clone'
        e = self.assertRaises(exception.VerificationFailed,
                              self.engine.clone, first['id'], name,
                              str(uuid.uuid4()), sources)
        self.note('clone (copy of the damaged state)', str(e))
        self.assertIn('disk vdb copy (%s): does not hold snapshot state'
                      % sources['vdb'], str(e))
        self.assertRaises(libvirt.libvirtError, self.conn.lookupByName,
                          name)
        self.assertUntouched(offset, states, after)
