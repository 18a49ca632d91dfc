"""Engine marks and revert refusals on a real file store, no libvirtd."""

from unittest import mock

import fixtures
import libvirt
from oslo_config import cfg
import testtools

from nova_snapext.capture import engine as engine_mod
from nova_snapext import conf as snapext_conf
from nova_snapext import exception
from nova_snapext import stores
from nova_snapext.tests.unit import fakes


class _EngineOnFileStore(testtools.TestCase):

    def setUp(self):
        super().setUp()
        root = self.useFixture(fixtures.TempDir()).path
        conf = cfg.ConfigOpts()
        snapext_conf.register_opts(conf)
        conf([])
        conf.set_override('file_store_path', root, 'snapext')
        conf.set_override('lock_path', root + '/locks', 'snapext')
        self.store = stores.load('file', conf)
        self.engine = engine_mod.Engine(conf, store=self.store,
                                        conn=mock.Mock())
        self.uuid = fakes.record()['instance_uuid']
        for snapshot_id in ('s1', 's2'):
            self.store.stage(self.uuid, snapshot_id)
            self.store.commit(fakes.record(snapshot_id))


class MarkTest(_EngineOnFileStore):

    def reasons(self):
        return {m['id']: (m.get('status') or {}).get('reason')
                for m in self.store.list(self.uuid)}

    def test_mark_keeps_the_first_reason(self):
        self.engine.mark(self.uuid, 'resized')
        self.engine.mark(self.uuid, 'migrated')
        self.assertEqual({'s1': 'resized', 's2': 'resized'}, self.reasons())

    def test_unmark_all(self):
        self.engine.mark(self.uuid, 'resized')
        self.engine.unmark(self.uuid)
        self.assertEqual({'s1': None, 's2': None}, self.reasons())

    def test_unmark_only_the_marks_with_a_prefix(self):
        record = self.store.get('s1')
        record['status'] = {'reason': 'resized earlier', 'since': 'x'}
        self.store.update(record)
        self.engine.mark(self.uuid, 'in progress: resize')
        self.assertEqual({'s1': 'resized earlier',
                          's2': 'in progress: resize'}, self.reasons())
        self.engine.unmark(self.uuid, 'in progress: ')
        self.assertEqual({'s1': 'resized earlier', 's2': None},
                         self.reasons())


class RevertWithoutDomainTest(_EngineOnFileStore):
    """A server with no domain here (shelved-offloaded, moved away)."""

    def setUp(self):
        super().setUp()
        error = libvirt.libvirtError('no domain')
        error.get_error_code = lambda: libvirt.VIR_ERR_NO_DOMAIN
        self.engine.conn.lookupByUUIDString.side_effect = error

    def test_revert_is_a_conflict_with_the_mark(self):
        self.engine.mark(self.uuid, 'shelve-offloaded: disks removed')
        exc = self.assertRaises(exception.Conflict, self.engine.revert, 's1')
        self.assertIn('shelve-offloaded: disks removed', str(exc))

    def test_revert_is_a_conflict_without_a_mark(self):
        self.assertRaises(exception.Conflict, self.engine.revert, 's1')

    def test_tree_answers_with_the_records(self):
        # what the agent answers nova-api (RPC 2.2), the domain gone
        with open(self.store.local_path(self.store.get('s2'),
                                        'manifest.json'), 'w') as f:
            f.write('nonsense')
        tree = self.engine.tree(self.uuid, records=True)
        self.assertEqual((self.uuid, None), (tree['instance_uuid'],
                                             tree['current']))
        self.assertEqual(['s1'], [m['id'] for m in tree['records']])
        self.assertEqual(['s2'], [b['id'] for b in tree['broken']])
        self.assertEqual([('s1', 'unavailable'), ('s2', 'broken')],
                         [(n['id'], n['state']) for n in tree['snapshots']])
        self.assertNotIn('records', self.engine.tree(self.uuid))
