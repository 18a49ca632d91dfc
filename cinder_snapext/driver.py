"""SnapextNfsDriver: the NFS driver with application-consistent groups.

Volumes are qcow2 files on the share, as with the NFS driver and
``nfs_qcow2_volumes = True``.  What changes:

* snapshots of attached volumes are taken by the snapext agent on the
  compute host (one atomic libvirt call per instance) instead of Nova's
  assisted-snapshot API;
* a group snapshot of a group type with
  ``consistent_group_snapshot_enabled="<is> True"`` freezes every guest
  involved, captures each instance's volumes in one call and thaws (see
  :mod:`cinder_snapext.consistency`);
* bookkeeping stays the RemoteFS driver's: each snapshot's overlay is named
  ``<volume file>.<snapshot id>``, and the volume's ``.info`` file and its
  attachment's ``connection_info`` follow the active file.
"""

import contextlib
import os

from cinder import coordination
from cinder import exception as cinder_exception
from cinder.objects import fields
from cinder.volume import configuration
from cinder.volume.drivers import nfs
from cinder.volume.drivers import remotefs
from cinder.volume import volume_utils
from oslo_config import cfg
from oslo_log import log as logging

from cinder_snapext import conf as snapext_conf
from cinder_snapext import consistency
from cinder_snapext import exception
from nova_snapext import exception as snapext_exception

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
# As the NFS driver does for its options: backends read them from here.
CONF.register_opts(snapext_conf.DRIVER_OPTS,
                   group=configuration.SHARED_CONF_GROUP)

META_MANIFEST = 'snapext_manifest'
META_HOST = 'snapext_host'
META_TARGET = 'snapext_target'


class SnapextNfsDriver(consistency.ConsistentGroupSnapshotMixin,
                       nfs.NfsDriver):
    """NFS volumes whose group snapshots are application-consistent."""

    VERSION = '1.0.0'
    CI_WIKI_NAME = 'snapext'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(snapext_conf.DRIVER_OPTS)
        # Overlays a group capture made; _create_snapshot_online then only
        # does the bookkeeping for them.
        self._captured = set()

    @staticmethod
    def get_driver_options():
        return nfs.NfsDriver.get_driver_options() + snapext_conf.DRIVER_OPTS

    # -- local-directory shares (tests, single host) --------------------

    def _local_shares(self):
        return self.configuration.snapext_local_shares

    def do_setup(self, context):
        if not self._local_shares():
            return super().do_setup(context)
        # The NFS driver's setup without its mount.nfs check: nothing is
        # mounted.
        remotefs.RemoteFSSnapDriverDistributed.do_setup(self, context)
        self.shares = {}
        self.set_nas_security_options(self._is_voldb_empty_at_startup)
        self._check_snapshot_support(setup_checking=True)

    def _ensure_share_mounted(self, share):
        if not self._local_shares():
            return super()._ensure_share_mounted(share)
        if not os.path.isdir(self._get_mount_point_for_share(share)):
            raise cinder_exception.NfsException(
                'local share %s is not a directory' % share)

    def _get_mount_point_for_share(self, share):
        if not self._local_shares():
            return super()._get_mount_point_for_share(share)
        return share.split(':', 1)[1]

    def _get_capacity_info(self, share):
        if not self._local_shares():
            return super()._get_capacity_info(share)
        # The NFS driver's stat + du, without the two subprocesses.
        path = self._get_mount_point_for_share(share)
        st = os.statvfs(path)
        allocated = 0
        for root, _, files in os.walk(path):
            for name in files:
                if 'snapshot' not in name:
                    try:
                        allocated += os.lstat(os.path.join(root, name)).st_size
                    except FileNotFoundError:
                        pass
        return (float(st.f_frsize * st.f_blocks),
                float(st.f_frsize * st.f_bavail), float(allocated))

    def _update_volume_stats(self):
        super()._update_volume_stats()
        self._stats['consistent_group_snapshot_enabled'] = True
        self._stats['driver_version'] = self.VERSION

    # -- one attached volume: through the agent, not Nova -----------------

    def _create_snapshot_online(self, snapshot, backing_filename,
                                new_snap_path):
        if new_snap_path in self._captured:
            self._captured.discard(new_snap_path)
            return
        (hosts, _) = consistency.plan([snapshot])
        [(host, instances)] = hosts.items()
        [(instance, items)] = instances.items()
        # As for Nova's assisted snapshot: Cinder makes the overlay (with a
        # backing file name relative to the share), libvirt switches to it.
        self._do_create_snapshot(snapshot, backing_filename, new_snap_path)
        try:
            reply = self._agent_api().capture(
                snapshot.obj_context.to_dict(), host,
                self._capture_spec(instance, items, 'preferred'))
        except snapext_exception.SnapextError as exc:
            if os.path.exists(new_snap_path):
                os.unlink(new_snap_path)
            raise exception.OnlineSnapshotFailed(
                snapshot=snapshot.id, volume=snapshot.volume_id,
                reason=str(exc))
        self._check_capture(reply['manifest'], items)

    def _capture_spec(self, instance, items, quiesce, freeze_op=None):
        return {
            'instance': instance, 'memory': False, 'quiesce': quiesce,
            'targets': sorted(i.target for i in items),
            'overlays': {i.target: os.path.basename(
                self._get_new_snap_path(i.snapshot)) for i in items},
            'disk_roles': {i.target: {
                'role': 'volume', 'volume_id': i.snapshot.volume_id,
                'cinder_snapshot_id': i.snapshot.id} for i in items},
            'freeze_op': freeze_op,
            'reuse_overlays': True,
        }

    def _check_capture(self, manifest, items):
        """The captured disks must be the volumes' active files."""
        states = {d['target']: os.path.basename(d['path'])
                  for d in manifest['disks']}
        for item in items:
            active = self.get_active_image_from_info(item.snapshot.volume)
            if states.get(item.target) != active:
                raise cinder_exception.VolumeDriverException(
                    message='disk %s of instance %s is %s, but volume %s is '
                            '%s: the attachment names the wrong device'
                    % (item.target, item.instance, states.get(item.target),
                       item.snapshot.volume_id, active))

    # -- consistent groups ------------------------------------------------

    @contextlib.contextmanager
    def _group_locks(self, snapshots):
        """Cinder's per-volume locks, in sorted order (no deadlock)."""
        names = sorted({'%s-%s' % (self.driver_prefix, s.volume_id)
                        for s in snapshots})
        with contextlib.ExitStack() as stack:
            for name in names:
                stack.enter_context(coordination.COORDINATOR.get_lock(name))
            yield

    def _snapshot_unattached(self, context, snapshots, made):
        self._check_snapshot_support()
        for snapshot in snapshots:
            saved = self._saved_info(snapshot.volume)
            made.append(('offline', snapshot, saved))
            self._create_snapshot(snapshot)

    def _prepare_attached(self, context, hosts, made):
        """Make the attached volumes' overlays before anything freezes."""
        for instances in hosts.values():
            for items in instances.values():
                for item in items:
                    snapshot = item.snapshot
                    made.append(('overlay', snapshot))
                    self._do_create_snapshot(
                        snapshot,
                        self.get_active_image_from_info(snapshot.volume),
                        self._get_new_snap_path(snapshot))

    def _snapshot_frozen(self, context, hosts, frozen, made):
        ctxt = context.to_dict()
        policy = self._conf_value('snapext_group_quiesce', 'required')
        for host, instances in hosts.items():
            for instance, items in sorted(instances.items()):
                reply = self._agent_api().capture(
                    ctxt, host, self._capture_spec(
                        instance, items, policy, frozen[host]['op_id']))
                manifest = reply['manifest']
                made.append(('captured', host, manifest['id'], items))
                self._check_capture(manifest, items)
                for item in items:
                    self._captured.add(self._get_new_snap_path(item.snapshot))

    def _after_thaw(self, context, hosts, windows, made):
        updates = super()._after_thaw(context, hosts, windows, made)
        for entry in made:
            if entry[0] != 'captured':
                continue
            _, host, manifest_id, items = entry
            for item in items:
                # The RemoteFS bookkeeping: .info, connection_info, format.
                self._create_snapshot(item.snapshot)
                updates[item.snapshot.id]['metadata'].update({
                    META_MANIFEST: manifest_id, META_HOST: host,
                    META_TARGET: item.target})
        return updates

    def _undo(self, context, made):
        """Leave the group as it was: no overlay of the failed snapshot."""
        for entry in reversed(made):
            try:
                if entry[0] == 'offline':
                    self._undo_offline(entry[1], entry[2])
                elif entry[0] == 'overlay':
                    self._unlink(self._get_new_snap_path(entry[1]))
                elif entry[0] == 'captured':
                    self._undo_captured(context, *entry[1:])
            except Exception:
                LOG.exception('cannot undo %s of the failed group snapshot',
                              entry[0])

    def _saved_info(self, volume):
        path = self._local_path_volume_info(volume)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return f.read()

    @staticmethod
    def _unlink(path):
        if os.path.exists(path):
            os.unlink(path)

    def _undo_offline(self, snapshot, saved):
        self._unlink(self._get_new_snap_path(snapshot))
        info = self._local_path_volume_info(snapshot.volume)
        if saved is None:
            if os.path.exists(info):
                os.unlink(info)
        else:
            with open(info, 'w') as f:
                f.write(saved)

    def _undo_captured(self, context, host, manifest_id, items):
        """Merge a capture of a failed group away, through the agent.

        The agent pulls the state file into the new overlay, which then is
        the volume's only file; .info and connection_info follow it.
        """
        for item in items:
            self._captured.discard(self._get_new_snap_path(item.snapshot))
        reply = self._agent_api().delete(context.to_dict(), host,
                                         {'snapshot_id': manifest_id})
        for item in items:
            self._follow_active(item.snapshot.volume, item.snapshot.id,
                                reply['active_disks'].get(item.target))

    def _follow_active(self, volume, snapshot_id, active_path):
        info_path = self._local_path_volume_info(volume)
        info = self._read_info_file(info_path, empty_if_missing=True)
        info.pop(snapshot_id, None)
        if active_path:
            info['active'] = os.path.basename(active_path)
            for att in volume.volume_attachment or []:
                if att.connection_info:
                    att.connection_info['name'] = info['active']
                    att.connection_info = att.connection_info
                    att.save()
        if info.get('active'):
            self._write_info_file(info_path, info)

    def delete_group_snapshot(self, context, group_snapshot, snapshots):
        """Merge every snapshot of the group away; children survive."""
        if not volume_utils.is_group_a_cg_snapshot_type(group_snapshot):
            raise NotImplementedError()
        by_manifest = {}
        offline = []
        for snapshot in snapshots:
            meta = snapshot.metadata or {}
            if meta.get(META_MANIFEST):
                by_manifest.setdefault(
                    (meta[META_HOST], meta[META_MANIFEST]), []).append(
                        (snapshot, meta[META_TARGET]))
            else:
                offline.append(snapshot)
        try:
            with self._group_locks(snapshots):
                for (host, manifest_id), members in sorted(
                        by_manifest.items()):
                    reply = self._agent_api().delete(
                        context.to_dict(), host, {'snapshot_id': manifest_id})
                    for snapshot, target in members:
                        self._follow_active(
                            snapshot.volume, snapshot.id,
                            reply['active_disks'].get(target))
                for snapshot in offline:
                    self._delete_snapshot(snapshot)
        except (snapext_exception.SnapextError,
                cinder_exception.CinderException) as exc:
            raise exception.GroupSnapshotDeleteFailed(
                group_snapshot=group_snapshot.id, reason=str(exc))
        return ({'status': fields.GroupSnapshotStatus.DELETED},
                [{'id': s.id, 'status': fields.SnapshotStatus.DELETED}
                 for s in snapshots])

    def create_group_from_src(self, context, group, volumes,
                              group_snapshot=None, snapshots=None,
                              source_group=None, source_vols=None):
        """Volumes from a group snapshot's (consistent) snapshots.

        A source group goes through Cinder's generic path (clone each).
        """
        if group_snapshot is None:
            raise NotImplementedError()
        by_id = {s.id: s for s in snapshots}
        updates = []
        with self._group_locks(snapshots):
            for volume in volumes:
                snapshot = by_id[volume.snapshot_id]
                update = self._create_volume_from_snapshot(volume, snapshot)
                updates.append(dict(update or {}, id=volume.id,
                                    status='available'))
        return None, updates
