"""The [snapext] options, and list_opts for oslo-config-generator."""

from oslo_config import cfg

GROUP = cfg.OptGroup('snapext', title='snapext options',
                     help='Complete instance snapshots (memory, CPU state '
                          'and every disk).')

OPTS = [
    cfg.StrOpt('libvirt_uri', default='qemu:///system',
               help='libvirt connection URI used by the capture engine.'),
    cfg.StrOpt('store', default='file',
               help='Where snapshot records and memory images go: the name '
                    'of a plugin in the snapext.stores entry point group.  '
                    '"file": a directory on this host (file_store_path).  '
                    '"glance" (for nova-compute): the same directory as a '
                    'local cache, and every snapshot uploaded to Glance as '
                    'one hidden image holding its bundle (a delta on its '
                    'parent\'s when that is in Glance), during the '
                    'snapshot\'s image_uploading phase; revert and fast '
                    'clone fetch and verify a snapshot the cache lost, or '
                    'never had, from there.'),
    cfg.StrOpt('file_store_path', default='/var/lib/snapext',
               help='Directory of the "file" store, and the local cache of '
                    'the "glance" store.'),
    cfg.StrOpt('lock_path', default='/var/lib/snapext/locks',
               help='Directory of the per-instance lock files that keep two '
                    'snapshot operations off one instance, across '
                    'processes.'),
    cfg.StrOpt('quiesce_policy', default='preferred',
               choices=[('required', 'fail when the guest agent cannot '
                                     'freeze the filesystems'),
                        ('preferred', 'freeze when the agent answers, '
                                      'otherwise capture crash-consistent'),
                        ('off', 'never freeze')],
               help='Default quiesce policy for snapshots.'),
    cfg.IntOpt('thaw_after_restore_timeout', default=30, min=1,
               help='Seconds to wait for the guest agent of a reverted '
                    'guest to thaw the filesystems that were frozen in its '
                    'memory image.'),
    cfg.IntOpt('libvirt_job_timeout', default=600, min=1,
               deprecated_name='block_job_timeout',
               help='Seconds recovery waits for a libvirt job (a memory '
                    'save) that an interrupted capture left running.'),
    cfg.BoolOpt('revert_keeps_memory', default=True,
                help='Whether a revert saves the running guest\'s memory '
                     'before it stops it, so that a revert whose restore '
                     'fails (or that is interrupted before the snapshot\'s '
                     'guest runs) gives the guest back exactly as it was, '
                     'RAM included.  It costs writing the guest\'s RAM once '
                     '(time, and that much free space in the store while '
                     'the revert runs).  Off: the guest is destroyed, and '
                     'such a revert boots it on its previous disks.'),
    cfg.IntOpt('libvirt_reconnect_timeout', default=30, min=1,
               help='Seconds a failed revert waits for libvirtd to answer '
                    'again (it may have been restarted) before it gives up '
                    'bringing the guest back and leaves that to recovery at '
                    'the next service start.'),
    cfg.BoolOpt('disk_digests', default=True,
                help='Whether a snapshot records a digest of each disk '
                     'state (per-cluster sha256 of what the internal '
                     'snapshot maps in the disk file), computed after the '
                     'guest resumed; a child snapshot hashes only the '
                     'clusters changed since its parent.'),
    cfg.BoolOpt('verify_disks_before_resume', default=True,
                help='Whether revert and clone check every disk state '
                     'against its recorded digest before they change '
                     'anything (this reads all the data the snapshot holds '
                     'in each disk file).  The memory image is always '
                     'checked against its size and sha256.'),
    cfg.BoolOpt('full_snapshot_default', default=False,
                help='Whether "nova image-create" takes a full snapshot '
                     '(memory, CPU state and every disk) by default.  A '
                     'request overrides it with the image metadata '
                     'snapext_full=true|false.'),
]

RPC_OPTS = [
    cfg.StrOpt('transport_url', secret=True,
               help='oslo.messaging transport URL of the snapext agent RPC '
                    '(exchange "snapext", topic "snapext-agent").  Unset: '
                    'the service\'s own [DEFAULT] transport_url.'),
    cfg.IntOpt('rpc_timeout', default=60, min=1,
               help='Seconds a caller waits for the agent to answer ping, '
                    'freeze, thaw and status.'),
    cfg.IntOpt('rpc_capture_timeout', default=600, min=1,
               help='Seconds a caller waits for the agent to answer capture, '
                    'revert and delete (a memory image takes a while).'),
    cfg.IntOpt('rpc_call_monitor_timeout', default=60, min=0,
               help='Seconds without a heartbeat from the agent after which '
                    'a caller of capture, revert, delete or release gives up '
                    '(oslo.messaging\'s call_monitor_timeout, as Nova uses '
                    'for its long calls): a dead agent is noticed in about '
                    'this time, while a live one, which heartbeats every '
                    'half of it, may work up to rpc_capture_timeout.  0 '
                    'turns the call monitor off (a caller of a dead agent '
                    'then waits rpc_capture_timeout); values under 2 count '
                    'as 2, the shortest oslo.messaging heartbeats.'),
    cfg.IntOpt('rpc_lookup_timeout', default=10, min=1,
               help='Seconds nova-api waits for a compute host\'s agent to '
                    'answer whether it holds a snapshot (show, delete, '
                    'revert).  It asks the host the snapshot\'s Glance '
                    'image names; '
                    'for a snapshot no image names (one taken by the '
                    'snapext CLI or by a Cinder group snapshot, or whose '
                    'image was deleted) it asks the agent of every enabled '
                    'nova-compute host that is up, one after the other.  '
                    'An agent that neither answers nor heartbeats within '
                    'this time is skipped; one that heartbeats (its glance '
                    'store rebuilding a snapshot the cache lost, from its '
                    'bundle in Glance) may take up to '
                    'rpc_capture_timeout.'),
    cfg.IntOpt('max_freeze_ms', default=60000, min=100,
               help='Upper bound of the timeout_ms a caller may give freeze: '
                    'the agent\'s watchdog thaws a guest no later than this '
                    'after its freeze, whatever the caller asked.'),
    cfg.StrOpt('agent_version_cap',
               help='Highest snapext agent RPC version to send, for rolling '
                    'upgrades (e.g. "1.0" while some agents are older).  '
                    'Unset: the latest this client knows.'),
]


# nova-api's own: what the snapext filter accepts.
API_OPTS = [
    # Glance's own default image_size_cap (1 TiB): a bundle larger than
    # that could not be staged in Glance anyway.
    cfg.IntOpt('max_bundle_upload_bytes', default=1 << 40, min=0,
               help='Largest bundle, in bytes, that POST '
                    '/snapext-snapshots/import accepts as its body '
                    '(instance-snapshot 1.3).  nova-api streams it into a '
                    'hidden Glance image of the caller and never holds it '
                    'in memory or on its disk; Glance\'s image_size_cap and '
                    'the caller\'s image quota apply as well.  The body '
                    'gets past [oslo_middleware] max_request_body_size '
                    'through the snapext_upload filter, which only this '
                    'route uses: every other request keeps that limit.  0 '
                    'refuses uploads (an import then names a Glance image '
                    'holding the bundle).'),
]


NOTIFICATION_OPTS = [
    cfg.BoolOpt('image_delete_listener', default=True,
                help='Whether the snapext agent listens for Glance\'s '
                     'image.delete notifications and deletes the snapshots '
                     'of this host that the deleted image was made for '
                     '(createImage).  Glance must send notifications '
                     '([oslo_messaging_notifications] driver = messagingv2 '
                     'in glance-api.conf) to the broker of this service\'s '
                     '[oslo_messaging_notifications] transport_url (else '
                     '[DEFAULT] transport_url), on the topics of its '
                     '[oslo_messaging_notifications] topics.  Each host '
                     'reads them through its own pool (queue) '
                     '"snapext-<host>".'),
    cfg.StrOpt('glance_control_exchange', default='glance',
               help='The exchange Glance sends its notifications on (its '
                    'control_exchange).'),
]


def register_opts(conf):
    # A group object of its own for each ConfigOpts: oslo.config keeps a
    # shallow copy of the group it is given, so every ConfigOpts given the
    # same OptGroup would share its options' values and overrides (a unit
    # test's override leaked into the next test's "fresh" ConfigOpts).
    conf.register_group(cfg.OptGroup(GROUP.name, title=GROUP.title,
                                     help=GROUP.help))
    conf.register_opts(OPTS, group=GROUP)
    conf.register_opts(RPC_OPTS, group=GROUP)
    conf.register_opts(NOTIFICATION_OPTS, group=GROUP)
    conf.register_opts(API_OPTS, group=GROUP)


def list_opts():
    return [(GROUP, OPTS + RPC_OPTS + NOTIFICATION_OPTS + API_OPTS)]
