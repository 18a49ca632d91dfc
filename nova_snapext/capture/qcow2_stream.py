"""A qcow2 file written front to back, for streaming into a bundle.

A bundle member must have its size before its first byte (a tar header
comes first) and the host must not hold a second copy of a disk, so
``qemu-img convert`` (which seeks in its output) is no use.  Once the
guest clusters a state maps are known from its L2 tables (:mod:`qcow2`),
the whole file's layout follows: header, L1 table, refcount table and
blocks, L2 tables, then the data clusters in guest order.  Every cluster
is referenced once, so every refcount is 1 and every entry has COPIED.

The result is a plain qcow2 v3 file (docs/interop/qcow2.txt in QEMU):
``qemu-img check`` finds it clean and QEMU opens it, optionally over a
backing file (a delta holds only the clusters that changed).

:func:`plan` is pure; :func:`chunks` reads the data clusters through a
``read(cluster)`` callable, one cluster at a time.
"""

import collections
import struct

from nova_snapext.capture import qcow2

CLUSTER_BITS = 16
CLUSTER_SIZE = 1 << CLUSTER_BITS
REFCOUNT_ORDER = 4  # 16-bit refcounts, QEMU's default
_PER_L2 = CLUSTER_SIZE // 8
_PER_REFBLOCK = CLUSTER_SIZE * 8 // (1 << REFCOUNT_ORDER)
_HEADER_LENGTH = 104
_EXT_BACKING_FORMAT = 0xE2792ACA

DATA = 'data'
ZERO = 'zero'

Cluster = collections.namedtuple('Cluster', 'index kind source')
"""A guest cluster the file maps: DATA (``source`` tells the reader where
its bytes are) or ZERO (reads as zeros, hiding a backing file)."""

Layout = collections.namedtuple(
    'Layout', 'virtual_size backing l1_size refblocks l2_tables clusters size')
"""``l2_tables``: L1 indexes in file order; ``clusters``: [Cluster] in
guest order; ``size``: bytes of the whole file."""


def plan(virtual_size, clusters, backing=None):
    """The layout of a file mapping ``clusters`` ([Cluster], any order)."""
    clusters = sorted(clusters, key=lambda c: c.index)
    count = (virtual_size + CLUSTER_SIZE - 1) // CLUSTER_SIZE
    l1_size = max(1, (count + _PER_L2 - 1) // _PER_L2)
    if l1_size > _PER_L2 or any(c.index >= count for c in clusters):
        raise ValueError('cluster outside a disk of %d bytes' % virtual_size)
    l2_tables = sorted({c.index // _PER_L2 for c in clusters})
    data = [c for c in clusters if c.kind == DATA]
    # header, L1, refcount table, then refcount blocks covering everything
    fixed = 3 + len(l2_tables) + len(data)
    refblocks = 1
    while (fixed + refblocks) > refblocks * _PER_REFBLOCK:
        refblocks += 1
    return Layout(virtual_size, backing, l1_size, refblocks, l2_tables,
                  clusters, (fixed + refblocks) * CLUSTER_SIZE)


def _header(layout):
    backing = (layout.backing or '').encode('utf-8')
    extensions = b''
    if backing:
        extensions = struct.pack('>II', _EXT_BACKING_FORMAT, 5) + \
            b'qcow2\0\0\0'
    extensions += struct.pack('>II', 0, 0)
    backing_offset = _HEADER_LENGTH + len(extensions) if backing else 0
    head = struct.pack(
        '>4sIQIIQIIQQIIQQQQII', qcow2.MAGIC, 3, backing_offset, len(backing),
        CLUSTER_BITS, layout.virtual_size, 0, layout.l1_size,
        1 * CLUSTER_SIZE,  # L1 table
        2 * CLUSTER_SIZE, 1,  # refcount table, one cluster
        0, 0,  # no snapshots
        0, 0, 0, REFCOUNT_ORDER, _HEADER_LENGTH)
    return _padded(head + extensions + backing)


def _padded(data):
    return data + bytes(CLUSTER_SIZE - len(data))


def _entries(values):
    table = bytearray(CLUSTER_SIZE)
    for i, value in values:
        struct.pack_into('>Q', table, i * 8, value)
    return bytes(table)


def _metadata(layout):
    """The clusters before the first data cluster, in file order."""
    first_l2 = 3 + layout.refblocks
    l2_at = {j: (first_l2 + n) * CLUSTER_SIZE
             for n, j in enumerate(layout.l2_tables)}
    yield _header(layout)
    yield _entries((j, off | qcow2.COPIED) for j, off in l2_at.items())
    yield _entries((b, (3 + b) * CLUSTER_SIZE)
                   for b in range(layout.refblocks))
    used = layout.size // CLUSTER_SIZE
    for b in range(layout.refblocks):
        lo = b * _PER_REFBLOCK
        hi = min(used, lo + _PER_REFBLOCK)
        yield (struct.pack('>H', 1) * max(0, hi - lo)).ljust(
            CLUSTER_SIZE, b'\0')
    next_data = first_l2 + len(layout.l2_tables)
    entries = {j: [] for j in layout.l2_tables}
    for c in layout.clusters:
        if c.kind == DATA:
            value = next_data * CLUSTER_SIZE | qcow2.COPIED
            next_data += 1
        else:
            value = qcow2.ZERO
        entries[c.index // _PER_L2].append((c.index % _PER_L2, value))
    for j in layout.l2_tables:
        yield _entries(entries[j])


def chunks(layout, read):
    """The file's bytes, one cluster per chunk.

    :param read: callable(Cluster) -> the guest bytes of a DATA cluster
        (at most CLUSTER_SIZE; padded here)
    """
    yield from _metadata(layout)
    for c in layout.clusters:
        if c.kind == DATA:
            data = read(c)
            yield data + bytes(CLUSTER_SIZE - len(data))
