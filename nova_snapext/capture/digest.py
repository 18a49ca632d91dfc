"""Digests of disk states: per-cluster sha256 and one root: pure rules.

A disk state is the qcow2 internal snapshot ``snapext-<id>`` in the disk's
file.  Its digest covers every guest cluster the snapshot maps in that file
(data, compressed or zero clusters; what the guest reads from the backing
file, Nova's read-only image cache, is not the snapshot's and is not
covered): one sha256 of what the guest reads there (clipped to the disk's
virtual size), and a root over all of them in guest order.  The record
keeps the root; the per-cluster list goes in a file next to the memory
image, for two uses: a child snapshot reuses its parent's digest for every
cluster the two share, so a take hashes only what changed since the parent;
and a clone's new disk files are checked cluster by cluster.

Reuse is sound because qcow2 never writes a cluster an internal snapshot
maps: a guest cluster whose L2 entry (host offset) is the same in parent
and child holds the same bytes in both.

Why sha256: with the CPU's SHA extensions it hashes 1 GiB in ~0.6 s here,
twice as fast as blake2b (see the bench).

Every function works on plain tuples, so the plans are tested without a
qcow2 file; :mod:`qcow2` reads the clusters.
"""

import bisect
import collections
import hashlib
import operator
import struct

from nova_snapext import exception

ALGORITHM = 'sha256-qcow2-clusters-v1'
_FILE_MAGIC = b'SXD1'
_FILE_HEADER = struct.Struct('>4sIQQ')
_FILE_ENTRY = struct.Struct('>QQ32s')

Granule = collections.namedtuple('Granule', 'index entry zero')
"""A guest cluster the state maps: its index, L2 entry, zero flag."""

Digested = collections.namedtuple('Digested', 'index entry digest')

Reuse = collections.namedtuple('Reuse', 'index entry digest')
"""The parent maps the same host cluster here: its digest stands."""

Hash = collections.namedtuple('Hash', 'index entry zero')
"""Read the cluster and hash it."""

Difference = collections.namedtuple('Difference', 'index why')


def shared_tables(tables, parent_tables):
    """Indexes of the L2 tables a state shares with its parent.

    qcow2 copies an L2 table shared with a snapshot before it changes an
    entry, so the same table means the same clusters: their digests are
    the parent's and the table is not even read.
    """
    return frozenset(j for j, offset in enumerate(tables)
                     if offset and j < len(parent_tables)
                     and parent_tables[j] == offset)


def in_tables(digests, tables, per_table):
    """The part of a sorted digest list that falls in L2 tables ``tables``.

    Found by bisection: the cost follows the tables, not the clusters.
    """
    key = operator.attrgetter('index')
    found = []
    for j in sorted(tables):
        lo = bisect.bisect_left(digests, j * per_table, key=key)
        hi = bisect.bisect_left(digests, (j + 1) * per_table, key=key)
        found.extend(digests[lo:hi])
    return found


def merged(*lists):
    """One digest list in guest order."""
    return sorted((d for part in lists for d in part),
                  key=operator.attrgetter('index'))


def plan(granules, parent=None):
    """Steps that digest ``granules``, reusing what ``parent`` digested.

    :param granules: [Granule] of the state, in guest order
    :param parent: [Digested] of the parent's state in the same file, or
        None (no parent, another file, or its digests cannot be trusted)
    """
    known = {d.index: d for d in parent or ()}
    steps = []
    for g in granules:
        had = known.get(g.index)
        if had is not None and had.entry == g.entry:
            steps.append(Reuse(g.index, g.entry, had.digest))
        else:
            steps.append(Hash(g.index, g.entry, g.zero))
    return steps


def clipped(index, cluster_size, virtual_size):
    """Bytes of guest cluster ``index`` that lie inside the disk."""
    return max(0, min(cluster_size, virtual_size - index * cluster_size))


def run(steps, read, cluster_size, virtual_size):
    """[Digested] for ``steps``; ``read(step, length)`` gives the bytes.

    :returns: (digests, bytes hashed)
    """
    zeros = {}
    done = []
    hashed = 0
    for step in steps:
        if isinstance(step, Reuse):
            done.append(Digested(step.index, step.entry, step.digest))
            continue
        length = clipped(step.index, cluster_size, virtual_size)
        if step.zero:
            # zero clusters are only metadata: hash zeros once per length
            if length not in zeros:
                zeros[length] = hashlib.sha256(bytes(length)).digest()
            value = zeros[length]
        else:
            value = hashlib.sha256(read(step, length)).digest()
            hashed += length
        done.append(Digested(step.index, step.entry, value))
    return done, hashed


def root(cluster_size, virtual_size, digests):
    """The one hex digest a record keeps for a disk state."""
    h = hashlib.sha256(_FILE_HEADER.pack(_FILE_MAGIC, cluster_size,
                                         virtual_size, len(digests)))
    for d in digests:
        h.update(struct.pack('>Q', d.index))
        h.update(d.digest)
    return h.hexdigest()


def encode(cluster_size, virtual_size, digests):
    """The per-cluster digest file: 48 bytes per mapped cluster."""
    return _FILE_HEADER.pack(_FILE_MAGIC, cluster_size, virtual_size,
                             len(digests)) + b''.join(
        _FILE_ENTRY.pack(d.index, d.entry, d.digest) for d in digests)


def decode(data, expected_root=None):
    """(cluster size, virtual size, [Digested]) of a digest file.

    :raises ManifestError: the file is not one, or its root is not
        ``expected_root`` (the record's)
    """
    try:
        magic, cluster_size, virtual_size, count = (
            _FILE_HEADER.unpack_from(data))
        if magic != _FILE_MAGIC or len(data) != (
                _FILE_HEADER.size + count * _FILE_ENTRY.size):
            raise ValueError('bad magic or length')
    except (struct.error, ValueError) as exc:
        raise exception.ManifestError('not a digest file: %s' % exc)
    digests = [Digested(*e) for e in _FILE_ENTRY.iter_unpack(
        data[_FILE_HEADER.size:])]
    if expected_root and root(cluster_size, virtual_size,
                              digests) != expected_root:
        raise exception.ManifestError(
            'digest file does not match the root its record holds')
    return cluster_size, virtual_size, digests


_REMOVED = bytes(32)


def changes(base, state):
    """The digests of ``state`` a list of ``base``'s does not have.

    Both are [Digested] of two states of one file (same cluster and
    virtual size).  A cluster whose L2 entry is the same in both has the
    same digest (see the module's note), so only the others are given; a
    cluster ``base`` maps and ``state`` does not comes with entry 0 and a
    digest of zeros.  :func:`applied` rebuilds ``state``'s list.
    """
    had = {d.index: d.entry for d in base}
    out = [d for d in state if had.get(d.index) != d.entry]
    kept = {d.index for d in state}
    out += [Digested(d.index, 0, _REMOVED) for d in base
            if d.index not in kept]
    return sorted(out, key=operator.attrgetter('index'))


def applied(base, delta):
    """``base``'s [Digested] with :func:`changes` ``delta`` applied."""
    merged = {d.index: d for d in base}
    for d in delta:
        if d.entry == 0 and d.digest == _REMOVED:
            merged.pop(d.index, None)
        else:
            merged[d.index] = d
    return [merged[i] for i in sorted(merged)]


def first_difference(recorded, actual):
    """The first guest cluster where two digest lists disagree, or None."""
    want = {d.index: d.digest for d in recorded}
    have = {d.index: d.digest for d in actual}
    for index in sorted(set(want) | set(have)):
        if index not in have:
            return Difference(index, 'no longer mapped by the snapshot')
        if index not in want:
            return Difference(index, 'mapped by the snapshot but not when '
                                     'it was taken')
        if want[index] != have[index]:
            return Difference(index, 'content differs')
    return None
