"""Planning the migration of the external-overlay layout."""

import copy
import os

import testtools

from nova_snapext.capture import legacy
from nova_snapext import manifest as manifest_mod

INST = '/n/instances/u'
V = '/c/share'
BASE_FILE = '/n/instances/_base/abc'
DISK = INST + '/disk'
VOL = V + '/volume-1'


def ov(path, token):
    return '%s.snapext-%s' % (path, token)


class Files(object):
    """A model of qcow2 files: clusters, backing, internal snapshots."""

    def __init__(self):
        self.files = {}

    def add(self, path, backing=None, data=None, fmt='qcow2', size=64):
        self.files[path] = {'backing': backing, 'data': dict(data or {}),
                            'fmt': fmt, 'size': size, 'snaps': {}}

    def inspect(self, path):
        f = self.files.get(path)
        if f is None:
            return None
        return legacy.FileInfo(f['backing'], f['fmt'], f['size'],
                               sorted(f['snaps']))

    def listdir(self, directory):
        return sorted(os.path.basename(p) for p in self.files
                      if os.path.dirname(p) == directory)

    def view(self, path, data=None):
        """Every cluster as the guest reads ``path``."""
        layers = []
        while path:
            f = self.files[path]
            layers.append(f['data'] if data is None else data)
            data = None
            path = f['backing']
        seen = {}
        for layer in reversed(layers):
            seen.update(layer)
        return seen

    def run(self, steps):
        before = {p: copy.deepcopy(f) for p, f in self.files.items()}
        for step in steps:
            if isinstance(step, legacy.CreateOriginal):
                self.add(step.path, step.backing, size=step.size)
            elif isinstance(step, legacy.Adopt):
                self.files[step.path]['backing'] = step.original
            elif isinstance(step, legacy.SnapshotCreate):
                f = self.files[step.path]
                assert step.name not in f['snaps'], step
                f['snaps'][step.name] = dict(f['data'])
            elif isinstance(step, legacy.SnapshotApply):
                f = self.files[step.path]
                f['data'] = dict(f['snaps'][step.name])
            elif isinstance(step, legacy.Commit):
                layers, path = [], step.top
                while path != step.base:
                    layers.append(self.files[path]['data'])
                    path = self.files[path]['backing']
                for layer in reversed(layers):
                    self.files[step.base]['data'].update(layer)
            else:
                raise AssertionError(step)
        return before


def record(snapshot_id, *disks, **kw):
    """A schema-1 record, with the old release's field set."""
    r = {'schema_version': 1, 'id': snapshot_id, 'instance_uuid': 'u',
         'domain': 'instance-1', 'parent_id': kw.get('parent'),
         'created_at': '2026-11-20T10:00:0%dZ' % len(snapshot_id),
         'kind': 'full' if kw.get('full', True) else 'disks',
         'quiesce': {'policy': 'preferred', 'outcome': 'frozen',
                     'frozen_ms': 300.0},
         'memory': ({'store': 'file', 'location': 'memory.save',
                     'bytes': 10, 'sha256': None}
                    if kw.get('full', True) else None),
         'domain_xml': '<domain/>', 'disks': []}
    for target, path in disks:
        r['disks'].append({'target': target, 'role': 'root',
                           'volume_id': None, 'cinder_snapshot_id': None,
                           'path': path, 'format': 'qcow2',
                           'virtual_size': 64, 'backing': None,
                           'bytes': 1, 'sha256': None})
    return r


class PlanTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.fs = Files()
        self.fs.add(BASE_FILE, fmt='raw', data={0: 'base0', 1: 'base1'})
        self.fs.add(DISK, BASE_FILE, {1: 'disk1'})

    def plan(self, records, active):
        return legacy.plan(records, active, self.fs.inspect,
                           self.fs.listdir)

    def assertMigrates(self, records, active):
        """Run the plan on the model and check what it did.

        Every state and the live data land in the original; no overlay
        changes.
        """
        the_plan = self.plan(records, active)
        self.assertIsNone(the_plan.refused)
        live = {t: self.fs.view(p) for t, p in active.items()}
        state = {(r['id'], d['target']): self.fs.view(d['path'])
                 for r in records for d in r['disks']
                 if r['id'] in the_plan.migrated}
        before = self.fs.run(the_plan.steps)
        for (snapshot_id, target), expected in state.items():
            original = the_plan.originals[target]
            snap = self.fs.files[original]['snaps']['snapext-' + snapshot_id]
            self.assertEqual(expected, self.fs.view(original, snap),
                             'state of %s on %s' % (snapshot_id, target))
        for target, original in the_plan.originals.items():
            self.assertEqual(live[target], self.fs.view(original),
                             'live data of %s' % target)
            self.assertIn(legacy.BASE, self.fs.files[original]['snaps'])
        for path, f in before.items():
            if legacy.is_overlay(path):
                self.assertEqual(f['data'], self.fs.files[path]['data'])
        return the_plan

    def test_chain_of_two_snapshots(self):
        a, b = ov(DISK, 'aaaa'), ov(DISK, 'bbbb')
        self.fs.add(a, DISK, {0: 'a0'})
        self.fs.add(b, a, {2: 'b2'})
        records = [record('A', ('vda', DISK)), record('B', ('vda', a))]
        p = self.assertMigrates(records, {'vda': b})
        self.assertEqual({'vda': DISK}, p.originals)
        self.assertEqual([
            legacy.SnapshotCreate(DISK, legacy.BASE),
            legacy.SnapshotCreate(DISK, 'snapext-A'),
            legacy.Commit(a, DISK),
            legacy.SnapshotCreate(DISK, 'snapext-B'),
            legacy.SnapshotApply(DISK, legacy.BASE),
            legacy.Commit(b, DISK)], p.steps)
        self.assertEqual({'A': {'vda': DISK}, 'B': {'vda': DISK}},
                         p.migrated)
        self.assertEqual({}, p.unavailable)
        self.assertEqual('B', p.head)
        self.assertEqual([a, b], sorted(path for path, _ in p.kept))

    def test_revert_made_branch(self):
        # A; B; revert to A (new overlay t on disk); C on t; live on c.
        a, t, c = ov(DISK, 'aaaa'), ov(DISK, 'tttt'), ov(DISK, 'cccc')
        self.fs.add(a, DISK, {0: 'a0', 2: 'a2'})
        self.fs.add(t, DISK, {2: 't2'})
        self.fs.add(c, t, {3: 'c3'})
        records = [record('A', ('vda', DISK)),
                   record('B', ('vda', a), parent='A'),
                   record('C', ('vda', t), parent='A')]
        p = self.assertMigrates(records, {'vda': c})
        self.assertEqual({'A', 'B', 'C'}, set(p.migrated))
        self.assertEqual('C', p.head)
        self.assertEqual(
            [legacy.Commit(a, DISK), legacy.Commit(t, DISK),
             legacy.Commit(c, DISK)],
            [s for s in p.steps if isinstance(s, legacy.Commit)])

    def test_root_and_volume_disk_only(self):
        self.fs.add(VOL, None, {0: 'v0'})
        da, va = ov(DISK, 'aaaa'), ov(VOL, 'aaaa')
        self.fs.add(da, DISK, {0: 'da'})
        self.fs.add(va, VOL, {1: 'va'})
        records = [record('A', ('vda', DISK), ('vdb', VOL), full=False)]
        p = self.assertMigrates(records, {'vda': da, 'vdb': va})
        self.assertEqual({'vda': DISK, 'vdb': VOL}, p.originals)
        self.assertEqual({'A': {'vda': DISK, 'vdb': VOL}}, p.migrated)
        self.assertEqual('A', p.head)

    def test_already_migrated(self):
        new = record('A', ('vda', DISK))
        new.update(schema_version=2)
        self.assertFalse(legacy.needs_migration([new], {'vda': DISK}))
        p = self.plan([new], {'vda': DISK})
        self.assertEqual(([], {}, {}, None),
                         (p.steps, p.migrated, p.unavailable, p.head))

    def test_overlays_without_any_record(self):
        # e.g. a capture of the old release that died after libvirt's call
        a = ov(DISK, 'aaaa')
        self.fs.add(a, DISK, {0: 'a0'})
        self.assertTrue(legacy.needs_migration([], {'vda': a}))
        p = self.assertMigrates([], {'vda': a})
        self.assertEqual([legacy.SnapshotCreate(DISK, legacy.BASE),
                          legacy.Commit(a, DISK)], p.steps)
        self.assertIsNone(p.head)

    def test_mixed_hard_rebooted_disk_and_new_records(self):
        # vda: Nova regenerated the XML (hard reboot) and the guest ran on
        # disk, the state of A; vdb still on its overlay.
        a = ov(DISK, 'aaaa')
        self.fs.add(a, DISK, {0: 'a0'})
        self.fs.add(VOL, None, {0: 'v0'})
        va = ov(VOL, 'aaaa')
        self.fs.add(va, VOL, {1: 'va'})
        new = record('N', ('vdb', va))
        new.update(schema_version=2)
        records = [record('A', ('vda', DISK), ('vdb', VOL)), new]
        p = self.plan(records, {'vda': DISK, 'vdb': va})
        self.assertEqual({'vdb': VOL}, p.originals)
        self.assertEqual({}, p.migrated)
        self.assertIn('vda has run directly on %s' % DISK,
                      p.unavailable['A'])
        self.assertIn((a, 'disk vda runs on %s, not over this file: '
                       'nothing of it was brought in' % DISK), p.kept)
        self.assertEqual(legacy.Commit(va, VOL), p.steps[-1])

    def test_cinder_made_overlay_is_left_alone(self):
        # The Cinder-driven path named overlays volume-1.<snapshot id>.
        cinder = VOL + '.0d6e'
        self.fs.add(VOL, None, {0: 'v0'})
        self.fs.add(cinder, VOL, {0: 'c0'})
        p = self.plan([record('G', ('vdb', VOL))], {'vdb': cinder})
        self.assertEqual(([], {}), (p.steps, p.originals))
        self.assertIn('a chain snapext does not manage', p.unavailable['G'])

    def test_detached_volume_and_missing_state(self):
        a = ov(DISK, 'aaaa')
        self.fs.add(a, DISK, {0: 'a0'})
        records = [record('A', ('vda', DISK), ('vdb', VOL)),
                   record('B', ('vda', ov(DISK, 'gone')))]
        p = self.assertMigrates(records, {'vda': a})
        self.assertIn('vdb is no longer attached; its state file %s is kept'
                      % VOL, p.unavailable['A'])
        self.assertIn('no longer exists', p.unavailable['B'])
        self.assertEqual({}, p.migrated)

    def test_state_outside_the_tree(self):
        other = INST + '/other.snapext-aaaa'
        self.fs.add(INST + '/other', None, {})
        self.fs.add(other, INST + '/other', {})
        a = ov(DISK, 'aaaa')
        self.fs.add(a, DISK, {0: 'a0'})
        p = self.plan([record('A', ('vda', INST + '/other'))], {'vda': a})
        self.assertIn('is not over %s' % DISK, p.unavailable['A'])

    def test_unrecorded_branch_is_kept_inside_the_original(self):
        a, x = ov(DISK, 'aaaa'), ov(DISK, 'xxxx')
        self.fs.add(a, DISK, {0: 'a0'})
        self.fs.add(x, DISK, {3: 'x3'})
        expected = self.fs.view(x)
        p = self.assertMigrates([], {'vda': a})
        name = legacy.KEPT_PREFIX + os.path.basename(x)
        self.assertIn(legacy.SnapshotCreate(DISK, name), p.steps)
        self.assertEqual(expected, self.fs.view(
            DISK, self.fs.files[DISK]['snaps'][name]))

    def test_original_merged_away_is_made_again(self):
        # The old delete of A pulled disk into the overlay and removed it.
        del self.fs.files[DISK]
        b, c = ov(DISK, 'bbbb'), ov(DISK, 'cccc')
        self.fs.add(b, BASE_FILE, {1: 'disk1', 2: 'b2'})
        self.fs.add(c, b, {3: 'c3'})
        p = self.assertMigrates([record('B', ('vda', b))], {'vda': c})
        self.assertEqual([legacy.CreateOriginal(DISK, BASE_FILE, 'raw', 64),
                          legacy.Adopt(b, DISK)], p.steps[:2])
        self.assertEqual({'B': {'vda': DISK}}, p.migrated)
        self.assertEqual(BASE_FILE, self.fs.files[DISK]['backing'])

    def test_raw_original_is_refused(self):
        self.fs.files[DISK]['fmt'] = 'raw'
        a = ov(DISK, 'aaaa')
        self.fs.add(a, DISK, {0: 'a0'})
        p = self.plan([record('A', ('vda', DISK))], {'vda': a})
        self.assertIn('is raw and cannot hold internal snapshots',
                      p.refused)
        self.assertEqual([], p.steps)

    def test_chain_not_through_the_original_is_refused(self):
        a = ov(DISK, 'aaaa')
        self.fs.add(INST + '/elsewhere', BASE_FILE, {})
        self.fs.add(a, INST + '/elsewhere', {0: 'a0'})
        p = self.plan([], {'vda': a})
        self.assertIn('not through %s' % DISK, p.refused)


class RecordsTest(testtools.TestCase):

    def test_migrated_record_is_a_valid_current_one(self):
        old = record('A', ('vda', ov(DISK, 'aaaa')), ('vdb', VOL))
        new = legacy.migrated_record(old, {'vda': DISK, 'vdb': VOL},
                                     {'vda': BASE_FILE, 'vdb': None},
                                     '2026-12-01T00:00:00Z')
        manifest_mod.validate(new)
        self.assertEqual([(DISK, 'snapext-A', BASE_FILE),
                          (VOL, 'snapext-A', None)],
                         [(d['path'], d['snapshot'], d['backing'])
                          for d in new['disks']])
        self.assertEqual(ov(DISK, 'aaaa'),
                         new['legacy']['disks']['vda']['path'])
        self.assertNotIn('status', new)
        self.assertEqual(1, old['schema_version'])

    def test_a_group_capture_is_partial(self):
        disk = ("<disk type='file' device='disk'><driver type='qcow2'/>"
                "<source file='%s'/><target dev='%s'/></disk>")
        old = record('G', ('vdb', VOL), full=False)
        old['domain_xml'] = '<domain><devices>%s%s</devices></domain>' % (
            disk % (DISK, 'vda'), disk % (VOL, 'vdb'))
        new = legacy.migrated_record(old, {'vdb': VOL}, {}, 'now')
        self.assertTrue(new['partial'])
        old['disks'].append(dict(old['disks'][0], target='vda', path=DISK))
        new = legacy.migrated_record(old, {'vda': DISK, 'vdb': VOL}, {},
                                     'now')
        self.assertFalse(new['partial'])

    def test_unavailable_record_names_the_kept_file(self):
        old = record('A', ('vda', ov(DISK, 'aaaa')))
        new = legacy.unavailable_record(old, 'kept: why',
                                        '2026-12-01T00:00:00Z')
        manifest_mod.validate(new)
        self.assertEqual('kept: why', new['status']['reason'])
        self.assertEqual(ov(DISK, 'aaaa'), new['disks'][0]['path'])


class RawRecordsTest(testtools.TestCase):

    def test_an_instance_without_a_store_directory_has_none(self):
        # Recovery aborted an interrupted first capture: the store removed
        # the directory left empty, and the migration still runs.
        engine = type('Engine', (), {})()
        engine.store = type('Store', (), {'root': '/nonexistent-store'})()
        self.assertEqual([], legacy.Migrator(engine).raw_records('uuid-a'))
