"""Faults an operator meets, injected for real on the real guest.

A corrupt or foreign record in the store, an unreachable libvirt, a full
or read-only store, a missing qemu-img, an agent killed in the middle of a
long RPC call.  Each test proves from inside the guest that nothing was
lost: the counter goes on (or continues from the snapshot after a revert),
the files match, the filesystems are thawed.
"""

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import libvirt

from nova_snapext import exception
from nova_snapext.rpc import api
from nova_snapext.testing import guest as guest_mod
from nova_snapext.testing import rpc as rpc_testing
from nova_snapext.tests.functional import base
from nova_snapext.tests.functional import test_rpc


def run_cli(config, *args, env=None):
    """The real command in its own process: (rc, stdout, stderr)."""
    out = subprocess.run(
        [sys.executable, '-W', 'ignore', '-m', 'nova_snapext.cmd.snapext',
         '--config-file', config] + list(args),
        capture_output=True, text=True, cwd=guest_mod.REPO, timeout=300,
        env=dict(os.environ, **(env or {})))
    return out.returncode, out.stdout, out.stderr


class FaultTestCase(base.GuestTestCase):

    disks = ('vda', 'vdb')
    name_prefix = 'snapext-rec'

    def write_config(self, **overrides):
        options = {'file_store_path': self.conf.snapext.file_store_path,
                   'lock_path': self.conf.snapext.lock_path,
                   'libvirt_uri': base.URI}
        options.update(overrides)
        path = os.path.join(self.workdir, 'snapext-%s.conf'
                            % uuid.uuid4().hex[:6])
        with open(path, 'w') as f:
            f.write('[snapext]\n' + ''.join('%s = %s\n' % kv
                                            for kv in options.items()))
        return path

    def assertOneLineError(self, rc, err, *expected):
        self.assertNotEqual(0, rc)
        self.assertNotIn('Traceback', err)
        lines = [line for line in err.splitlines()
                 if line.startswith('snapext: error:')]
        self.assertEqual(1, len(lines), err)
        for text in expected:
            self.assertIn(text, lines[0])

    def assertAliveAndThawed(self):
        self.assertRunningAndThawed()
        self.assertEqual('thawed', self.guest.freeze_status())

    def snapext_states(self):
        return {target: [n for n in names if n.startswith('snapext-')]
                for target, names in self.internal_states().items()}


class BrokenRecordTest(FaultTestCase):

    def test_a_corrupt_sibling_never_blocks_the_others(self):
        g = self.guest
        config = self.write_config()
        first = self.engine.take(g.name, quiesce_policy='required')
        before = g.write_file('/mnt/vdb/before.bin')
        second, tick = self.take_noting_tick(quiesce_policy='required')
        g.write_file('/mnt/vdb/after.bin')

        # bytes flipped in the middle of the first record, as a failing
        # disk or a bad copy does
        path = self.engine.store.local_path(first, 'manifest.json')
        with open(path, 'r+b') as f:
            f.seek(os.path.getsize(path) // 2)
            f.write(b'\xff\x00\xfe garbage \x00')

        tree = self.engine.tree(g.name)
        broken = [n for n in tree['snapshots'] if n['state'] == 'broken']
        self.assertEqual([first['id']], [n['id'] for n in broken])
        self.assertIn('UTF-8', broken[0]['reason'])
        # the child stays under its broken parent, and is current
        self.assertEqual([(second['id'], 'available', True)],
                         [(n['id'], n['state'], n['current'])
                          for n in broken[0]['children']])

        rc, out, err = run_cli(config, 'list', g.name)
        self.assertEqual(0, rc, err)
        self.assertEqual('broken', json.loads(out)['snapshots'][0]['state'])
        rc, out, err = run_cli(config, 'show', first['id'])
        self.assertEqual(0, rc, err)
        self.assertEqual(('broken', g.dom.UUIDString()),
                         (json.loads(out)['state'],
                          json.loads(out)['instance_uuid']))
        rc, out, err = run_cli(config, 'revert', first['id'])
        self.assertOneLineError(rc, err, 'broken')

        # take, revert and delete of the others work, and say so
        rc, out, err = run_cli(config, 'take', g.name, '--disk-only')
        self.assertEqual(0, rc, err)
        third = json.loads(out)
        self.assertEqual(second['id'], third['parent_id'])
        offset = g.console_size()
        rc, out, err = run_cli(config, 'revert', second['id'])
        self.assertEqual((0, 'reverted to %s\n' % second['id']), (rc, out),
                         err)
        self.assertCounterContinues(offset, tick)
        self.assertEqual(before, g.sha256('/mnt/vdb/before.bin'))
        self.assertIsNone(g.sha256('/mnt/vdb/after.bin'))
        self.assertAliveAndThawed()
        rc, out, err = run_cli(config, 'delete', third['id'])
        self.assertEqual(0, rc, err)

        # the broken record goes; its disk states stay, named
        rc, out, err = run_cli(config, 'delete', first['id'])
        self.assertEqual(0, rc, err)
        self.assertIn('deleted %s (a broken record)' % first['id'], out)
        self.assertIn('snapext-%s' % first['id'], out)
        self.assertIn('snapext-%s' % first['id'],
                      self.snapext_states()['vdb'])
        tree = self.engine.tree(g.name)
        self.assertEqual([(second['id'], 'available')],
                         [(n['id'], n['state']) for n in tree['snapshots']])
        self.assertEqual(before, g.sha256('/mnt/vdb/before.bin'))
        self.assertAliveAndThawed()

    def test_a_foreign_record_is_broken_where_it_lies(self):
        g = self.guest
        mine = self.engine.take(g.name, quiesce_policy='off', memory=False)
        # another instance's record dropped into this one's directory
        foreign = dict(mine, id=str(uuid.uuid4()),
                       instance_uuid=str(uuid.uuid4()))
        where = os.path.join(self.conf.snapext.file_store_path,
                             g.dom.UUIDString(), foreign['id'])
        os.makedirs(where)
        with open(os.path.join(where, 'manifest.json'), 'w') as f:
            json.dump(foreign, f)
        tree = self.engine.tree(g.name)
        self.assertEqual(
            {mine['id']: 'available', foreign['id']: 'broken'},
            {n['id']: n['state'] for n in tree['snapshots']})
        self.assertIn('record of instance %s' % foreign['instance_uuid'],
                      [n for n in tree['snapshots']
                       if n['id'] == foreign['id']][0]['reason'])
        child = self.engine.take(g.name, quiesce_policy='off', memory=False)
        self.assertEqual(mine['id'], child['parent_id'])
        result = self.engine.delete(foreign['id'])
        self.assertEqual((True, []), (result['broken'], result['kept']))
        self.engine.delete(child['id'])
        self.assertEqual([mine['id']],
                         [m['id'] for m in self.engine.list(g.name)])
        self.assertAliveAndThawed()


class HostFaultTest(FaultTestCase):

    def test_unreachable_libvirt_and_missing_qemu_img_are_one_line(self):
        g = self.guest
        config = self.write_config(
            libvirt_uri='qemu+tcp://127.0.0.1:1/system')
        for args in (('list', g.name), ('take', g.name), ('demo',)):
            rc, out, err = run_cli(config, *args)
            self.assertOneLineError(rc, err, 'cannot connect to libvirt at '
                                    'qemu+tcp://127.0.0.1:1/system')

        config = self.write_config()
        rc, out, err = run_cli(config, 'take', g.name, '--disk-only',
                               env={'PATH': '/nonexistent'})
        self.assertOneLineError(rc, err, 'qemu-img')
        # The tree of a running guest comes from its QEMU: no qemu-img.
        rc, out, err = run_cli(config, 'list', g.name,
                               env={'PATH': '/nonexistent'})
        self.assertEqual(0, rc, err)
        self.assertEqual({'vda': [], 'vdb': []}, self.snapext_states())
        self.assertEqual([], self.staging_dirs())
        self.assertAliveAndThawed()

    def mount_small_store(self, size):
        store = self.conf.snapext.file_store_path
        os.makedirs(store, exist_ok=True)
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s' % size,
                        'snapext-rec', store], check=True)
        self.addCleanup(subprocess.run, ['umount', '-l', store])
        return store

    def test_full_store_during_a_take(self):
        g = self.guest
        before = g.write_file('/mnt/vdb/before.bin')
        store = self.mount_small_store('8m')
        tick = g.last_tick()[0]
        e = self.assertRaises(exception.SnapextError, self.engine.take,
                              g.name, quiesce_policy='required')
        self.assertIn('No space left on device', str(e))
        self.assertNotIn('\n', str(e))
        # nothing left behind, guest running, thawed, counting on
        self.assertEqual([], self.staging_dirs())
        self.assertEqual({'vda': [], 'vdb': []}, self.snapext_states())
        self.assertAliveAndThawed()
        self.assertGreater(g.last_tick()[0], tick)
        self.assertEqual(before, g.sha256('/mnt/vdb/before.bin'))
        # the CLI says it in one line
        rc, out, err = run_cli(self.write_config(), 'take', g.name)
        self.assertOneLineError(rc, err, 'No space left on device')
        self.assertEqual([], self.staging_dirs())
        # a record small enough still fits: the store works
        record = self.engine.take(g.name, memory=False,
                                  quiesce_policy='required')
        self.assertEqual([record['id']],
                         [m['id'] for m in self.engine.list(g.name)])
        self.assertTrue(os.path.ismount(store))

        # read-only now (as a store whose permissions deny writing)
        subprocess.run(['mount', '-o', 'remount,ro', store], check=True)
        rc, out, err = run_cli(self.write_config(), 'take', g.name,
                               '--disk-only')
        self.assertOneLineError(rc, err, 'Read-only file system')
        self.assertEqual(['snapext-%s' % record['id']],
                         self.snapext_states()['vdb'])
        self.assertAliveAndThawed()
        self.assertEqual(before, g.sha256('/mnt/vdb/before.bin'))


class AgentDeathTest(test_rpc.AgentTestCase):
    """A long call to an agent that dies fails in about the call monitor."""

    name_prefix = 'snapext-rec-rpc'
    # the step each test's agent makes slow, and how slow
    slow = {}
    monitor = 4

    def setUp(self):
        super().setUp()
        # the base's agent is replaced by one with a slow step
        self.agent.stop()
        self.agent = self.useFixture(rpc_testing.AgentProcess(
            os.path.join(self.workdir, 'slow-agent'), self.host,
            uri=base.URI,
            module='nova_snapext.tests.functional.slow_agent',
            env={'SNAPEXT_TEST_SLOW': ','.join(
                '%s=%s' % kv for kv in self.slow.items())}))
        self.client_conf.set_override('rpc_call_monitor_timeout',
                                      self.monitor, 'snapext')
        self.client_conf.set_override('rpc_capture_timeout', 300, 'snapext')
        self.api = api.AgentAPI(self.client_conf)

    def call_and_kill_at(self, mark, method, spec):
        """Start ``method``; SIGKILL the agent once its log has ``mark``.

        :returns: (the exception, seconds from the kill to the failure)
        """
        outcome = {}

        def call():
            try:
                outcome['result'] = getattr(self.api, method)(
                    self.ctxt, self.host, spec)
            except Exception as exc:
                outcome['error'] = exc
            outcome['at'] = time.monotonic()

        caller = threading.Thread(target=call)
        caller.start()
        mark = mark.encode()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(self.agent.log, 'rb') as f:
                if mark in f.read():
                    break
            time.sleep(0.05)
        else:
            self.fail('the agent never logged %s:\n%s'
                      % (mark, self.agent.tail()))
        time.sleep(0.5)
        self.agent.kill()
        killed = time.monotonic()
        caller.join(120)
        self.assertNotIn('result', outcome)
        return outcome['error'], outcome['at'] - killed


class SlowCaptureTest(AgentDeathTest):

    slow = {'nova_snapext.capture.guest:Guest.save_memory': 15}
    monitor = 4

    def test_slow_capture_of_a_live_agent_completes(self):
        g = self.guest
        started = time.monotonic()
        captured = self.api.capture(self.ctxt, self.host, {
            'instance': g.name, 'memory': True, 'quiesce': 'required'})
        took = time.monotonic() - started
        # three times the call monitor, kept alive by the heartbeat
        self.assertGreater(took, 3 * self.monitor)
        self.assertEqual('full', captured['manifest']['kind'])
        self.assertAliveAndThawed()

    def test_killed_agent_in_a_capture_is_noticed_in_seconds(self):
        g = self.guest
        before = g.write_file('/mnt/vdb/before.bin')
        error, after_kill = self.call_and_kill_at(
            'snapext frozen ', 'capture',
            {'instance': g.name, 'memory': True, 'quiesce': 'required'})
        self.assertIsInstance(error, exception.AgentLost)
        self.assertIn('stopped answering capture', str(error))
        self.addDetail('noticed_after_kill_s',
                       test_rpc._text('%.1f' % after_kill))
        # within about the call monitor, far from rpc_capture_timeout
        self.assertLess(after_kill, self.monitor + 3)
        # the dead agent left the guest paused and frozen: the next one
        # recovers it at its start
        self.agent.start()
        self.assertAliveAndThawed()
        self.assertEqual(before, g.sha256('/mnt/vdb/before.bin'))
        self.assertEqual({'vda': [], 'vdb': []}, {
            t: [n for n in names if n.startswith('snapext-')]
            for t, names in self.internal_states().items()})

    def assertAliveAndThawed(self):
        self.guest.refresh()
        self.assertEqual(libvirt.VIR_DOMAIN_RUNNING,
                         self.guest.dom.state()[0])
        tick = self.guest.last_tick()[0]
        self.guest.wait_for_tick(after=tick + 2, timeout=30)
        self.assertEqual('thawed', self.guest.freeze_status())


class KilledRevertTest(AgentDeathTest):

    # before anything irreversible: the artifacts are being verified
    slow = {'nova_snapext.capture.verify:VerifyOps._verify_before_resume':
            60}
    monitor = 4

    def test_killed_agent_in_a_revert_is_noticed_in_seconds(self):
        g = self.guest
        record = self.api.capture(self.ctxt, self.host, {
            'instance': g.name, 'memory': True,
            'quiesce': 'required'})['manifest']
        after = g.write_file('/mnt/vdb/after.bin')
        tick = g.last_tick()[0]
        error, after_kill = self.call_and_kill_at(
            'snapext agent revert ', 'revert',
            {'snapshot_id': record['id']})
        self.assertIsInstance(error, exception.AgentLost)
        self.assertLess(after_kill, self.monitor + 3)
        self.addDetail('noticed_after_kill_s',
                       test_rpc._text('%.1f' % after_kill))
        # killed before it touched the guest: it runs on, as it was
        g.refresh()
        self.assertEqual(libvirt.VIR_DOMAIN_RUNNING, g.dom.state()[0])
        g.wait_for_tick(after=tick + 2, timeout=30)
        self.assertEqual('thawed', g.freeze_status())
        self.assertEqual(after, g.sha256('/mnt/vdb/after.bin'))
