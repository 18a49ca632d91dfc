"""Deleting a snapshot: its internal snapshots, memory image and record.

qcow2 internal snapshots are independent of each other: dropping one frees
the clusters only it used and leaves every other snapshot and the live data
as they are, so no data is copied and children need no merge.
"""

from oslo_log import log as logging

from nova_snapext.capture import states
from nova_snapext import manifest as manifest_mod

LOG = logging.getLogger(__name__)


class DeleteOps(object):
    """Engine operations that remove snapshots."""

    def delete(self, snapshot_id):
        """Delete a snapshot; every other snapshot stays revertable.

        Its children are re-parented to its parent.  Disk states that
        Cinder owns (``cinder_snapshot_id``) are left to Cinder.
        """
        record = self.store.get(snapshot_id)
        with self._lock(record['instance_uuid']):
            self._delete(record)

    def _delete(self, record):
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
        self.store.delete(record['id'])
        self._report('deleted', snapshot=record['id'])
