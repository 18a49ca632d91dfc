import os

import fixtures
from oslo_config import cfg
import testtools

from nova_snapext import conf as snapext_conf
from nova_snapext import exception
from nova_snapext import stores
from nova_snapext.tests.unit import fakes


class FileStoreTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        conf = cfg.ConfigOpts()
        snapext_conf.register_opts(conf)
        conf([])
        conf.set_override('file_store_path', self.root, 'snapext')
        self.store = stores.load('file', conf)
        self.uuid = fakes.record()['instance_uuid']

    def commit(self, snapshot_id, parent=None):
        staging = self.store.stage(self.uuid, snapshot_id)
        with open(os.path.join(staging, 'memory.save'), 'wb') as f:
            f.write(b'mem')
        record = fakes.record(snapshot_id, parent)
        self.store.commit(record)
        return record

    def test_commit_makes_the_record_visible(self):
        self.assertEqual([], self.store.list(self.uuid))
        record = self.commit('s1')
        self.assertEqual([record], self.store.list(self.uuid))
        self.assertEqual(record, self.store.get('s1'))
        path = self.store.local_path(record, 'memory.save')
        with open(path, 'rb') as f:
            self.assertEqual(b'mem', f.read())

    def test_staged_snapshot_is_invisible_and_abort_leaves_nothing(self):
        self.store.stage(self.uuid, 's1')
        self.assertEqual([], self.store.list(self.uuid))
        self.assertRaises(exception.NotFound, self.store.get, 's1')
        self.store.abort(self.uuid, 's1')
        # not even the instance directory stage() made
        self.assertFalse(os.path.exists(os.path.join(self.root, self.uuid)))

    def test_invalid_record_is_never_committed(self):
        self.store.stage(self.uuid, 's1')
        bad = fakes.record('s1', kind='disks')
        self.assertRaises(exception.ManifestError, self.store.commit, bad)
        self.assertEqual([], self.store.list(self.uuid))

    def test_update_and_delete(self):
        self.commit('s1')
        child = self.commit('s2', 's1')
        child['parent_id'] = None
        self.store.update(child)
        self.assertIsNone(self.store.get('s2')['parent_id'])
        self.store.delete('s1')
        self.assertEqual(['s2'], [m['id'] for m in self.store.list(self.uuid)])
        self.assertRaises(exception.NotFound, self.store.get, 's1')
        self.assertRaises(exception.NotFound, self.store.update,
                          fakes.record('s1'))

    def test_corrupt_record_is_a_clear_error(self):
        self.commit('s1')
        path = os.path.join(self.root, self.uuid, 's1', 'manifest.json')
        with open(path, 'w') as f:
            f.write('{"schema_version": 1')
        e = self.assertRaises(exception.ManifestError, self.store.get, 's1')
        self.assertIn('manifest.json is not valid JSON', str(e))

    def test_ids_cannot_escape_the_store(self):
        for bad in ('', '../x', '.s1.staging', '*'):
            self.assertRaises(exception.NotFound, self.store.get, bad)

    def test_instances_with_records_or_staged_captures(self):
        self.assertEqual([], self.store.instances())
        self.store.stage(self.uuid, 's1')
        os.makedirs(os.path.join(self.root, 'locks'))
        self.assertEqual([self.uuid], self.store.instances())
        self.assertEqual(['s1'], self.store.staged(self.uuid))
