"""Taking a snapshot: qcow2 internal snapshots at one instant, quiesced.

Every captured disk gets the internal snapshot ``snapext-<id>`` inside its
own file, through one QMP ``transaction`` (all or none, I/O drained); for a
full snapshot the vCPUs are stopped around the transaction and the memory
save, so the memory image and the disk states are the same instant.  No
file changes name or chain: Nova's ``disk`` and a Cinder volume's file go on
holding the live data.
"""

import hashlib
import os
import time

from oslo_log import log as logging
from oslo_utils import timeutils
from oslo_utils import uuidutils

from nova_snapext.capture import guest as guest_mod
from nova_snapext.capture import progress
from nova_snapext.capture import qemu_img
from nova_snapext.capture import quiesce
from nova_snapext.capture import states
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod

LOG = logging.getLogger(__name__)

MEMORY_FILE = 'memory.save'


def sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


class TakeOps(object):
    """Engine operations that create snapshots."""

    def take(self, domain, memory=True, quiesce_policy=None, disk_roles=None,
             extra=None, targets=None, digests=True):
        """Capture memory + device state + every disk at one instant.

        :param memory: False for a disk-only snapshot
        :param quiesce_policy: required | preferred | off (default: config)
        :param targets: capture only these disks (e.g. the volumes of one
            Cinder group); default: every writable disk
        :param disk_roles: {target: {'role': ..., 'volume_id': ...}}
        :param extra: more top-level manifest fields (image_id, nova)
        :param digests: False when the caller holds the guest frozen
            around the take (a Cinder group's freeze): the disk digests
            would lengthen the freeze; the caller runs
            :meth:`record_digests` once it thawed the guest
        :returns: the committed manifest
        """
        guest = guest_mod.Guest(self._lookup(domain))
        policy = quiesce_policy or self.conf.snapext.quiesce_policy
        with self._lock(guest.uuid):
            return self._take(guest, memory, policy, disk_roles or {},
                              extra or {}, targets, digests)

    def check_capturable(self, domain, memory=True, targets=None):
        """Raise InvalidRequest if :meth:`take` would refuse the disks."""
        self._disks_to_capture(guest_mod.Guest(self._lookup(domain)), memory,
                               targets)

    def _disks_to_capture(self, guest, memory, targets):
        disks = guest.disks()
        if targets is not None:
            if memory:
                raise exception.InvalidRequest(
                    'a memory snapshot must cover every writable disk: the '
                    'memory would not match the disks left out')
            unknown = set(targets) - {d.target for d in disks}
            if unknown:
                raise exception.InvalidRequest(
                    'domain %s has no writable disk %s'
                    % (guest.name, ', '.join(sorted(unknown))))
            disks = [d for d in disks if d.target in targets]
        if not disks:
            raise exception.InvalidRequest(
                'domain %s has no disk to snapshot' % guest.name)
        raw = [d.target for d in disks if d.fmt != 'qcow2']
        if raw:
            # A raw file cannot hold a snapshot inside it.
            raise exception.InvalidRequest(
                'disk %s of %s is %s: snapext snapshots live inside qcow2 '
                'files' % (', '.join(raw), guest.name,
                           ', '.join(sorted({d.fmt for d in disks
                                             if d.fmt != 'qcow2'}))))
        return disks

    def _take(self, guest, memory, policy, disk_roles, extra, targets,
              digests):
        started = time.monotonic()
        instance_uuid = guest.uuid
        running = guest.is_active()
        if memory and not running:
            raise exception.InvalidRequest(
                'a memory snapshot needs a running domain; %s is not '
                'running' % guest.name)
        xml = guest.xml()
        disks = self._disks_to_capture(guest, memory, targets)
        snapshot_id = uuidutils.generate_uuid()
        name = states.internal_name(snapshot_id)
        nodes = (guest.format_nodes({d.target: d.path for d in disks})
                 if running else None)
        parent_id = self._current_id(guest)
        staging = self.store.stage(instance_uuid, snapshot_id)
        memory_file = os.path.join(staging, MEMORY_FILE) if memory else None
        self._report('planned', snapshot=snapshot_id, domain=guest.name,
                     disks=','.join(d.target for d in disks),
                     memory=bool(memory))
        timings = {}
        try:
            with quiesce.frozen(guest.dom,
                                policy if running else 'off') as q:
                if q.outcome == manifest_mod.QUIESCE_FROZEN:
                    self._report('frozen', snapshot=snapshot_id)
                with progress.timed(timings, 'snapshot_call'):
                    self._capture(guest, disks, nodes, name, memory_file,
                                  timings)
            self._report('captured', snapshot=snapshot_id,
                         quiesce=q.outcome, frozen_ms=q.frozen_ms,
                         snapshot_call_ms=timings['snapshot_call'])
            record = self._record(guest, snapshot_id, parent_id, xml, disks,
                                  disk_roles, q, memory_file, extra,
                                  len(disks) < len(guest.disks()))
            if digests:
                # the guest runs thawed again: off its critical path
                with progress.timed(timings, 'digest'):
                    self._record_digests(record, staging, parent_id)
            timings['total'] = progress.elapsed_ms(started)
            record['timings_ms'] = timings
            self.store.commit(record)
            self.store.set_head(instance_uuid, snapshot_id)
        except Exception as exc:
            self._drop_states(guest, [(d.path, name) for d in disks])
            self.store.abort(instance_uuid, snapshot_id)
            if isinstance(exc, exception.SnapextError):
                raise
            raise exception.CaptureFailed(
                'snapshot of %s failed: %s' % (guest.name, exc)) from exc
        self._report('stored', snapshot=snapshot_id,
                     total_ms=timings['total'])
        return record

    @staticmethod
    def _capture(guest, disks, nodes, name, memory_file, timings):
        if nodes is None:
            # Shut off: no QEMU holds the files, nothing writes them.
            for disk in disks:
                qemu_img.snapshot_create(disk.path, name)
        elif memory_file is None:
            guest.snapshot_internal(nodes, name)
        else:
            with guest.suspended():
                with progress.timed(timings, 'disks'):
                    guest.snapshot_internal(nodes, name)
                with progress.timed(timings, 'memory'):
                    guest.save_memory(memory_file)

    def _record(self, guest, snapshot_id, parent_id, xml, disks, disk_roles,
                q, memory_file, extra, partial):
        record = {
            'schema_version': manifest_mod.SCHEMA_VERSION,
            'id': snapshot_id,
            'instance_uuid': guest.uuid,
            'domain': guest.name,
            'parent_id': parent_id,
            'created_at': timeutils.utcnow().isoformat() + 'Z',
            'kind': (manifest_mod.KIND_FULL if memory_file
                     else manifest_mod.KIND_DISKS),
            'quiesce': q.as_dict(),
            'memory': None,
            'domain_xml': xml,
            'disks': [],
            'partial': partial,
        }
        if memory_file:
            record['memory'] = {
                'store': self.store.name, 'location': MEMORY_FILE,
                'bytes': os.path.getsize(memory_file),
                'sha256': sha256(memory_file)}
        for i, disk in enumerate(disks):
            info = qemu_img.info(disk.path)
            role = disk_roles.get(disk.target, {})
            record['disks'].append({
                'target': disk.target,
                'role': role.get('role', 'root' if i == 0 else 'disk'),
                'volume_id': role.get('volume_id'),
                'cinder_snapshot_id': role.get('cinder_snapshot_id'),
                'path': disk.path,
                'snapshot': states.internal_name(snapshot_id),
                'format': info['format'],
                'virtual_size': info['virtual-size'],
                'backing': qemu_img.backing_file(disk.path, info),
                'sha256': None,
            })
        record.update(extra)
        return record
