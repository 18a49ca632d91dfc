"""Verify before you destroy: the artifacts a revert or clone resumes.

A snapshot is resumed from its memory image (size and sha256 in the
record) and from its disk states (qcow2 internal snapshots, a digest root
per disk in the record, see :mod:`digest`); a clone runs on new files that
must hold the same disk content.  Revert and clone call
:meth:`VerifyOps._verify_before_resume` before they change anything, so a
damaged artifact is refused with the file named while the guest runs on
untouched.  ``snapext verify`` runs the same checks on demand, and the
last result is kept in the record (``verification``) for the API to show
without hashing gigabytes on a GET.

Take computes the disk digests once the guest runs again
(:meth:`VerifyOps._record_digests`): the guest never waits for them.
"""

import collections
import os
import struct
import time

from oslo_log import log as logging
from oslo_utils import timeutils

from nova_snapext.capture import digest
from nova_snapext.capture import locks
from nova_snapext.capture import qcow2
from nova_snapext.capture import take
from nova_snapext import exception

LOG = logging.getLogger(__name__)

OK = 'ok'
MISMATCH = 'mismatch'
NO_DIGEST = 'no digest'

MEMORY = 'memory image'

RESULT_OK = 'ok'
RESULT_FAILED = 'failed'
# everything checked matched, but something had no digest to check
RESULT_INCOMPLETE = 'incomplete'

# what reading a damaged qcow2 file raises (truncated or nonsense tables,
# names that are not UTF-8)
_UNREADABLE = (OSError, ValueError, OverflowError, MemoryError, struct.error,
               exception.SnapextError)

Check = collections.namedtuple('Check', 'artifact path status detail bytes')


def outcome(checks):
    """The verdict of a set of :class:`Check`."""
    statuses = {c.status for c in checks}
    if MISMATCH in statuses:
        return RESULT_FAILED
    if NO_DIGEST in statuses:
        return RESULT_INCOMPLETE
    return RESULT_OK


def summary(checks):
    """One line per problem; empty when every artifact matched."""
    return '; '.join('%s (%s): %s' % (c.artifact, c.path, c.detail)
                     for c in checks if c.status != OK)


def check_memory(memory, path):
    """Check of a memory image against its size and sha256."""
    if not os.path.exists(path):
        return Check(MEMORY, path, MISMATCH, 'missing', 0)
    size = os.path.getsize(path)
    if size != memory['bytes']:
        return Check(MEMORY, path, MISMATCH,
                     'has %d bytes, its record says %d'
                     % (size, memory['bytes']), 0)
    if not memory['sha256']:
        return Check(MEMORY, path, NO_DIGEST,
                     'no sha256 recorded', 0)
    if take.sha256(path) != memory['sha256']:
        return Check(MEMORY, path, MISMATCH,
                     'content does not match its sha256', size)
    return Check(MEMORY, path, OK, None, size)


def digest_state(path, name, parent=None):
    """Digest the internal snapshot ``name`` of ``path``.

    :param parent: (internal snapshot name, virtual size, [Digested]) of
        the parent state in the same file: the L2 tables and clusters they
        share are not read again
    :returns: (cluster size, virtual size, [Digested], bytes hashed)
    """
    with qcow2.File(path) as f:
        snap = f.snapshot(name)
        per_table = f.cluster_size // 8
        prior, shared = _usable_parent(f, snap, parent)
        granules = [digest.Granule(i, e, bool(qcow2.is_zero(e)))
                    for i, e in f.snapshot_clusters(snap, skip=shared)]
        changed = {g.index // per_table for g in granules}
        done, hashed = digest.run(
            digest.plan(granules, digest.in_tables(prior, changed,
                                                   per_table)),
            lambda step, length: f.cluster_bytes(step.entry, length),
            f.cluster_size, snap.disk_size)
        if shared:
            done = digest.merged(done, digest.in_tables(prior, shared,
                                                        per_table))
        return f.cluster_size, snap.disk_size, done, hashed


def _usable_parent(f, snap, parent):
    """(the parent's digests, L2 tables shared with it), or ([], none).

    Only while the parent's internal snapshot is still in the file (its
    clusters and tables unchanged since it was digested), and at the same
    virtual size (a grown disk clips its last cluster elsewhere).
    """
    if parent is None:
        return [], frozenset()
    name, virtual_size, digests = parent
    if virtual_size != snap.disk_size:
        return [], frozenset()
    try:
        older = f.snapshot(name)
    except exception.NotFound:
        return [], frozenset()
    return digests, digest.shared_tables(f.snapshot_tables(snap),
                                         f.snapshot_tables(older))


def holds(path, name):
    """Whether ``path`` still holds the internal snapshot ``name``.

    Read from the snapshot table itself: qemu-img would open the whole
    image, which a running QEMU writes.
    """
    try:
        with qcow2.File(path) as f:
            f.snapshot(name)
        return True
    except _UNREADABLE:
        return False


def _disk_name(disk):
    return 'disk %s' % disk['target']


def check_state(disk, digests_file):
    """Check of a disk's internal snapshot against its recorded root."""
    recorded = disk.get('digest')
    if not recorded:
        return Check(_disk_name(disk), disk['path'], NO_DIGEST,
                     'no digest recorded (a snapshot taken before digests, '
                     'or its digest failed)', 0)
    try:
        size, vsize, actual, hashed = digest_state(disk['path'],
                                                   disk['snapshot'])
    except _UNREADABLE as exc:
        return Check(_disk_name(disk), disk['path'], MISMATCH,
                     'internal snapshot %s cannot be read: %s'
                     % (disk['snapshot'], exc), 0)
    if digest.root(size, vsize, actual) == recorded['root']:
        return Check(_disk_name(disk), disk['path'], OK, None, hashed)
    where = _where(digests_file, recorded, actual, size)
    return Check(_disk_name(disk), disk['path'], MISMATCH,
                 'internal snapshot %s does not match its digest%s'
                 % (disk['snapshot'], where), hashed)


def _where(digests_file, recorded, actual, cluster_size):
    """", first at guest offset ..." when the per-cluster list tells."""
    try:
        with open(digests_file, 'rb') as f:
            _, _, want = digest.decode(f.read(), recorded['root'])
    except (OSError, exception.ManifestError):
        return ''
    diff = digest.first_difference(want, actual)
    if diff is None:
        return ''
    return (', first at guest offset %#x: %s'
            % (diff.index * cluster_size, diff.why))


def check_copy(disk, path, digests_file):
    """Check of a new file (a clone's disk) against the state's digests."""
    recorded = disk.get('digest')
    name = '%s copy' % _disk_name(disk)
    if not recorded:
        return Check(name, path, NO_DIGEST, 'no digest recorded', 0)
    try:
        with open(digests_file, 'rb') as f:
            size, vsize, want = digest.decode(f.read(), recorded['root'])
    except (OSError, exception.ManifestError) as exc:
        return Check(name, path, NO_DIGEST,
                     'per-cluster digests unreadable: %s' % exc, 0)
    try:
        with qcow2.File(path) as f:
            actual, hashed = digest.run(
                [digest.Hash(d.index, d.entry, False) for d in want],
                lambda step, length: f.guest_read(step.index * size,
                                                  length),
                size, vsize)
    except _UNREADABLE as exc:
        return Check(name, path, MISMATCH, 'cannot be read: %s' % exc, 0)
    diff = digest.first_difference(want, actual)
    if diff is None:
        return Check(name, path, OK, None, hashed)
    return Check(name, path, MISMATCH,
                 'does not hold snapshot state %s, first at guest offset '
                 '%#x: %s' % (disk['snapshot'], diff.index * size, diff.why),
                 hashed)


def digests_location(target):
    return '%s.digests' % target


class VerifyOps(object):
    """Engine operations that record and check artifacts' digests."""

    # -- at take --

    def _record_digests(self, record, staging, parent_id):
        """Add each disk state's digest to ``record``; files in staging.

        Called once the guest runs again.  A disk whose digest fails is
        recorded without one (verify says so): the snapshot itself is good.
        """
        if not self.conf.snapext.disk_digests:
            return
        parents = self._parent_digests(parent_id)
        started_all = time.monotonic()
        for disk in record['disks']:
            started = time.monotonic()
            try:
                size, vsize, done, hashed = digest_state(
                    disk['path'], disk['snapshot'],
                    parents.get(disk['path']))
                location = digests_location(disk['target'])
                _write_synced(os.path.join(staging, location),
                              digest.encode(size, vsize, done))
            except Exception as exc:
                # the snapshot is good without it: never fail a take here
                LOG.warning('snapshot %s: no digest for disk %s (%s): %s',
                            record['id'], disk['target'], disk['path'], exc)
                disk['digest'] = None
                continue
            disk['digest'] = {
                'algorithm': digest.ALGORITHM,
                'root': digest.root(size, vsize, done),
                'location': location,
                'clusters': len(done),
                'hashed_bytes': hashed,
                'seconds': round(time.monotonic() - started, 3),
            }
        self._report('digested', snapshot=record['id'], hashed_bytes=sum(
            (d['digest'] or {}).get('hashed_bytes', 0)
            for d in record['disks']),
            seconds=round(time.monotonic() - started_all, 3))

    def record_digests(self, snapshot_id):
        """Digest the disk states of a committed record taken without.

        Neither the hashing nor the writing takes the instance's lock, so
        that the next operation on the instance (a Cinder driver releasing
        the capture it just made, say) is never refused for its sake:
        internal snapshots never change, one dropped meanwhile is not
        recorded, and a record deleted meanwhile gets nothing.
        """
        record = self.store.get(snapshot_id)
        directory = os.path.dirname(self.store.local_path(record, 'x'))
        self._record_digests(record, directory, record['parent_id'])
        with locks.record_lock(self.conf.snapext.lock_path, snapshot_id):
            try:
                fresh = self.store.get(snapshot_id)
                for disk, done in zip(fresh['disks'], record['disks']):
                    if holds(disk['path'], disk['snapshot']):
                        disk['digest'] = done.get('digest')
                self.store.update(fresh)
            except exception.NotFound:
                LOG.info('snapshot %s was deleted before its disk digests '
                         'were written', snapshot_id)

    def _parent_digests(self, parent_id):
        """{file: (internal snapshot, virtual size, [Digested])}."""
        if parent_id is None:
            return {}
        try:
            parent = self.store.get(parent_id)
        except exception.SnapextError:
            return {}
        found = {}
        for disk in parent['disks']:
            recorded = disk.get('digest')
            if not recorded:
                continue
            try:
                with open(self.store.local_path(
                        parent, recorded['location']), 'rb') as f:
                    _, vsize, digests = digest.decode(f.read(),
                                                      recorded['root'])
            except (OSError, exception.ManifestError) as exc:
                LOG.info('not reusing the digests of snapshot %s disk %s: '
                         '%s', parent_id, disk['target'], exc)
                continue
            found[disk['path']] = (disk['snapshot'], vsize, digests)
        return found

    # -- before resuming, and on demand --

    def _checks(self, record, disk_files=None):
        checks = []
        memory = record['memory']
        if memory:
            checks.append(check_memory(
                memory, self.store.local_path(record, memory['location'])))
        if not self.conf.snapext.verify_disks_before_resume:
            return checks
        for disk in record['disks']:
            digests_file = (self.store.local_path(
                record, disk['digest']['location'])
                if disk.get('digest') else None)
            if disk_files is None:
                checks.append(check_state(disk, digests_file))
            else:
                checks.append(check_copy(disk, disk_files[disk['target']],
                                         digests_file))
        return checks

    def _verify(self, record, disk_files=None):
        """Run every check; keep the verdict in the record; the report."""
        started = time.monotonic()
        checks = self._checks(record, disk_files)
        result = outcome(checks)
        report = {
            'result': result,
            'checked_at': timeutils.utcnow().isoformat() + 'Z',
            'seconds': round(time.monotonic() - started, 3),
            'bytes_read': sum(c.bytes for c in checks),
            'detail': summary(checks) or None,
            'of': 'clone files' if disk_files is not None else 'snapshot',
        }
        # a revert or verify holds the instance's lock; a clone does not
        # hold its source's
        self._keep_verification(record, report, checks,
                                locked=disk_files is None)
        report['artifacts'] = [
            {'artifact': c.artifact, 'file': c.path, 'status': c.status,
             'detail': c.detail} for c in checks]
        return report

    def _keep_verification(self, record, report, checks, locked):
        kept = {k: report[k] for k in (
            'result', 'checked_at', 'seconds', 'detail', 'of')}
        kept['artifacts'] = {c.artifact: c.status for c in checks}
        record['verification'] = kept
        try:
            if locked:
                self.store.update(record)
                return
            # Unlocked, a whole-record write could undo what another
            # operation just wrote (a mark): write into a fresh copy, and
            # give up when the instance is busy (the result is a nicety).
            with self._lock(record['instance_uuid']):
                fresh = self.store.get(record['id'])
                fresh['verification'] = kept
                self.store.update(fresh)
        except exception.SnapextError as exc:
            LOG.warning('could not keep the verification of snapshot %s: '
                        '%s', record['id'], exc)

    def verify(self, snapshot_id):
        """Check every artifact of a snapshot; the report (a dict)."""
        record = self.store.get(snapshot_id)
        with self._lock(record['instance_uuid']):
            report = self._verify(self.store.get(snapshot_id))
        report['snapshot'] = snapshot_id
        return report

    def _verified_memory(self, record):
        """The memory image's path, once its size and sha256 match.

        For a restore whose disks are applied already (recovery finishing
        an interrupted revert): the disk states are not checked again.
        """
        memory = record['memory']
        path = self.store.local_path(record, memory['location'])
        check = check_memory(memory, path)
        if check.status == MISMATCH:
            raise exception.VerificationFailed(
                'snapshot %s is damaged: %s (%s): %s'
                % (record['id'], check.artifact, path, check.detail))
        return path

    def _verify_before_resume(self, record, disk_files=None):
        """Raise VerificationFailed unless every artifact matches.

        :param disk_files: {target: file} a clone will run on; None for a
            revert, which runs on the snapshot's own internal snapshots
        :returns: the memory image's path, or None for a disk-only record
        """
        report = self._verify(record, disk_files)
        self._report('verified', snapshot=record['id'],
                     result=report['result'], seconds=report['seconds'],
                     bytes_read=report['bytes_read'])
        if report['result'] == RESULT_FAILED:
            raise exception.VerificationFailed(
                'snapshot %s is damaged, nothing was changed: %s'
                % (record['id'], report['detail']),
                disks=any(a['status'] == MISMATCH and
                          a['artifact'] != MEMORY
                          for a in report['artifacts']))
        if report['result'] == RESULT_INCOMPLETE:
            LOG.warning('snapshot %s resumed unverified in part: %s',
                        record['id'], report['detail'])
        memory = record['memory']
        return (self.store.local_path(record, memory['location'])
                if memory else None)


def _write_synced(path, data):
    with open(path, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
