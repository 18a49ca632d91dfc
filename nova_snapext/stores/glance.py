"""The ``glance`` store: a local cache, every snapshot durable in Glance.

The cache is the ``file`` store's directory (``file_store_path``, the same
layout), so the engine reads the record, the memory image and the digests
from local paths as before.  Each committed snapshot is made durable as
ONE Glance image holding its bundle (:mod:`nova_snapext.bundle`): a delta
on its parent's bundle when the parent's is in Glance (only the clusters
changed since travel), standalone otherwise.  The record notes it in
``durable``: the image, the snapshot it is a delta ``since``, and the
``chain`` of images it needs (itself first).

When the cache lost a snapshot's record or memory image, or holds a
damaged one, :meth:`GlanceStore.fetch` downloads the snapshot's own bundle
(every bundle carries its memory image, record and per-cluster digests
whole; only disk members are deltas), verifies every member as it streams
and rebuilds the cache entry.  Disk states stay where they live: in the
instance's disks (a revert) or in the files Nova makes from the snapshot's
image (a fast clone), both verified against the digests before use.

Deleting a snapshot deletes its bundle image unless another snapshot's
chain still needs it (a child's delta sits on it); the last snapshot that
needed a kept image deletes it with its own.  A kept image is marked
(``snapext_deleted``): a host whose cache lost a snapshot rebuilds it from
its bundle, and must not bring a deleted one back.

Glance is reached only through :mod:`nova_snapext.glance`, with the
caller's context; without one (a deletion Glance itself notified, which
carries no token) the store acts as Nova's service user.
"""

import os
import shutil

from oslo_log import log as logging

from nova_snapext import bundle
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod
from nova_snapext.stores import file as file_store

LOG = logging.getLogger(__name__)

# Properties of a bundle image: which snapshot it holds, and on what.
BUNDLE_OF = 'snapext_bundle_of'
INSTANCE = 'snapext_instance'
SINCE = 'snapext_since'
# On a bundle image kept for a child's delta after its snapshot was deleted.
DELETED = 'snapext_deleted'
# The property of the image ``nova image-create`` made that names it.
LINK = 'snapext_bundle'
# Nova's image API adds this project as a member of the new image.
NOVA_SHARE_WITH = 'instance_owner'


def bundle_image_meta(record, since, owner=None):
    """Glance metadata of a snapshot's bundle image (queued, hidden).

    :param owner: the project to share the image with, when the service
        user makes it on that project's behalf (Nova's ``instance_owner``:
        Nova adds the project as a member, as for an admin's snapshot of
        another project's server); the image is the caller's own otherwise
    """
    props = {BUNDLE_OF: record['id'], INSTANCE: record['instance_uuid']}
    if since:
        props[SINCE] = since
    if owner:
        props[NOVA_SHARE_WITH] = owner
    return {'name': 'snapext-bundle-%s' % record['id'],
            'disk_format': 'raw', 'container_format': 'bare',
            'visibility': 'shared' if owner else 'private',
            'os_hidden': True, 'properties': props}


def images_needed(records):
    """Every bundle image that ``records``' chains use."""
    return {image for r in records if r.get('durable')
            for image in r['durable']['chain']}


def images_to_drop(gone, remaining):
    """Bundle images of the ``gone`` records that nothing else needs.

    A kept image is one a remaining record's chain names: a child's delta
    still sits on it.
    """
    needed = images_needed(remaining)
    out = []
    for record in gone:
        for image in (record.get('durable') or {}).get('chain', ()):
            if image not in needed and image not in out:
                out.append(image)
    return out


class GlanceStore(file_store.FileStore):
    name = 'glance'
    keeps_bundles = True

    def __init__(self, conf, images=None):
        super().__init__(conf)
        self._images = images

    @property
    def images(self):
        if self._images is None:
            # Imported here: Nova's image API needs nova-compute's config.
            from nova_snapext import glance
            self._images = glance.Images()
        return self._images

    def _context(self, context):
        if context is not None:
            return self.images.context(context)
        return self.images.service_context()

    # -- making a snapshot durable --

    def delta_base(self, record):
        """(the snapshot a bundle may be a delta on, its chain), or None.

        The parent, when its own bundle is in Glance.
        """
        parent_id = record['parent_id']
        if parent_id is None:
            return None
        try:
            parent = self.get(parent_id)
        except exception.SnapextError:
            return None
        if not parent.get('durable'):
            return None
        return parent_id, parent['durable']['chain']

    def upload_bundle(self, context, record, chunks, base, notify=None):
        """Stream a bundle into a new hidden image; the record's durable.

        :param context: the request's; None when no request asked for it
            (the service user then makes the image and shares it with the
            snapshot's project, so that project's requests can fetch it)
        :param chunks: the bundle's bytes (a delta on ``base`` if given)
        :param base: (snapshot id, its chain) from :meth:`delta_base`, or
            None for a standalone bundle
        :returns: the record's new ``durable`` (the caller stores it)
        :raises: whatever failed; no image is left behind then
        """
        since, chain = base or (None, [])
        owner = None
        if context is None:
            owner = (record.get('nova') or {}).get('project_id')
        image = self.images.create(
            self._context(context), bundle_image_meta(record, since, owner),
            chunks, 'the bundle of snapshot %s%s' % (
                record['id'], ' (a delta since %s)' % since if since
                else ''), notify)
        return {'image_id': image['id'], 'since': since,
                'chain': [image['id']] + list(chain),
                'bytes': image.get('size') or 0}

    def discard_image(self, context, image_id):
        """Delete a bundle image nothing refers to (a failed snapshot)."""
        self.images.delete(self._context(context), image_id)

    # -- rebuilding the cache --

    def needs_fetch(self, record):
        """Why ``record``'s memory image cannot be used from the cache."""
        memory = record.get('memory')
        if memory is None:
            return None
        path = self.local_path(record, memory['location'])
        if not os.path.exists(path):
            return 'its memory image is not in the cache'
        if os.path.getsize(path) != memory['bytes']:
            return 'its memory image in the cache has %d bytes, not %d' % (
                os.path.getsize(path), memory['bytes'])
        return None

    def find_bundle(self, context, snapshot_id):
        """A snapshot's bundle image as Glance lists it (one query).

        :raises NotFound: Glance has no bundle of it the context may see
        :raises ImageTransferFailed: Glance could not be asked
        """
        try:
            found = self.images.find_hidden(self._context(context),
                                            {BUNDLE_OF: snapshot_id})
        except exception.SnapextError:
            raise
        except Exception as exc:
            raise exception.ImageTransferFailed(
                'cannot ask Glance for the bundle of snapshot %s: %s: %s'
                % (snapshot_id, type(exc).__name__, exc)) from exc
        found = [i for i in found
                 if (i.get('properties') or {}).get(DELETED) != 'true']
        if not found:
            raise exception.NotFound('snapshot %s not found (neither in '
                                     'the cache nor in Glance)'
                                     % snapshot_id)
        return found[0]

    def bundle_image(self, context, snapshot_id):
        """The id of a snapshot's bundle image, looked up in Glance."""
        return self.find_bundle(context, snapshot_id)['id']

    @staticmethod
    def bundle_instance(image):
        """The instance whose snapshot a bundle image holds."""
        return (image.get('properties') or {}).get(INSTANCE)

    def fetch(self, context, snapshot_id, image_id=None):
        """Rebuild a snapshot's cache entry from its bundle in Glance.

        Its memory image, record (when the cache has none) and digests
        are downloaded and verified member by member before they replace
        anything; disk members are verified and not kept.

        :param image_id: the bundle image, if the caller knows it (an
            image's ``snapext_bundle``); else the cached record's, else the
            image Glance lists for the snapshot
        :returns: the record, as the cache now holds it
        """
        cached = self._cached(snapshot_id)
        image = self._bundle_to_fetch(context, snapshot_id, image_id,
                                      cached)
        image_id = image['id']
        context = self._context(context)
        props = image.get('properties') or {}
        if props.get(BUNDLE_OF) != snapshot_id:
            raise exception.Conflict('image %s is not the bundle of '
                                     'snapshot %s' % (image_id, snapshot_id))
        download = self.images.download(
            context, image_id, 'the bundle of snapshot %s' % snapshot_id)
        where = {}

        def destination(index):
            if index['snapshot_id'] != snapshot_id:
                raise bundle.BundleError('image %s holds the bundle of %s'
                                         % (image_id, index['snapshot_id']))
            where['dir'] = self._fetch_dir(index['instance_uuid'],
                                           snapshot_id)
            return where['dir']
        try:
            index, directory = bundle.extract(
                download, destination,
                wanted=lambda m: m['kind'] != 'disk')
            download.finish()
            record = self._fetched_record(index, directory, cached,
                                          image_id, props)
            self._install(record, directory, cached is not None)
        finally:
            if 'dir' in where:
                shutil.rmtree(where['dir'], ignore_errors=True)
        LOG.info('snapshot %s: cache entry rebuilt from bundle image %s',
                 snapshot_id, image_id)
        return record

    def _bundle_to_fetch(self, context, snapshot_id, hint, cached):
        """The bundle image (Glance's view) to fetch a snapshot from.

        The caller's hint while Glance still has it (an image's
        ``snapext_bundle`` goes stale when a deleted bundle is uploaded
        again, see :meth:`DurableOps.redo_durable`), else the cached
        record's, else the one Glance lists for the snapshot.
        """
        glance_context = self._context(context)
        known = ((cached or {}).get('durable') or {}).get('image_id')
        for image_id in (hint, known):
            if image_id:
                try:
                    return self.images.get(glance_context, image_id)
                except exception.NotFound:
                    pass
        return self.images.get(glance_context,
                               self.bundle_image(context, snapshot_id))

    def _cached(self, snapshot_id):
        try:
            return self.get(snapshot_id)
        except exception.NotFound:
            return None

    def _fetch_dir(self, instance_uuid, snapshot_id):
        path = os.path.join(self.root, instance_uuid,
                            '.%s.fetch' % snapshot_id)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    def _fetched_record(self, index, directory, cached, image_id, props):
        members = {m['name']: m for m in index['members']}
        try:
            with open(os.path.join(directory, bundle.RECORD), 'rb') as f:
                fetched = manifest_mod.loads(f.read().decode('utf-8'),
                                             bundle.RECORD)
        except (OSError, UnicodeDecodeError,
                exception.ManifestError) as exc:
            raise bundle.BundleError('bundle image %s: %s' % (image_id, exc))
        if (fetched['id'], fetched['instance_uuid']) != (
                index['snapshot_id'], index['instance_uuid']):
            raise bundle.BundleError('bundle image %s: %s is the record of '
                                     'another snapshot'
                                     % (image_id, bundle.RECORD))
        # The cached record is newer (history, re-parenting) when there is
        # one; the bundle's must hold the same memory image.
        record = cached or fetched
        memory = members.get(bundle.MEMORY)
        if (record['memory'] is None) != (memory is None) or (
                memory and (memory['sha256'], memory['bytes']) != (
                    record['memory']['sha256'], record['memory']['bytes'])):
            raise bundle.BundleError('bundle image %s: its memory image is '
                                     'not the one the record names'
                                     % image_id)
        if cached is None:
            since = props.get(SINCE)
            fetched['durable'] = {'image_id': image_id, 'since': since,
                                  'chain': [image_id] + self._chain(since)}
        return record

    def _chain(self, snapshot_id):
        """The chain of a cached snapshot's bundle ([] if unknown)."""
        if snapshot_id is None:
            return []
        try:
            return self.get(snapshot_id)['durable']['chain']
        except (exception.SnapextError, KeyError):
            # not needed to resume: only a deletion walks the chain, and
            # it then leaves the images it does not know of
            LOG.warning('the bundle chain beyond snapshot %s is unknown',
                        snapshot_id)
            return []

    def _install(self, record, directory, cached):
        """Put the fetched files in the record's place, atomically each.

        :param cached: the cache has the record (else what is left in its
            directory, without a record, is nobody's and is replaced)
        """
        moves = []
        if record['memory'] is not None:
            moves.append((bundle.MEMORY, record['memory']['location']))
        for disk in record['disks']:
            digest = disk.get('digest')
            source = bundle.digests_member(disk['target'])
            if digest and os.path.exists(os.path.join(directory, source)):
                moves.append((source, digest['location']))
        final = self._record_dir(record['instance_uuid'], record['id'])
        if cached:
            for source, location in moves:
                os.replace(os.path.join(directory, source),
                           os.path.join(final, location))
            return
        shutil.rmtree(final, ignore_errors=True)
        staging = self.stage(record['instance_uuid'], record['id'])
        try:
            for source, location in moves:
                os.replace(os.path.join(directory, source),
                           os.path.join(staging, location))
            self.commit(record)
        except BaseException:
            self.abort(record['instance_uuid'], record['id'])
            raise

    # -- deleting --

    def delete(self, snapshot_id, context=None):
        record = self.get(snapshot_id)
        super().delete(snapshot_id)
        self._drop_images(context, [record],
                          self.list(record['instance_uuid']))

    def delete_broken(self, instance_uuid, snapshot_id, context=None):
        super().delete_broken(instance_uuid, snapshot_id)
        # The record cannot say which bundle was its own: Glance can.
        try:
            found = self.images.find_hidden(self._context(context),
                                            {BUNDLE_OF: snapshot_id})
        except Exception as exc:
            LOG.error('cannot look for the bundle image of broken snapshot '
                      '%s: %s; delete the hidden image whose %s is %s by '
                      'hand', snapshot_id, exc, BUNDLE_OF, snapshot_id)
            return
        gone = [{'durable': {'chain': [image['id']]}} for image in found]
        self._drop_images(context, gone, self.list(instance_uuid))

    def forget(self, instance_uuid, context=None):
        records = self.list(instance_uuid)
        count = super().forget(instance_uuid)
        self._drop_images(context, records, [])
        return count

    def _drop_images(self, context, gone, remaining):
        doomed = images_to_drop(gone, remaining)
        kept = images_needed(gone) - set(doomed)
        if kept:
            LOG.info('bundle images %s kept: a remaining snapshot\'s delta '
                     'needs them', ', '.join(sorted(kept)))
        # the gone snapshots' own bundles among them (a chain's first)
        marked = sorted(kept & {r['durable']['chain'][0] for r in gone
                                if (r.get('durable') or {}).get('chain')})
        if not doomed and not marked:
            return
        try:
            context = self._context(context)
        except Exception as exc:
            LOG.error('cannot delete bundle images %s (no credentials for '
                      'Glance: %s); delete them by hand',
                      ', '.join(doomed), exc)
            return
        for image_id in marked:
            self._mark_deleted(context, image_id)
        for image_id in doomed:
            self.images.delete(context, image_id)
            LOG.info('deleted bundle image %s', image_id)

    def _mark_deleted(self, context, image_id):
        try:
            self.images.set_properties(context, image_id, {DELETED: 'true'})
        except Exception as exc:
            # The snapshot is deleted all the same; only a host that lost
            # its cache could bring it back from this image.
            LOG.error('bundle image %s of a deleted snapshot is not marked '
                      'deleted (%s): a host whose cache lost the snapshot '
                      'would rebuild it from there; set its property %s=true '
                      'by hand', image_id, exc, DELETED)
