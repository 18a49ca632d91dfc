"""SnapextNfsDriver: the NFS driver, with qcow2 internal snapshots.

Volumes are qcow2 files on the share, as with the NFS driver and
``nfs_qcow2_volumes = True``.  What changes is what a snapshot is:

* every snapshot is a qcow2 *internal* snapshot inside the volume file,
  named ``snapext-<id>``: the volume file never changes name or backing
  chain, so the volume's ``.info`` file (there is none) and its
  attachment's ``connection_info`` stay true by construction, whatever
  Nova or Cinder does next (detach, attach elsewhere, reboot, extend);
* an attached volume is snapshotted by the snapext agent on its compute
  host (one QMP transaction, through the engine) instead of Nova's
  assisted-snapshot API, an unattached one with ``qemu-img snapshot``;
* a group snapshot of a group type with
  ``consistent_group_snapshot_enabled="<is> True"`` freezes every guest
  involved, captures each instance's volumes in one transaction and thaws
  (see :mod:`cinder_snapext.consistency`);
* a snapshot row records its internal snapshot in ``provider_location``
  (set by the driver, not by users); its metadata shows the snapext record
  (``snapext_manifest``), the host and the device it was captured on;
* a Cinder snapshot created with the metadata ``snapext_adopt=<record
  id>`` takes over the internal snapshot ``snapext-<record id>`` that an
  earlier snapext capture left in the volume (nova-api's createImage of a
  volume-backed server) instead of taking a new one; from then on Cinder
  owns it: deleting the snapext record leaves it, deleting the Cinder
  snapshot removes it.

RemoteFS's overlay machinery (``.info`` chains, Nova's assisted snapshot
create/delete, commit and rebase) is not used for new snapshots; snapshots
an earlier release left as overlay files are still deleted the RemoteFS
way, and a volume that has them takes no new snapshot until they are gone.
"""

import contextlib
import json
import os

from cinder import coordination
from cinder import exception as cinder_exception
from cinder.image import image_utils
from cinder import objects
from cinder.objects import fields
from cinder.volume import configuration
from cinder.volume.drivers import nfs
from cinder.volume.drivers import remotefs
from cinder.volume import volume_utils
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import units

from cinder_snapext import conf as snapext_conf
from cinder_snapext import consistency
from cinder_snapext import exception
from nova_snapext import exception as snapext_exception

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
# As the NFS driver does for its options: backends read them from here.
CONF.register_opts(snapext_conf.DRIVER_OPTS,
                   group=configuration.SHARED_CONF_GROUP)

PREFIX = 'snapext-'
META_MANIFEST = 'snapext_manifest'
META_HOST = 'snapext_host'
META_TARGET = 'snapext_target'
META_ADOPT = 'snapext_adopt'


def internal_name(snapshot):
    """The internal snapshot a Cinder snapshot row names, or None."""
    location = snapshot.provider_location
    if location and location.startswith(PREFIX):
        return location
    return None


def manifest_of(name):
    """The snapext record id an internal snapshot name carries."""
    return name[len(PREFIX):] if name and name.startswith(PREFIX) else None


class SnapextNfsDriver(consistency.ConsistentGroupSnapshotMixin,
                       nfs.NfsDriver):
    """NFS qcow2 volumes; snapshots are internal, groups consistent."""

    VERSION = '2.0.0'
    CI_WIKI_NAME = 'snapext'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(snapext_conf.DRIVER_OPTS)

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

    # -- qemu-img on the volume file --------------------------------------

    def _qemu_img(self, *args):
        return self._execute('qemu-img', *args,
                             run_as_root=self._execute_as_root)

    def _image_info(self, path):
        """qemu-img info of a volume file, readable while QEMU runs it."""
        out, _ = self._qemu_img('info', '--output=json', '-U', path)
        return json.loads(out)

    def internal_snapshots(self, volume):
        """Names of the internal snapshots in the volume's file."""
        info = self._image_info(self.local_path(volume))
        return [s['name'] for s in info.get('snapshots') or ()]

    def _legacy_overlays(self, volume):
        """Snapshot ids an earlier release left as RemoteFS overlays."""
        info = self._read_info_file(self._local_path_volume_info(volume),
                                    empty_if_missing=True)
        return sorted(k for k in info if k != 'active')

    def _check_volume(self, volume):
        """Refuse what internal snapshots cannot serve, with the reason."""
        if volume.encryption_key_id:
            raise cinder_exception.VolumeDriverException(
                message='volume %s is encrypted: snapext snapshots do not '
                        'support encrypted volumes yet' % volume.id)
        legacy = self._legacy_overlays(volume)
        if legacy:
            raise cinder_exception.VolumeDriverException(
                message='volume %s has overlay snapshots %s from an earlier '
                        'release; delete them before taking new snapshots'
                        % (volume.id, ', '.join(legacy)))
        info = self._image_info(self.local_path(volume))
        if info.get('format') != 'qcow2':
            raise cinder_exception.VolumeDriverException(
                message='volume %s is %s: snapext snapshots are qcow2 '
                        'internal snapshots (set nfs_qcow2_volumes = true)'
                        % (volume.id, info.get('format')))
        if info.get('backing-filename'):
            raise cinder_exception.VolumeDriverException(
                message='volume %s has a backing file (%s); snapext '
                        'snapshots need a standalone qcow2 volume'
                        % (volume.id, info['backing-filename']))
        return info

    def _offline_create(self, volume, name):
        # Without -U: qemu-img takes the image's write lock, so a volume
        # some QEMU still writes is refused instead of corrupted.
        self._qemu_img('snapshot', '-c', name,
                       self.local_path(volume))

    def _offline_delete(self, volume, name):
        path = self.local_path(volume)
        if not os.path.exists(path) or name not in self.internal_snapshots(
                volume):
            LOG.info('volume %s holds no internal snapshot %s any more',
                     volume.id, name)
            return
        self._qemu_img('snapshot', '-d', name, path)

    # -- where a volume is attached ----------------------------------------

    @staticmethod
    def _attachment(volume):
        """The volume's one live attachment as consistency.Attached, or None.

        An attachment without a host or device (a shelved-offloaded server)
        has no QEMU on the file: the volume is handled offline, where
        qemu-img's image locking refuses a file that is in use after all.
        """
        attachments = [
            a for a in (volume.volume_attachment or [])
            if a.attach_status == fields.VolumeAttachStatus.ATTACHED]
        if len(attachments) > 1:
            raise cinder_exception.VolumeDriverException(
                message='volume %s is attached more than once '
                        '(multiattach): snapext cannot snapshot it'
                        % volume.id)
        if not attachments:
            return None
        att = attachments[0]
        if not (att.attached_host and att.instance_uuid and att.mountpoint):
            return None
        return consistency.Attached(None, att.attached_host,
                                    att.instance_uuid,
                                    os.path.basename(att.mountpoint))

    def _disk_of(self, manifest, volume, target):
        """The manifest's disk for this volume; it must be the volume file."""
        disk = next((d for d in manifest['disks']
                     if d['target'] == target), None)
        path = disk and disk['path']
        if not path or os.path.basename(path) != volume.name:
            raise cinder_exception.VolumeDriverException(
                message='disk %s of the captured instance is %s, but volume '
                        '%s is %s: the attachment names the wrong device'
                        % (target, path, volume.id, volume.name))
        if not disk.get('snapshot'):
            raise cinder_exception.VolumeDriverException(
                message='record %s holds no internal snapshot of disk %s'
                        % (manifest['id'], target))
        return disk

    @staticmethod
    def _release_disk(item, volume, name):
        return {'target': item.target, 'file': volume.name,
                'volume_id': volume.id, 'name': name}

    def _release(self, context, host, instance, disks):
        """Drop internal snapshots of attached volumes, through the agent."""
        return self._agent_api().release(
            context.to_dict(), host, {'instance': instance,
                                      'disks': disks})

    # -- one snapshot ---------------------------------------------------------

    def _create_snapshot(self, snapshot):
        """A qcow2 internal snapshot; {provider_location, metadata}."""
        volume = snapshot.volume
        acceptable = ['available', 'in-use', 'backing-up']
        if (snapshot.display_name or '').startswith('tmp-snap-'):
            acceptable.append('downloading')
        self._validate_state(volume.status, acceptable)
        self._check_volume(volume)
        metadata = dict(snapshot.metadata or {})
        if metadata.get(META_ADOPT):
            return self._adopt(snapshot, metadata[META_ADOPT])
        item = self._attachment(volume)
        if item is None:
            name = PREFIX + snapshot.id
            self._offline_create(volume, name)
            return {'provider_location': name}
        try:
            reply = self._agent_api().capture(
                snapshot.obj_context.to_dict(), item.host,
                self._capture_spec(item.instance, [(item.target, snapshot)],
                                   'preferred'))
        except snapext_exception.SnapextError as exc:
            raise exception.OnlineSnapshotFailed(
                snapshot=snapshot.id, volume=snapshot.volume_id,
                reason=str(exc))
        manifest = reply['manifest']
        try:
            disk = self._disk_of(manifest, volume, item.target)
        except Exception:
            self._forget_capture(snapshot.obj_context, item.host,
                                 item.instance, manifest)
            raise
        metadata.update({META_MANIFEST: manifest['id'],
                         META_HOST: item.host, META_TARGET: item.target})
        return {'provider_location': disk['snapshot'], 'metadata': metadata}

    def _adopt(self, snapshot, record_id):
        """Take over the internal snapshot a snapext capture left.

        The volume file itself must hold ``snapext-<record id>`` (so the
        state is this volume's own, whoever wrote the metadata), no other
        Cinder snapshot may own it, and the snapext record is told that
        Cinder owns that disk now (so deleting the record leaves it).
        """
        volume = snapshot.volume
        name = PREFIX + record_id
        if name not in self.internal_snapshots(volume):
            raise exception.AdoptFailed(
                snapshot=snapshot.id, name=name,
                reason='volume %s holds no such internal snapshot'
                       % volume.id)
        for other in objects.SnapshotList.get_all_for_volume(
                snapshot.obj_context.elevated(), volume.id):
            if other.id != snapshot.id and internal_name(other) == name:
                raise exception.AdoptFailed(
                    snapshot=snapshot.id, name=name,
                    reason='Cinder snapshot %s owns it' % other.id)
        metadata = dict(snapshot.metadata or {})
        item = self._attachment(volume)
        host = item.host if item else metadata.get(META_HOST)
        if not host:
            raise exception.AdoptFailed(
                snapshot=snapshot.id, name=name,
                reason='the volume is not attached and the metadata names '
                       'no %s' % META_HOST)
        try:
            reply = self._agent_api().adopt(
                snapshot.obj_context.to_dict(), host, {
                    'snapshot_id': record_id, 'volume_id': volume.id,
                    'file': volume.name, 'cinder_snapshot_id': snapshot.id})
        except snapext_exception.SnapextError as exc:
            raise exception.AdoptFailed(snapshot=snapshot.id, name=name,
                                        reason=str(exc))
        metadata.pop(META_ADOPT, None)
        metadata.update({META_MANIFEST: record_id, META_HOST: host,
                         META_TARGET: reply['target']})
        return {'provider_location': name, 'metadata': metadata}

    def _forget_capture(self, context, host, instance, manifest):
        """Undo a capture whose result is unusable (wrong device)."""
        try:
            self._release(context, host, instance, [
                {'target': d['target'], 'file': None,
                 'volume_id': d.get('volume_id'), 'name': d.get('snapshot')}
                for d in manifest['disks']])
        except Exception:
            LOG.exception('cannot drop the internal snapshots of record %s',
                          manifest['id'])

    def _capture_spec(self, instance, members, quiesce, freeze_op=None):
        """The agent's capture of ``members`` [(target, Cinder snapshot)]."""
        return {
            'instance': instance, 'memory': False, 'quiesce': quiesce,
            'targets': sorted(target for target, _ in members),
            'disk_roles': {target: {
                'role': 'volume', 'volume_id': snapshot.volume_id,
                'cinder_snapshot_id': snapshot.id}
                for target, snapshot in members},
            'freeze_op': freeze_op,
        }

    def _delete_snapshot(self, snapshot):
        """Drop the internal snapshot: through the agent when attached."""
        volume = snapshot.volume
        self._validate_state(volume.status, ['available', 'in-use',
                                             'backing-up', 'deleting',
                                             'downloading'])
        name = internal_name(snapshot)
        if name is None:
            if snapshot.id in self._legacy_overlays(volume):
                LOG.info('snapshot %s is an overlay file of an earlier '
                         'release; deleting it the RemoteFS way',
                         snapshot.id)
                return super()._delete_snapshot(snapshot)
            # Never taken (creation failed before the capture).
            LOG.info('snapshot %s holds no internal snapshot', snapshot.id)
            return
        item = self._attachment(volume)
        if item is None:
            self._offline_delete(volume, name)
            return
        try:
            self._release(snapshot.obj_context, item.host, item.instance,
                          [self._release_disk(item, volume, name)])
        except snapext_exception.SnapextError as exc:
            raise exception.SnapshotDeleteFailed(
                snapshot=snapshot.id, volume=volume.id, reason=str(exc))

    # -- volumes from snapshots, clones -------------------------------------

    def _copy_volume_from_snapshot(self, snapshot, volume, volume_size,
                                   src_encryption_key_id=None,
                                   new_encryption_key_id=None):
        name = internal_name(snapshot)
        if name is None and snapshot.id in self._legacy_overlays(
                snapshot.volume):
            return super()._copy_volume_from_snapshot(
                snapshot, volume, volume_size, src_encryption_key_id,
                new_encryption_key_id)
        if name is None:
            raise cinder_exception.InvalidSnapshot(
                reason='snapshot %s holds no data (it was never taken)'
                       % snapshot.id)
        if src_encryption_key_id or new_encryption_key_id:
            raise cinder_exception.VolumeDriverException(
                message='snapext snapshots do not support encrypted volumes')
        self._export(self.local_path(snapshot.volume), name,
                     self._local_path_volume(volume), volume_size)

    def _out_format(self):
        return 'qcow2' if self.configuration.nfs_qcow2_volumes else 'raw'

    def copy_image_to_volume(self, context, volume, image_service, image_id,
                             disable_sparse=False):
        """The image into the volume, then the volume back to qcow2.

        RemoteFS writes every image volume raw (fetch_to_raw), even with
        ``nfs_qcow2_volumes``, where the volume was created qcow2 and its
        admin metadata still says so; internal snapshots need qcow2.
        """
        super().copy_image_to_volume(context, volume, image_service,
                                     image_id, disable_sparse=disable_sparse)
        path = self.local_path(volume)
        if (self._out_format() != 'qcow2' or
                self._image_info(path)['format'] == 'qcow2'):
            return
        tmp = path + '.qcow2'
        self._qemu_img('convert', '-f', 'raw', '-O', 'qcow2', path, tmp)
        os.rename(tmp, path)
        self._set_rw_permissions_for_all(path)

    def _export(self, src, name, dest, size_gb, shared=True):
        """A standalone volume file from one state of ``src``.

        ``shared`` (``-U``): the source may be attached and running; an
        internal snapshot's clusters never change while it exists.  The
        current state of an unattached source is read without it, under
        the image's read lock, so no QEMU can open it for writing
        meanwhile.  Nothing of the source's other snapshots comes along.
        """
        args = ['convert'] + (['-U'] if shared else []) + [
            '-f', 'qcow2', '-O', self._out_format()]
        if name:
            args += ['-l', 'snapshot.name=%s' % name]
        self._qemu_img(*(args + [src, dest]))
        info = self._image_info(dest)
        if size_gb and info['virtual-size'] < size_gb * units.Gi:
            image_utils.resize_image(dest, size_gb,
                                     run_as_root=self._execute_as_root,
                                     file_format=self._out_format())
        self._set_rw_permissions_for_all(dest)

    def _create_cloned_volume(self, volume, src_vref, context):
        """A clone of the source's current state, attached or not.

        RemoteFS refuses an attached source and otherwise goes through a
        temporary overlay snapshot; here an unattached source is copied as
        it is (no other writer: its write lock is taken), and an attached
        one through a temporary internal snapshot the agent takes and
        drops.  The clone carries none of the source's snapshots.
        """
        LOG.info('Cloning volume %(src)s to volume %(dst)s',
                 {'src': src_vref.id, 'dst': volume.id})
        self._validate_state(src_vref.status,
                             ['available', 'in-use', 'backing-up',
                              'downloading'],
                             obj_description='source volume')
        if src_vref.encryption_key_id or volume.encryption_key_id:
            raise cinder_exception.VolumeDriverException(
                message='snapext does not clone encrypted volumes')
        if self._legacy_overlays(src_vref):
            return super()._create_cloned_volume(volume, src_vref, context)
        volume.provider_location = src_vref.provider_location
        dest = self._local_path_volume(volume)
        src = self.local_path(src_vref)
        item = self._attachment(src_vref)
        if item is None:
            self._export(src, None, dest, volume.size, shared=False)
        else:
            self._clone_attached(context, item, src_vref, dest, volume.size)
        if src_vref.admin_metadata and 'format' in src_vref.admin_metadata:
            volume.admin_metadata['format'] = (
                src_vref.admin_metadata['format'])
            with volume.obj_as_admin():
                volume.save()
        return {'provider_location': src_vref.provider_location}

    def _clone_attached(self, context, item, src_vref, dest, size_gb):
        reply = self._agent_api().capture(
            context.to_dict(), item.host, {
                'instance': item.instance, 'memory': False,
                'quiesce': 'preferred', 'targets': [item.target],
                'disk_roles': {item.target: {'role': 'volume',
                                             'volume_id': src_vref.id}},
                'freeze_op': None})
        manifest = reply['manifest']
        try:
            disk = self._disk_of(manifest, src_vref, item.target)
            self._export(self.local_path(src_vref), disk['snapshot'], dest,
                         size_gb)
        finally:
            self._forget_capture(context, item.host, item.instance,
                                 manifest)

    # -- backups ----------------------------------------------------------

    def backup_use_temp_snapshot(self):
        """Never: a backup reads a temporary volume, not a snapshot.

        With ``backup_use_temp_snapshot`` Cinder would attach the snapshot
        itself (``initialize_connection_snapshot``), but a snapext snapshot
        is a state inside the volume file, with no file of its own to
        attach.  Cinder's other path makes a temporary volume from the
        snapshot (an export of that one state) and backs it up.
        """
        if super().backup_use_temp_snapshot() and not self._warned_temp_snap:
            LOG.warning('backup_use_temp_snapshot is ignored: snapext backs '
                        'up snapshots and in-use volumes through a '
                        'temporary volume')
            self._warned_temp_snap = True
        return False

    _warned_temp_snap = False

    def get_backup_device(self, context, backup):
        """What cinder-backup reads: the volume's data, never its snapshots.

        cinder-backup copies the attached file as it is: the qcow2
        container, with every internal snapshot in it.  A backup would
        carry the states of the volume's snapshots and its restore would
        bring them into another volume, where no Cinder snapshot owns
        them.  A volume that holds internal snapshots is backed up through
        a temporary clone of its current state (what Cinder does for an
        in-use volume anyway), which cinder-backup deletes afterwards.
        """
        device, is_snapshot = super().get_backup_device(context, backup)
        if (is_snapshot or device.id != backup.volume_id or
                not self._snapshots_exist(device)):
            return device, is_snapshot
        LOG.info('volume %s holds internal snapshots: backup %s reads a '
                 'temporary clone of its current state', device.id,
                 backup.id)
        temp = self._create_temp_cloned_volume(
            context, device, status=fields.VolumeStatus.BACKING_UP)
        backup.temp_volume_id = temp.id
        backup.save()
        return temp, False

    # -- restores -------------------------------------------------------------

    def initialize_connection(self, volume, connector):
        """The volume file, or a staging file for a backup's restore.

        cinder-backup restores by opening the file the connection names
        with ``'wb'`` and writing the backup's bytes: over the volume file
        that makes a new file without the internal snapshots the volume's
        Cinder snapshots (and snapext records) still name.  A restore into
        a volume that holds any therefore writes into a staging file next
        to it, which :meth:`terminate_connection` copies into the volume's
        current state.
        """
        conn = super().initialize_connection(volume, connector)
        if (volume.status != fields.VolumeStatus.RESTORING_BACKUP or
                not self._snapshots_exist(volume)):
            return conn
        staging = self._restore_staging(volume)
        # Empty: os-brick checks that the path opens before cinder-backup
        # writes it.
        open(staging, 'wb').close()
        LOG.info('volume %s holds snapshots: its backup restore writes %s, '
                 'copied into the volume afterwards', volume.id, staging)
        conn['data']['name'] = os.path.basename(staging)
        return conn

    def terminate_connection(self, volume, connector, **kwargs):
        """Copy a restore's staging file into the volume, keeping snapshots.

        cinder-backup detaches after the restore, failed or not, and a
        failed restore leaves the volume in ``error_restoring`` with part
        of the backup written: the same as a restore straight into the
        file, except that every snapshot survives.  A staging file found
        outside a restore is a crashed restore's leftover and is dropped.
        """
        super().terminate_connection(volume, connector, **kwargs)
        staging = self._restore_staging(volume)
        if not os.path.exists(staging):
            return
        try:
            if volume.status == fields.VolumeStatus.RESTORING_BACKUP:
                self._copy_restored(volume, staging)
            else:
                LOG.warning('dropping %s, left by an interrupted restore of '
                            'volume %s', staging, volume.id)
        finally:
            os.unlink(staging)

    def _restore_staging(self, volume):
        return self.local_path(volume) + '.snapext-restore'

    def _copy_restored(self, volume, staging):
        """Write the staged backup into the volume's current state.

        ``qemu-img convert -n`` writes every byte of the target's active
        layer (zeros included: an existing target is not assumed zero), and
        leaves its internal snapshots as they were.
        """
        # A backup of a snapext volume holds its qcow2 container; one from
        # a raw backend holds raw bytes.
        info = self._image_info(staging)
        fmt = info.get('format')
        data_file = (info.get('format-specific') or {}).get(
            'data', {}).get('data-file')
        if fmt not in ('raw', 'qcow2') or info.get(
                'backing-filename') or data_file:
            # Reading another file through the backup's header would copy
            # that file into the volume.
            raise cinder_exception.VolumeDriverException(
                message='backup restored into volume %s is not a '
                        'standalone raw or qcow2 image; the volume is left '
                        'as it was' % volume.id)
        if info['virtual-size'] > volume.size * units.Gi:
            raise cinder_exception.VolumeDriverException(
                message='backup restored into volume %s is larger (%d '
                        'bytes) than the volume; the volume is left as it '
                        'was' % (volume.id, info['virtual-size']))
        self._qemu_img('convert', '-n', '-f', fmt, '-O', 'qcow2', staging,
                       self.local_path(volume))
        LOG.info('backup restored into the current state of volume %s; its '
                 'snapshots are kept', volume.id)

    # -- the rest of RemoteFS that assumed overlays -------------------------

    def _revert_to_snapshot(self, context, volume, snapshot):
        """Cinder's revert (an unattached volume): ``qemu-img snapshot -a``.

        Every snapshot of the volume stays; the volume file keeps its name.
        """
        self._validate_state(volume.status, ['available', 'reverting'])
        name = internal_name(snapshot)
        if name is None:
            raise NotImplementedError()
        path = self.local_path(volume)
        self._qemu_img('snapshot', '-a', name, path)
        # The state comes back with the size it had; the volume keeps the
        # size Cinder records for it.
        if self._image_info(path)['virtual-size'] < volume.size * units.Gi:
            image_utils.resize_image(path, volume.size,
                                     run_as_root=self._execute_as_root,
                                     file_format='qcow2')

    def _snapshots_exist(self, volume):
        if not volume.provider_location:
            return False
        return bool(self._legacy_overlays(volume) or
                    self.internal_snapshots(volume))

    def _create_snapshot_online(self, snapshot, backing_filename,
                                new_snap_path):
        raise cinder_exception.VolumeDriverException(
            message='snapext takes internal snapshots; the overlay path of '
                    'Nova\'s assisted snapshot is not used')

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
            self._check_volume(snapshot.volume)
            name = PREFIX + snapshot.id
            self._offline_create(snapshot.volume, name)
            made.append(('offline', snapshot, name))

    def _prepare_attached(self, context, hosts, made):
        """Check every attached volume before anything freezes."""
        self._check_snapshot_support()
        for instances in hosts.values():
            for items in instances.values():
                for item in items:
                    self._check_volume(item.snapshot.volume)

    def _snapshot_frozen(self, context, hosts, frozen, made):
        ctxt = context.to_dict()
        policy = self._conf_value('snapext_group_quiesce', 'required')
        for host, instances in hosts.items():
            for instance, items in sorted(instances.items()):
                reply = self._agent_api().capture(
                    ctxt, host, self._capture_spec(
                        instance, [(i.target, i.snapshot) for i in items],
                        policy, frozen[host]['op_id']))
                manifest = reply['manifest']
                made.append(('captured', host, instance, manifest))
                for item in items:
                    self._disk_of(manifest, item.snapshot.volume,
                                  item.target)

    def _after_thaw(self, context, hosts, windows, made):
        updates = super()._after_thaw(context, hosts, windows, made)
        for entry in made:
            if entry[0] == 'offline':
                _, snapshot, name = entry
                updates.setdefault(snapshot.id, {})[
                    'provider_location'] = name
                continue
            _, host, instance, manifest = entry
            for item in hosts[host][instance]:
                disk = self._disk_of(manifest, item.snapshot.volume,
                                     item.target)
                update = updates[item.snapshot.id]
                update['provider_location'] = disk['snapshot']
                update['metadata'].update({
                    META_MANIFEST: manifest['id'], META_HOST: host,
                    META_TARGET: item.target})
        return updates

    def _undo(self, context, made):
        """Leave the group as it was: no internal snapshot of it remains."""
        for entry in reversed(made):
            try:
                if entry[0] == 'offline':
                    self._offline_delete(entry[1].volume, entry[2])
                elif entry[0] == 'captured':
                    _, host, instance, manifest = entry
                    self._forget_capture(context, host, instance, manifest)
            except Exception:
                LOG.exception('cannot undo %s of the failed group snapshot',
                              entry[0])

    def delete_group_snapshot(self, context, group_snapshot, snapshots):
        """Drop every snapshot of the group: one agent call per instance."""
        if not volume_utils.is_group_a_cg_snapshot_type(group_snapshot):
            raise NotImplementedError()
        by_instance = {}
        offline = []
        for snapshot in snapshots:
            name = internal_name(snapshot)
            if name is None:
                continue
            item = self._attachment(snapshot.volume)
            if item is None:
                offline.append((snapshot, name))
            else:
                by_instance.setdefault((item.host, item.instance), []).append(
                    self._release_disk(item, snapshot.volume, name))
        try:
            with self._group_locks(snapshots):
                for (host, instance), disks in sorted(by_instance.items()):
                    self._release(context, host, instance, disks)
                for snapshot, name in offline:
                    self._offline_delete(snapshot.volume, name)
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
