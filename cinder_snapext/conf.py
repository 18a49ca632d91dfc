"""Options of the snapext Cinder backend, and list_opts for the generator.

Backend options go in the backend's own section (``enabled_backends``); the
agent RPC options (transport, timeouts) are nova_snapext's ``[snapext]``
group, which cinder-volume reads as a caller of the agent.
"""

from oslo_config import cfg

from nova_snapext import conf as snapext_conf

DRIVER_OPTS = [
    cfg.IntOpt('snapext_freeze_timeout_ms', default=30000, min=100,
               help='Longest a guest may stay frozen for a consistent '
                    'group snapshot: the agent\'s watchdog thaws it after '
                    'this even when cinder-volume dies mid-snapshot.'),
    cfg.StrOpt('snapext_group_quiesce', default='required',
               choices=[('required', 'fail the group snapshot when a '
                                     'guest cannot be frozen'),
                        ('preferred', 'capture crash-consistent when a '
                                      'guest agent does not answer')],
               help='What a consistent group snapshot does when a guest '
                    'agent cannot freeze.'),
    cfg.BoolOpt('snapext_local_shares', default=False,
                help='Treat each "host:/path" share as the directory /path '
                     'on this host, already there: nothing is mounted.  '
                     'For tests and single-host setups only; the compute '
                     'hosts must see the same files at the same paths.'),
]


def register_opts(conf):
    """[snapext] caller options on ``conf`` (cinder-volume's CONF)."""
    snapext_conf.register_opts(conf)


def list_opts():
    return [('backend_defaults', DRIVER_OPTS),
            (snapext_conf.GROUP, snapext_conf.RPC_OPTS)]
