"""The revert's steps and failure handling with libvirt and qemu-img faked.

The real proof is nova_snapext/tests/functional/test_revert_faults.py;
these pin which verbs run in which order.
"""

import os
from unittest import mock

import fixtures
import libvirt
import testtools

from nova_snapext.capture import engine as engine_mod
from nova_snapext.capture import revert_journal
from nova_snapext.capture import revert_plan as plan
from nova_snapext import exception
from nova_snapext import stores
from nova_snapext.tests.unit import fakes


class FakeQemuImg(object):
    """Internal snapshots per file, and a log of what ran."""

    def __init__(self, held):
        self.held = held
        self.calls = []

    def snapshot_names(self, path, data=None):
        return sorted(self.held[path])

    def snapshot_create(self, path, name):
        self.calls.append(('create', path, name))
        self.held[path].add(name)

    def snapshot_apply(self, path, name):
        self.calls.append(('apply', path, name))

    def snapshot_delete(self, path, name):
        self.calls.append(('delete', path, name))
        self.held[path].discard(name)

    def virtual_size(self, path):
        return 1 << 30

    def write_state(self, src, snapshot, dest):
        self.calls.append(('write', src, snapshot, dest))


class _StepsTestCase(testtools.TestCase):
    """An engine over a file store with s1, libvirt and qemu-img faked."""

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.conf = fakes.conf(file_store_path=self.root,
                               lock_path=self.root + '/locks',
                               thaw_after_restore_timeout=1)
        self.store = stores.load('file', self.conf)
        self.record = fakes.record('s1')
        self.uuid = self.record['instance_uuid']
        self.store.stage(self.uuid, 's1')
        self.store.commit(self.record)
        self.path = self.record['disks'][0]['path']
        self.qemu_img = FakeQemuImg({self.path: {'snapext-s1'}})
        for name in ('snapshot_names', 'snapshot_create', 'snapshot_apply',
                     'snapshot_delete', 'virtual_size', 'write_state'):
            self.useFixture(fixtures.MockPatch(
                'nova_snapext.capture.qemu_img.' + name,
                getattr(self.qemu_img, name)))
        self.useFixture(fixtures.MockPatch(
            'os.path.exists', lambda p: p == self.path or _exists(p)))
        self.dom = mock.Mock()
        self.dom.UUIDString.return_value = self.uuid
        self.dom.name.return_value = 'vm'
        self.dom.isActive.return_value = 1
        self.dom.state.return_value = [libvirt.VIR_DOMAIN_RUNNING, 1]
        self.dom.jobInfo.return_value = [libvirt.VIR_DOMAIN_JOB_NONE]
        self.dom.saveFlags.side_effect = self._save
        self.conn = mock.Mock()
        self.conn.lookupByUUIDString.return_value = self.dom
        self.conn.saveImageGetXMLDesc.return_value = fakes.DOMAIN_XML
        self.engine = engine_mod.Engine(self.conf, store=self.store,
                                        conn=self.conn)
        self.engine._drop_states = mock.Mock()

    def _save(self, path, xml, flags):
        with open(path, 'wb') as f:
            f.write(b'LibvirtQemudSave')
        self.dom.isActive.return_value = 0

    def guest(self):
        guest = mock.Mock(dom=self.dom, uuid=self.uuid,
                          **{'is_active.return_value': True,
                             'job_active.return_value': False})
        guest.name = 'vm'
        return guest

    def journal(self):
        return revert_journal.read(self.conf, self.store, self.uuid)


class RevertStepsTest(_StepsTestCase):

    def test_failed_restore_restores_the_pre_revert_save(self):
        journals = []
        self.conn.restoreFlags.side_effect = [
            libvirt.libvirtError('error while loading state section id 3'),
            None]
        self.engine._step = mock.Mock(wraps=self.engine._step)

        def step(phase, *args):
            journals.append(self.journal()['phase'])
            return type(self.engine)._step(self.engine, phase, *args)

        self.engine._step.side_effect = step
        e = self.assertRaises(exception.RevertFailed, self.engine._run_steps,
                              self.guest(), self.record,
                              revert_journal.new(
                                  self.conf, self.store, self.record,
                                  'snapext-undo-ab', {'vda': self.path},
                                  {self.path: 1 << 30}, True, False),
                              plan.plan_revert(True, True), {},
                              'memory.save', '<domain/>')
        self.assertIn('resumes as it was', str(e))
        # the journal named each step before it ran
        self.assertEqual(['save', 'undo', 'apply', 'restore'], journals)
        self.assertEqual([('create', self.path, 'snapext-undo-ab'),
                          ('apply', self.path, 'snapext-s1'),
                          ('apply', self.path, 'snapext-undo-ab')],
                         self.qemu_img.calls)
        # the second restore is the pre-revert save, running as it was
        save, xml, flags = self.conn.restoreFlags.call_args[0]
        self.assertIn('.revert-ab.save', save)
        self.assertEqual(libvirt.VIR_DOMAIN_SAVE_RUNNING, flags)
        self.assertIsNone(self.journal())
        self.assertFalse(os.path.exists(save))
        self.assertEqual('revert-rolled-back',
                         self.store.get('s1')['history'][-1]['event'])

    def test_recovery_thaws_a_guest_killed_before_its_thaw(self):
        j = revert_journal.new(self.conf, self.store, self.record,
                               'snapext-undo-ab', {'vda': self.path},
                               {self.path: 1 << 30}, True, False)
        revert_journal.write(self.conf, self.store, j, plan.RESTORE)
        done = {}
        self.engine._recover_revert(self.guest(), done)
        self.assertEqual(['vm:finished'], done['reverts'])
        self.dom.fsThaw.assert_called_once_with()
        self.assertEqual('s1', self.store.head(self.uuid))
        self.assertIsNone(self.journal())
        self.assertEqual('revert-finished',
                         self.store.get('s1')['history'][-1]['event'])


class ImportedRevertStepsTest(_StepsTestCase):
    """s1 came from a bundle: its state is a file in the store."""

    live = '/srv/i/disk'

    def setUp(self):
        super().setUp()
        self.record['imported'] = {'at': 'x', 'since': None}
        self.store.update(self.record)
        self.qemu_img.held[self.live] = {'snapext-other'}
        # the image names the file the disk ran on where it was taken
        self.conn.saveImageGetXMLDesc.return_value = (
            fakes.DOMAIN_XML.replace(self.live, '/srv/gone/vda'))
        self.engine._verified_memory = mock.Mock(return_value='m.save')

    def test_the_state_is_written_into_the_file_nova_names(self):
        j = revert_journal.new(self.conf, self.store, self.record,
                               'snapext-undo-ab', {'vda': self.live},
                               {self.live: 1 << 30}, True, False)
        self.engine._run_steps(self.guest(), self.record, j,
                               plan.plan_revert(True, False), {})
        # the live file keeps its undo state while the state is written,
        # then drops it; the store's file is only read
        self.assertEqual([('create', self.live, 'snapext-undo-ab'),
                          ('write', self.path, 'snapext-s1', self.live)],
                         self.qemu_img.calls)
        xml = self.conn.restoreFlags.call_args[0][1]
        self.assertIn('<source file="%s"' % self.live, xml)
        self.assertNotIn('"/srv/gone/vda"', xml)
        self.assertNotIn(self.path, xml)
        self.engine._drop_states.assert_called_once_with(
            mock.ANY, [(self.live, 'snapext-undo-ab')])
        self.assertEqual('s1', self.store.head(self.uuid))

    def test_recovery_writes_it_again(self):
        # killed while writing, the guest destroyed without a memory save:
        # the revert is completed
        j = revert_journal.new(self.conf, self.store, self.record,
                               'snapext-undo-ab', {'vda': self.live},
                               {self.live: 1 << 30}, True, False)
        self.qemu_img.held[self.live].add('snapext-undo-ab')
        revert_journal.write(self.conf, self.store, j, plan.APPLY)
        self.dom.isActive.return_value = 0
        guest = self.guest()
        guest.is_active.return_value = False
        done = {}
        self.engine._recover_revert(guest, done)
        self.assertEqual(['vm:rolled-forward'], done['reverts'])
        self.assertEqual([('write', self.path, 'snapext-s1', self.live)],
                         self.qemu_img.calls)
        self.assertIn(self.live, self.conn.restoreFlags.call_args[0][1])


_exists = os.path.exists
