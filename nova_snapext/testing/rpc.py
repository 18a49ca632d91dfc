"""A real snapext agent in its own process, over a real RabbitMQ.

The RPC tests (nova_snapext and cinder_snapext) run the agent exactly as an
operator would (``python -m nova_snapext.cmd.agent --config-file ...``) and
talk to it from the test process, or from yet another process, through the
broker at 127.0.0.1:5672.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import fixtures
from oslo_config import cfg
import testtools

from nova_snapext import conf as snapext_conf
from nova_snapext.testing import guest as guest_mod

TRANSPORT_URL = os.environ.get('SNAPEXT_TRANSPORT_URL',
                               'rabbit://guest:guest@127.0.0.1:5672/')
START_RABBITMQ = os.path.join(guest_mod.REPO, 'tools', 'start-rabbitmq.sh')


def _listening(host='127.0.0.1', port=5672):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def require_rabbitmq():
    """Start Debian's rabbitmq-server if needed; fail or skip without it."""
    if _listening():
        return
    result = subprocess.run(['bash', START_RABBITMQ], capture_output=True,
                            text=True)
    if _listening():
        return
    why = ('no RabbitMQ at 127.0.0.1:5672 (tools/start-rabbitmq.sh: %s)'
           % (result.stderr.strip() or result.returncode))
    if os.environ.get('SNAPEXT_REQUIRE_GUEST'):
        raise RuntimeError(why)
    raise testtools.TestCase.skipException(why)


def client_conf(rpc_timeout=30):
    """A caller's ConfigOpts: [snapext] options on the test broker."""
    conf = cfg.ConfigOpts()
    snapext_conf.register_opts(conf)
    conf([], project='snapext')
    conf.set_override('transport_url', TRANSPORT_URL, 'snapext')
    conf.set_override('rpc_timeout', rpc_timeout, 'snapext')
    return conf


AGENT_CONF = """[DEFAULT]
host = {host}
debug = true
transport_url = {url}

[snapext]
libvirt_uri = {uri}
file_store_path = {workdir}/agent-store
lock_path = {workdir}/agent-locks
max_freeze_ms = {max_freeze_ms}
"""


class AgentProcess(fixtures.Fixture):
    """``snapext-agent`` in a child process; stopped (SIGTERM) on cleanup."""

    def __init__(self, workdir, host, uri='qemu:///system',
                 max_freeze_ms=60000, module='nova_snapext.cmd.agent',
                 env=None):
        super().__init__()
        self.workdir = workdir
        self.host = host
        self.uri = uri
        self.max_freeze_ms = max_freeze_ms
        # the module run as the agent (a test's wrapper), and its
        # environment additions
        self.module = module
        self.env = env
        self.proc = None

    def _setUp(self):
        require_rabbitmq()
        os.makedirs(self.workdir, exist_ok=True)
        self.config_file = os.path.join(self.workdir, 'agent.conf')
        with open(self.config_file, 'w') as f:
            f.write(AGENT_CONF.format(
                host=self.host, url=TRANSPORT_URL, uri=self.uri,
                workdir=self.workdir, max_freeze_ms=self.max_freeze_ms))
        self.log = os.path.join(self.workdir, 'agent.log')
        self.start()
        self.addCleanup(self.stop)

    @property
    def store_path(self):
        return os.path.join(self.workdir, 'agent-store')

    def start(self, timeout=60):
        # A restarted agent appends to the same log: only its own lines
        # count.
        offset = (os.path.getsize(self.log) if os.path.exists(self.log)
                  else 0)
        with open(self.log, 'ab') as log:
            self.proc = subprocess.Popen(
                [sys.executable, '-W', 'ignore', '-m', self.module,
                 '--config-file', self.config_file],
                stdout=log, stderr=subprocess.STDOUT,
                cwd=guest_mod.REPO, env=dict(os.environ, **(self.env or {})))
        deadline = time.monotonic() + timeout
        mark = b'snapext-agent ready host=%s' % self.host.encode()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('snapext-agent exited with %s; log:\n%s'
                                   % (self.proc.returncode, self.tail()))
            with open(self.log, 'rb') as f:
                f.seek(offset)
                if mark in f.read():
                    return
            time.sleep(0.1)
        raise RuntimeError('snapext-agent not ready within %d s; log:\n%s'
                           % (timeout, self.tail()))

    def tail(self, lines=40):
        with open(self.log, 'rb') as f:
            return b'\n'.join(f.read().splitlines()[-lines:]).decode(
                errors='replace')

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self):
        self.proc.kill()
        self.proc.wait()


CALLER = """
import json, os, signal, sys, time
from nova_snapext.rpc import api
from nova_snapext.testing import rpc
args = json.loads(sys.argv[1])
agent = api.AgentAPI(rpc.client_conf())
result = getattr(agent, args['method'])({}, args['host'], *args['args'])
print(json.dumps({'result': result, 'replied_at': time.time()}), flush=True)
if args.get('die'):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def call_in_other_process(method, host, *args, die=False):
    """Call the agent from a separate caller process; (result, reply time).

    With ``die`` the caller is SIGKILLed right after the reply, as a
    crashed cinder-volume or nova-api would be.
    """
    out = subprocess.run(
        [sys.executable, '-W', 'ignore', '-c', CALLER,
         json.dumps({'method': method, 'host': host, 'args': list(args),
                     'die': die})],
        capture_output=True, text=True, cwd=guest_mod.REPO, timeout=120)
    lines = [line for line in out.stdout.splitlines()
             if line.startswith('{')]
    if not lines:
        raise RuntimeError('caller process failed (%s): %s'
                           % (out.returncode, out.stderr[-2000:]))
    reply = json.loads(lines[-1])
    return reply['result'], reply['replied_at']


def close_connections_of(pid):
    """Close every RabbitMQ connection opened by process ``pid``.

    oslo.messaging names its connections "<program>:<pid>:<uuid>", so only
    this process's connections drop, not those of other suites sharing
    the broker.
    """
    out = subprocess.run(
        ['rabbitmqctl', '-q', '--no-table-headers', 'list_connections',
         'pid', 'client_properties'],
        check=True, capture_output=True, text=True).stdout
    closed = 0
    for line in out.splitlines():
        conn_pid, _, properties = line.partition('\t')
        # connection_name sits in client_properties (RabbitMQ 3.10's
        # list_connections has no column for it).
        if ':%d:' % pid in properties:
            subprocess.run(['rabbitmqctl', '-q', 'close_connection',
                            conn_pid, 'snapext test: connection drop'],
                           check=True, capture_output=True)
            closed += 1
    return closed
