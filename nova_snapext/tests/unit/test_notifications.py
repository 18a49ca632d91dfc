"""Glance's image.delete deletes the snapshots made for the image.

The decision is pure; the endpoint is driven directly; the listener runs
inside the agent service over oslo.messaging's fake driver, as Glance's
notifications would reach it.
"""

import time

import fixtures
from oslo_config import cfg
import oslo_messaging as messaging
import testtools

from nova_snapext import conf as snapext_conf
from nova_snapext import exception
from nova_snapext.rpc import agent
from nova_snapext.rpc import notifications
from nova_snapext import stores
from nova_snapext.tests.unit import fakes

UUID_A = '6f1c7c1e-0000-4000-8000-00000000000a'
UUID_B = '6f1c7c1e-0000-4000-8000-00000000000b'


def _conf(root):
    conf = cfg.ConfigOpts()
    snapext_conf.register_opts(conf)
    conf([], project='snapext')
    conf.set_override('file_store_path', root, 'snapext')
    conf.set_override('lock_path', root + '/locks', 'snapext')
    return conf


class StoreTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.conf = _conf(self.useFixture(fixtures.TempDir()).path)
        self.store = stores.load('file', self.conf)

    def commit(self, snapshot_id, instance_uuid=UUID_A, image_id=None):
        record = fakes.record(snapshot_id, instance_uuid=instance_uuid,
                              image_id=image_id)
        self.store.stage(instance_uuid, snapshot_id)
        self.store.commit(record)
        return record

    def ids(self):
        return sorted(r['id'] for r in notifications.local_records(
            self.store))


class DecisionTest(testtools.TestCase):

    records = [{'id': 's1', 'image_id': 'img-1'},
               {'id': 's2', 'image_id': None},
               {'id': 's3'},
               {'id': 's4', 'image_id': 'img-1'},
               {'id': 's5', 'image_id': 'img-2'}]

    def decide(self, event_type, payload):
        image_id = notifications.deleted_image(event_type, payload)
        if image_id is None:
            return []
        return notifications.snapshots_of_deleted_image(image_id,
                                                        self.records)

    def test_every_record_of_the_deleted_image(self):
        self.assertEqual(['s1', 's4'],
                         self.decide('image.delete', {'id': 'img-1'}))
        self.assertEqual(['s5'], self.decide('image.delete',
                                             {'id': 'img-2',
                                              'status': 'deleted'}))

    def test_nothing_for_other_images_events_or_payloads(self):
        self.assertEqual([], self.decide('image.delete', {'id': 'img-9'}))
        self.assertEqual([], self.decide('image.update', {'id': 'img-1'}))
        self.assertEqual([], self.decide('image.delete', {}))
        self.assertEqual([], self.decide('image.delete', {'id': None}))
        self.assertEqual([], self.decide('image.delete', 'img-1'))

    def test_bundles_that_need_the_image_parents_first(self):
        def durable(*chain):
            return {'image_id': chain[0], 'since': None,
                    'chain': list(chain)}
        records = [{'id': 'grandchild',
                    'durable': durable('b3', 'b2', 'b1')},
                   {'id': 'child', 'durable': durable('b2', 'b1')},
                   {'id': 'parent', 'durable': durable('b1')},
                   {'id': 'other', 'durable': durable('b9')},
                   {'id': 'cached-only'}]
        self.assertEqual(['parent', 'child', 'grandchild'],
                         notifications.snapshots_losing_bundle('b1',
                                                               records))
        self.assertEqual(['child', 'grandchild'],
                         notifications.snapshots_losing_bundle('b2',
                                                               records))
        self.assertEqual([], notifications.snapshots_losing_bundle('img',
                                                                   records))


class EndpointTest(StoreTestCase):

    def setUp(self):
        super().setUp()
        self.deleted = []
        self.errors = {}  # snapshot id -> [errors to raise, in turn]
        self.now = 0.0
        self.slept = []
        self.endpoint = notifications.ImageDeleteEndpoint(
            self.store, self.delete, sleep=self.sleep, clock=lambda: self.now)

    def delete(self, snapshot_id):
        errors = self.errors.get(snapshot_id)
        if errors:
            raise errors.pop(0)
        self.deleted.append(snapshot_id)
        self.store.delete(snapshot_id)

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds

    def notify(self, image_id, event_type='image.delete'):
        self.endpoint.info({}, 'image.localhost', event_type,
                           {'id': image_id, 'status': 'deleted'}, {})

    def test_deletes_the_records_of_the_image_on_any_instance(self):
        self.commit('s1', image_id='img-1')
        self.commit('s2', image_id='img-2')
        self.commit('s3', instance_uuid=UUID_B, image_id='img-1')
        self.commit('s4')
        self.notify('img-1')
        self.assertEqual(['s1', 's3'], sorted(self.deleted))
        self.assertEqual(['s2', 's4'], self.ids())

    def test_a_deleted_bundle_image_is_uploaded_again(self):
        redone = []
        self.endpoint.redo_durable = lambda image_id, ids: redone.append(
            (image_id, ids))
        record = self.commit('s1', image_id='img-1')
        record['durable'] = {'image_id': 'bundle-1', 'since': None,
                             'chain': ['bundle-1']}
        self.store.update(record)
        self.notify('bundle-1')
        self.assertEqual([('bundle-1', ['s1'])], redone)
        self.assertEqual([], self.deleted)

    def test_unknown_images_are_ignored_quietly(self):
        self.commit('s1', image_id='img-1')
        logs = self.useFixture(fixtures.FakeLogger(level='INFO'))
        self.notify('img-9')
        self.assertEqual([], self.deleted)
        self.assertEqual('', logs.output)

    def test_a_busy_instance_is_retried(self):
        self.commit('s1', image_id='img-1')
        self.errors['s1'] = [exception.Conflict('busy'),
                             exception.Conflict('busy')]
        self.notify('img-1')
        self.assertEqual(['s1'], self.deleted)
        self.assertEqual([notifications.RETRY_INTERVAL] * 2, self.slept)

    def test_a_busy_instance_is_given_up_on_with_a_warning(self):
        self.commit('s1', image_id='img-1')
        self.commit('s2', image_id='img-1')
        self.errors['s1'] = [exception.Conflict('busy')] * 1000
        logs = self.useFixture(fixtures.FakeLogger(level='WARNING'))
        self.notify('img-1')
        self.assertEqual(['s2'], self.deleted)
        self.assertIn('snapshot s1 stays', logs.output)
        self.assertIn('DELETE /snapext-snapshots/s1', logs.output)
        self.assertLessEqual(self.now, notifications.RETRY_FOR
                             + notifications.RETRY_INTERVAL)

    def test_gone_meanwhile_or_failing_leaves_the_others(self):
        self.commit('s1', image_id='img-1')
        self.commit('s2', image_id='img-1')
        self.commit('s3', image_id='img-1')
        self.errors['s1'] = [exception.NotFound('gone')]
        self.errors['s2'] = [RuntimeError('libvirt said no')]
        self.useFixture(fixtures.FakeLogger(level='WARNING'))
        self.notify('img-1')
        self.assertEqual(['s3'], self.deleted)
        self.assertEqual([], self.slept)


class FakeEngine(object):
    """What AgentService needs of the engine for a delete."""

    def __init__(self, store):
        self.store = store
        self.deleted = []

    def delete(self, snapshot_id, context=None):
        self.deleted.append(snapshot_id)
        self.store.delete(snapshot_id)


class ListenerTest(StoreTestCase):
    """Glance's notification, through the agent service, to the engine."""

    def setUp(self):
        super().setUp()
        rpc_transport = messaging.get_rpc_transport(self.conf, url='fake:/')
        self.transport = messaging.get_notification_transport(
            self.conf, url='fake:/')
        # The fake driver delivers on the exchange its notifier sends on.
        self.conf.set_override('glance_control_exchange',
                               self.conf.control_exchange, 'snapext')
        self.glance = messaging.Notifier(
            self.transport, publisher_id='image.localhost',
            driver='messagingv2', topics=['notifications'])
        # Two hosts, each with its own store.
        other = _conf(self.useFixture(fixtures.TempDir()).path)
        self.other_store = stores.load('file', other)
        self.services = {}
        for host, store in (('host1', self.store),
                            ('host2', self.other_store)):
            service = agent.AgentService(
                self.conf, FakeEngine(store), host, transport=rpc_transport,
                notification_transport=self.transport).start()
            self.addCleanup(service.stop)
            self.services[host] = service

    def wait_for(self, predicate, timeout=5):
        deadline = time.monotonic() + timeout
        while not predicate():
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.02)

    def test_every_host_hears_image_delete_through_its_own_pool(self):
        # Two snapshots made for one image cannot happen, but each host
        # deleting its own proves that each host got the notification.
        self.commit('s1', image_id='img-1')
        self.commit('s2', image_id='img-2')
        self.other_store.stage(UUID_B, 's3')
        self.other_store.commit(fakes.record('s3', instance_uuid=UUID_B,
                                             image_id='img-1'))
        self.glance.info({}, 'image.update', {'id': 'img-1'})
        self.glance.info({}, 'image.delete', {'id': 'img-1'})
        self.wait_for(lambda: self.ids() == ['s2'] and not
                      notifications.local_records(self.other_store))
        self.assertEqual(
            {'host1': ['s1'], 'host2': ['s3']},
            {h: s.endpoint.engine.deleted for h, s in self.services.items()})
        self.glance.info({}, 'image.delete', {'id': 'img-2'})
        self.wait_for(lambda: self.ids() == [])

    def test_the_delete_takes_the_agents_claim_and_is_logged(self):
        self.commit('s1', image_id='img-1')
        service = self.services['host1']
        busy = service.endpoint.ops.start('revert', [UUID_A])
        with service.endpoint._claim([UUID_A], busy):
            self.assertRaises(exception.Conflict, service.delete_snapshot,
                              's1')
        self.assertEqual(['s1'], self.ids())
        service.delete_snapshot('s1')
        self.assertEqual([], self.ids())
        self.assertRaises(exception.NotFound, service.delete_snapshot, 's1')

    def test_the_listener_can_be_turned_off(self):
        self.conf.set_override('image_delete_listener', False, 'snapext')
        service = agent.AgentService(
            self.conf, FakeEngine(self.store), 'host3',
            transport=messaging.get_rpc_transport(self.conf, url='fake:/'),
            notification_transport=self.transport).start()
        self.addCleanup(service.stop)
        self.assertIsNone(service._listener)
