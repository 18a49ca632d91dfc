"""The interface every snapshot store implements."""

import abc

from nova_snapext import exception


class SnapshotStore(metaclass=abc.ABCMeta):
    """Keeps snapshot records and their memory images.

    A capture first asks for a staging area (:meth:`stage`), lets libvirt
    write into it, then either :meth:`commit` s the record, which makes it
    visible all at once, or :meth:`abort` s, which leaves nothing behind.
    """

    name = None
    # Whether the store keeps each snapshot's bundle elsewhere too (so the
    # engine uploads it and may rebuild a lost local copy from it).
    keeps_bundles = False

    @abc.abstractmethod
    def stage(self, instance_uuid, snapshot_id):
        """Return a local directory for the capture's artifacts."""

    @abc.abstractmethod
    def commit(self, manifest):
        """Make a staged snapshot visible, with its record."""

    @abc.abstractmethod
    def abort(self, instance_uuid, snapshot_id):
        """Forget a staged snapshot and its artifacts."""

    @abc.abstractmethod
    def instances(self):
        """UUIDs of the instances with records or staged captures."""

    @abc.abstractmethod
    def staged(self, instance_uuid):
        """Ids of the captures of an instance that never committed."""

    @abc.abstractmethod
    def update(self, manifest):
        """Replace the record of a committed snapshot."""

    @abc.abstractmethod
    def get(self, snapshot_id):
        """Return a validated record; NotFound when there is none.

        BrokenRecord (a ManifestError) when the record cannot be used.
        """

    @abc.abstractmethod
    def list(self, instance_uuid):
        """Return the validated records of one instance."""

    @abc.abstractmethod
    def delete(self, snapshot_id, context=None):
        """Remove a record and its memory image.

        :param context: the request context of the deletion, for a store
            that deletes elsewhere too (Glance)
        """

    def broken(self, instance_uuid):
        """The records of an instance that cannot be used.

        [{'id', 'instance_uuid', 'reason'}]: each one unreadable, invalid
        or foreign (the record of another snapshot or instance).
        :meth:`list` leaves them out; :meth:`get` raises BrokenRecord.
        """
        return []

    def delete_broken(self, instance_uuid, snapshot_id, context=None):
        """Remove a broken record (and whatever lies with it).

        Conflict if the record is not broken, NotFound if there is none.

        :param context: the request context, for a store that deletes
            the snapshot's bundle elsewhere too
        """
        raise exception.NotFound('snapshot %s not found' % snapshot_id)

    @abc.abstractmethod
    def head(self, instance_uuid):
        """Id of the snapshot the instance's disks continue from, or None."""

    @abc.abstractmethod
    def set_head(self, instance_uuid, snapshot_id):
        """Remember the last snapshot taken or reverted to (or None)."""

    @abc.abstractmethod
    def forget(self, instance_uuid, context=None):
        """Remove every record of an instance; return how many."""

    @abc.abstractmethod
    def local_path(self, manifest, location):
        """Local path of an artifact ``location`` of ``manifest``."""
