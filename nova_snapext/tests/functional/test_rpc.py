"""The agent RPC over a real RabbitMQ, with the agent in its own process.

The agent runs as ``snapext-agent`` in a child process; the caller is this
test process or, where a caller must die, a third process.  Proofs come
from inside the guest (qemu-ga's guest-fsfreeze-status), not from what the
agent says.
"""

import os
import time
import uuid

from nova_snapext import exception
from nova_snapext.rpc import api
from nova_snapext.stores import file as file_store
from nova_snapext.testing import rpc as rpc_testing
from nova_snapext.tests.functional import base


class AgentTestCase(base.GuestTestCase):

    disks = ('vda', 'vdb')
    name_prefix = 'snapext-rpc'

    def setUp(self):
        super().setUp()
        self.host = 'snapext-rpc-%s' % uuid.uuid4().hex[:8]
        self.agent = self.useFixture(rpc_testing.AgentProcess(
            os.path.join(self.workdir, 'agent'), self.host,
            uri=base.URI))
        self.client_conf = rpc_testing.client_conf(rpc_timeout=20)
        self.api = api.AgentAPI(self.client_conf)
        self.ctxt = {'request_id': 'req-%s' % uuid.uuid4()}

    def wait_thawed(self, timeout):
        """Seconds until the guest's agent reports thawed, or None."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.guest.freeze_status() == 'thawed':
                return time.monotonic() - started
            time.sleep(0.05)
        return None

    def agent_record(self, snapshot_id):
        conf = rpc_testing.client_conf()
        conf.set_override('file_store_path', self.agent.store_path,
                          'snapext')
        return file_store.FileStore(conf).get(snapshot_id)


class RpcContractTest(AgentTestCase):

    def test_ping_freeze_capture_thaw_status(self):
        g = self.guest
        pong = self.api.ping(self.ctxt, self.host)
        self.assertEqual(self.host, pong['host'])
        self.assertEqual(api.AgentAPI.LATEST, pong['version'])
        self.assertNotEqual(os.getpid(), pong['pid'])
        self.assertEqual([], pong['frozen'])

        before = g.write_file('/mnt/vdb/before.bin')
        frozen = self.api.freeze(self.ctxt, self.host, [g.name], 10000)
        self.assertEqual('frozen', g.freeze_status())
        self.assertEqual(g.dom.UUIDString(),
                         frozen['instances'][g.name]['uuid'])
        self.assertGreaterEqual(frozen['instances'][g.name]['filesystems'],
                                2)
        # one operation per instance: a second freeze is refused
        e = self.assertRaises(exception.Conflict, self.api.freeze,
                              self.ctxt, self.host, [g.name], 10000)
        self.assertIn('frozen by op %s' % frozen['op_id'], str(e))
        self.assertEqual([g.dom.UUIDString()],
                         self.api.ping(self.ctxt, self.host)['frozen'])

        spec = {'instance': g.dom.UUIDString(), 'memory': False,
                'quiesce': 'required', 'targets': ['vdb'],
                'disk_roles': {'vdb': {'role': 'volume',
                                       'volume_id': 'vol-1'}},
                'extra': None, 'freeze_op': frozen['op_id']}
        captured = self.api.capture(self.ctxt, self.host, spec)
        record = captured['manifest']
        self.assertEqual('disks', record['kind'])
        self.assertEqual(['vdb'], [d['target'] for d in record['disks']])
        self.assertEqual('vol-1', record['disks'][0]['volume_id'])
        self.assertEqual('frozen', record['quiesce']['outcome'])
        self.assertIn('snapshot_call', captured['timings_ms'])
        # the volume keeps its file, which holds the state
        self.assertEqual(record['disks'][0]['path'],
                         captured['active_disks']['vdb'])
        self.assertIn(record['disks'][0]['snapshot'],
                      self.internal_states()['vdb'])
        # the caller owns the thaw: still frozen after the capture
        self.assertEqual('frozen', g.freeze_status())
        self.assertEqual('done', self.api.status(
            self.ctxt, self.host, captured['op_id'])['state'])

        thawed = self.api.thaw(self.ctxt, self.host, [g.name])
        window = thawed['instances'][g.name]
        self.assertEqual('caller', window['thawed_by'])
        self.assertEqual('thawed', g.freeze_status())
        self.addDetail('frozen_window_ms', _text(window['frozen_ms']))
        # the record carries the real window, measured by the agent
        self.assertEqual(window['frozen_ms'], self.agent_record(
            record['id'])['quiesce']['frozen_ms'])
        self.assertEqual(before, g.sha256('/mnt/vdb/before.bin'))
        # the disk digest was left for after the thaw: it never lengthens
        # the caller's frozen window, and it comes within seconds
        self.assertNotIn('digest', record['disks'][0])
        deadline = time.monotonic() + 30
        while not self.agent_record(record['id'])['disks'][0].get('digest'):
            self.assertLess(time.monotonic(), deadline, 'no digest')
            time.sleep(0.2)

        # without a freeze first, capture quiesces on its own
        full = self.api.capture(self.ctxt, self.host, {
            'instance': g.name, 'memory': True, 'quiesce': 'required'})
        self.assertEqual('full', full['manifest']['kind'])
        self.assertEqual('frozen', full['manifest']['quiesce']['outcome'])
        self.assertEqual(record['id'], full['manifest']['parent_id'])
        self.assertEqual('thawed', g.freeze_status())

        # a capture insisting on a freeze that is over captures nothing
        e = self.assertRaises(exception.Conflict, self.api.capture,
                              self.ctxt, self.host, dict(spec))
        self.assertIn('no longer frozen by op %s' % frozen['op_id'], str(e))
        e = self.assertRaises(exception.InvalidRequest, self.api.capture,
                              self.ctxt, self.host,
                              {'instance': g.name, 'quiesce': 'always'})
        self.assertIn('quiesce must be one of', str(e))
        self.assertRaises(exception.NotFound, self.api.freeze, self.ctxt,
                          self.host, ['snapext-rpc-no-such-domain'], 1000)
        self.assertEqual('unknown', self.api.status(
            self.ctxt, self.host, 'no-such-op')['state'])

        # revert through the agent: the disk is back at the first capture
        g.write_file('/mnt/vdb/after.bin')
        reverted = self.api.revert(self.ctxt, self.host,
                                   {'snapshot_id': full['manifest']['id']})
        self.assertEqual(g.dom.UUIDString(), reverted['instance_uuid'])
        g.refresh()
        g.wait_for_agent()
        self.assertIsNone(g.sha256('/mnt/vdb/after.bin'))
        self.assertEqual(before, g.sha256('/mnt/vdb/before.bin'))
        self.assertEqual(full['manifest']['id'], self.api.current(
            self.ctxt, self.host, g.dom.UUIDString()))


class WatchdogTest(AgentTestCase):

    def test_killed_caller_guest_thawed_by_watchdog(self):
        timeout_ms = 3000
        frozen, replied_at = rpc_testing.call_in_other_process(
            'freeze', self.host, [self.guest.name], timeout_ms, die=True)
        self.assertEqual('frozen', self.guest.freeze_status())
        since_reply = time.time() - replied_at
        waited = self.wait_thawed(timeout_ms / 1000.0 + 5)
        self.assertIsNotNone(waited, 'the guest stayed frozen')
        latency = since_reply + waited
        self.addDetail('watchdog_thaw_after_s', _text('%.2f' % latency))
        self.assertGreater(latency, timeout_ms / 1000.0 - 0.5)
        self.assertLess(latency, timeout_ms / 1000.0 + 1)
        # a late thaw learns who thawed and when
        late = self.api.thaw(self.ctxt, self.host, [self.guest.name])
        self.assertEqual('watchdog',
                         late['instances'][self.guest.name]['thawed_by'])
        self.assertEqual(frozen['op_id'],
                         late['instances'][self.guest.name]['freeze_op'])
        # the guest writes again
        self.guest.write_file('/mnt/vdb/after-watchdog.bin')

    def test_capture_rearms_the_watchdog(self):
        frozen = self.api.freeze(self.ctxt, self.host, [self.guest.name],
                                 2000)
        time.sleep(1.2)
        self.api.capture(self.ctxt, self.host, {
            'instance': self.guest.name, 'targets': ['vdb'],
            'freeze_op': frozen['op_id']})
        # 2.4 s after the freeze, but only ~1 s after the capture
        time.sleep(1.2)
        self.assertEqual('frozen', self.guest.freeze_status())
        waited = self.wait_thawed(3)
        self.assertIsNotNone(waited, 'the guest stayed frozen')


class AgentDownTest(AgentTestCase):

    def test_no_agent_clear_error_nothing_frozen(self):
        self.agent.stop()
        conf = rpc_testing.client_conf(rpc_timeout=3)
        agent = api.AgentAPI(conf)
        started = time.monotonic()
        e = self.assertRaises(exception.AgentUnavailable, agent.freeze,
                              self.ctxt, self.host, [self.guest.name], 5000)
        took = time.monotonic() - started
        self.addDetail('agent_down_error_after_s', _text('%.2f' % took))
        self.assertIn('no snapext agent on host %s' % self.host, str(e))
        self.assertLess(took, 3 + 1)
        self.assertEqual('thawed', self.guest.freeze_status())

    def test_stopping_agent_thaws_its_guests(self):
        self.api.freeze(self.ctxt, self.host, [self.guest.name], 30000)
        self.assertEqual('frozen', self.guest.freeze_status())
        self.agent.stop()
        self.assertEqual('thawed', self.guest.freeze_status())

    def test_killed_agent_guest_thawed_by_the_next(self):
        # SIGKILL: no watchdog and no stop() runs in the dying agent.
        self.api.freeze(self.ctxt, self.host, [self.guest.name], 30000)
        self.agent.kill()
        self.assertEqual('frozen', self.guest.freeze_status())
        self.agent.start()
        self.assertEqual('thawed', self.guest.freeze_status())
        self.assertEqual([], self.api.ping(self.ctxt, self.host)['frozen'])


class ConnectionDropTest(AgentTestCase):

    def test_broker_connections_drop_during_freeze(self):
        frozen = self.api.freeze(self.ctxt, self.host, [self.guest.name],
                                 15000)
        self.assertEqual('frozen', self.guest.freeze_status())
        dropped = (rpc_testing.close_connections_of(self.agent.proc.pid) +
                   rpc_testing.close_connections_of(os.getpid()))
        self.assertGreater(dropped, 0)
        started = time.monotonic()
        thawed = self.api.thaw(self.ctxt, self.host, [self.guest.name])
        self.addDetail('thaw_after_drop_s',
                       _text('%.2f' % (time.monotonic() - started)))
        self.assertIn(thawed['instances'][self.guest.name]['thawed_by'],
                      ('caller', 'watchdog'))
        self.assertEqual('thawed', self.guest.freeze_status())
        # the agent serves again on its new connection
        captured = self.api.capture(self.ctxt, self.host, {
            'instance': self.guest.name, 'quiesce': 'required'})
        self.assertEqual('frozen', captured['manifest']['quiesce']['outcome'])
        self.assertNotEqual(frozen['op_id'], captured['op_id'])


def _text(value):
    from testtools import content
    return content.text_content(str(value))
