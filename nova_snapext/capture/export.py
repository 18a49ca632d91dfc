"""Export a snapshot to a bundle, import a bundle into the store.

The bundle format is :mod:`nova_snapext.bundle`.  An export reads each
disk state straight from its internal snapshot's clusters (:mod:`qcow2`)
into a qcow2 written front to back (:mod:`qcow2_stream`): no temporary
copy, one cluster in memory at a time.  A delta (``since``) maps only the
guest clusters whose L2 entry differs from the ancestor's state in the same
file: what the guest wrote since, at cluster granularity.  The disk's file
may have any cluster size qcow2 allows; a bundle disk has 64 KiB clusters
(Nova's default) when standalone and the smallest its size allows (from
16 KiB) when a delta, so a small write costs a small delta.

An import stages everything in the store's staging area, verifies it
(bundle checksums and sizes, the record, each disk file's qcow2 header,
each disk's content against the snapshot's per-cluster digests) and only
then commits the record; any failure aborts the staging area.  An imported
disk is a qcow2 file in the record's directory whose active state is the
snapshot's state, also kept as the internal snapshot the record names; a
delta's file has the base's imported file as its backing.
"""

import json
import os

from oslo_log import log as logging
from oslo_utils import timeutils

from nova_snapext import bundle
from nova_snapext.capture import bundle_digests
from nova_snapext.capture import digest
from nova_snapext.capture import qcow2
from nova_snapext.capture import qcow2_stream
from nova_snapext.capture import qemu_img
from nova_snapext.capture import verify
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod

LOG = logging.getLogger(__name__)


def _spans(index, from_bits, to_bits, count):
    """Indexes of ``to_bits`` clusters that cluster ``index`` overlaps."""
    first = (index << from_bits) >> to_bits
    last = (((index + 1) << from_bits) - 1) >> to_bits
    return range(first, min(last + 1, count))


def _reads_zero(entry, has_backing):
    """Whether the guest reads zeros where a state has L2 ``entry``."""
    if entry is None:
        return not has_backing
    return bool(qcow2.is_zero(entry))


def changed_clusters(state, base, has_backing, source_bits, out_bits,
                     virtual_size):
    """[Cluster] a bundle disk of ``out_bits`` clusters must map.

    The disk's file has clusters of ``source_bits``; the bundle's file may
    have others (smaller for a delta, see
    :func:`qcow2_stream.small_cluster_bits`), so every guest cluster of the
    file maps to the bundle clusters it overlaps.  A DATA cluster's bytes
    are what the guest reads there in the state (:func:`_state_read`).

    :param state: {guest cluster index: L2 entry} of the state
    :param base: the same for the state the bundle disk sits on (a delta),
        or None (standalone: the bundle disk has no backing)
    :param has_backing: whether the disk's own file has a backing file
        (guest clusters the state leaves unmapped are read from there; a
        standalone export adds those that are not zeros, see
        :meth:`_DiskSource.layout`)
    """
    size = 1 << out_bits
    count = (virtual_size + size - 1) // size
    if base is None:
        touched = [i for i, entry in state.items()
                   if not _reads_zero(entry, has_backing)]
    else:
        # written, zeroed, or discarded (the guest reads the disk's
        # backing file there, or zeros) since the base
        touched = [i for i in set(state) | set(base)
                   if state.get(i) != base.get(i)]
    wanted = sorted({o for i in touched
                     for o in _spans(i, source_bits, out_bits, count)})
    source_count = (virtual_size + (1 << source_bits) - 1) >> source_bits
    out = []
    for o in wanted:
        zero = all(_reads_zero(state.get(i), has_backing)
                   for i in _spans(o, out_bits, source_bits, source_count))
        out.append(qcow2_stream.Cluster(
            o, qcow2_stream.ZERO if zero else qcow2_stream.DATA))
    return out


def _ancestors(store, record):
    seen = []
    parent = record['parent_id']
    while parent is not None and parent not in seen:
        seen.append(parent)
        parent = store.get(parent)['parent_id']
    return seen


class _DiskSource(object):
    """Reads one disk state's clusters for the bundle, twice if asked.

    A standalone disk has Nova's 64 KiB clusters; a delta the smallest
    clusters its disk allows, so that its fixed cost (four clusters, and
    a cluster per L2 table) and what a small guest write costs stay small.
    """

    def __init__(self, disk, base_disk):
        self.disk = disk
        self.base_disk = base_disk

    def layout(self, base_member):
        try:
            return self._layout(base_member)
        except ValueError as exc:
            # a disk larger than a bundle's qcow2 can describe
            raise exception.InvalidRequest('disk %s: %s'
                                           % (self.disk['target'], exc))

    def _layout(self, base_member):
        with qcow2.File(self.disk['path']) as f:
            if f.header is None:
                raise exception.InvalidRequest(
                    'disk %s: only qcow2 files are exported'
                    % self.disk['target'])
            snap = f.snapshot(self.disk['snapshot'])
            state = dict(f.snapshot_clusters(snap))
            base = None
            bits = qcow2_stream.CLUSTER_BITS
            if self.base_disk is not None:
                base = dict(f.snapshot_clusters(
                    f.snapshot(self.base_disk['snapshot'])))
                bits = qcow2_stream.small_cluster_bits(snap.disk_size)
            has_backing = bool(f.header.backing_file)
            clusters = changed_clusters(state, base, has_backing,
                                        f.header.cluster_bits, bits,
                                        snap.disk_size)
            if base is None and has_backing:
                # standalone: what the guest reads from the backing file
                clusters += self._backing_clusters(
                    f, state, snap.disk_size, bits,
                    {c.index for c in clusters})
        return qcow2_stream.plan(
            snap.disk_size, clusters,
            base_member if self.base_disk is not None else None, bits)

    @staticmethod
    def _backing_clusters(f, state, virtual_size, bits, mapped):
        size = 1 << bits
        source_count = (virtual_size + f.cluster_size - 1) >> \
            f.header.cluster_bits
        zeros = bytes(size)
        out = []
        for index in range((virtual_size + size - 1) // size):
            if index in mapped or all(
                    i in state for i in _spans(index, bits,
                                               f.header.cluster_bits,
                                               source_count)):
                continue
            if _state_read(f, state, index, bits, virtual_size) != zeros[
                    :digest.clipped(index, size, virtual_size)]:
                out.append(qcow2_stream.Cluster(index, qcow2_stream.DATA))
        return out

    def chunks(self, layout):
        with qcow2.File(self.disk['path']) as f:
            state = dict(f.snapshot_clusters(
                f.snapshot(self.disk['snapshot'])))
            yield from qcow2_stream.chunks(
                layout, lambda c: _state_read(f, state, c.index,
                                              layout.cluster_bits,
                                              layout.virtual_size))


def _state_read(f, state, index, bits, virtual_size):
    """What the guest reads in cluster ``index`` (of ``bits``) of a state.

    :param f: the disk's :class:`qcow2.File`
    :param state: {guest cluster index of ``f``: L2 entry} of the state
    """
    offset = index << bits
    end = offset + digest.clipped(index, 1 << bits, virtual_size)
    source = f.cluster_size
    parts = []
    while offset < end:
        i, within = divmod(offset, source)
        length = min(source - within, end - offset)
        entry = state.get(i)
        if entry is None:
            parts.append(f.backing_read(offset, length))
        else:
            parts.append(f.cluster_bytes(entry, length, within))
        offset += length
    return b''.join(parts)


class BundleExport(object):
    """A planned export, streamed by :meth:`chunks` (see open_export).

    :ivar index: the bundle's bundle.json, once :meth:`chunks` began
    """

    def __init__(self, ops, record, since, members):
        self.record = record
        self.since = since
        self.index = None
        self._ops = ops
        self._members = members

    def chunks(self):
        self.index = bundle.index_of(_fields(self.record, self.since),
                                     self._members)
        try:
            yield from bundle.stream(self.index, self._members,
                                     before_end=self._check_held)
        except Exception:
            # a file gone or a state changed: say why, if that is why
            self._check_held()
            raise
        self._ops._exported(self.record, self.since, self.index)

    def _check_held(self):
        self._ops._check_held(self.record, 'while it was exported')


def _fields(record, since):
    return {'snapshot_id': record['id'],
            'instance_uuid': record['instance_uuid'],
            'since': since,
            'created_at': timeutils.utcnow().isoformat() + 'Z'}


class ExportOps(object):
    """Engine operations that move snapshots in and out as bundles."""

    def export(self, snapshot_id, fileobj, since=None):
        """Write the bundle of a snapshot to ``fileobj`` (a stream).

        :param since: an ancestor's id: each disk holds only the clusters
            changed since the ancestor's state (import it first)
        :returns: the bundle's index (bundle.json)
        """
        record = self.store.get(snapshot_id)
        with self._lock(record['instance_uuid']):
            index = bundle.write(fileobj, _fields(record, since),
                                 self._members(record, since))
        self._exported(record, since, index)
        return index

    def open_export(self, snapshot_id, since=None):
        """Plan a snapshot's bundle now; stream it later, unlocked.

        For an upload that may take long.  The plan (each disk's layout)
        is made under the instance's lock, and refuses a snapshot an
        import could not verify (a disk state gone, no digests yet).  The
        stream then reads only the snapshot's memory image and its
        internal snapshots' clusters, which nothing rewrites while the
        snapshot exists, so the instance is free for other operations
        (Nova's included) meanwhile; before the end of the archive it
        checks that the snapshot still exists, so a snapshot deleted
        while it streamed fails the export instead of ending a bundle
        read from freed clusters.

        :returns: a :class:`BundleExport`
        """
        record = self.store.get(snapshot_id)
        with self._lock(record['instance_uuid']):
            self._check_held(record, 'now')
            undigested = [d['target'] for d in record['disks']
                          if not d.get('digest')]
            if undigested or (record['memory'] and
                              not record['memory']['sha256']):
                raise exception.Conflict(
                    'snapshot %s has no digest of %s yet (digests are '
                    'computed after the guest resumed): an import could not '
                    'verify it; retry shortly' % (
                        record['id'], ', '.join(
                            'disk %s' % t for t in undigested) or
                        'its memory image'))
            members = self._members(record, since)
        return BundleExport(self, record, since, members)

    def _check_held(self, record, when):
        try:
            self.store.get(record['id'])
        except exception.NotFound:
            raise exception.Conflict('snapshot %s was deleted %s'
                                     % (record['id'], when)) from None
        for disk in record['disks']:
            if not verify.holds(disk['path'], disk['snapshot']):
                raise exception.Conflict(
                    'disk %s of snapshot %s: %s no longer holds its state '
                    '(checked %s)' % (disk['target'], record['id'],
                                      disk['path'], when))

    def _exported(self, record, since, index):
        self._report('exported', snapshot=record['id'], since=since,
                     bytes=sum(m['bytes'] for m in index['members']))

    def _members(self, record, since):
        base_record, base_disks = None, {}
        if since is not None:
            if since not in _ancestors(self.store, record):
                raise exception.InvalidRequest(
                    'snapshot %s is not an ancestor of %s: a delta is only '
                    'made against one' % (since, record['id']))
            base_record = self.store.get(since)
            base_disks = {d['target']: d for d in base_record['disks']}
        members = [
            bundle.bytes_member(bundle.RECORD, 'record',
                                manifest_mod.dumps(record).encode('utf-8')),
            bundle.bytes_member(bundle.DOMAIN_XML, 'domain-xml',
                                record['domain_xml'].encode('utf-8')),
            bundle.bytes_member(bundle.NOVA, 'nova', json.dumps(
                record.get('nova') or {}, sort_keys=True).encode('utf-8')),
        ]
        if record['memory'] is not None:
            members.append(bundle.file_member(
                bundle.MEMORY, 'memory', self.store.local_path(
                    record, record['memory']['location']),
                record['memory']['sha256']))
        for disk in record['disks']:
            base = base_disks.get(disk['target'])
            if since is not None and (base is None or
                                      base['path'] != disk['path']):
                raise exception.InvalidRequest(
                    'disk %s of %s is not in the file it was in at %s: '
                    'export it without --since' % (disk['target'],
                                                   record['id'], since))
            members.append(self._disk_member(disk, base))
            if disk.get('digest'):
                members.append(bundle_digests.member(
                    self.store, record, disk, base_record, base))
        return members

    def standalone_disk(self, disk, path):
        """One disk state as a standalone qcow2, streamed (a Member).

        :param disk: the record's disk (its internal snapshot's name)
        :param path: the file holding that internal snapshot
        """
        return self._disk_member(dict(disk, path=path), None)

    @staticmethod
    def _disk_member(disk, base):
        name = bundle.disk_member(disk['target'])
        source = _DiskSource(disk, base)
        layout = source.layout(name)
        return bundle.Member(name, 'disk', layout.size,
                             lambda: source.chunks(layout),
                             target=disk['target'],
                             base=name if base is not None else None)

    # -- import --

    def import_bundle(self, fileobj, before_commit=None):
        """Verify a bundle and add its snapshot to the store.

        Nothing is committed unless everything checks out; the staging
        area is removed on any failure.

        :param before_commit: callable(record, directory) run once all is
            verified, before the commit: the staged record (it may still
            change it) and the staging directory, whose files are the
            members' names; an error there aborts the import too
        :returns: the new record
        """
        staged = {}

        def destination(index):
            self._check_importable(index)
            staged['at'] = (index['instance_uuid'], index['snapshot_id'])
            return self.store.stage(*staged['at'])
        try:
            index, directory = bundle.extract(fileobj, destination)
            record = self._imported_record(index, directory)
            if before_commit is not None:
                before_commit(record, directory)
            self.store.commit(record)
        except BaseException:
            if staged:
                self.store.abort(*staged['at'])
            raise
        self._report('imported', snapshot=record['id'],
                     since=index['since'])
        return record

    def _check_importable(self, index):
        try:
            self.store.get(index['snapshot_id'])
        except exception.NotFound:
            pass
        else:
            raise exception.Conflict('snapshot %s is already in the store'
                                     % index['snapshot_id'])
        if index['since'] is not None:
            try:
                base = self.store.get(index['since'])
            except exception.NotFound:
                raise bundle.BundleError(
                    'the bundle is a delta on snapshot %s, which is not in '
                    'the store: import its bundle first' % index['since'])
            if not base.get('imported'):
                raise bundle.BundleError(
                    'the bundle is a delta on snapshot %s, whose disks here '
                    'are live disks, not its imported state'
                    % index['since'])

    def _imported_record(self, index, directory):
        members = {m['name']: m for m in index['members']}

        def text(name):
            if name not in members:
                raise bundle.BundleError('the bundle has no %s' % name)
            with open(os.path.join(directory, name), 'rb') as f:
                return f.read().decode('utf-8')
        try:
            record = manifest_mod.loads(text(bundle.RECORD), bundle.RECORD)
        except (exception.ManifestError, UnicodeDecodeError) as exc:
            raise bundle.BundleError(str(exc)) from exc
        if (record['id'], record['instance_uuid']) != (
                index['snapshot_id'], index['instance_uuid']):
            raise bundle.BundleError('%s is the record of another snapshot'
                                     % bundle.RECORD)
        if text(bundle.DOMAIN_XML) != record['domain_xml'] or json.loads(
                text(bundle.NOVA)) != (record.get('nova') or {}):
            raise bundle.BundleError('domain.xml or nova.json differs from '
                                     'the record')
        memory = members.get(bundle.MEMORY)
        if (memory is None) != (record['memory'] is None) or (
                memory and (memory['sha256'], memory['bytes']) != (
                    record['memory']['sha256'], record['memory']['bytes'])):
            raise bundle.BundleError('the memory image does not match the '
                                     'record')
        if record['memory'] is not None:
            record['memory'].update(store=self.store.name,
                                    location=bundle.MEMORY)
        base = (self.store.get(index['since'])
                if index['since'] is not None else None)
        disk_names = {m['target'] for m in index['members']
                      if m['kind'] == 'disk'}
        if disk_names != {d['target'] for d in record['disks']}:
            raise bundle.BundleError('the disk members do not match the '
                                     "record's disks")
        for disk in record['disks']:
            self._import_disk(record, disk, members, directory, base)
        for name in (bundle.RECORD, bundle.DOMAIN_XML, bundle.NOVA):
            os.unlink(os.path.join(directory, name))
        record['imported'] = {'at': timeutils.utcnow().isoformat() + 'Z',
                              'since': index['since'],
                              'domain': record['domain']}
        record.pop('verification', None)
        record.pop('status', None)
        manifest_mod.add_history(record, 'imported', 'from a bundle%s' % (
            ' (a delta on %s)' % index['since'] if index['since'] else ''))
        return record

    def _import_disk(self, record, disk, members, directory, base):
        target = disk['target']
        name = bundle.disk_member(target)
        path = os.path.join(directory, name)
        member = members[name]
        with qcow2.File(path) as f:
            header = f.header
        if header is None or header.nb_snapshots:
            raise bundle.BundleError('member %s is not a plain qcow2 file'
                                     % name)
        backing = None
        if base is not None:
            base_disk = {d['target']: d for d in base['disks']}.get(target)
            if base_disk is None:
                raise bundle.BundleError(
                    'disk %s is a delta, but snapshot %s has no disk %s'
                    % (target, base['id'], target))
            backing = base_disk['path']
        if header.backing_file != member.get('base') or (
                member.get('base') not in (None, name)) or (
                (backing is None) != (header.backing_file is None)):
            # a file naming any other backing could read the host's files
            raise bundle.BundleError(
                'member %s names backing file %r; a bundle disk names none, '
                'or (a delta) its own member in the base bundle'
                % (name, header.backing_file))
        final = self.store.local_path(record, name)
        if backing is not None:
            qemu_img.rebase_unsafe(path, backing)
        qemu_img.check(path)
        copy = dict(disk, path=path)
        digests_name = bundle.digests_member(target)
        if disk.get('digest') and digests_name not in members:
            # the content check below must not be skippable
            raise bundle.BundleError('the record has digests of disk %s; '
                                     'the bundle has no %s'
                                     % (target, digests_name))
        if disk.get('digest'):
            bundle_digests.rebuild(
                members[digests_name], os.path.join(directory, digests_name),
                self.store.local_path(base, digests_name)
                if base is not None else None)
            check = verify.check_copy(
                copy, path, os.path.join(directory, digests_name))
            if check.status != verify.OK:
                raise bundle.BundleError('disk %s does not hold the '
                                         "snapshot's state: %s"
                                         % (target, check.detail))
        qemu_img.snapshot_create(path, disk['snapshot'])
        disk.update(path=final, backing=backing, sha256=None)
        if disk.get('digest'):
            # this file's own layout: verify and a clone check it from now
            size, vsize, done, hashed = verify.digest_state(
                path, disk['snapshot'])
            location = verify.digests_location(target)
            with open(os.path.join(directory, location), 'wb') as f:
                f.write(digest.encode(size, vsize, done))
            disk['digest'] = dict(disk['digest'], location=location,
                                  root=digest.root(size, vsize, done),
                                  clusters=len(done), hashed_bytes=hashed)
