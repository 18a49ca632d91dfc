"""snapext-agent: the snapext RPC agent as a standalone service.

For compute hosts that do not run the snapext Nova driver (which starts the
agent inside nova-compute), and for the tests and the demo.  Options come
from the usual ``--config-file``s: ``[DEFAULT] host`` (the server name
callers address) and ``transport_url``, and ``[snapext]``.
"""

import signal
import socket
import sys
import threading

from oslo_config import cfg
from oslo_log import log as logging

from nova_snapext.capture import engine as engine_mod
from nova_snapext import conf as snapext_conf
from nova_snapext.rpc import agent

LOG = logging.getLogger(__name__)

HOST_OPT = cfg.StrOpt(
    'host', default=socket.gethostname(), sample_default='<hostname>',
    help='Name this agent answers to: the compute host name (Nova\'s '
         'CONF.host, Cinder\'s attached_host).')


def main(argv=None):
    conf = cfg.ConfigOpts()
    snapext_conf.register_opts(conf)
    conf.register_opt(HOST_OPT)
    logging.register_options(conf)
    conf(sys.argv[1:] if argv is None else argv, project='snapext',
         prog='snapext-agent')
    logging.setup(conf, 'snapext-agent')
    engine = engine_mod.Engine(conf)
    # As nova-compute's init_host() does: a capture that died with the
    # previous agent may have left a guest frozen or orphan overlays.
    engine.recover()
    service = agent.AgentService(conf, engine, conf.host)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *args: stopping.set())
    service.start()
    # Readiness line for supervisors and tests that wait for it.
    print('snapext-agent ready host=%s' % conf.host, flush=True)
    while not stopping.wait(1):
        pass
    LOG.info('snapext-agent stopping')
    service.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
