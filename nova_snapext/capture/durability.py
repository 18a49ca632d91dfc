"""Snapshots that outlive the host's copy: upload and fetch bundles.

For a store that keeps bundles (``keeps_bundles``, the ``glance`` store),
:meth:`DurableOps.make_durable` streams a committed snapshot's bundle into
the store once the guest runs again, a delta on the parent's bundle when
the store has that one, and notes it in the record; revert and clone call
:meth:`DurableOps.resumable` to get a record whose memory image is in the
local cache, fetching it from the store first when the cache lost it, and
:meth:`DurableOps._refetched` when the cached copy fails verification;
the agent's ``get`` calls :meth:`DurableOps.rebuild_lost` for a snapshot the
cache lost altogether.  With the ``file`` store all of this does nothing.
"""

import threading
import time

from oslo_log import log as logging

from nova_snapext import exception

LOG = logging.getLogger(__name__)

# One fetch at a time in a process: two requests for the same lost
# snapshot (a show and a revert) must not rebuild one cache entry in the
# same fetch directory.  Not a file lock: nova-compute runs under
# eventlet, where a blocking flock would stop every green thread.
_FETCHING = threading.Lock()


class DurableOps(object):
    """Engine operations that keep snapshots beyond the local cache."""

    def make_durable(self, snapshot_id, context, notify=None):
        """Upload a committed snapshot's bundle; its ``durable``, or None.

        Runs without the instance's lock (see ``open_export``): the guest
        and the instance's other operations go on meanwhile.

        :param context: the request context the store acts with
        :param notify: callable(bytes uploaded so far)
        :raises: the upload's failure; no image is left behind then
        """
        if not self.store.keeps_bundles:
            return None
        started = time.monotonic()
        record = self.store.get(snapshot_id)
        base = self.store.delta_base(record)
        try:
            plan = self.open_export(snapshot_id, base[0] if base else None)
        except exception.InvalidRequest as exc:
            if base is None:
                raise
            # a disk that changed files since the parent: no delta on it
            LOG.info('snapshot %s: standalone bundle (%s)', snapshot_id, exc)
            base = None
            plan = self.open_export(snapshot_id)
        durable = self.store.upload_bundle(context, record, plan.chunks(),
                                           base, notify)
        durable['seconds'] = round(time.monotonic() - started, 1)
        with self._lock(record['instance_uuid']):
            try:
                fresh = self.store.get(snapshot_id)
            except exception.NotFound:
                self.store.discard_image(context, durable['image_id'])
                raise
            fresh['durable'] = durable
            self.store.update(fresh)
        # what travelled for the disks: only the changed clusters of a delta
        self._report('durable', snapshot=snapshot_id,
                     image=durable['image_id'], since=durable['since'],
                     bytes=durable['bytes'], seconds=durable['seconds'],
                     disk_bytes=sum(m['bytes'] for m in plan.index['members']
                                    if m['kind'] == 'disk'))
        return durable

    def redo_durable(self, snapshot_id, lost_image):
        """Upload a snapshot's bundle again: ``lost_image`` was deleted.

        ``lost_image`` is its own bundle image or one its delta sits on
        (someone deleted a hidden image in Glance).  The record stops
        claiming a bundle at once, the new one is uploaded by the service
        user for the snapshot's project (a delta on the parent's bundle
        when that one is whole), and the old image, useless without its
        base, is deleted.  Redo a parent before its children.

        :returns: the new ``durable``, or None when there was nothing to
            redo (no store that keeps bundles, or done meanwhile)
        :raises: the upload's failure; the record then claims no bundle
        """
        if not self.store.keeps_bundles:
            return None
        with self._lock(self.store.get(snapshot_id)['instance_uuid']):
            record = self.store.get(snapshot_id)
            old = record.pop('durable', None)
            if not old or lost_image not in old['chain']:
                return None
            self.store.update(record)
        LOG.warning('snapshot %s: bundle image %s was deleted; uploading '
                    'its bundle again', snapshot_id, lost_image)
        durable = self.make_durable(snapshot_id, None)
        if old['image_id'] != lost_image:
            self.store.discard_image(None, old['image_id'])
        return durable

    def resumable(self, snapshot_id, context=None, image_id=None):
        """The record, its memory image in the local cache.

        The store rebuilds a cache entry that lost its record or memory
        image from the snapshot's bundle (and verifies it on the way).

        :param image_id: the bundle image, when the caller knows it
        """
        if not self.store.keeps_bundles:
            return self.store.get(snapshot_id)
        try:
            record = self.store.get(snapshot_id)
        except exception.NotFound:
            return self._fetch(context, snapshot_id, image_id,
                               'it is not in the cache')
        why = self.store.needs_fetch(record)
        if why:
            return self._fetch(context, snapshot_id, image_id, why)
        return record

    def rebuild_lost(self, snapshot_id, context):
        """A snapshot the cache lost altogether, rebuilt from its bundle.

        nova-api may ask every compute host for a snapshot; only the host
        that runs the snapshot's instance (its bundle image names it)
        fetches, so that one request never downloads the bundle on every
        host; the others answer NotFound after one Glance query.

        :raises NotFound: no bundle of it in Glance, or its instance does
            not run on this host
        """
        if not self.store.keeps_bundles:
            raise exception.NotFound('snapshot %s not found' % snapshot_id)
        image = self.store.find_bundle(context, snapshot_id)
        instance_uuid = self.store.bundle_instance(image)
        if not instance_uuid or self._guest_or_none(instance_uuid) is None:
            raise exception.NotFound(
                'snapshot %s is not on this host (its instance %s runs '
                'elsewhere)' % (snapshot_id, instance_uuid))
        return self._fetch(context, snapshot_id, image['id'],
                           'it is not in the cache')

    def _fetch(self, context, snapshot_id, image_id, why):
        with _FETCHING:
            record = self._cached_resumable(snapshot_id)
            if record is not None:
                # another request rebuilt it while this one waited
                return record
            self._report('fetch', snapshot=snapshot_id, why=why)
            started = time.monotonic()
            record = self.store.fetch(context, snapshot_id, image_id)
        self._report('fetched', snapshot=snapshot_id,
                     seconds=round(time.monotonic() - started, 1))
        return record

    def _cached_resumable(self, snapshot_id):
        """The cached record if its memory image is usable, else None."""
        try:
            record = self.store.get(snapshot_id)
        except exception.NotFound:
            return None
        return None if self.store.needs_fetch(record) else record

    def _refetched(self, record, context, error):
        """The record again after a fetch, if its memory image was bad.

        :param error: the VerificationFailed of the cached copy; raised
            again when a fetch cannot help (a disk failed, or the store
            keeps no bundles)
        """
        if not self.store.keeps_bundles or error.disks or not (
                record.get('durable')):
            raise error
        LOG.warning('snapshot %s: the cached memory image failed '
                    'verification (%s); fetching it again', record['id'],
                    error)
        self.store.fetch(context, record['id'])
        return self.store.get(record['id'])

    def _verified_resumable(self, record, context, disk_files=None):
        """:meth:`_verify_before_resume`, retried once after a fetch."""
        try:
            return record, self._verify_before_resume(record, disk_files)
        except exception.VerificationFailed as exc:
            record = self._refetched(record, context, exc)
        return record, self._verify_before_resume(record, disk_files)
