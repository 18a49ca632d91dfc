"""Disk states that Cinder owns: adopting and releasing them.

A volume's state inside a snapext record (the internal snapshot
``snapext-<id>`` in the volume's own file) is Cinder's once a Cinder
snapshot row names it: the disk's ``cinder_snapshot_id`` is set, either at
capture (a Cinder-driven capture passes it in ``disk_roles``) or later by
:meth:`CinderOps.adopt` (nova-api's volume-backed createImage asks Cinder
for snapshots that adopt the states its capture made).  From then on the
record only refers to it: deleting the record leaves it (``delete``), and
Cinder removes it through :meth:`CinderOps.release`, after which every
record that named it reports itself unavailable, and a record with nothing
left (no memory, no state) goes.
"""

import os

from oslo_log import log as logging

from nova_snapext.capture import guest as guest_mod
from nova_snapext.capture import states
from nova_snapext import exception

LOG = logging.getLogger(__name__)


def owned_by_cinder(disk):
    return bool(disk.get('cinder_snapshot_id'))


class CinderOps(object):
    """Engine operations Cinder's driver asks for through the agent."""

    def adopt(self, snapshot_id, volume_id, file_name, cinder_snapshot_id):
        """Cinder snapshot ``cinder_snapshot_id`` owns the volume's state.

        :param file_name: the volume file's base name, as Cinder knows it
        :returns: the record's disk entry, updated
        :raises Conflict: another Cinder snapshot owns it already
        """
        record = self.store.get(snapshot_id)
        with self._lock(record['instance_uuid']):
            record = self.store.get(snapshot_id)
            disk = next((d for d in record['disks']
                         if d.get('volume_id') == volume_id), None)
            if disk is None:
                raise exception.NotFound(
                    'snapshot %s has no disk of volume %s'
                    % (snapshot_id, volume_id))
            if os.path.basename(disk['path']) != file_name:
                raise exception.InvalidRequest(
                    'disk %s of snapshot %s is %s, not volume file %s'
                    % (disk['target'], snapshot_id, disk['path'], file_name))
            owner = disk.get('cinder_snapshot_id')
            if owner and owner != cinder_snapshot_id:
                raise exception.Conflict(
                    'the state of volume %s in snapshot %s belongs to '
                    'Cinder snapshot %s' % (volume_id, snapshot_id, owner))
            held = self._held([disk['path']])
            if disk['path'] in held and disk['snapshot'] not in held[
                    disk['path']]:
                raise exception.NotFound(
                    '%s no longer holds %s' % (disk['path'],
                                               disk['snapshot']))
            disk['cinder_snapshot_id'] = cinder_snapshot_id
            self.store.update(record)
        LOG.info('state of volume %s in snapshot %s now belongs to Cinder '
                 'snapshot %s', volume_id, snapshot_id, cinder_snapshot_id)
        return disk

    def release(self, instance_uuid, disks):
        """Drop internal snapshots Cinder no longer wants from disks.

        :param disks: [{'target', 'file' (the base name the disk's file
            must have, or None), 'volume_id', 'name'}]
        :returns: {'released': [target], 'records': {id: 'deleted' |
            'unavailable'}}
        """
        guest = guest_mod.Guest(self._lookup(instance_uuid))
        with self._lock(guest.uuid):
            current = {d.target: d.path for d in guest.disks()}
            wanted = []
            for disk in disks:
                path = current.get(disk['target'])
                if path is None:
                    raise exception.InvalidRequest(
                        'instance %s has no disk %s'
                        % (instance_uuid, disk['target']))
                if disk.get('file') and os.path.basename(path) != disk[
                        'file']:
                    raise exception.InvalidRequest(
                        'disk %s of instance %s is %s, not %s'
                        % (disk['target'], instance_uuid, path,
                           disk['file']))
                wanted.append((path, disk['name']))
            self._drop_states(guest, wanted)
            records = self._after_release({name for _, name in wanted})
        return {'released': [d['target'] for d in disks],
                'records': records}

    def _after_release(self, names):
        """Records that named the released states: deleted when empty."""
        result = {}
        for name in sorted(names):
            record_id = name[len(states.PREFIX):]
            try:
                record = self.store.get(record_id)
            except exception.SnapextError:
                continue
            held = self._held(d['path'] for d in record['disks'])
            left = [d for d in record['disks']
                    if d['snapshot'] in held.get(d['path'], ())]
            if record['memory'] is None and not left:
                # Nothing of it remains: a Cinder-driven capture whose
                # snapshots Cinder deleted.
                self._delete(record)
                result[record_id] = 'deleted'
            else:
                result[record_id] = 'unavailable'
        return result
