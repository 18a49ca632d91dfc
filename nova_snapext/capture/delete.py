"""Deleting a snapshot: its internal snapshots, memory image and record.

qcow2 internal snapshots are independent of each other: dropping one frees
the clusters only it used and leaves every other snapshot and the live data
as they are, so no data is copied and children need no merge.
"""

from oslo_log import log as logging

from nova_snapext.capture import states
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod

LOG = logging.getLogger(__name__)


class DeleteOps(object):
    """Engine operations that remove snapshots."""

    def delete(self, snapshot_id, context=None):
        """Delete a snapshot; every other snapshot stays revertable.

        Its children are re-parented to its parent.  Disk states that
        Cinder owns (``cinder_snapshot_id``) are left to Cinder.

        A broken record (see :meth:`delete_broken`) is removed the same
        way the store holds it.

        :param context: the request context, for a store that deletes
            the snapshot's bundle elsewhere too
        :returns: {'id', 'broken': bool, 'kept': ['file:internal name']}
        """
        try:
            record = self.store.get(snapshot_id)
        except exception.BrokenRecord as exc:
            return self.delete_broken(exc.instance_uuid, exc.snapshot_id,
                                      context)
        with self._lock(record['instance_uuid']):
            self._delete(record, context)
        return {'id': record['id'], 'broken': False, 'kept': []}

    def delete_broken(self, instance_uuid, snapshot_id, context=None):
        """Remove a broken record and its memory image; keep disk states.

        The record is the only thing that says which disk states are
        snapext's to drop and which Cinder owns (an adopted volume state
        has the same name): without a readable one, dropping any could
        break a Cinder snapshot, so they stay, and are named in the log and
        the result for the operator to drop (``qemu-img snapshot -d``)
        once known to be unused.  Nothing else refers to a broken record:
        its children keep their own records, HEAD forgets it.

        :param context: the request context, for a store that deletes
            the snapshot's bundle elsewhere too
        :returns: {'id', 'broken': True, 'kept': ['file:internal name']}
        """
        with self._lock(instance_uuid):
            self.store.delete_broken(instance_uuid, snapshot_id, context)
            if self.store.head(instance_uuid) == snapshot_id:
                self.store.set_head(instance_uuid, None)
            name = states.internal_name(snapshot_id)
            guest = self._guest_or_none(instance_uuid)
            paths = [d.path for d in guest.disks()] if guest else []
            kept = ['%s:%s' % (path, name)
                    for path, names in self._held(paths).items()
                    if name in names]
        LOG.warning('removed broken snapshot record %s of %s; internal '
                    'snapshots kept: %s', snapshot_id, instance_uuid,
                    ', '.join(kept) or 'none')
        self._report('deleted', snapshot=snapshot_id, broken=True)
        return {'id': snapshot_id, 'broken': True, 'kept': kept}

    def _delete(self, record, context=None):
        instance_uuid = record['instance_uuid']
        guest = self._guest_or_none(instance_uuid)
        self._report('delete-planned', snapshot=record['id'],
                     disks=len(record['disks']))
        self._drop_states(guest, states.record_states(record))
        manifests = self.store.list(instance_uuid)
        for child_id, parent_id in manifest_mod.reparent_on_delete(
                manifests, record['id']):
            child = next(m for m in manifests if m['id'] == child_id)
            child['parent_id'] = parent_id
            self.store.update(child)
        if self.store.head(instance_uuid) == record['id']:
            self.store.set_head(instance_uuid, record['parent_id'])
        self.store.delete(record['id'], context=context)
        self._report('deleted', snapshot=record['id'])
