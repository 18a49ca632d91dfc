import json

import testtools

from nova_snapext import exception
from nova_snapext import manifest
from nova_snapext.tests.unit import fakes


class ManifestValidationTest(testtools.TestCase):

    def test_round_trip(self):
        m = fakes.record()
        self.assertEqual(m, manifest.loads(manifest.dumps(m)))

    def test_not_json(self):
        e = self.assertRaises(exception.ManifestError, manifest.loads,
                              '{"schema_version": 1,', source='x.json')
        self.assertIn('x.json is not valid JSON', str(e))

    def test_not_an_object(self):
        self.assertRaises(exception.ManifestError, manifest.loads, '[1]')

    def test_unknown_schema_version(self):
        m = fakes.record(schema_version=99)
        e = self.assertRaises(exception.ManifestError, manifest.loads,
                              json.dumps(m))
        self.assertIn('schema_version 99', str(e))

    def test_missing_field_is_named(self):
        m = fakes.record()
        del m['disks'][0]['path']
        e = self.assertRaises(exception.ManifestError, manifest.validate, m)
        self.assertIn("disks/0", str(e))
        self.assertIn("'path' is a required property", str(e))

    def test_bad_quiesce_outcome(self):
        m = fakes.record()
        m['quiesce']['outcome'] = 'maybe'
        self.assertRaises(exception.ManifestError, manifest.validate, m)

    def test_bad_checksum(self):
        m = fakes.record()
        m['memory']['sha256'] = 'xyz'
        self.assertRaises(exception.ManifestError, manifest.validate, m)

    def test_duplicate_disk(self):
        m = fakes.record()
        m['disks'].append(dict(m['disks'][0]))
        e = self.assertRaises(exception.ManifestError, manifest.validate, m)
        self.assertIn('names a disk twice', str(e))

    def test_kind_must_match_memory(self):
        m = fakes.record(kind='disks')
        self.assertRaises(exception.ManifestError, manifest.validate, m)
        m['memory'] = None
        manifest.validate(m)

    def test_no_disks(self):
        self.assertRaises(exception.ManifestError, manifest.validate,
                          fakes.record(disks=[]))


class TreeTest(testtools.TestCase):
    """A -> B, A -> C -> D: two branches under one root."""

    def setUp(self):
        super().setUp()
        self.records = [
            fakes.record('A', created_at='2026-11-26T10:00:00Z'),
            fakes.record('B', 'A', created_at='2026-11-26T10:01:00Z'),
            fakes.record('C', 'A', created_at='2026-11-26T10:02:00Z'),
            fakes.record('D', 'C', created_at='2026-11-26T10:03:00Z'),
        ]

    def test_children(self):
        self.assertEqual({None: ['A'], 'A': ['B', 'C'], 'C': ['D']},
                         manifest.children(self.records))

    def test_ancestors(self):
        self.assertEqual(['C', 'A'], manifest.ancestors(self.records, 'D'))
        self.assertEqual([], manifest.ancestors(self.records, 'A'))

    def test_cycle_is_an_error(self):
        self.records[0]['parent_id'] = 'D'
        self.assertRaises(exception.ManifestError, manifest.ancestors,
                          self.records, 'D')

    def test_tree_marks_current(self):
        tree = manifest.tree(self.records, current_id='D')
        self.assertEqual(['A'], [n['id'] for n in tree])
        a = tree[0]
        self.assertEqual(['B', 'C'], [n['id'] for n in a['children']])
        d = a['children'][1]['children'][0]
        self.assertEqual('D', d['id'])
        self.assertTrue(d['current'])
        self.assertFalse(a['current'])

    def test_tree_keeps_records_with_a_lost_parent(self):
        records = [fakes.record('X', 'gone')]
        self.assertEqual(['X'], [n['id'] for n in manifest.tree(records)])

    def test_reparent_on_delete(self):
        self.assertEqual([('B', None), ('C', None)],
                         manifest.reparent_on_delete(self.records, 'A'))
        self.assertEqual([('D', 'A')],
                         manifest.reparent_on_delete(self.records, 'C'))
