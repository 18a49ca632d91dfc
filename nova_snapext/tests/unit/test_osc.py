"""The openstack CLI plugin: requests, output, errors (no cloud)."""

import argparse
import io
import os
import sys
from unittest import mock

import fixtures
from osc_lib import exceptions
import testtools

from nova_snapext import bundle
from nova_snapext.osc import client as client_mod
from nova_snapext.osc import plugin
from nova_snapext.osc import v1


def _resp(status, body=None):
    resp = mock.Mock(status_code=status, text=str(body))
    resp.json.return_value = body
    return resp


class ClientTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.client = client_mod.Client(mock.Mock(), version='1.0')
        self.client.api = mock.Mock()

    def test_every_request_carries_the_microversion(self):
        self.client.api.request.return_value = _resp(200, {'snapshots': []})
        self.client.tree('srv')
        self.client.api.request.assert_called_once_with(
            '/servers/srv/snapext-snapshots', 'GET',
            headers={'OpenStack-API-Version': 'instance-snapshot 1.0'},
            raise_exc=False)

    def test_revert_body(self):
        self.client.api.request.return_value = _resp(202)
        self.client.revert('srv', 'snap')
        args, kwargs = self.client.api.request.call_args
        self.assertEqual(('/servers/srv/action', 'POST'), args)
        self.assertEqual({'snapextRevert': {'snapshot_id': 'snap'}},
                         kwargs['json'])

    def test_faults_become_osc_errors_with_their_message(self):
        self.client.api.request.return_value = _resp(
            404, {'itemNotFound': {'code': 404, 'message': 'no such'}})
        exc = self.assertRaises(exceptions.NotFound, self.client.show, 'x')
        self.assertEqual('no such (HTTP 404)', str(exc))
        self.client.api.request.return_value = _resp(
            403, {'forbidden': {'code': 403, 'message': 'denied'}})
        self.assertRaises(exceptions.Forbidden, self.client.delete, 'x')
        self.client.api.request.return_value = _resp(409, 'text')
        self.assertRaises(exceptions.Conflict, self.client.delete, 'x')


class PluginTest(testtools.TestCase):

    def test_versions(self):
        self.assertTrue(plugin.check_api_version('1.0'))
        self.assertTrue(plugin.check_api_version('latest'))
        self.assertRaises(exceptions.CommandError,
                          plugin.check_api_version, '2.x')

    def test_option(self):
        parser = plugin.build_option_parser(argparse.ArgumentParser())
        args = parser.parse_args(['--os-instance-snapshot-api-version',
                                  '1.0'])
        self.assertEqual('1.0', args.os_instance_snapshot_api_version)


TREE = {'server_id': 'srv', 'current': 'b', 'snapshots': [
    {'id': 'a', 'kind': 'full', 'created_at': 't1', 'current': False,
     'state': 'available',
     'children': [{'id': 'b', 'kind': 'disks', 'created_at': 't2',
                   'current': True, 'state': 'available',
                   'children': []}]},
    {'id': 'c', 'kind': None, 'created_at': None, 'current': False,
     'state': 'broken', 'reason': 'manifest.json is not valid JSON',
     'children': []}]}
SNAP = {'id': 'a', 'server_id': 'srv', 'parent_id': None,
        'created_at': 't1', 'kind': 'full',
        'quiesce': {'outcome': 'frozen', 'frozen_ms': 5.5},
        'memory': {'bytes': 10},
        'disks': [{'target': 'vda', 'role': 'root', 'format': 'qcow2',
                   'volume_id': None}],
        'image_id': 'img',
        'verification': {'result': 'ok', 'checked_at': 't2', 'of': 'verify',
                         'artifacts': []}}


class CommandTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.app = mock.Mock()
        self.app.client_manager.compute.find_server.return_value = (
            mock.Mock(id='srv'))
        self.api = self.app.client_manager.instance_snapshot

    def run_cmd(self, klass, argv):
        cmd = klass(self.app, None)
        parsed = cmd.get_parser('openstack').parse_args(argv)
        return cmd.take_action(parsed)

    def test_list_flattens_the_tree_parents_first(self):
        self.api.tree.return_value = TREE
        columns, rows = self.run_cmd(v1.ListSnapshot, ['myserver'])
        self.app.client_manager.compute.find_server.assert_called_once_with(
            'myserver', ignore_missing=False)
        self.assertEqual(('ID', 'Kind', 'Created At', 'Parent', 'Current',
                          'State', 'Reason'), columns)
        self.assertEqual([('a', 'full', 't1', None, False, 'available',
                           None),
                          ('b', 'disks', 't2', 'a', True, 'available', None),
                          ('c', None, None, None, False, 'broken',
                           'manifest.json is not valid JSON')],
                         rows)

    def test_show_of_a_broken_record(self):
        self.api.show.return_value = {
            'id': 'c', 'server_id': 'srv', 'parent_id': None,
            'created_at': None, 'kind': None, 'quiesce': None,
            'memory': None, 'disks': [], 'image_id': None,
            'state': 'broken', 'reason': 'not JSON'}
        fields, values = self.run_cmd(v1.ShowSnapshot, ['c'])
        shown = dict(zip(fields, values))
        self.assertEqual(('broken', 'not JSON'),
                         (shown['state'], shown['reason']))
        self.assertEqual('', shown['quiesce'].human_readable())
        self.assertEqual('', shown['disks'].human_readable())

    def test_show_formats_for_tables_and_keeps_data_for_json(self):
        self.api.show.return_value = SNAP
        fields, values = self.run_cmd(v1.ShowSnapshot, ['a'])
        shown = dict(zip(fields, values))
        self.assertEqual('frozen (5.5 ms)',
                         shown['quiesce'].human_readable())
        self.assertEqual(SNAP['quiesce'], shown['quiesce'].machine_readable())
        self.assertEqual('vda root qcow2', shown['disks'].human_readable())
        self.assertEqual('10', shown['memory'].human_readable())
        self.assertEqual('ok at t2', shown['verification'].human_readable())
        self.assertEqual(SNAP['verification'],
                         shown['verification'].machine_readable())

    def test_default_api_version_shows_the_last_verification(self):
        self.assertEqual('1.3', plugin.DEFAULT_API_VERSION)
        for version in ('1.1', '1.2', '1.3'):
            self.assertIn(version, plugin.API_VERSIONS)

    def test_revert_waits_with_a_progress_line(self):
        server = mock.Mock(status='ACTIVE', task_state=None)
        self.app.client_manager.compute.get_server.return_value = server
        err = io.StringIO()
        with mock.patch('sys.stderr', err):
            self.run_cmd(v1.RevertSnapshot, ['--wait', 'myserver', 'a'])
        self.api.revert.assert_called_once_with('srv', 'a')
        self.assertIn('revert srv to a: ACTIVE', err.getvalue())

    def test_delete_reports_each_failure(self):
        self.api.delete.side_effect = [None, exceptions.NotFound(404, 'x')]
        exc = self.assertRaises(exceptions.CommandError, self.run_cmd,
                                v1.DeleteSnapshot, ['a', 'b'])
        self.assertIn('1 of 2', str(exc))

    def test_delete_waits_until_gone(self):
        self.api.show.side_effect = exceptions.NotFound(404, 'gone')
        err = io.StringIO()
        with mock.patch('sys.stderr', err):
            self.run_cmd(v1.DeleteSnapshot, ['--wait', 'a'])
        self.assertIn('delete a: deleted', err.getvalue())


def _bundle_bytes(snapshot_id='a', since=None):
    out = io.BytesIO()
    bundle.write(out, {'snapshot_id': snapshot_id, 'instance_uuid': 'srv',
                       'since': since},
                 [bundle.bytes_member(bundle.RECORD, 'record', b'{}'),
                  bundle.bytes_member(bundle.MEMORY, 'memory', b'm' * 999)])
    return out.getvalue()


class BundleClientTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.client = client_mod.Client(mock.Mock(), version='1.2')
        self.client.api = mock.Mock()
        self.client.image = mock.Mock()

    def test_export_and_import_bodies(self):
        self.client.api.request.return_value = _resp(202, {'image_id': 'i'})
        self.assertEqual('i', self.client.export('srv', 'a', since='p'))
        args, kwargs = self.client.api.request.call_args
        self.assertEqual(('/servers/srv/action', 'POST'), args)
        self.assertEqual({'snapextExport': {'snapshot_id': 'a',
                                            'since': 'p'}}, kwargs['json'])
        self.assertEqual('instance-snapshot 1.2',
                         kwargs['headers']['OpenStack-API-Version'])
        self.client.api.request.return_value = _resp(
            201, {'snapshot_id': 'a', 'image_id': 'b'})
        self.client.import_bundle('i', 'n', server_id='srv')
        args, kwargs = self.client.api.request.call_args
        self.assertEqual(('/snapext-snapshots/import', 'POST'), args)
        self.assertEqual({'import': {'image_id': 'i', 'name': 'n',
                                     'server_id': 'srv'}}, kwargs['json'])

    def test_import_upload_streams_the_file_as_the_body(self):
        self.client.api.request.return_value = _resp(
            201, {'snapshot_id': 'a', 'image_id': 'b'})
        f = io.BytesIO(b'data')
        self.assertEqual({'snapshot_id': 'a', 'image_id': 'b'},
                         self.client.import_upload(f, 'n', 'srv'))
        args, kwargs = self.client.api.request.call_args
        self.assertEqual(('/snapext-snapshots/import', 'POST'), args)
        self.assertIs(f, kwargs['data'])
        self.assertEqual({'name': 'n', 'server_id': 'srv'}, kwargs['params'])
        self.assertEqual({'Content-Type': 'application/octet-stream',
                          'OpenStack-API-Version': 'instance-snapshot 1.2'},
                         kwargs['headers'])
        self.client.api.request.return_value = _resp(
            413, {'overLimit': {'code': 413, 'message': 'too\n large'}})
        exc = self.assertRaises(exceptions.ClientException,
                                self.client.import_upload, f, 'n')
        self.assertEqual('too large (HTTP 413)', str(exc))
        self.assertEqual({'name': 'n'},
                         self.client.api.request.call_args[1]['params'])


class BundleCommandTest(CommandTest):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.api.show.return_value = SNAP
        self.api.export.return_value = 'img'
        self.data = _bundle_bytes()
        self.api.download_image.side_effect = (
            lambda image_id, f: f.write(self.data))
        self.api.get_image.return_value = {'status': 'active'}
        self.useFixture(fixtures.MockPatch('sys.stderr', io.StringIO()))

    def export(self, *argv):
        return self.run_cmd(v1.ExportSnapshot,
                            ['a', os.path.join(self.dir, 'b.tar')] +
                            list(argv))

    def test_export_downloads_verifies_and_drops_the_image(self):
        self.api.get_image.side_effect = [{'status': 'queued'},
                                          {'status': 'saving'},
                                          {'status': 'active'}]
        with mock.patch('time.sleep'):
            fields, values = self.export('--since', 'p')
        self.api.export.assert_called_once_with('srv', 'a', 'p')
        shown = dict(zip(fields, values))
        self.assertEqual('a', shown['snapshot_id'])
        self.assertEqual(len(self.data), shown['bytes'])
        self.assertIsNone(shown['image_id'])
        with open(os.path.join(self.dir, 'b.tar'), 'rb') as f:
            self.assertEqual(self.data, f.read())
        self.api.delete_image.assert_called_once_with('img')
        self.assertIn('export of a: active', sys.stderr.getvalue())

    def test_keep_image(self):
        fields, values = self.export('--keep-image')
        self.assertEqual('img', dict(zip(fields, values))['image_id'])
        self.api.delete_image.assert_not_called()

    def test_a_killed_image_is_one_line_and_is_deleted(self):
        self.api.get_image.return_value = {'status': 'killed'}
        exc = self.assertRaises(exceptions.CommandError, self.export)
        self.assertEqual("export of a failed: its image img is killed (the "
                         "compute host's log says why)", str(exc))
        self.api.delete_image.assert_called_once_with('img')
        self.assertEqual([], os.listdir(self.dir))

    def test_a_damaged_download_leaves_no_file(self):
        self.data = self.data.replace(b'm' * 999, b'x' * 999)
        exc = self.assertRaises(exceptions.CommandError, self.export)
        self.assertIn('the downloaded bundle is not a valid bundle',
                      str(exc))
        self.assertEqual([], os.listdir(self.dir))
        self.api.delete_image.assert_called_once_with('img')

    def test_import_of_a_file_sends_it_as_the_body(self):
        path = os.path.join(self.dir, 'b.tar')
        data = _bundle_bytes('s9', since='s8')
        with open(path, 'wb') as f:
            f.write(data)
        sent = []
        self.api.import_upload.side_effect = (
            lambda f, name, server_id: sent.append(
                (f.read(), name, server_id)) or {'snapshot_id': 's9',
                                                 'image_id': 'boot'})
        fields, values = self.run_cmd(v1.ImportSnapshot, [
            path, '--name', 'n', '--server', 'myserver'])
        self.assertEqual({'snapshot_id': 's9', 'image_id': 'boot'},
                         dict(zip(fields, values)))
        self.assertEqual([(data, 'n', 'srv')], sent)
        self.api.import_bundle.assert_not_called()
        self.api.delete_image.assert_not_called()

    def test_import_refuses_a_bad_file_before_uploading(self):
        path = os.path.join(self.dir, 'b.tar')
        with open(path, 'wb') as f:
            f.write(b'not a bundle' * 100)
        exc = self.assertRaises(exceptions.CommandError, self.run_cmd,
                                v1.ImportSnapshot, [path, '--name', 'n'])
        self.assertIn('not a tar archive', str(exc))
        self.api.import_upload.assert_not_called()

    def test_import_of_an_image(self):
        self.app.client_manager.image.find_image.return_value = mock.Mock(
            id='bundle-img')
        self.api.import_bundle.return_value = {'snapshot_id': 's',
                                               'image_id': 'boot'}
        self.run_cmd(v1.ImportSnapshot, ['--image', 'b', '--name', 'n'])
        self.api.import_bundle.assert_called_once_with('bundle-img', 'n',
                                                       None)
        self.api.delete_image.assert_not_called()

    def test_import_needs_a_file_or_an_image(self):
        for argv in (['--name', 'n'], ['f', '--image', 'i', '--name', 'n']):
            exc = self.assertRaises(exceptions.CommandError, self.run_cmd,
                                    v1.ImportSnapshot, argv)
            self.assertIn('one of them', str(exc))
