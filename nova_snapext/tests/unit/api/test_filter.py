"""The API filter, driven with webob requests in front of a dummy Nova."""

import configparser
import os
from unittest import mock

import fixtures
from nova import context as nova_context
from nova import exception as nova_exception
from nova import objects
from nova import policy as nova_policy
from oslo_config import fixture as config_fixture
from oslo_policy import policy as oslo_policy
from oslo_serialization import jsonutils
import testtools
import webob
import webob.dec

import nova.conf
from nova_snapext.api import controller
from nova_snapext.api import filter as api_filter
from nova_snapext.api import policies
from nova_snapext import conf as snapext_conf
from nova_snapext import exception
from nova_snapext import stores
from nova_snapext.tests.unit.api import fakes

CONF = nova.conf.CONF
HEADER = 'OpenStack-API-Version'


class Downstream(object):
    """Stands for Nova's router: records what reached it."""

    def __init__(self):
        self.requests = []

    @webob.dec.wsgify
    def __call__(self, req):
        self.requests.append((req.method, req.path_info, req.body))
        return webob.Response(status=200, json_body={'nova': True})


class FilterTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        objects.register_all()
        snapext_conf.register_opts(CONF)
        # Nova's policy enforcer looks for its file: parse no files.
        CONF([], project='nova', default_config_files=[])
        self.flags = self.useFixture(config_fixture.Config(CONF))
        root = self.useFixture(fixtures.TempDir()).path
        self.flags.config(file_store_path=root, group='snapext')
        nova_policy.reset()
        self.addCleanup(nova_policy.reset)
        self.store = stores.load('file', CONF)
        self.compute = fakes.ComputeAPI()
        self.images = fakes.ImageAPI()
        self.agent = fakes.Agent(self.store)
        self.hosts = fakes.HostAPI()
        self.volumes = fakes.VolumeAPI()
        self.nova = Downstream()
        self.app = api_filter.SnapextFilter(
            self.nova, CONF, controller.Controller(
                CONF, self.compute, self.images, self.agent, self.hosts,
                self.volumes))
        self.db = fakes.TaskStateDB()
        db = self.db
        self.useFixture(fixtures.MockPatch(
            'nova.objects.Instance.save', autospec=True,
            side_effect=lambda inst, expected_task_state=None: db.save(
                inst, expected_task_state)))
        self.server = self.compute.add(fakes.instance())
        self.bdms = {}
        self.useFixture(fixtures.MockPatch(
            'nova.objects.BlockDeviceMappingList.get_by_instance_uuid',
            side_effect=lambda ctxt, uuid: self.bdms[uuid]))
        self.actions = self.useFixture(fixtures.MockPatch(
            'nova.objects.InstanceAction.action_start')).mock
        self.member = self.context(fakes.PROJECT, 'member', 'reader')

    @staticmethod
    def context(project_id, *roles, is_admin=False):
        return nova_context.RequestContext(
            user_id='u-' + project_id[-2:], project_id=project_id,
            roles=list(roles), is_admin=is_admin)

    def request(self, path, method='GET', body=None, context=None,
                version=None, raw=None, content_type='application/json'):
        req = webob.Request.blank(path, method=method)
        if body is not None or raw is not None:
            req.body = raw if raw is not None else jsonutils.dump_as_bytes(
                body)
            req.content_type = content_type
        if version:
            req.headers[HEADER] = version
        req.environ['nova.context'] = context or self.member
        return req.get_response(self.app)

    def snapshot(self, server=None, **extra):
        server = server or self.server
        return self.agent.capture(
            {}, server.host, {'instance': server.uuid, 'memory': True,
                              'disk_roles': {'vda': {
                                  'role': 'root', 'volume_id': None}},
                              'extra': extra})['manifest']

    def agent_actions(self):
        """What the agent was asked to do, its lookups left out."""
        return [c[0] for c in self.agent.calls if c[0] not in ('get', 'tree')]

    def assertFault(self, resp, code, name, message=None):
        self.assertEqual(code, resp.status_int, resp.text)
        self.assertEqual('application/json', resp.content_type)
        body = resp.json_body
        self.assertEqual([name], list(body))
        self.assertEqual(code, body[name]['code'])
        if message:
            self.assertIn(message, body[name]['message'])
        self.assertNotIn('Traceback', resp.text)


class PassThroughTest(FilterTestCase):

    def test_other_requests_reach_nova_untouched(self):
        body = {'reboot': {'type': 'HARD'}}
        for path, method, sent in [
                ('/servers', 'GET', None),
                ('/servers/%s' % self.server.uuid, 'GET', None),
                ('/servers/%s/action' % self.server.uuid, 'POST', body),
                ('/%s/servers/detail' % fakes.PROJECT, 'GET', None)]:
            resp = self.request(path, method, sent)
            self.assertEqual({'nova': True}, resp.json_body)
            self.assertNotIn(HEADER, resp.headers)
        # Nova reads the body the filter has looked at.
        self.assertEqual(jsonutils.dump_as_bytes(body),
                         self.nova.requests[2][2])
        self.assertEqual([], self.agent.calls)

    def test_malformed_action_body_is_novas_to_reject(self):
        resp = self.request('/servers/%s/action' % self.server.uuid, 'POST',
                            raw=b'{"snapextRevert": ')
        self.assertEqual({'nova': True}, resp.json_body)

    def test_without_context_the_filter_steps_aside(self):
        req = webob.Request.blank('/servers/%s/snapext-snapshots'
                                  % self.server.uuid)
        self.assertEqual({'nova': True}, req.get_response(self.app).json_body)


class MicroversionTest(FilterTestCase):

    def tree(self, version):
        return self.request('/servers/%s/snapext-snapshots'
                            % self.server.uuid, version=version)

    def assertVary(self, resp):
        self.assertIn(HEADER, resp.headers.getall('Vary'))

    def test_no_header_is_the_minimum_and_is_echoed(self):
        resp = self.tree(None)
        self.assertEqual(200, resp.status_int)
        self.assertEqual('instance-snapshot 1.0', resp.headers[HEADER])
        self.assertVary(resp)

    def test_explicit_and_latest(self):
        for asked in ('instance-snapshot 1.0', 'instance-snapshot latest',
                      'compute 2.90, instance-snapshot latest'):
            resp = self.tree(asked)
            self.assertEqual(200, resp.status_int)
            self.assertEqual('instance-snapshot %s' % (
                '1.0' if asked.endswith('1.0') else '1.3'),
                resp.headers[HEADER])
            self.assertVary(resp)

    def test_unsupported_version_is_406(self):
        for asked in ('instance-snapshot 1.4', 'instance-snapshot 2.0',
                      'instance-snapshot 0.9'):
            resp = self.tree(asked)
            self.assertFault(resp, 406, 'computeFault', 'not supported')
            self.assertVary(resp)
            self.assertNotIn(HEADER, resp.headers)

    def test_malformed_version_is_400(self):
        resp = self.tree('instance-snapshot one')
        self.assertFault(resp, 400, 'badRequest', 'Invalid')
        self.assertVary(resp)

    def test_errors_carry_the_version_too(self):
        resp = self.request('/snapext-snapshots/nope',
                            version='instance-snapshot latest')
        self.assertFault(resp, 404, 'itemNotFound')
        self.assertEqual('instance-snapshot 1.3', resp.headers[HEADER])
        self.assertVary(resp)


class TreeAndShowTest(FilterTestCase):

    def test_tree_nests_children_and_marks_current(self):
        first = self.snapshot()
        second = self.snapshot()
        self.agent.current_id = first['id']
        third = self.snapshot()      # a branch from the first
        self.agent.current_id = second['id']
        for prefix in ('', '/' + fakes.PROJECT):
            resp = self.request('%s/servers/%s/snapext-snapshots'
                                % (prefix, self.server.uuid))
            self.assertEqual(200, resp.status_int)
            body = resp.json_body
            self.assertEqual(self.server.uuid, body['server_id'])
            self.assertEqual(second['id'], body['current'])
            [root] = body['snapshots']
            self.assertEqual(first['id'], root['id'])
            self.assertEqual([second['id'], third['id']],
                             [c['id'] for c in root['children']])
            self.assertTrue(root['children'][0]['current'])
            self.assertEqual(['available'] * 3,
                             [root['state']] + [c['state'] for c in
                                                root['children']])
        self.assertEqual(('tree', 'compute1', self.server.uuid),
                         self.agent.calls[-1])

    def test_tree_and_show_say_why_a_snapshot_is_unavailable(self):
        record = self.snapshot()
        self.agent.unavailable = {record['id']: 'disk vda: replaced'}
        [node] = self.request('/servers/%s/snapext-snapshots'
                              % self.server.uuid).json_body['snapshots']
        self.assertEqual(('unavailable', 'disk vda: replaced'),
                         (node['state'], node['reason']))
        snap = self.request('/snapext-snapshots/%s'
                            % record['id']).json_body['snapshot']
        self.assertEqual(('unavailable', 'disk vda: replaced'),
                         (snap['state'], snap['reason']))

    def test_tree_without_an_agent_answer_is_503(self):
        # nova-api has no copy of the records to serve instead
        self.snapshot()
        self.agent.down.add('compute1')
        resp = self.request('/servers/%s/snapext-snapshots'
                            % self.server.uuid)
        self.assertFault(resp, 503, 'serviceUnavailable',
                         'No snapext agent answered')
        self.assertNotIn('compute1', resp.text)

    def test_tree_of_an_empty_server(self):
        resp = self.request('/servers/%s/snapext-snapshots'
                            % self.server.uuid)
        self.assertEqual([], resp.json_body['snapshots'])

    def test_tree_of_unknown_or_foreign_server_is_404(self):
        other = self.compute.add(fakes.instance(
            project_id=fakes.OTHER_PROJECT))
        for uuid in ('no-such-server', other.uuid):
            resp = self.request('/servers/%s/snapext-snapshots' % uuid)
            self.assertFault(resp, 404, 'itemNotFound', uuid)

    def test_project_in_url_must_be_the_contexts(self):
        resp = self.request('/%s/servers/%s/snapext-snapshots'
                            % (fakes.OTHER_PROJECT, self.server.uuid))
        self.assertFault(resp, 400, 'badRequest', 'Malformed request URL')

    def test_show(self):
        record = self.snapshot()
        resp = self.request('/snapext-snapshots/%s' % record['id'])
        self.assertEqual(200, resp.status_int)
        snap = resp.json_body['snapshot']
        self.assertEqual(record['id'], snap['id'])
        self.assertEqual(self.server.uuid, snap['server_id'])
        self.assertEqual('full', snap['kind'])
        self.assertEqual({'bytes': 1024}, snap['memory'])
        self.assertEqual('vda', snap['disks'][0]['target'])
        # Host details are the compute host's business.
        self.assertNotIn('/srv/', resp.text)
        self.assertNotIn('domain_xml', snap)

    def test_show_reports_the_last_verification_from_1_1(self):
        record = self.snapshot()
        path = '/snapext-snapshots/%s' % record['id']
        self.assertNotIn('verification',
                         self.request(path).json_body['snapshot'])
        resp = self.request(path, version='instance-snapshot 1.1')
        self.assertIsNone(resp.json_body['snapshot']['verification'])
        record['verification'] = {
            'result': 'failed', 'checked_at': '2026-01-02T03:04:05Z',
            'seconds': 1.5, 'of': 'snapshot',
            'detail': 'memory image (/srv/x/memory.save): differs',
            'artifacts': {'memory image': 'mismatch', 'disk vda': 'ok'}}
        self.store.update(record)
        resp = self.request(path, version='instance-snapshot 1.1')
        self.assertEqual({'result': 'failed',
                          'checked_at': '2026-01-02T03:04:05Z',
                          'of': 'snapshot',
                          'artifacts': {'memory image': 'mismatch',
                                        'disk vda': 'ok'}},
                         resp.json_body['snapshot']['verification'])
        self.assertNotIn('/srv/', resp.text)

    def test_show_unknown_is_404(self):
        resp = self.request('/snapext-snapshots/nope')
        self.assertFault(resp, 404, 'itemNotFound',
                         'Snapshot nope could not be found.')

    def test_another_projects_snapshot_is_404_not_403(self):
        other = self.compute.add(fakes.instance(
            project_id=fakes.OTHER_PROJECT))
        record = self.snapshot(other)
        resp = self.request('/snapext-snapshots/%s' % record['id'])
        self.assertFault(resp, 404, 'itemNotFound',
                         'Snapshot %s could not be found.' % record['id'])
        self.assertNotIn(other.uuid, resp.text)
        resp = self.request('/snapext-snapshots/%s' % record['id'],
                            method='DELETE')
        self.assertFault(resp, 404, 'itemNotFound')
        self.assertEqual(['capture'], self.agent_actions())

    def test_admin_sees_every_project(self):
        other = self.compute.add(fakes.instance(
            project_id=fakes.OTHER_PROJECT))
        record = self.snapshot(other)
        admin = self.context('cafe', 'admin', 'member', 'reader',
                             is_admin=True)
        resp = self.request('/snapext-snapshots/%s' % record['id'],
                            context=admin)
        self.assertEqual(200, resp.status_int)

    def test_wrong_method_is_405(self):
        record = self.snapshot()
        resp = self.request('/snapext-snapshots/%s' % record['id'],
                            method='PUT', body={})
        self.assertFault(resp, 405, 'badMethod')

    def corrupt(self, record, text='{"id": '):
        path = self.store.local_path(record, 'manifest.json')
        with open(path, 'w') as f:
            f.write(text)
        return path

    def test_a_corrupt_record_is_shown_broken_without_host_detail(self):
        record = self.snapshot()
        path = self.corrupt(record)
        resp = self.request('/snapext-snapshots/%s' % record['id'])
        self.assertEqual(200, resp.status_int, resp.text)
        snap = resp.json_body['snapshot']
        self.assertEqual((record['id'], self.server.uuid, 'broken'),
                         (snap['id'], snap['server_id'], snap['state']))
        self.assertIn('not valid JSON', snap['reason'])
        self.assertIsNone(snap['kind'])
        self.assertNotIn(os.path.dirname(path), resp.text)

    def test_a_corrupt_sibling_is_a_broken_node_the_others_serve(self):
        first = self.snapshot()
        second = self.snapshot()
        self.corrupt(first, '\xff\xfe garbage')
        resp = self.request('/servers/%s/snapext-snapshots'
                            % self.server.uuid)
        self.assertEqual(200, resp.status_int, resp.text)
        nodes = resp.json_body['snapshots']
        # the child of the broken record stays under it
        self.assertEqual([(first['id'], 'broken')],
                         [(n['id'], n['state']) for n in nodes])
        self.assertEqual([(second['id'], 'available', True)],
                         [(n['id'], n['state'], n['current'])
                          for n in nodes[0]['children']])
        self.assertIsNotNone(nodes[0]['reason'])
        resp = self.request('/snapext-snapshots/%s' % second['id'])
        self.assertEqual('available', resp.json_body['snapshot']['state'])

    def test_a_foreign_record_is_broken_in_its_place(self):
        other = self.compute.add(fakes.instance())
        theirs = self.snapshot(other)
        mine = self.snapshot()
        # a record of the other server, copied into this server's records
        target = os.path.join(os.path.dirname(os.path.dirname(
            self.store.local_path(mine, 'x'))), 'copied')
        os.makedirs(target)
        with open(self.store.local_path(theirs, 'manifest.json')) as f:
            text = f.read()
        with open(os.path.join(target, 'manifest.json'), 'w') as f:
            f.write(text)
        resp = self.request('/servers/%s/snapext-snapshots'
                            % self.server.uuid)
        broken = [n for n in resp.json_body['snapshots']
                  if n['state'] == 'broken']
        self.assertEqual(['copied'], [n['id'] for n in broken])
        self.assertIn('record of snapshot %s' % theirs['id'],
                      broken[0]['reason'])
        # the original is untouched and still its server's
        resp = self.request('/snapext-snapshots/%s' % theirs['id'])
        self.assertEqual(other.uuid, resp.json_body['snapshot']['server_id'])

    def test_revert_to_a_broken_record_is_409(self):
        record = self.snapshot()
        self.corrupt(record)
        resp = self.request('/servers/%s/action' % self.server.uuid,
                            method='POST', body={'snapextRevert': {
                                'snapshot_id': record['id']}})
        self.assertFault(resp, 409, 'conflictingRequest', 'broken')
        self.assertEqual(['capture'], self.agent_actions())


class DeleteTest(FilterTestCase):

    def test_a_broken_record_is_deleted_by_an_admin_only(self):
        record = self.snapshot(image_id='img-1')
        self.images.images['img-1'] = {'id': 'img-1'}
        keep = self.snapshot()
        with open(self.store.local_path(record, 'manifest.json'), 'w') as f:
            f.write('nonsense')
        resp = self.request('/snapext-snapshots/%s' % record['id'],
                            method='DELETE')
        self.assertFault(resp, 403, 'forbidden')
        admin = self.context('cafe', 'admin', 'member', 'reader',
                             is_admin=True)
        resp = self.request('/snapext-snapshots/%s' % record['id'],
                            method='DELETE', context=admin)
        self.assertEqual(204, resp.status_int, resp.text)
        self.assertEqual([], self.store.broken(self.server.uuid))
        self.assertEqual([keep['id']],
                         [m['id'] for m in self.store.list(self.server.uuid)])
        # its image id cannot be trusted: no image is deleted for it
        self.assertIn('img-1', self.images.images)

    def test_delete_is_204_after_the_agent_merged_it(self):
        first = self.snapshot()
        second = self.snapshot()
        resp = self.request('/snapext-snapshots/%s' % first['id'],
                            method='DELETE')
        self.assertEqual(204, resp.status_int, resp.text)
        self.assertEqual(b'', resp.body)
        self.assertEqual(('delete', 'compute1', {'snapshot_id': first['id']}),
                         self.agent.calls[-1])
        self.assertEqual([second['id']],
                         [m['id'] for m in self.store.list(self.server.uuid)])
        self.actions.assert_called_once_with(
            mock.ANY, self.server.uuid, controller.DELETE_ACTION,
            want_result=False)

    def test_delete_holds_the_task_state(self):
        record = self.snapshot()
        seen = []
        self.agent.during = lambda method, spec: seen.append(
            self.db.states.get(self.server.uuid))
        resp = self.request('/snapext-snapshots/%s' % record['id'],
                            method='DELETE')
        self.assertEqual(204, resp.status_int, resp.text)
        self.assertEqual(['snapext_deleting'], seen)
        self.assertIsNone(self.db.states[self.server.uuid])

    def test_delete_needs_a_member(self):
        record = self.snapshot()
        reader = self.context(fakes.PROJECT, 'reader')
        resp = self.request('/snapext-snapshots/%s' % record['id'],
                            method='DELETE', context=reader)
        self.assertFault(resp, 403, 'forbidden', policies.DELETE)
        # ... who may still read it.
        resp = self.request('/snapext-snapshots/%s' % record['id'],
                            context=reader)
        self.assertEqual(200, resp.status_int)

    def test_delete_while_the_server_is_busy_is_409(self):
        record = self.snapshot()
        self.server.task_state = 'migrating'
        resp = self.request('/snapext-snapshots/%s' % record['id'],
                            method='DELETE')
        self.assertFault(resp, 409, 'conflictingRequest', 'task_state')

    def test_agent_errors_map_to_faults(self):
        record = self.snapshot()
        for error, code, name in [
                (exception.Conflict('busy'), 409, 'conflictingRequest'),
                (fakes.Conflict_Remote('busy'), 409, 'conflictingRequest'),
                (exception.VerificationFailed('snapshot s is damaged'), 409,
                 'conflictingRequest'),
                (exception.NotFound('gone'), 404, 'itemNotFound'),
                (exception.AgentUnavailable('no agent on compute1'), 503,
                 'serviceUnavailable'),
                (exception.AgentError('libvirt said /srv/x'), 500,
                 'computeFault')]:
            self.agent.error = error
            resp = self.request('/snapext-snapshots/%s' % record['id'],
                                method='DELETE')
            self.assertFault(resp, code, name)
            if code >= 500:
                self.assertNotIn('compute1', resp.text)
                self.assertNotIn('/srv/x', resp.text)


class DeleteImageTest(FilterTestCase):
    """Deleting a snapshot deletes the image createImage made for it."""

    def setUp(self):
        super().setUp()
        self.image_id = 'img-1'
        self.images.images[self.image_id] = {
            'id': self.image_id, 'properties': {
                'snapext_manifest': 'snap-1', 'snapext_kind': 'full',
                'snapext_host': 'compute1', 'snapext_memory': 'file://x',
                'snapext_full': 'true', 'os_distro': 'debian'}}
        self.record = self.snapshot(image_id=self.image_id)

    def delete(self):
        return self.request('/snapext-snapshots/%s' % self.record['id'],
                            method='DELETE')

    def test_the_image_goes_with_the_snapshot(self):
        resp = self.delete()
        self.assertEqual(204, resp.status_int, resp.text)
        self.assertEqual({}, self.images.images)
        self.assertEqual([], self.store.list(self.server.uuid))

    def test_an_image_deleted_already_is_no_error(self):
        del self.images.images[self.image_id]
        self.assertEqual(204, self.delete().status_int)

    def test_a_kept_image_stops_naming_the_snapshot(self):
        for error in (nova_exception.ImageNotAuthorized(
                          image_id=self.image_id),
                      nova_exception.ImageDeleteConflict(reason='in use')):
            self.images.fail_delete = error
            resp = self.delete()
            self.assertEqual(204, resp.status_int, resp.text)
            self.assertEqual([], self.store.list(self.server.uuid))
            # A plain image: what Nova's own snapshot would have made, and
            # what the request asked for (snapext_full) stays.
            self.assertEqual({'snapext_full': 'true', 'os_distro': 'debian'},
                             self.images.images[self.image_id]['properties'])
            self.assertFalse(self.images.updates[-1][2], 'purge_props')
            self.record = self.snapshot(image_id=self.image_id)

    def test_glance_failing_does_not_fail_the_delete(self):
        self.images.fail_delete = RuntimeError('glance is down')
        resp = self.delete()
        self.assertEqual(204, resp.status_int, resp.text)
        self.assertEqual([], self.store.list(self.server.uuid))
        self.assertIn(self.image_id, self.images.images)
        self.assertEqual([], self.images.updates)

    def test_a_snapshot_that_stays_keeps_its_image(self):
        self.agent.error = exception.Conflict('busy')
        self.assertEqual(409, self.delete().status_int)
        self.assertIn(self.image_id, self.images.images)

    def test_a_snapshot_without_image_touches_no_image(self):
        record = self.snapshot()
        resp = self.request('/snapext-snapshots/%s' % record['id'],
                            method='DELETE')
        self.assertEqual(204, resp.status_int)
        self.assertIn(self.image_id, self.images.images)


class RevertTest(FilterTestCase):

    def revert(self, body, server=None, context=None):
        server = server or self.server
        return self.request('/servers/%s/action' % server.uuid, 'POST',
                            body, context=context)

    def test_revert_is_202(self):
        record = self.snapshot()
        resp = self.revert({'snapextRevert': {'snapshot_id': record['id']}})
        self.assertEqual(202, resp.status_int, resp.text)
        self.assertEqual('instance-snapshot 1.0', resp.headers[HEADER])
        self.assertEqual(('revert', 'compute1',
                          {'snapshot_id': record['id']}),
                         self.agent.calls[-1])
        self.assertEqual([], self.nova.requests)

    def test_bad_bodies_are_400(self):
        for body in ({'snapextRevert': {}},
                     {'snapextRevert': {'snapshot_id': 7}},
                     {'snapextRevert': {'snapshot_id': '../x'}},
                     {'snapextRevert': {'snapshot_id': 's', 'force': True}},
                     {'snapextRevert': 'snap-1'},
                     {'snapextRevert': {'snapshot_id': 's'}, 'reboot': {}}):
            resp = self.revert(body)
            self.assertFault(resp, 400, 'badRequest')
            self.assertTrue(resp.json_body['badRequest']['message'])
        self.assertEqual([], self.agent.calls)

    def test_unknown_snapshot_is_404(self):
        resp = self.revert({'snapextRevert': {'snapshot_id': 'nope'}})
        self.assertFault(resp, 404, 'itemNotFound', 'nope')

    def test_snapshot_of_another_server_is_404(self):
        other = self.compute.add(fakes.instance())
        record = self.snapshot(other)
        resp = self.revert({'snapextRevert': {'snapshot_id': record['id']}})
        self.assertFault(resp, 404, 'itemNotFound')

    def test_another_projects_server_is_404(self):
        other = self.compute.add(fakes.instance(
            project_id=fakes.OTHER_PROJECT))
        record = self.snapshot(other)
        resp = self.revert({'snapextRevert': {'snapshot_id': record['id']}},
                           server=other)
        self.assertFault(resp, 404, 'itemNotFound')
        self.assertEqual(['capture'], self.agent_actions())

    def test_revert_while_another_operation_runs_is_409(self):
        record = self.snapshot()
        self.agent.error = fakes.conflict(self.server.uuid)
        resp = self.revert({'snapextRevert': {'snapshot_id': record['id']}})
        self.assertFault(resp, 409, 'conflictingRequest',
                         'another snapshot operation holds instance')

    def test_revert_refused_by_server_state_is_409(self):
        record = self.snapshot()
        body = {'snapextRevert': {'snapshot_id': record['id']}}
        for change, words in [({'task_state': 'image_snapshot'},
                               'task_state image_snapshot'),
                              ({'vm_state': 'stopped'}, 'vm_state stopped'),
                              ({'locked': True}, 'locked'),
                              ({'host': None}, 'not on a compute host')]:
            server = self.compute.add(fakes.instance(
                uuid=self.server.uuid, **change))
            resp = self.revert(body, server=server)
            self.assertFault(resp, 409, 'conflictingRequest', words)
        self.assertEqual(['capture'], self.agent_actions())

    def test_revert_holds_the_task_state_for_the_whole_action(self):
        record = self.snapshot()
        seen = []
        self.agent.during = lambda method, spec: seen.append(
            self.db.states.get(self.server.uuid))
        resp = self.revert({'snapextRevert': {'snapshot_id': record['id']}})
        self.assertEqual(202, resp.status_int, resp.text)
        self.assertEqual(['snapext_reverting'], seen)
        self.assertIsNone(self.db.states[self.server.uuid])
        self.assertIsNone(self.server.task_state)
        # cleared on failure too
        self.agent.error = exception.RevertFailed('libvirt failed')
        resp = self.revert({'snapextRevert': {'snapshot_id': record['id']}})
        self.assertEqual(500, resp.status_int)
        self.assertIsNone(self.db.states[self.server.uuid])

    def test_revert_that_lost_the_race_is_409(self):
        # a stop set its task state after the revert read the server
        record = self.snapshot()
        self.db.states[self.server.uuid] = 'powering-off'
        resp = self.revert({'snapextRevert': {'snapshot_id': record['id']}})
        self.assertFault(resp, 409, 'conflictingRequest',
                         'Actual: powering-off')
        self.assertEqual(['capture'], self.agent_actions())
        self.assertEqual('powering-off', self.db.states[self.server.uuid])

    def test_revert_needs_a_member(self):
        record = self.snapshot()
        resp = self.revert({'snapextRevert': {'snapshot_id': record['id']}},
                           context=self.context(fakes.PROJECT, 'reader'))
        self.assertFault(resp, 403, 'forbidden')


class CreateImageTest(FilterTestCase):

    def setUp(self):
        super().setUp()
        self.flags.config(full_snapshot_default=True, group='snapext')
        self.bdms[self.server.uuid] = fakes.bdms(self.server.uuid)
        self.image_backed = self.compute.add(fakes.instance(
            image_ref='cirros'))
        self.bdms[self.image_backed.uuid] = fakes.bdms(
            self.image_backed.uuid, volume_backed=False)

    def create_image(self, server=None, metadata=None, version='2.45',
                     name='snap'):
        server = server or self.server
        entity = {'name': name}
        if metadata is not None:
            entity['metadata'] = metadata
        req = webob.Request.blank('/servers/%s/action' % server.uuid,
                                  method='POST')
        req.body = jsonutils.dump_as_bytes({'createImage': entity})
        req.content_type = 'application/json'
        if version:
            req.headers[HEADER] = 'compute %s' % version
        req.environ['nova.context'] = self.member
        return req.get_response(self.app)

    def test_volume_backed_is_a_full_snapshot(self):
        resp = self.create_image(metadata={'purpose': 'test'})
        self.assertEqual(202, resp.status_int, resp.text)
        image_id = resp.json_body['image_id']
        self.assertEqual(['image_id'], list(resp.json_body))
        self.assertEqual('compute 2.45', resp.headers[HEADER])
        self.assertIn(HEADER, resp.headers.getall('Vary'))
        self.assertEqual([], self.nova.requests)

        [(method, host, spec), durable] = self.agent.calls
        self.assertEqual(('capture', 'compute1'), (method, host))
        # once Cinder's snapshots adopt the volume states (file store
        # here: no bundle, and no property linking one)
        self.assertEqual(('make_durable', 'compute1',
                          {'snapshot_id': 'snap-1',
                           'adopted': ['vol-data', 'vol-root']}), durable)
        self.assertTrue(spec['memory'])
        self.assertEqual('preferred', spec['quiesce'])
        self.assertEqual({'vda': {'role': 'root', 'volume_id': 'vol-root'},
                          'vdb': {'role': 'volume',
                                  'volume_id': 'vol-data'}},
                         spec['disk_roles'])
        record = self.store.get('snap-1')
        self.assertEqual(image_id, record['image_id'])

        image = self.images.images[image_id]
        props = image['properties']
        self.assertEqual('snap', image['name'])
        self.assertEqual(0, image['size'])
        self.assertEqual('private', image['visibility'])
        self.assertEqual('snap-1', props['snapext_manifest'])
        self.assertNotIn('snapext_parent', props)
        self.assertEqual('file://compute1/snap-1/memory.save',
                         props['snapext_memory'])
        self.assertEqual('vdb=vol-data', props['snapext_volumes'])
        self.assertNotIn('snapext_bundle', props)
        self.assertEqual('test', props['purpose'])
        self.assertEqual('/dev/vda', props['root_device_name'])
        self.assertTrue(props['bdm_v2'])
        # Nova's shape: every volume as a Cinder snapshot, here ones that
        # adopt the captured state instead of taking a new one
        self.assertEqual(
            [('snapshot', 'csnap-1', '/dev/vda', 0),
             ('snapshot', 'csnap-2', '/dev/vdb', None)],
            [(m['source_type'], m['snapshot_id'], m['device_name'],
              m['boot_index']) for m in props['block_device_mapping']])
        self.assertEqual(
            [('create', volume_id, 'snapshot for snap',
              'about ' + volume_id,
              {'snapext_adopt': 'snap-1', 'snapext_host': 'compute1'})
             for volume_id in ('vol-root', 'vol-data')],
            self.volumes.calls)
        self.actions.assert_called_once_with(
            mock.ANY, self.server.uuid, 'createImage', want_result=False)

        resp = self.create_image()
        props = self.images.images[resp.json_body['image_id']]['properties']
        self.assertEqual('snap-1', props['snapext_parent'])

    def test_the_capture_holds_nova_image_snapshot_task_state(self):
        seen = []
        self.agent.during = lambda method, spec: seen.append(
            self.db.states.get(self.server.uuid))
        resp = self.create_image()
        self.assertEqual(202, resp.status_int, resp.text)
        # the capture and the bundle's upload
        self.assertEqual(['image_snapshot'] * 2, seen)
        self.assertIsNone(self.db.states[self.server.uuid])
        self.assertEqual(
            [(self.server.uuid, 'image_snapshot', [None]),
             (self.server.uuid, None, ['image_snapshot'])], self.db.saves)

    def test_a_stop_that_won_the_race_is_409(self):
        self.db.states[self.server.uuid] = 'powering-off'
        resp = self.create_image()
        self.assertFault(resp, 409, 'conflictingRequest', 'powering-off')
        self.assertEqual([], self.agent.calls)
        self.assertEqual('powering-off', self.db.states[self.server.uuid])

    def test_over_snapshot_quota_is_403_before_capturing(self):
        self.volumes.limits = {'totalSnapshotsUsed': 9,
                               'maxTotalSnapshots': 10}
        resp = self.create_image()
        self.assertFault(resp, 403, 'forbidden', 'snapshots')
        self.assertEqual([], self.agent.calls)

    def test_failed_cinder_snapshot_drops_the_record(self):
        self.volumes.fail_on = 'vol-data'
        resp = self.create_image()
        self.assertFault(resp, 403, 'forbidden')
        self.assertEqual(['capture', 'delete'],
                         self.agent_actions())
        self.assertEqual({}, self.images.images)
        self.assertEqual([], self.store.list(self.server.uuid))
        self.assertIsNone(self.db.states[self.server.uuid])

    def test_the_image_links_the_bundle(self):
        self.agent.durable = {'image_id': 'bundle-1', 'since': None,
                              'chain': ['bundle-1'], 'bytes': 42,
                              'seconds': 0.1}
        resp = self.create_image()
        props = self.images.images[resp.json_body['image_id']]['properties']
        self.assertEqual('bundle-1', props['snapext_bundle'])

    def test_failed_upload_drops_the_record_and_makes_no_image(self):
        # The agent's upload failed; it deleted its bundle image itself.
        def fail(method, spec):
            if method == 'make_durable':
                raise exception.ImageTransferFailed('Glance refused')
        self.agent.during = fail
        resp = self.create_image()
        self.assertEqual(500, resp.status_int)
        self.assertEqual(['capture', 'make_durable', 'delete'],
                         self.agent_actions())
        self.assertEqual({}, self.images.images)
        self.assertEqual([], self.store.list(self.server.uuid))
        self.assertIsNone(self.db.states[self.server.uuid])

    def test_an_agent_older_than_2_4_makes_no_bundle(self):
        self.agent.make_durable = lambda ctxt, host, spec: None
        resp = self.create_image()
        self.assertEqual(202, resp.status_int)
        props = self.images.images[resp.json_body['image_id']]['properties']
        self.assertNotIn('snapext_bundle', props)

    def test_before_2_45_the_image_is_in_location(self):
        resp = self.create_image(version='2.1')
        self.assertEqual(202, resp.status_int, resp.text)
        self.assertEqual(b'', resp.body)
        image_id = self.store.get('snap-1')['image_id']
        self.assertEqual('http://glance.example/images/%s' % image_id,
                         resp.headers['Location'])
        self.assertEqual('compute 2.1', resp.headers[HEADER])

    def test_volumes_snapext_cannot_capture_take_novas_path(self):
        self.agent.error = exception.InvalidRequest(
            "disk vda is of type 'network'; snapext snapshots file-backed "
            "disks only")
        resp = self.create_image()
        self.assertEqual({'nova': True}, resp.json_body)
        self.assertFalse(self.actions.called)
        # Nova's createImage finds the task state free again
        self.assertIsNone(self.db.states[self.server.uuid])
        # asked for explicitly, the refusal is the answer
        resp = self.create_image(metadata={'snapext_full': 'true'})
        self.assertEqual(400, resp.status_int)
        self.assertIn("of type 'network'",
                      resp.json_body['badRequest']['message'])

    def test_image_backed_passes_through(self):
        resp = self.create_image(server=self.image_backed,
                                 metadata={'snapext_full': 'true'})
        self.assertEqual({'nova': True}, resp.json_body)
        self.assertEqual([], self.agent.calls)

    def test_snapext_full_false_passes_through(self):
        resp = self.create_image(metadata={'snapext_full': 'false'})
        self.assertEqual({'nova': True}, resp.json_body)
        self.assertEqual([], self.agent.calls)

    def test_default_off_passes_through_unless_asked(self):
        self.flags.config(full_snapshot_default=False, group='snapext')
        resp = self.create_image()
        self.assertEqual({'nova': True}, resp.json_body)
        resp = self.create_image(metadata={'snapext_full': 'True'})
        self.assertEqual(202, resp.status_int)
        self.assertEqual(['capture', 'make_durable'],
                         self.agent_actions())

    def test_unreadable_snapext_full_is_the_default_as_in_the_driver(self):
        resp = self.create_image(metadata={'snapext_full': 'maybe'})
        self.assertEqual(202, resp.status_int)
        self.flags.config(full_snapshot_default=False, group='snapext')
        resp = self.create_image(metadata={'snapext_full': 'maybe'})
        self.assertEqual({'nova': True}, resp.json_body)
        self.assertEqual(['capture', 'make_durable'],
                         self.agent_actions())

    def test_the_servers_image_can_ask_for_full_snapshots(self):
        self.flags.config(full_snapshot_default=False, group='snapext')
        self.server.system_metadata = {'image_snapext_full': 'true'}
        resp = self.create_image()
        self.assertEqual(202, resp.status_int)

    def test_bodies_nova_rejects_are_novas(self):
        for version, name in (('2.45', ''), ('9.99', 'snap')):
            resp = self.create_image(version=version, name=name)
            self.assertEqual({'nova': True}, resp.json_body)
        self.assertEqual([], self.agent.calls)

    def test_unknown_server_is_novas(self):
        gone = fakes.instance()
        resp = self.create_image(server=gone)
        self.assertEqual({'nova': True}, resp.json_body)

    def test_stopped_server_takes_novas_volume_snapshot(self):
        stopped = self.compute.add(fakes.instance(vm_state='stopped'))
        self.bdms[stopped.uuid] = fakes.bdms(stopped.uuid)
        resp = self.create_image(server=stopped)
        self.assertEqual({'nova': True}, resp.json_body)
        resp = self.create_image(server=stopped,
                                 metadata={'snapext_full': 'true'})
        self.assertFault(resp, 409, 'conflictingRequest', 'vm_state stopped')

    def test_busy_server_is_409(self):
        self.server.task_state = 'image_snapshot'
        resp = self.create_image()
        self.assertFault(resp, 409, 'conflictingRequest', 'task_state')
        self.assertEqual('compute 2.45', resp.headers[HEADER])

    def test_required_quiesce_follows_the_image(self):
        self.server.system_metadata = {'image_os_require_quiesce': 'yes'}
        self.create_image()
        self.assertEqual('required', self.agent.calls[0][2]['quiesce'])

    def test_quiesce_failure_is_409(self):
        self.agent.error = exception.QuiesceRequired('agent did not freeze')
        resp = self.create_image()
        self.assertFault(resp, 409, 'conflictingRequest', 'did not freeze')
        self.assertEqual({}, self.images.images)

    def test_failed_image_leaves_no_snapshot(self):
        self.images.fail = nova_exception.ImageBadRequest(
            image_id='x', response='no room')
        resp = self.create_image()
        self.assertFault(resp, 400, 'badRequest', 'no room')
        self.assertEqual(['capture', 'make_durable', 'delete'],
                         self.agent_actions())
        self.assertEqual([], self.store.list(self.server.uuid))

    def test_snapext_policy_denial_falls_back_unless_asked(self):
        policies.authorize(self.member, policies.CREATE, self.server)
        nova_policy.set_rules(oslo_policy.Rules.from_dict(
            {policies.CREATE: '!'}), overwrite=False)
        resp = self.create_image()
        self.assertEqual({'nova': True}, resp.json_body)
        resp = self.create_image(metadata={'snapext_full': 'true'})
        self.assertFault(resp, 403, 'forbidden')


class PolicyTest(FilterTestCase):

    def test_rules_are_project_scoped_owner_or_admin(self):
        rules = {r.name: r for r in policies.list_rules()}
        self.assertEqual({policies.INDEX, policies.SHOW, policies.DELETE,
                          policies.DELETE_BROKEN, policies.REVERT,
                          policies.CREATE, policies.EXPORT, policies.IMPORT,
                          policies.IMPORT_HOST}, set(rules))
        self.assertEqual('rule:context_is_admin',
                         rules[policies.DELETE_BROKEN].check_str)
        self.assertEqual('rule:project_reader_or_admin',
                         rules[policies.SHOW].check_str)
        self.assertEqual('rule:project_member_or_admin',
                         rules[policies.REVERT].check_str)
        for rule in rules.values():
            self.assertEqual(['project'], rule.scope_types)

    def test_rules_survive_a_policy_reset(self):
        inst = fakes.instance()
        self.assertTrue(policies.authorize(self.member, policies.SHOW, inst))
        nova_policy.reset()
        self.assertTrue(policies.authorize(self.member, policies.SHOW, inst))
        stranger = self.context(fakes.OTHER_PROJECT, 'member', 'reader')
        self.assertFalse(policies.authorize(stranger, policies.SHOW, inst,
                                            fatal=False))

    def test_configuration_is_never_parsed_again(self):
        # A real nova-api parsed its configuration files at start; parsing
        # CONF again with no arguments (what nova.policy.get_enforcer()
        # does) drops them and fails on keystonemiddleware's required
        # options.  Nova's harness never notices: it parses nothing.
        files = list(CONF.config_file)
        with mock.patch.object(type(CONF), '__call__',
                               side_effect=AssertionError('CONF parsed')), \
                mock.patch.object(nova_policy, 'get_enforcer',
                                  side_effect=AssertionError('get_enforcer')):
            nova_policy.reset()
            inst = fakes.instance()
            self.assertTrue(policies.authorize(self.member, policies.SHOW,
                                               inst))
            reader = self.context(fakes.PROJECT, 'reader')
            self.assertFalse(policies.authorize(reader, policies.REVERT,
                                                inst, fatal=False))
        self.assertEqual(files, list(CONF.config_file))

    def test_a_server_error_is_logged_with_its_traceback(self):
        log = self.useFixture(fixtures.FakeLogger(level='ERROR'))
        self.useFixture(fixtures.MockPatch(
            'nova_snapext.api.controller.Controller.tree',
            side_effect=RuntimeError('boom')))
        resp = self.request('/servers/%s/snapext-snapshots'
                            % self.server.uuid)
        self.assertEqual(500, resp.status_int)
        self.assertNotIn('boom', resp.text)
        self.assertIn('RuntimeError: boom', log.output)
        self.assertIn('Traceback', log.output)


class EntryPointTest(testtools.TestCase):

    def test_setup_cfg_declares_filter_and_policies(self):
        cfg = configparser.ConfigParser()
        cfg.read(os.path.join(os.path.dirname(__file__), '..', '..', '..',
                              '..', 'setup.cfg'))
        entry_points = cfg['entry_points']
        self.assertIn('snapext = nova_snapext.api.filter:filter_factory',
                      entry_points['paste.filter_factory'])
        self.assertIn('nova_snapext = nova_snapext.api.policies:list_rules',
                      entry_points['oslo.policy.policies'])

    def test_filter_factory_wraps_the_app(self):
        app = object()
        wrapped = api_filter.filter_factory({})(app)
        self.assertIsInstance(wrapped, api_filter.SnapextFilter)
        self.assertIs(app, wrapped.application)
        self.assertFalse(CONF.snapext.full_snapshot_default)
