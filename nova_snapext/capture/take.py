"""Taking a snapshot: one atomic libvirt call, quiesced, then the record."""

import hashlib
import os
import time

import libvirt
from oslo_log import log as logging
from oslo_utils import timeutils
from oslo_utils import uuidutils

from nova_snapext.capture import chain
from nova_snapext.capture import domain_xml
from nova_snapext.capture import progress
from nova_snapext.capture import qemu_img
from nova_snapext.capture import quiesce
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod

LOG = logging.getLogger(__name__)

MEMORY_FILE = 'memory.save'


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _overlay(disk_path, snapshot_id, name=None):
    if name is None:
        return chain.overlay_path(disk_path, snapshot_id[:8])
    if os.path.basename(name) != name or name in ('.', '..'):
        raise exception.InvalidRequest(
            'overlay name %r must be a plain file name' % name)
    return os.path.join(os.path.dirname(disk_path), name)


class TakeOps(object):
    """Engine operations that create snapshots."""

    def take(self, domain, memory=True, quiesce_policy=None, disk_roles=None,
             extra=None, targets=None, overlay_names=None,
             reuse_overlays=False):
        """Capture memory + device state + every disk at one instant.

        :param memory: False for a disk-only snapshot
        :param quiesce_policy: required | preferred | off (default: config)
        :param targets: capture only these disks (e.g. the volumes of one
            Cinder group); default: every writable disk
        :param disk_roles: {target: {'role': ..., 'volume_id': ...}}
        :param extra: more top-level manifest fields (image_id, nova)
        :param overlay_names: {target: file name} of the new overlays, each
            created beside its disk's current file (Cinder names them
            after its snapshot ids); default <disk>.snapext-<id>
        :param reuse_overlays: the overlays exist already (made by the
            caller, e.g. Cinder with a relative backing file name); libvirt
            switches to them instead of creating them
        :returns: the committed manifest
        """
        dom = self._lookup(domain)
        policy = quiesce_policy or self.conf.snapext.quiesce_policy
        with self._lock(dom.UUIDString()):
            return self._take(dom, memory, policy, disk_roles or {},
                              extra or {}, targets, overlay_names or {},
                              reuse_overlays)

    def _take(self, dom, memory, policy, disk_roles, extra, targets,
              overlay_names, reuse_overlays):
        started = time.monotonic()
        instance_uuid = dom.UUIDString()
        running = dom.isActive()
        if memory and not running:
            raise exception.InvalidRequest(
                'a memory snapshot needs a running domain; %s is not '
                'running' % dom.name())
        xml = dom.XMLDesc(0)
        disks = domain_xml.writable_disks(xml)
        excluded = domain_xml.excluded_targets(xml)
        if targets is not None:
            if memory:
                raise exception.InvalidRequest(
                    'a memory snapshot must cover every writable disk: the '
                    'memory would not match the disks left out')
            unknown = set(targets) - {d.target for d in disks}
            if unknown:
                raise exception.InvalidRequest(
                    'domain %s has no writable disk %s'
                    % (dom.name(), ', '.join(sorted(unknown))))
            excluded += [d.target for d in disks if d.target not in targets]
            disks = [d for d in disks if d.target in targets]
        if not disks:
            raise exception.InvalidRequest(
                'domain %s has no disk to snapshot' % dom.name())
        snapshot_id = uuidutils.generate_uuid()
        overlays = {d.target: _overlay(d.path, snapshot_id,
                                       overlay_names.get(d.target))
                    for d in disks}
        taken = [p for p in overlays.values() if os.path.exists(p)]
        if reuse_overlays:
            missing = sorted(set(overlays.values()) - set(taken))
            if missing:
                raise exception.InvalidRequest(
                    'overlay %s to reuse does not exist' % missing[0])
        elif taken:
            raise exception.Conflict('overlay %s already exists' % taken[0])
        parent_id = self._current(instance_uuid, xml)
        staging = self.store.stage(instance_uuid, snapshot_id)
        memory_file = os.path.join(staging, MEMORY_FILE) if memory else None
        snap_xml = domain_xml.snapshot_xml(
            'snapext-%s' % snapshot_id, overlays, excluded, memory_file)
        flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC |
                 libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
        flags |= (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_LIVE if memory
                  else libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY)
        if reuse_overlays:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
        self._report('planned', snapshot=snapshot_id, domain=dom.name(),
                     disks=','.join(overlays), memory=bool(memory))
        timings = {}
        try:
            q_policy = policy if running else 'off'
            with quiesce.frozen(dom, q_policy) as q:
                if q.outcome == manifest_mod.QUIESCE_FROZEN:
                    self._report('frozen', snapshot=snapshot_id)
                with progress.timed(timings, 'snapshot_call'):
                    dom.snapshotCreateXML(snap_xml, flags)
            self._report('captured', snapshot=snapshot_id,
                         quiesce=q.outcome, frozen_ms=q.frozen_ms,
                         snapshot_call_ms=timings['snapshot_call'])
            record = self._record(dom, snapshot_id, parent_id, xml, disks,
                                  disk_roles, q, memory_file, extra)
            timings['total'] = progress.elapsed_ms(started)
            record['timings_ms'] = timings
            self.store.commit(record)
        except Exception as exc:
            self._undo_take(dom, overlays)
            self.store.abort(instance_uuid, snapshot_id)
            if isinstance(exc, exception.SnapextError):
                raise
            raise exception.CaptureFailed(
                'snapshot of %s failed: %s' % (dom.name(), exc)) from exc
        self._report('stored', snapshot=snapshot_id,
                     total_ms=timings['total'])
        return record

    def _record(self, dom, snapshot_id, parent_id, xml, disks, disk_roles,
                q, memory_file, extra):
        record = {
            'schema_version': manifest_mod.SCHEMA_VERSION,
            'id': snapshot_id,
            'instance_uuid': dom.UUIDString(),
            'domain': dom.name(),
            'parent_id': parent_id,
            'created_at': timeutils.utcnow().isoformat() + 'Z',
            'kind': (manifest_mod.KIND_FULL if memory_file
                     else manifest_mod.KIND_DISKS),
            'quiesce': q.as_dict(),
            'memory': None,
            'domain_xml': xml,
            'disks': [],
        }
        if memory_file:
            record['memory'] = {
                'store': self.store.name, 'location': MEMORY_FILE,
                'bytes': os.path.getsize(memory_file),
                'sha256': _sha256(memory_file)}
        for i, disk in enumerate(disks):
            info = qemu_img.info(disk.path)
            role = disk_roles.get(disk.target, {})
            record['disks'].append({
                'target': disk.target,
                'role': role.get('role', 'root' if i == 0 else 'disk'),
                'volume_id': role.get('volume_id'),
                'cinder_snapshot_id': role.get('cinder_snapshot_id'),
                'path': disk.path,
                'format': info['format'],
                'virtual_size': info['virtual-size'],
                'backing': qemu_img.backing_file(disk.path, info),
                'bytes': info.get('actual-size', 0),
                'sha256': None,
            })
        record.update(extra)
        return record

    def _undo_take(self, dom, overlays):
        """Remove overlays of a failed capture that the domain does not use.

        With ATOMIC, libvirt switches all disks or none; if it did switch
        (the failure came later), the overlays are the domain's live disks
        and must stay.
        """
        self._remove_unused(dom, overlays.values(),
                            'overlay of the failed capture')
