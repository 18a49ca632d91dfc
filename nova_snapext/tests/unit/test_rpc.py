"""The agent RPC contract, end to end over oslo.messaging's fake driver.

The same client and server as production, in one process, with a fake
engine and fake libvirt domains: the wiring (targets, versions, error
mapping) and the agent's rules (all-or-none freeze, refusal, watchdog).
The real broker and guest are in the functional tests.
"""

import errno
import threading
import time
from unittest import mock

import fixtures
from oslo_config import cfg
import oslo_messaging as messaging
import testtools

from nova_snapext import conf as snapext_conf
from nova_snapext import exception
from nova_snapext.rpc import agent
from nova_snapext.rpc import api
from nova_snapext.rpc import watchdog
from nova_snapext.tests.unit import fakes

DISKS_XML = """<domain><devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
    <source file='/srv/v/volume-1.snapext-new'/>
    <target dev='vdb' bus='virtio'/></disk>
</devices></domain>"""


class FakeDomain(object):

    def __init__(self, name, uuid, fail_freeze=False):
        self._name = name
        self._uuid = uuid
        self.fail_freeze = fail_freeze
        self.frozen = False
        self.calls = []

    def name(self):
        return self._name

    def UUIDString(self):
        return self._uuid

    def XMLDesc(self, flags=0):
        return DISKS_XML

    def fsFreeze(self):
        self.calls.append('freeze')
        if self.fail_freeze:
            import libvirt
            raise libvirt.libvirtError('agent not responding')
        self.frozen = True
        return 2

    def fsThaw(self):
        self.calls.append('thaw')
        self.frozen = False
        return 2


class FakeEngine(object):

    def __init__(self, domains):
        self.domains = {d.name(): d for d in domains}
        self.domains.update({d.UUIDString(): d for d in domains})
        self.store = mock.Mock()
        self.taken = []
        self.block = None
        self.digests_at_take = []
        self.digested = []
        self.digests_done = threading.Event()
        self.unavailable = {}
        self.trees = []
        # what rebuild_lost answers (None: NotFound), and its calls
        self.lost = None
        self.rebuilt = []
        self.made_durable = []

    def domain(self, ident):
        try:
            return self.domains[ident]
        except KeyError:
            raise exception.NotFound('domain %s not found' % ident)

    def take(self, domain, memory=True, quiesce_policy=None,
             disk_roles=None, extra=None, targets=None, digests=True):
        self.digests_at_take.append(digests)
        if self.block:
            self.block.wait(5)
        dom = self.domain(domain)
        self.taken.append((dom.name(), quiesce_policy, dom.frozen))
        record = fakes.record('snap-%d' % len(self.taken), kind='disks',
                              memory=None)
        record['disks'][0]['target'] = 'vdb'
        record.update(extra or {})
        self.store.get.side_effect = {record['id']: record}.get
        return record

    def availability(self, record):
        reason = self.unavailable.get(record['id'])
        return reason is None, reason

    def tree(self, domain, records=False):
        self.trees.append((domain, records))
        return {'instance_uuid': domain, 'current': None, 'snapshots': [],
                'records': [], 'broken': []}

    def resumable(self, snapshot_id, context=None):
        return self.store.get(snapshot_id)

    def make_durable(self, snapshot_id, context, notify=None):
        self.made_durable.append((snapshot_id, context))
        notify(42)
        return {'image_id': 'bundle-' + snapshot_id, 'bytes': 42}

    def rebuild_lost(self, snapshot_id, context):
        # a store that keeps no bundles: lost is lost
        self.rebuilt.append((snapshot_id, context))
        if self.lost is None:
            raise exception.NotFound('snapshot %s not found' % snapshot_id)
        return self.lost

    def record_digests(self, snapshot_id):
        self.digested.append(snapshot_id)
        self.digests_done.set()


def _conf():
    conf = cfg.ConfigOpts()
    snapext_conf.register_opts(conf)
    conf([], project='snapext')
    conf.set_override('rpc_timeout', 5, 'snapext')
    return conf


class RpcOverFakeDriverTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.conf = _conf()
        # the watchdog's markers go there
        self.conf.set_override('lock_path',
                               self.useFixture(fixtures.TempDir()).path,
                               'snapext')
        self.a = FakeDomain('a', 'uuid-a')
        self.b = FakeDomain('b', 'uuid-b')
        self.engine = FakeEngine([self.a, self.b])
        transport = messaging.get_rpc_transport(
            self.conf, url='fake:/', allowed_remote_exmods=[
                'nova_snapext.exception'])
        self.service = agent.AgentService(
            self.conf, self.engine, 'host1', transport=transport,
            notification_transport=messaging.get_notification_transport(
                self.conf, url='fake:/')).start()
        self.addCleanup(self.service.stop)
        self.api = api.AgentAPI(self.conf, transport=transport)

    def test_broken_record_and_storage_error_travel(self):
        self.engine.store.get.side_effect = exception.BrokenRecord(
            snapshot_id='s1', instance_uuid='uuid-a', reason='not JSON')
        e = self.assertRaises(exception.BrokenRecord, self.api.revert,
                              {}, 'host1', {'snapshot_id': 's1'})
        self.assertEqual(('s1', 'uuid-a', 'not JSON'),
                         (e.snapshot_id, e.instance_uuid, e.reason))
        self.engine.store.get.side_effect = exception.StorageError(
            'No space left on device: /s', errno=errno.ENOSPC)
        e = self.assertRaises(exception.StorageError, self.api.revert,
                              {}, 'host1', {'snapshot_id': 's1'})
        self.assertEqual((errno.ENOSPC, 'No space left on device: /s'),
                         (e.errno, str(e)))

    def test_delete_of_a_broken_record(self):
        self.engine.store.get.side_effect = exception.BrokenRecord(
            snapshot_id='s1', instance_uuid='uuid-a', reason='not JSON')
        self.engine.store.list.return_value = []
        self.engine.delete = mock.Mock(return_value={
            'id': 's1', 'broken': True, 'kept': ['/d:snapext-s1']})
        result = self.api.delete({}, 'host1', {'snapshot_id': 's1'})
        self.engine.delete.assert_called_once_with('s1', context={})
        self.assertEqual((True, ['/d:snapext-s1']),
                         (result['broken'], result['kept']))

    def test_ping(self):
        pong = self.api.ping({}, 'host1')
        self.assertEqual('host1', pong['host'])
        self.assertEqual([], pong['frozen'])

    def test_freeze_is_all_or_none(self):
        self.b.fail_freeze = True
        e = self.assertRaises(exception.QuiesceRequired, self.api.freeze,
                              {}, 'host1', ['a', 'b'], 5000)
        # the plain class, with the agent's message and no traceback
        self.assertIs(exception.QuiesceRequired, type(e))
        self.assertIn('could not freeze', str(e))
        self.assertNotIn('Traceback', str(e))
        self.assertFalse(self.a.frozen)
        self.assertEqual(['freeze', 'thaw'], self.a.calls)
        self.assertEqual([], self.api.ping({}, 'host1')['frozen'])

    def test_capture_inside_freeze_does_not_refreeze(self):
        frozen = self.api.freeze({}, 'host1', ['a'], 5000)
        out = self.api.capture({}, 'host1', {
            'instance': 'a', 'targets': ['vdb'], 'quiesce': 'required',
            'freeze_op': frozen['op_id']})
        self.assertEqual([('a', 'off', True)], self.engine.taken)
        self.assertEqual({'policy': 'required', 'outcome': 'frozen',
                          'frozen_ms': None}, out['manifest']['quiesce'])
        self.assertEqual({'vdb': '/srv/v/volume-1.snapext-new'},
                         out['active_disks'])
        thawed = self.api.thaw({}, 'host1', ['a'])
        self.assertEqual('caller', thawed['instances']['a']['thawed_by'])
        self.assertFalse(self.a.frozen)
        # the window lands in the record
        updated = self.engine.store.update.call_args[0][0]
        self.assertEqual(thawed['instances']['a']['frozen_ms'],
                         updated['quiesce']['frozen_ms'])
        # the disk digests wait for the thaw: they must not lengthen it
        self.assertEqual([False], self.engine.digests_at_take)
        self.assertTrue(self.engine.digests_done.wait(5))
        self.assertEqual([out['manifest']['id']], self.engine.digested)

    def test_refusals(self):
        self.api.freeze({}, 'host1', ['a'], 5000)
        self.assertRaises(exception.Conflict, self.api.freeze, {}, 'host1',
                          ['a'], 5000)
        self.engine.store.get.return_value = fakes.record(
            instance_uuid='uuid-a')
        e = self.assertRaises(exception.Conflict, self.api.revert, {},
                              'host1', {'snapshot_id': 's1'})
        self.assertIn('thaw it before reverting', str(e))
        self.assertRaises(exception.Conflict, self.api.capture, {}, 'host1',
                          {'instance': 'b', 'freeze_op': 'other'})
        self.assertRaises(exception.InvalidRequest, self.api.capture, {},
                          'host1', {'instance': 'a', 'colour': 'blue'})
        self.assertRaises(exception.NotFound, self.api.thaw, {}, 'host1',
                          ['zzz'])

    def test_concurrent_capture_refused(self):
        self.engine.block = threading.Event()
        first = threading.Thread(target=self.api.capture,
                                 args=({}, 'host1', {'instance': 'a'}))
        first.start()
        time.sleep(0.3)
        try:
            e = self.assertRaises(exception.Conflict, self.api.capture, {},
                                  'host1', {'instance': 'uuid-a'})
            self.assertIn('busy with capture', str(e))
        finally:
            self.engine.block.set()
            first.join()

    def test_watchdog_thaws_and_thaw_reports_it(self):
        frozen = self.api.freeze({}, 'host1', ['a'], 200)
        time.sleep(0.6)
        self.assertFalse(self.a.frozen)
        late = self.api.thaw({}, 'host1', ['a'])['instances']['a']
        self.assertEqual('watchdog', late['thawed_by'])
        self.assertEqual(frozen['op_id'], late['freeze_op'])

    def test_status(self):
        frozen = self.api.freeze({}, 'host1', ['a'], 5000)
        status = self.api.status({}, 'host1', frozen['op_id'])
        self.assertEqual('done', status['state'])
        self.assertEqual(['a'], status['instances'])

    def test_stop_thaws(self):
        self.api.freeze({}, 'host1', ['a'], 5000)
        self.service.stop()
        self.assertFalse(self.a.frozen)

    def test_stop_thaws_even_when_the_listener_fails_to_stop(self):
        self.api.freeze({}, 'host1', ['a'], 5000)
        listener = self.service._listener
        stop = listener.stop
        listener.stop = mock.Mock(side_effect=[RuntimeError('stuck'), None])
        self.addCleanup(stop)
        self.assertRaises(RuntimeError, self.service.stop)
        self.assertFalse(self.a.frozen)

    def test_freeze_timeout_capped(self):
        self.conf.set_override('max_freeze_ms', 1000, 'snapext')
        self.assertEqual(1000, self.api.freeze({}, 'host1', ['a'],
                                               10 ** 6)['timeout_ms'])

    def test_version_cap(self):
        # 1.x agents merged overlay files; a 2.0 client must not drive them
        self.conf.set_override('agent_version_cap', '1.2', 'snapext')
        self.addCleanup(self.conf.clear_override, 'agent_version_cap',
                        'snapext')
        old = api.AgentAPI(self.conf, transport=self.service._transport)
        e = self.assertRaises(exception.AgentUnavailable, old.delete, {},
                              'host1', {'snapshot_id': 's1'})
        self.assertIn('version cap is 1.2', str(e))

    def test_get_answers_the_record_with_its_availability(self):
        record = fakes.record('s1', instance_uuid='uuid-a')
        self.engine.store.get.side_effect = {'s1': record}.get
        answer = self.api.get({}, 'host1', 's1')
        self.assertEqual((record, None), (answer['manifest'],
                                          answer['reason']))
        self.engine.unavailable['s1'] = 'disk vda: replaced'
        answer = self.api.get({}, 'host1', 's1', timeout=2)
        self.assertEqual('disk vda: replaced', answer['reason'])

    def test_get_raises_as_the_store_does(self):
        for error in (exception.NotFound('snapshot s1 not found'),
                      exception.BrokenRecord(snapshot_id='s1',
                                             instance_uuid='uuid-a',
                                             reason='not JSON')):
            self.engine.store.get.side_effect = error
            e = self.assertRaises(type(error), self.api.get, {}, 'host1',
                                  's1')
            self.assertIs(type(error), type(e))
        self.assertEqual(('s1', 'uuid-a', 'not JSON'),
                         (e.snapshot_id, e.instance_uuid, e.reason))

    def test_get_rebuilds_a_lost_record_with_the_callers_context(self):
        record = fakes.record('s1', instance_uuid='uuid-a')
        self.engine.store.get.side_effect = exception.NotFound('not cached')
        self.engine.lost = record
        answer = self.api.get({'project_id': 'p1', 'auth_token': 't'},
                              'host1', 's1')
        self.assertEqual(record, answer['manifest'])
        [(snapshot_id, ctxt)] = self.engine.rebuilt
        self.assertEqual(('s1', 'p1', 't'), (snapshot_id, ctxt['project_id'],
                                             ctxt['auth_token']))

    def _volume_record(self, cinder_snapshot_id):
        record = fakes.record('s1', instance_uuid='uuid-a')
        record['disks'][0].update(volume_id='vol-1',
                                  cinder_snapshot_id=cinder_snapshot_id)
        self.engine.store.get.side_effect = {'s1': record}.get

    def test_make_durable_once_cinder_adopted(self):
        self.engine.store.keeps_bundles = True
        self._volume_record('csnap-1')
        answer = self.api.make_durable({'project_id': 'p1'}, 'host1',
                                       {'snapshot_id': 's1',
                                        'adopted': ['vol-1']})
        self.assertEqual('bundle-s1', answer['durable']['image_id'])
        [(snapshot_id, ctxt)] = self.engine.made_durable
        self.assertEqual(('s1', 'p1'), (snapshot_id, ctxt['project_id']))

    def test_make_durable_refuses_a_state_cinder_did_not_adopt(self):
        self.conf.set_override('rpc_timeout', 1, 'snapext')
        self.addCleanup(self.conf.clear_override, 'rpc_timeout', 'snapext')
        self.engine.store.keeps_bundles = True
        self._volume_record(None)
        err = self.assertRaises(exception.Conflict, self.api.make_durable,
                                {}, 'host1', {'snapshot_id': 's1',
                                              'adopted': ['vol-1']})
        self.assertIn('did not adopt the state of volume vol-1', str(err))
        self.assertEqual([], self.engine.made_durable)

    def test_make_durable_with_a_store_that_keeps_no_bundles(self):
        self.engine.store.keeps_bundles = False
        answer = self.api.make_durable({}, 'host1', {'snapshot_id': 's1'})
        self.assertIsNone(answer['durable'])
        self.assertEqual([], self.engine.made_durable)

    def test_make_durable_is_not_sent_below_2_4(self):
        self.conf.set_override('agent_version_cap', '2.3', 'snapext')
        self.addCleanup(self.conf.clear_override, 'agent_version_cap',
                        'snapext')
        old = api.AgentAPI(self.conf, transport=self.service._transport)
        self.assertIsNone(old.make_durable({}, 'host1',
                                           {'snapshot_id': 's1'}))
        self.assertEqual([], self.engine.made_durable)

    def test_tree_carries_the_records(self):
        answer = self.api.tree({}, 'host1', 'uuid-a')
        self.assertEqual(([], []), (answer['records'], answer['broken']))
        self.assertEqual([('uuid-a', True)], self.engine.trees)

    def test_capped_below_2_2(self):
        # a 2.1 agent: tree still works (as 2.0, without records), get is
        # not sent
        self.conf.set_override('agent_version_cap', '2.1', 'snapext')
        self.addCleanup(self.conf.clear_override, 'agent_version_cap',
                        'snapext')
        old = api.AgentAPI(self.conf, transport=self.service._transport)
        with mock.patch.object(old.client, 'prepare',
                               wraps=old.client.prepare) as prepare:
            old.tree({}, 'host1', 'uuid-a')
        self.assertEqual('2.0', prepare.call_args[1]['version'])
        e = self.assertRaises(exception.AgentUnavailable, old.get, {},
                              'host1', 's1')
        self.assertIn('version cap is 2.1', str(e))

    def test_unexpected_agent_error(self):
        self.engine.take = mock.Mock(side_effect=RuntimeError('boom'))
        e = self.assertRaises(exception.AgentError, self.api.capture, {},
                              'host1', {'instance': 'a'})
        self.assertIn('RuntimeError: boom', str(e))


class WatchdogTest(testtools.TestCase):

    def test_suspended_and_stale_timers_do_not_fire(self):
        expired = []
        dog = watchdog.Watchdog(expired.append)
        state = watchdog.Frozen('u', 'n', 'op', 0.1)
        dog.arm(state)
        dog.suspend('u')
        time.sleep(0.3)
        self.assertEqual([], expired)
        dog.rearm('u')
        time.sleep(0.3)
        self.assertEqual([state], expired)
        self.assertIsNone(dog.release('u'))

    def test_release_wins_once(self):
        expired = []
        dog = watchdog.Watchdog(expired.append)
        dog.arm(watchdog.Frozen('u', 'n', 'op', 0.05))
        self.assertIsNotNone(dog.release('u'))
        time.sleep(0.2)
        self.assertEqual([], expired)
