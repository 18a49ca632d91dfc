"""The RPC contract between snapext callers and the per-host agent.

Imports neither Nova nor Cinder: nova-compute (through the driver), the
standalone ``snapext-agent`` and cinder-volume all load it.  Everything on
the wire is a primitive (dicts, lists, strings, numbers); the request
context travels as a dict.
"""

import importlib

import oslo_messaging as messaging

EXCHANGE = 'snapext'
TOPIC = 'snapext-agent'

# Errors of these modules travel back to the caller as themselves; any
# other error arrives as exception.AgentError (see api.AgentAPI).
ALLOWED_EXMODS = ['nova_snapext.exception']


def get_transport(conf):
    """The agent's own transport: [snapext] transport_url, else the service's.

    With no URL oslo.messaging falls back to [DEFAULT] transport_url, which
    is what "the service's own transport" means in nova-compute and
    cinder-volume.
    """
    register_global_only_opts(conf)
    return messaging.get_rpc_transport(
        conf, url=conf.snapext.transport_url or None,
        allowed_remote_exmods=ALLOWED_EXMODS)


def register_global_only_opts(conf):
    """Make oslo.messaging's metrics and tracing options readable.

    oslo.messaging 18 registers them on the global cfg.CONF only but reads
    them from the transport's conf, so with a private ConfigOpts (the
    standalone agent's, a test's) every call fails without this.  (Its own
    ConfFixture does the same.)  Registering the same options again is a
    no-op.
    """
    for module, attr in (('oslo_messaging._metrics.client',
                          'oslo_messaging_metrics'),
                         ('oslo_messaging._tracing.client',
                          'oslo_messaging_tracing')):
        try:
            opts = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
        conf.register_opts(opts, group=attr)
