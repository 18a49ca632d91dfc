"""A qcow2 file written front to back, for streaming into a bundle.

A bundle member must have its size before its first byte (a tar header
comes first) and the host must not hold a second copy of a disk, so
``qemu-img convert`` (which seeks in its output) is no use.  Once the
guest clusters a state maps are known from its L2 tables (:mod:`qcow2`),
the whole file's layout follows: header, L1 table, refcount table and
blocks, L2 tables, then the data clusters in guest order.  Every cluster
is referenced once, so every refcount is 1 and every entry has COPIED.

The file has one cluster each of L1 and refcount table, which bounds the
cluster size a disk may use (:func:`fits`).

The result is a plain qcow2 v3 file (docs/interop/qcow2.txt in QEMU):
``qemu-img check`` finds it clean and QEMU opens it, optionally over a
backing file (a delta holds only the clusters that changed).

:func:`plan` is pure; :func:`chunks` reads the data clusters through a
``read(cluster)`` callable, one cluster at a time.
"""

import collections
import struct

from nova_snapext.capture import qcow2

CLUSTER_BITS = 16  # Nova's (and qemu-img's) default, for whole disks
MIN_CLUSTER_BITS = 14
REFCOUNT_ORDER = 4  # 16-bit refcounts, QEMU's default
_HEADER_LENGTH = 104
_EXT_BACKING_FORMAT = 0xE2792ACA

DATA = 'data'
ZERO = 'zero'

Cluster = collections.namedtuple('Cluster', 'index kind')
"""A guest cluster the file maps: DATA (its bytes come from ``read`` in
:func:`chunks`) or ZERO (reads as zeros, hiding a backing file)."""

Layout = collections.namedtuple(
    'Layout', 'cluster_bits virtual_size backing l1_size refblocks '
              'l2_tables clusters size')
"""``l2_tables``: L1 indexes in file order; ``clusters``: [Cluster] in
guest order; ``size``: bytes of the whole file."""


def fits(virtual_size, cluster_bits):
    """Whether a disk's L1 table fits one cluster of ``cluster_bits``.

    The file written here has one cluster of L1 and one of refcount table
    (enough for every file such a disk makes).
    """
    per_table = (1 << cluster_bits) // 8
    return virtual_size <= per_table * per_table << cluster_bits


def small_cluster_bits(virtual_size):
    """The smallest cluster size, from 16 KiB, a file of the disk can use.

    A delta's fixed cost is four clusters (header, L1, refcount table and
    block) and a cluster per L2 table and per guest cluster it maps: small
    clusters keep a delta near what the guest wrote.  The L1 table must fit
    one cluster: 16 KiB up to 64 GiB disks, 32 KiB up to 512 GiB, 64 KiB
    up to 4 TiB.
    """
    for bits in range(MIN_CLUSTER_BITS, CLUSTER_BITS + 1):
        if fits(virtual_size, bits):
            return bits
    raise ValueError('a disk of %d bytes is larger than a bundle disk can '
                     'be (4 TiB)' % virtual_size)


def plan(virtual_size, clusters, backing=None, cluster_bits=CLUSTER_BITS):
    """The layout of a file mapping ``clusters`` ([Cluster], any order)."""
    clusters = sorted(clusters, key=lambda c: c.index)
    size = 1 << cluster_bits
    per_table = size // 8
    count = (virtual_size + size - 1) // size
    l1_size = max(1, (count + per_table - 1) // per_table)
    if not fits(virtual_size, cluster_bits):
        raise ValueError('a disk of %d bytes is larger than a bundle disk '
                         'of %d-byte clusters can be' % (virtual_size, size))
    if any(c.index >= count for c in clusters):
        raise ValueError('cluster outside a disk of %d bytes' % virtual_size)
    l2_tables = sorted({c.index // per_table for c in clusters})
    data = [c for c in clusters if c.kind == DATA]
    # header, L1, refcount table, then refcount blocks covering everything
    fixed = 3 + len(l2_tables) + len(data)
    per_refblock = size * 8 // (1 << REFCOUNT_ORDER)
    refblocks = 1
    while (fixed + refblocks) > refblocks * per_refblock:
        refblocks += 1
    return Layout(cluster_bits, virtual_size, backing, l1_size, refblocks,
                  l2_tables, clusters, (fixed + refblocks) * size)


def _header(layout):
    backing = (layout.backing or '').encode('utf-8')
    extensions = b''
    if backing:
        extensions = struct.pack('>II', _EXT_BACKING_FORMAT, 5) + \
            b'qcow2\0\0\0'
    extensions += struct.pack('>II', 0, 0)
    backing_offset = _HEADER_LENGTH + len(extensions) if backing else 0
    size = 1 << layout.cluster_bits
    head = struct.pack(
        '>4sIQIIQIIQQIIQQQQII', qcow2.MAGIC, 3, backing_offset, len(backing),
        layout.cluster_bits, layout.virtual_size, 0, layout.l1_size,
        1 * size,  # L1 table
        2 * size, 1,  # refcount table, one cluster
        0, 0,  # no snapshots
        0, 0, 0, REFCOUNT_ORDER, _HEADER_LENGTH)
    return _padded(head + extensions + backing, size)


def _padded(data, size):
    return data + bytes(size - len(data))


def _entries(values, size):
    table = bytearray(size)
    for i, value in values:
        struct.pack_into('>Q', table, i * 8, value)
    return bytes(table)


def _metadata(layout):
    """The clusters before the first data cluster, in file order."""
    size = 1 << layout.cluster_bits
    per_table = size // 8
    per_refblock = size * 8 // (1 << REFCOUNT_ORDER)
    first_l2 = 3 + layout.refblocks
    l2_at = {j: (first_l2 + n) * size
             for n, j in enumerate(layout.l2_tables)}
    yield _header(layout)
    yield _entries(((j, off | qcow2.COPIED) for j, off in l2_at.items()),
                   size)
    yield _entries(((b, (3 + b) * size) for b in range(layout.refblocks)),
                   size)
    used = layout.size // size
    for b in range(layout.refblocks):
        lo = b * per_refblock
        hi = min(used, lo + per_refblock)
        yield (struct.pack('>H', 1) * max(0, hi - lo)).ljust(size, b'\0')
    next_data = first_l2 + len(layout.l2_tables)
    entries = {j: [] for j in layout.l2_tables}
    for c in layout.clusters:
        if c.kind == DATA:
            value = next_data * size | qcow2.COPIED
            next_data += 1
        else:
            value = qcow2.ZERO
        entries[c.index // per_table].append((c.index % per_table, value))
    for j in layout.l2_tables:
        yield _entries(entries[j], size)


def chunks(layout, read):
    """The file's bytes, one cluster per chunk.

    :param read: callable(Cluster) -> the guest bytes of a DATA cluster
        (at most a cluster; padded here)
    """
    size = 1 << layout.cluster_bits
    yield from _metadata(layout)
    for c in layout.clusters:
        if c.kind == DATA:
            data = read(c)
            yield data + bytes(size - len(data))
