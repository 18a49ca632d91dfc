"""Broken records, host failures as snapext errors, the call monitor."""

import errno
import io
import json
import os
from unittest import mock

import fixtures
import libvirt
from oslo_concurrency import processutils
import oslo_messaging as messaging
import testtools

from nova_snapext.capture import guest
from nova_snapext.capture import host_errors
from nova_snapext.capture import qemu_img
from nova_snapext.cmd import snapext as cli
from nova_snapext import exception
from nova_snapext import manifest
from nova_snapext.rpc import api
from nova_snapext.stores import file as file_store
from nova_snapext.tests.unit import fakes

UUID = '6f1c7c1e-0000-4000-8000-000000000001'
OTHER = '6f1c7c1e-0000-4000-8000-000000000002'


class BrokenRecordStoreTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.store = file_store.FileStore(
            fakes.conf(file_store_path=self.root))
        for sid in ('s1', 's2', 's3'):
            self.store.stage(UUID, sid)
            self.store.commit(fakes.record(sid, parent_id=(
                None if sid == 's1' else 's1')))

    def write(self, sid, data, instance=UUID):
        path = os.path.join(self.root, instance, sid, 'manifest.json')
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)

    def reasons(self):
        return {b['id']: b['reason'] for b in self.store.broken(UUID)}

    def test_every_kind_of_bad_record_is_broken_with_its_reason(self):
        self.write('s1', b'{"id": ')
        self.write('s2', b'\xff\xfe\x00')
        self.write('s3', json.dumps(dict(fakes.record('s3'),
                                         kind='weird')).encode())
        self.write('copy', json.dumps(fakes.record('s9')).encode())
        self.write('s8', json.dumps(fakes.record(
            's8', instance_uuid=OTHER)).encode())
        reasons = self.reasons()
        self.assertIn('not valid JSON', reasons['s1'])
        self.assertIn('not UTF-8', reasons['s2'])
        self.assertIn('invalid at kind', reasons['s3'])
        self.assertIn('record of snapshot s9', reasons['copy'])
        self.assertIn('record of instance %s' % OTHER, reasons['s8'])
        self.assertEqual([], self.store.list(UUID))
        e = self.assertRaises(exception.BrokenRecord, self.store.get, 's2')
        self.assertEqual(('s2', UUID), (e.snapshot_id, e.instance_uuid))
        # no host path in a reason: the API shows them
        for reason in reasons.values():
            self.assertNotIn(self.root, reason)

    def test_an_unreadable_record_is_broken(self):
        path = os.path.join(self.root, UUID, 's2', 'manifest.json')
        real_open = open

        def deny(p, *args, **kwargs):
            if p == path:
                raise PermissionError(errno.EACCES, 'Permission denied', p)
            return real_open(p, *args, **kwargs)
        with mock.patch('builtins.open', deny):
            self.assertIn('Permission denied', self.reasons()['s2'])
            self.assertEqual(['s1', 's3'],
                             [m['id'] for m in self.store.list(UUID)])

    def test_a_foreign_copy_does_not_hide_the_record(self):
        self.write('s1', json.dumps(fakes.record('s1')).encode(),
                   instance=OTHER)
        self.assertEqual(UUID, self.store.get('s1')['instance_uuid'])
        self.assertEqual(['s1'], [b['id'] for b in self.store.broken(OTHER)])
        # removing the copy leaves the record
        self.store.delete_broken(OTHER, 's1')
        self.assertEqual(UUID, self.store.get('s1')['instance_uuid'])
        self.assertEqual([], self.store.broken(OTHER))

    def test_delete_broken_refuses_a_good_record(self):
        self.assertRaises(exception.Conflict, self.store.delete_broken,
                          UUID, 's1')
        self.assertRaises(exception.NotFound, self.store.delete_broken,
                          UUID, 'nope')

    def test_a_full_disk_is_a_storage_error(self):
        self.store.stage(UUID, 's4')
        with mock.patch.object(file_store.os, 'fsync', side_effect=OSError(
                errno.ENOSPC, 'No space left on device')):
            e = self.assertRaises(exception.StorageError, self.store.commit,
                                  fakes.record('s4'))
        self.assertEqual(errno.ENOSPC, e.errno)
        self.assertIn('No space left on device', str(e))
        self.assertIn('file system is full', str(e))


class TreeTest(testtools.TestCase):

    def test_broken_records_are_nodes_with_their_children(self):
        records = [fakes.record('s2', parent_id='s1'),
                   fakes.record('s3', parent_id='gone')]
        nodes = manifest.tree(records, 's2', {}, [
            {'id': 's1', 'reason': 'not JSON'}])
        self.assertEqual(['s3', 's1'], [n['id'] for n in nodes])
        self.assertEqual(('broken', 'not JSON', None),
                         (nodes[1]['state'], nodes[1]['reason'],
                          nodes[1]['kind']))
        self.assertEqual([('s2', True)], [(n['id'], n['current'])
                                          for n in nodes[1]['children']])


class HostErrorsTest(testtools.TestCase):

    def test_translated_methods_raise_snapext_errors(self):
        @host_errors.translated
        class Thing(object):
            def read(self):
                raise PermissionError(errno.EACCES, 'Permission denied',
                                      '/x/y')

            def virt(self):
                raise libvirt.libvirtError('internal error: boom\nmore')

            def _private(self):
                raise OSError(errno.EIO, 'I/O error')

        e = self.assertRaises(exception.StorageError, Thing().read)
        self.assertEqual('Permission denied: /x/y', str(e))
        e = self.assertRaises(exception.HostError, Thing().virt)
        # libvirt's own last error, when it has one, is the message
        self.assertTrue(str(e).startswith('libvirt: '), str(e))
        self.assertNotIn('\n', str(e))
        self.assertRaises(OSError, Thing()._private)

    def test_qemu_img_missing_or_failing(self):
        with mock.patch.object(processutils, 'execute', side_effect=(
                FileNotFoundError(errno.ENOENT, 'No such file or directory',
                                  'qemu-img'))):
            e = self.assertRaises(exception.DiskToolFailed, qemu_img.info,
                                  '/d')
        self.assertIn('cannot run qemu-img', str(e))
        with mock.patch.object(processutils, 'execute', side_effect=(
                processutils.ProcessExecutionError(
                    stderr='qemu-img: Could not open /d\nsecond',
                    exit_code=1, cmd='qemu-img info /d'))):
            e = self.assertRaises(exception.DiskToolFailed, qemu_img.info,
                                  '/d')
        self.assertEqual('qemu-img info /d failed (exit 1): qemu-img: Could '
                         'not open /d', str(e))

    def test_connect_to_nothing(self):
        e = self.assertRaises(exception.HypervisorUnavailable,
                              guest.connect, 'test:///nonexistent/path.xml')
        self.assertIn('cannot connect to libvirt at test:///', str(e))


class CliTest(testtools.TestCase):

    def run_cli(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with mock.patch('sys.stdout', out), mock.patch('sys.stderr', err):
            rc = cli.main(list(argv))
        return rc, out.getvalue(), err.getvalue()

    def test_bad_uri_is_one_line(self):
        config = self.useFixture(fixtures.TempDir()).join('s.conf')
        with open(config, 'w') as f:
            f.write('[snapext]\nlibvirt_uri = test:///nonexistent.xml\n')
        rc, out, err = self.run_cli('--config-file', config, 'list', 'x')
        self.assertEqual(1, rc)
        self.assertEqual(1, len(err.splitlines()), err)
        self.assertIn('snapext: error: cannot connect to libvirt', err)

    def test_an_unexpected_error_is_one_line(self):
        with mock.patch.object(cli, 'cmd_list', side_effect=KeyError('k')):
            rc, out, err = self.run_cli('list', 'x')
        self.assertEqual((1, 1), (rc, len(err.splitlines())), err)
        self.assertIn('unexpected KeyError', err)


class CallMonitorTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.conf = fakes.conf(rpc_call_monitor_timeout=5,
                               rpc_capture_timeout=600)
        self.transport = messaging.get_rpc_transport(self.conf,
                                                     url='fake:/')
        self.api = api.AgentAPI(self.conf, transport=self.transport)
        self.prepared = []
        real = self.api.client.prepare

        def prepare(**kwargs):
            self.prepared.append(kwargs)
            return real(**kwargs)
        self.api.client.prepare = prepare

    def call(self, method, *args):
        with mock.patch.object(messaging.RPCClient, 'call',
                               return_value={}, create=True), \
                mock.patch('oslo_messaging.rpc.client._BaseCallContext.call',
                           return_value={}):
            getattr(self.api, method)({}, 'h', *args)
        return self.prepared[-1]

    def test_long_calls_are_monitored_short_ones_not(self):
        for method in ('capture', 'revert', 'delete', 'release'):
            spec = {'instance': 'i', 'snapshot_id': 's', 'disks': []}
            prepared = self.call(method, spec)
            self.assertEqual((5, 600), (prepared['call_monitor_timeout'],
                                        prepared['timeout']), method)
        self.assertIsNone(self.call('ping')['call_monitor_timeout'])
        self.conf.set_override('rpc_call_monitor_timeout', 0, 'snapext')
        self.assertIsNone(self.call('revert', {'snapshot_id': 's'})[
            'call_monitor_timeout'])
        self.conf.set_override('rpc_call_monitor_timeout', 1, 'snapext')
        self.assertEqual(2, self.call('revert', {'snapshot_id': 's'})[
            'call_monitor_timeout'])

    def test_a_silent_agent_is_lost_not_late(self):
        with mock.patch('oslo_messaging.rpc.client._BaseCallContext.call',
                        side_effect=messaging.MessagingTimeout('no reply')):
            e = self.assertRaises(exception.AgentLost, self.api.capture,
                                  {}, 'h', {'instance': 'i'})
        self.assertIn('stopped answering capture', str(e))
        self.assertIsInstance(e, exception.AgentUnavailable)
