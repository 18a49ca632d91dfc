"""The bundle endpoints (instance-snapshot 1.2) through the API filter."""

from unittest import mock

from nova import exception as nova_exception
from oslo_utils import uuidutils

from nova_snapext.api import bundles
from nova_snapext.api import controller
from nova_snapext.api import filter as api_filter
from nova_snapext.api import policies
from nova_snapext import exception
from nova_snapext.tests.unit.api import fakes
from nova_snapext.tests.unit.api import test_filter

HEADER = test_filter.HEADER
V12 = 'instance-snapshot 1.2'


class Agent(fakes.Agent):
    """The agent client with the bundle calls (RPC 2.3)."""

    def __init__(self, store, images):
        super().__init__(store)
        self.images = images

    def export(self, ctxt, host, spec):
        self._enter('export', ctxt, host, spec)
        # The agent starts the upload: Glance has the image saving.
        self.images.images[spec['image_id']]['status'] = 'saving'

    def import_bundle(self, ctxt, host, spec):
        self._enter('import_bundle', ctxt, host, spec)
        return {'snapshot_id': 'imported-1', 'image_id': 'bootable-1'}


class ImageAPI(fakes.ImageAPI):
    """Glance chooses the id; get hides other projects' images."""

    def create(self, context, image_meta, data=None):
        image_meta = dict(image_meta, status='queued', owner=(
            context.project_id))
        image_meta.setdefault('id', uuidutils.generate_uuid())
        return super().create(context, image_meta, data)

    def get(self, context, image_id):
        image = self.images.get(image_id)
        if image is None or (not context.is_admin and
                             image['owner'] != context.project_id):
            raise nova_exception.ImageNotFound(image_id=image_id)
        return image


class HostAPI(object):
    """nova.compute.api.HostAPI, as far as the import uses it."""

    def __init__(self):
        self.services = []
        self.servicegroup_api = mock.Mock()
        self.servicegroup_api.service_is_up.side_effect = (
            lambda s: s.up)
        self.filters = []

    def add(self, host, disabled=False, up=True):
        self.services.append(mock.Mock(host=host, disabled=disabled, up=up,
                                       binary='nova-compute'))

    def service_get_all(self, context, filters=None, set_zones=False,
                        all_cells=False, cell_down_support=False):
        self.filters.append(dict(filters))
        return [s for s in self.services
                if all(getattr(s, k) == v for k, v in filters.items())]


class BundlesTestCase(test_filter.FilterTestCase):

    def setUp(self):
        super().setUp()
        self.images = ImageAPI()
        self.agent = Agent(self.store, self.images)
        self.hosts = HostAPI()
        self.hosts.add('compute1')
        ctl = controller.Controller(self.flags.conf, self.store,
                                    self.compute, self.images, self.agent,
                                    self.volumes)
        self.app = api_filter.SnapextFilter(
            self.nova, self.flags.conf, ctl, bundles.Bundles(
                self.flags.conf, self.compute, self.images, self.agent,
                self.hosts))
        self.admin = self.context(fakes.PROJECT, 'admin', 'member',
                                  'reader', is_admin=True)

    def bundle_image(self, status='active', project=fakes.PROJECT):
        image_id = uuidutils.generate_uuid()
        self.images.images[image_id] = {'id': image_id, 'status': status,
                                        'owner': project}
        return image_id


class ExportTest(BundlesTestCase):

    def export(self, entity, server=None, context=None, version=V12):
        server = server or self.server
        return self.request('/servers/%s/action' % server.uuid, 'POST',
                            {'snapextExport': entity}, context=context,
                            version=version)

    def test_export_makes_a_queued_image_and_starts_the_agent(self):
        parent = self.snapshot()
        child = self.snapshot()
        resp = self.export({'snapshot_id': child['id'],
                            'since': parent['id']})
        self.assertEqual(202, resp.status_int, resp.text)
        self.assertEqual(V12, resp.headers[HEADER])
        image_id = resp.json_body['image_id']
        self.assertEqual('http://glance.example/images/%s' % image_id,
                         resp.headers['Location'])
        image = self.images.images[image_id]
        self.assertEqual('bare', image['container_format'])
        self.assertEqual('raw', image['disk_format'])
        self.assertEqual(fakes.PROJECT, image['owner'])
        self.assertEqual({'snapext_bundle_of': child['id'],
                          'snapext_bundle_since': parent['id'],
                          'snapext_bundle_format': 'snapext-bundle/1'},
                         image['properties'])
        self.assertEqual('snapext-bundle-%s-since-%s'
                         % (child['id'], parent['id']), image['name'])
        self.assertEqual(('export', 'compute1',
                          {'snapshot_id': child['id'],
                           'since': parent['id'], 'image_id': image_id}),
                         self.agent.calls[-1])
        self.actions.assert_called_once_with(
            self.member, self.server.uuid, 'snapextExport',
            want_result=False)
        self.assertEqual([], self.nova.requests)

    def test_a_full_export_with_a_name(self):
        record = self.snapshot()
        resp = self.export({'snapshot_id': record['id'], 'name': 'mine'})
        self.assertEqual(202, resp.status_int, resp.text)
        image = self.images.images[resp.json_body['image_id']]
        self.assertEqual('mine', image['name'])
        self.assertNotIn('snapext_bundle_since', image['properties'])
        self.assertIsNone(self.agent.calls[-1][2]['since'])

    def test_before_1_2_there_is_no_export(self):
        record = self.snapshot()
        resp = self.export({'snapshot_id': record['id']},
                           version='instance-snapshot 1.1')
        self.assertFault(resp, 404, 'itemNotFound',
                         'needs instance-snapshot API version 1.2')
        self.assertEqual({}, self.images.images)

    def test_bad_bodies_are_400(self):
        for entity in ({}, {'snapshot_id': 7}, {'snapshot_id': '../x'},
                       {'snapshot_id': 's', 'since': '/etc'},
                       {'snapshot_id': 's', 'name': ''},
                       {'snapshot_id': 's', 'force': True}, 'snap-1'):
            resp = self.export(entity)
            self.assertFault(resp, 400, 'badRequest')
        self.assertEqual([], self.agent.calls)
        self.assertEqual({}, self.images.images)

    def test_unknown_or_foreign_snapshot_is_404(self):
        other = self.compute.add(fakes.instance())
        theirs = self.snapshot(other)
        for snapshot_id in ('nope', theirs['id']):
            resp = self.export({'snapshot_id': snapshot_id})
            self.assertFault(resp, 404, 'itemNotFound', snapshot_id)
        stranger = self.context(fakes.OTHER_PROJECT, 'member', 'reader')
        mine = self.snapshot()
        resp = self.export({'snapshot_id': mine['id']}, context=stranger)
        self.assertFault(resp, 404, 'itemNotFound')
        self.assertEqual({}, self.images.images)

    def test_since_must_be_an_ancestor(self):
        first = self.snapshot()
        second = self.snapshot()
        resp = self.export({'snapshot_id': first['id'],
                            'since': second['id']})
        self.assertFault(resp, 400, 'badRequest', 'not an ancestor')
        resp = self.export({'snapshot_id': first['id'],
                            'since': first['id']})
        self.assertFault(resp, 400, 'badRequest', 'not an ancestor')
        resp = self.export({'snapshot_id': second['id'], 'since': 'nope'})
        self.assertFault(resp, 404, 'itemNotFound', 'nope')
        self.assertEqual({}, self.images.images)

    def test_an_unavailable_snapshot_is_409(self):
        record = self.snapshot()
        self.agent.unavailable = {record['id']: 'its disk was replaced'}
        resp = self.export({'snapshot_id': record['id']})
        self.assertFault(resp, 409, 'conflictingRequest',
                         'its disk was replaced')
        self.assertEqual({}, self.images.images)

    def test_busy_or_hostless_server_is_409(self):
        record = self.snapshot()
        for change, words in [({'task_state': 'image_snapshot'},
                               'task_state image_snapshot'),
                              ({'vm_state': 'error'}, 'vm_state error'),
                              ({'host': None}, 'not on a compute host')]:
            server = self.compute.add(fakes.instance(
                uuid=self.server.uuid, **change))
            resp = self.export({'snapshot_id': record['id']}, server=server)
            self.assertFault(resp, 409, 'conflictingRequest', words)
        self.assertEqual({}, self.images.images)

    def test_a_locked_or_stopped_server_exports(self):
        record = self.snapshot()
        server = self.compute.add(fakes.instance(
            uuid=self.server.uuid, locked=True, vm_state='stopped'))
        resp = self.export({'snapshot_id': record['id']}, server=server)
        self.assertEqual(202, resp.status_int, resp.text)

    def test_agent_refusal_deletes_the_image_and_maps(self):
        record = self.snapshot()
        for error, code, name in [
                (exception.InvalidRequest('base state is gone'), 400,
                 'badRequest'),
                (fakes.conflict(self.server.uuid), 409,
                 'conflictingRequest'),
                (exception.AgentUnavailable('no agent'), 503,
                 'serviceUnavailable')]:
            self.agent.export = mock.Mock(side_effect=error)
            resp = self.export({'snapshot_id': record['id']})
            self.assertFault(resp, code, name)
            if code < 500:
                self.assertIn(str(error), resp.json_body[name]['message'])
        self.assertEqual({}, self.images.images)

    def test_an_image_that_cannot_be_deleted_keeps_the_agents_error(self):
        record = self.snapshot()
        self.agent.export = mock.Mock(
            side_effect=exception.InvalidRequest('no such base'))
        self.images.fail_delete = RuntimeError('glance down')
        resp = self.export({'snapshot_id': record['id']})
        self.assertFault(resp, 400, 'badRequest', 'no such base')

    def test_export_needs_a_member(self):
        record = self.snapshot()
        resp = self.export({'snapshot_id': record['id']},
                           context=self.context(fakes.PROJECT, 'reader'))
        self.assertFault(resp, 403, 'forbidden')
        self.assertEqual({}, self.images.images)


class ImportTest(BundlesTestCase):

    def import_(self, entity, context=None, version=V12, raw=None):
        return self.request('/snapext-snapshots/import', 'POST',
                            {'import': entity} if raw is None else None,
                            context=context, version=version, raw=raw)

    def test_import_on_an_up_host(self):
        image_id = self.bundle_image()
        self.hosts.add('compute2', disabled=True)
        self.hosts.add('compute3', up=False)
        resp = self.import_({'image_id': image_id, 'name': 'booted'})
        self.assertEqual(201, resp.status_int, resp.text)
        self.assertEqual(V12, resp.headers[HEADER])
        self.assertEqual({'snapshot_id': 'imported-1',
                          'image_id': 'bootable-1'}, resp.json_body)
        self.assertEqual('http://localhost/snapext-snapshots/imported-1',
                         resp.headers['Location'])
        self.assertEqual(('import_bundle', 'compute1',
                          {'image_id': image_id, 'name': 'booted'}),
                         self.agent.calls[-1])
        self.assertEqual([{'binary': 'nova-compute', 'disabled': False}],
                         self.hosts.filters)

    def test_import_on_a_servers_host(self):
        image_id = self.bundle_image()
        server = self.compute.add(fakes.instance(host='compute7'))
        resp = self.import_({'image_id': image_id, 'name': 'n',
                             'server_id': server.uuid})
        self.assertEqual(201, resp.status_int, resp.text)
        self.assertEqual('compute7', self.agent.calls[-1][1])
        hostless = self.compute.add(fakes.instance(host=None))
        resp = self.import_({'image_id': image_id, 'name': 'n',
                             'server_id': hostless.uuid})
        self.assertFault(resp, 409, 'conflictingRequest',
                         'not on a compute host')
        foreign = self.compute.add(fakes.instance(
            project_id=fakes.OTHER_PROJECT))
        resp = self.import_({'image_id': image_id, 'name': 'n',
                             'server_id': foreign.uuid})
        self.assertFault(resp, 404, 'itemNotFound', foreign.uuid)

    def test_only_an_admin_chooses_the_host(self):
        image_id = self.bundle_image()
        self.hosts.add('compute2', disabled=True)
        entity = {'image_id': image_id, 'name': 'n', 'host': 'compute2'}
        resp = self.import_(entity)
        self.assertFault(resp, 403, 'forbidden')
        resp = self.import_(entity, context=self.admin)
        self.assertEqual(201, resp.status_int, resp.text)
        self.assertEqual('compute2', self.agent.calls[-1][1])
        resp = self.import_(dict(entity, host='nowhere'),
                            context=self.admin)
        self.assertFault(resp, 400, 'badRequest', 'nowhere')
        resp = self.import_(dict(entity, server_id=self.server.uuid),
                            context=self.admin)
        self.assertFault(resp, 400, 'badRequest', 'not both')

    def test_no_host_up_is_503(self):
        image_id = self.bundle_image()
        self.hosts.services = []
        resp = self.import_({'image_id': image_id, 'name': 'n'})
        self.assertFault(resp, 503, 'serviceUnavailable', 'nova-compute')

    def test_the_bundle_image_must_be_visible_and_active(self):
        theirs = self.bundle_image(project=fakes.OTHER_PROJECT)
        for image_id in (theirs, uuidutils.generate_uuid()):
            resp = self.import_({'image_id': image_id, 'name': 'n'})
            self.assertFault(resp, 404, 'itemNotFound', image_id)
        queued = self.bundle_image(status='queued')
        resp = self.import_({'image_id': queued, 'name': 'n'})
        self.assertFault(resp, 409, 'conflictingRequest', 'queued')
        self.assertEqual([], self.agent.calls)

    def test_agent_refusals_carry_its_message(self):
        image_id = self.bundle_image()
        for error, code in [
                (exception.InvalidRequest('member disks/vda.qcow2 does not '
                                          'match its sha256'), 400),
                (exception.Conflict('snapshot s-1 exists already'), 409)]:
            self.agent.error = error
            resp = self.import_({'image_id': image_id, 'name': 'n'})
            self.assertEqual(code, resp.status_int)
            self.assertIn(str(error), resp.text)
            self.assertNotIn('Traceback', resp.text)

    def test_bad_requests(self):
        image_id = self.bundle_image()
        for entity in ({'name': 'n'}, {'image_id': image_id},
                       {'image_id': 'not-a-uuid', 'name': 'n'},
                       {'image_id': image_id, 'name': ''},
                       {'image_id': image_id, 'name': 'n', 'x': 1}):
            resp = self.import_(entity)
            self.assertFault(resp, 400, 'badRequest')
        resp = self.import_(None, raw=b'{"import": ')
        self.assertFault(resp, 400, 'badRequest', 'Malformed')
        resp = self.request('/snapext-snapshots/import', 'POST', raw=b'x',
                            version=V12, content_type='text/plain')
        self.assertFault(resp, 415, 'badMediaType',
                         'application/octet-stream')
        resp = self.import_({'image_id': image_id, 'name': 'n'},
                            version='instance-snapshot 1.1')
        self.assertFault(resp, 404, 'itemNotFound', '1.2')
        resp = self.request('/snapext-snapshots/import', version=V12)
        self.assertFault(resp, 405, 'badMethod')
        self.assertEqual([], self.agent.calls)

    def test_import_needs_a_member(self):
        image_id = self.bundle_image()
        resp = self.import_({'image_id': image_id, 'name': 'n'},
                            context=self.context(fakes.PROJECT, 'reader'))
        self.assertFault(resp, 403, 'forbidden')

    def test_the_project_in_the_url_must_be_the_callers(self):
        image_id = self.bundle_image()
        resp = self.request('/%s/snapext-snapshots/import'
                            % fakes.OTHER_PROJECT, 'POST',
                            {'import': {'image_id': image_id, 'name': 'n'}},
                            version=V12)
        self.assertFault(resp, 400, 'badRequest', 'Malformed request URL')
        resp = self.request('/%s/snapext-snapshots/import' % fakes.PROJECT,
                            'POST',
                            {'import': {'image_id': image_id, 'name': 'n'}},
                            version=V12)
        self.assertEqual(201, resp.status_int, resp.text)


class PolicyTest(BundlesTestCase):

    def test_bundle_rules(self):
        rules = {r.name: r for r in policies.list_rules()}
        self.assertEqual('rule:project_member_or_admin',
                         rules[policies.EXPORT].check_str)
        self.assertEqual('rule:project_member_or_admin',
                         rules[policies.IMPORT].check_str)
        self.assertEqual('rule:context_is_admin',
                         rules[policies.IMPORT_HOST].check_str)
