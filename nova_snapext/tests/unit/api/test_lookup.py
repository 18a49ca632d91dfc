"""nova-api finds records over RPC: through the image, else every host."""

import fixtures
from nova import exception as nova_exception

from nova_snapext.tests.unit.api import fakes
from nova_snapext.tests.unit.api import test_filter


class LookupTest(test_filter.FilterTestCase):
    """The records live on compute2; compute1 and compute3 have none."""

    def setUp(self):
        super().setUp()
        self.hosts.services = fakes.HostAPI(
            ('compute1', 'compute2', 'compute3')).services
        self.agent.host = 'compute2'
        self.server = self.compute.add(fakes.instance(host='compute2'))
        self.flags.config(rpc_lookup_timeout=3, group='snapext')
        self.timeouts = []
        get = self.agent.get

        def timed_get(ctxt, host, snapshot_id, timeout=None):
            self.timeouts.append((host, timeout))
            return get(ctxt, host, snapshot_id, timeout)
        self.agent.get = timed_get

    def image(self, record, host='compute2'):
        self.images.images['img-' + record['id']] = {
            'id': 'img-' + record['id'], 'properties': {
                'snapext_manifest': record['id'], 'snapext_host': host,
                'instance_uuid': record['instance_uuid']}}

    def show(self, snapshot_id):
        return self.request('/snapext-snapshots/%s' % snapshot_id)

    def test_the_image_names_the_host_to_ask(self):
        record = self.snapshot(image_id='img-snap-1')
        self.image(record)
        resp = self.show(record['id'])
        self.assertEqual(200, resp.status_int, resp.text)
        self.assertEqual(record['id'], resp.json_body['snapshot']['id'])
        self.assertEqual([('compute2', 3)], self.timeouts)

    def test_without_an_image_every_compute_host_is_asked(self):
        record = self.snapshot()
        resp = self.show(record['id'])
        self.assertEqual(200, resp.status_int, resp.text)
        self.assertEqual('available', resp.json_body['snapshot']['state'])
        # in turn, until one has it
        self.assertEqual([('compute1', 3), ('compute2', 3)], self.timeouts)

    def test_an_image_naming_another_host_falls_back_to_the_others(self):
        record = self.snapshot()
        self.image(record, host='compute1')
        self.assertEqual(200, self.show(record['id']).status_int)
        self.assertEqual([('compute1', 3), ('compute2', 3)],
                         self.timeouts)

    def test_glance_failing_still_finds_the_snapshot(self):
        record = self.snapshot()
        self.useFixture(fixtures.MockPatchObject(
            self.images, 'get_all', side_effect=RuntimeError('glance down')))
        self.assertEqual(200, self.show(record['id']).status_int)

    def test_disabled_and_down_services_are_not_asked(self):
        record = self.snapshot()
        self.hosts.services[0].disabled = True
        self.hosts.down.add('compute3')
        self.assertEqual(200, self.show(record['id']).status_int)
        self.assertEqual(['compute2'], [h for h, _ in self.timeouts])

    def test_an_agent_that_does_not_answer_is_skipped(self):
        record = self.snapshot()
        self.agent.down.add('compute1')
        log = self.useFixture(fixtures.FakeLogger(level='WARNING'))
        resp = self.show(record['id'])
        self.assertEqual(200, resp.status_int, resp.text)
        self.assertIn('snapext agent on host compute1 did not answer',
                      log.output)

    def test_not_found_where_some_did_not_answer_is_503(self):
        # the snapshot may be on the silent host: not a 404, not a 500
        self.agent.down.add('compute2')
        resp = self.show('snap-x')
        self.assertFault(resp, 503, 'serviceUnavailable',
                         'No snapext agent answered')
        self.assertNotIn('compute2', resp.text)

    def test_the_hosts_agent_down_is_503_for_show_and_delete(self):
        record = self.snapshot(image_id='img-snap-1')
        self.image(record)
        self.agent.down.add('compute2')
        self.assertFault(self.show(record['id']), 503, 'serviceUnavailable')
        resp = self.request('/snapext-snapshots/%s' % record['id'],
                            method='DELETE')
        self.assertFault(resp, 503, 'serviceUnavailable')
        self.assertEqual(['capture'], self.agent_actions())

    def test_another_projects_snapshot_is_404_like_a_missing_one(self):
        other = self.compute.add(fakes.instance(
            project_id=fakes.OTHER_PROJECT, host='compute2'))
        theirs = self.snapshot(other)
        named = self.snapshot(other)
        self.image(named)
        missing = self.show('snap-missing')
        self.assertFault(missing, 404, 'itemNotFound')
        for record in (theirs, named):
            for method in ('GET', 'DELETE'):
                resp = self.request('/snapext-snapshots/%s' % record['id'],
                                    method=method)
                self.assertEqual(missing.text.replace('snap-missing',
                                                      record['id']),
                                 resp.text)
                self.assertEqual(404, resp.status_int)
        self.assertEqual(['capture', 'capture'], self.agent_actions())

    def test_delete_of_a_snapshot_no_image_names(self):
        # taken by the snapext CLI or a Cinder group snapshot
        record = self.snapshot()
        resp = self.request('/snapext-snapshots/%s' % record['id'],
                            method='DELETE')
        self.assertEqual(204, resp.status_int, resp.text)
        self.assertEqual(('delete', 'compute2',
                          {'snapshot_id': record['id']}),
                         self.agent.calls[-1])
        self.assertEqual([], self.store.list(self.server.uuid))

    def test_revert_asks_the_servers_host_only(self):
        record = self.snapshot()
        resp = self.request('/servers/%s/action' % self.server.uuid,
                            'POST', {'snapextRevert': {
                                'snapshot_id': record['id']}})
        self.assertEqual(202, resp.status_int, resp.text)
        self.assertEqual([('compute2', 3)], self.timeouts)
        self.agent.down.add('compute2')
        resp = self.request('/servers/%s/action' % self.server.uuid,
                            'POST', {'snapextRevert': {
                                'snapshot_id': record['id']}})
        self.assertFault(resp, 503, 'serviceUnavailable')

    def test_the_tree_is_one_call_to_the_servers_host(self):
        record = self.snapshot()
        body = self.request('/servers/%s/snapext-snapshots'
                            % self.server.uuid).json_body
        self.assertEqual([record['id']], [n['id'] for n in body['snapshots']])
        self.assertEqual([('tree', 'compute2', self.server.uuid)],
                         [c for c in self.agent.calls if c[0] != 'capture'])

    def test_the_tree_of_a_server_with_no_host_is_409(self):
        shelved = self.compute.add(fakes.instance(
            host=None, vm_state='shelved_offloaded'))
        resp = self.request('/servers/%s/snapext-snapshots' % shelved.uuid)
        self.assertFault(resp, 409, 'conflictingRequest',
                         'not on a compute host')

    def test_an_agent_older_than_2_2_gives_a_503_tree(self):
        tree = self.agent.tree

        def old_tree(*args):
            answer = tree(*args)
            del answer['records'], answer['broken']
            return answer
        self.agent.tree = old_tree
        resp = self.request('/servers/%s/snapext-snapshots'
                            % self.server.uuid)
        self.assertFault(resp, 503, 'serviceUnavailable')

    def test_a_vanished_server_makes_its_snapshot_404(self):
        record = self.snapshot()
        self.useFixture(fixtures.MockPatchObject(
            self.compute, 'get', side_effect=nova_exception.InstanceNotFound(
                instance_id=self.server.uuid)))
        self.assertFault(self.show(record['id']), 404, 'itemNotFound')
