"""Read-only access to a qcow2 file's clusters, snapshots included.

The digests of disk states (:mod:`digest`) need, for one internal
snapshot, which guest clusters its file holds and where: that is its L1 and
L2 tables.  qemu-img can copy a snapshot out (``convert -l``) but cannot
list its clusters or hand out their bytes without copying the whole disk,
so this module reads the format itself (docs/interop/qcow2.txt in QEMU).

It only ever reads.  An internal snapshot's L1 table, L2 tables and data
clusters are never written while the snapshot exists (qcow2 copies on
write anything a snapshot shares), so they are read safely while QEMU runs
on the file.  Reads go through a ``read(offset, size)`` callable, so the
parsing is tested on bytes built in memory.
"""

import collections
import os
import struct
import zlib

from nova_snapext import exception

MAGIC = b'QFI\xfb'

_HEADER = struct.Struct('>4sIQIIQIIQQIIQ')
_HEADER_V3 = struct.Struct('>QQQII')
_SNAPSHOT = struct.Struct('>QIHHIIQII')
_ENTRY = struct.Struct('>Q')

OFFSET_MASK = 0x00fffffffffffe00
COPIED = 1 << 63
COMPRESSED = 1 << 62
ZERO = 1

# incompatible feature bits a reader of clusters must understand
_INCOMPAT_DATA_FILE = 1 << 2
_INCOMPAT_EXTENDED_L2 = 1 << 4
COMPRESSION_ZLIB = 0

Header = collections.namedtuple(
    'Header', 'version cluster_bits size l1_size l1_table_offset '
              'nb_snapshots snapshots_offset backing_file compression_type')

Snapshot = collections.namedtuple(
    'Snapshot', 'name l1_table_offset l1_size disk_size')


class Unsupported(exception.SnapextError):
    """A qcow2 feature this reader does not handle (encryption, ...)."""


class Corrupt(exception.SnapextError):
    """The file's metadata cannot be what a qcow2 file holds."""


def parse_header(read):
    data = read(0, _HEADER.size + _HEADER_V3.size + 1)
    if len(data) < _HEADER.size or data[:4] != MAGIC:
        raise Corrupt('not a qcow2 file (no qcow2 magic)')
    (_, version, backing_offset, backing_size, cluster_bits, size, crypt,
     l1_size, l1_offset, _, _, nb_snapshots,
     snapshots_offset) = _HEADER.unpack_from(data)
    incompatible, compression = 0, COMPRESSION_ZLIB
    if version >= 3:
        incompatible, _, _, _, header_length = _HEADER_V3.unpack_from(
            data, _HEADER.size)
        if header_length > 104:
            compression = data[104]
    if crypt:
        raise Unsupported('encrypted qcow2 files are not read')
    if incompatible & (_INCOMPAT_DATA_FILE | _INCOMPAT_EXTENDED_L2):
        raise Unsupported('qcow2 external data files and extended L2 '
                          'entries are not read')
    if not 9 <= cluster_bits <= 21:
        raise Corrupt('cluster_bits %d out of range' % cluster_bits)
    backing = None
    if backing_offset and backing_size:
        backing = read(backing_offset, backing_size).decode('utf-8')
    return Header(version, cluster_bits, size, l1_size, l1_offset,
                  nb_snapshots, snapshots_offset, backing, compression)


def snapshots(read, header):
    """Every internal snapshot of the file, in table order."""
    found = []
    offset = header.snapshots_offset
    for _ in range(header.nb_snapshots):
        (l1_offset, l1_size, id_size, name_size, _, _, _, _,
         extra_size) = _SNAPSHOT.unpack(read(offset, _SNAPSHOT.size))
        extra = read(offset + _SNAPSHOT.size, extra_size)
        # the disk's virtual size at the snapshot (extra data, qcow2 v3);
        # older entries had the size the image has now
        disk_size = (struct.unpack_from('>Q', extra, 8)[0]
                     if extra_size >= 16 else header.size)
        names = read(offset + _SNAPSHOT.size + extra_size,
                     id_size + name_size)
        found.append(Snapshot(names[id_size:].decode('utf-8'), l1_offset,
                              l1_size, disk_size))
        length = _SNAPSHOT.size + extra_size + id_size + name_size
        offset += (length + 7) & ~7
    return found


def find_snapshot(read, header, name):
    for snap in snapshots(read, header):
        if snap.name == name:
            return snap
    raise exception.NotFound('no internal snapshot %s' % name)


def l2_offsets(read, l1_table_offset, l1_size):
    """The host offset of each L2 table an L1 table names (0: none)."""
    return [e & OFFSET_MASK for (e,) in _ENTRY.iter_unpack(
        read(l1_table_offset, l1_size * 8))]


def clusters(read, cluster_bits, l1_table_offset, l1_size, virtual_size,
             skip=()):
    """(guest cluster index, L2 entry) of every cluster the table maps.

    Unallocated clusters (read from the backing file) are left out; an
    entry is given without its COPIED flag, which changes when a snapshot
    is taken or dropped but not what the cluster holds.

    :param skip: indexes of L2 tables not to read
    """
    cluster_size = 1 << cluster_bits
    per_l2 = cluster_size // 8
    count = (virtual_size + cluster_size - 1) // cluster_size
    tables = l2_offsets(read, l1_table_offset, l1_size)
    for j in range(min(l1_size, (count + per_l2 - 1) // per_l2)):
        l2_offset = tables[j]
        if not l2_offset or j in skip:
            continue
        l2 = read(l2_offset, cluster_size)
        if len(l2) < cluster_size:
            raise Corrupt('L2 table at %#x is past the end of the file'
                          % l2_offset)
        for k, (entry,) in enumerate(_ENTRY.iter_unpack(l2)):
            index = j * per_l2 + k
            if index >= count:
                break
            entry &= ~COPIED
            if entry:
                yield index, entry


def is_zero(entry):
    return not entry & COMPRESSED and entry & ZERO


def cluster_bytes(read, header, entry, length, start=0):
    """``length`` bytes the guest reads in a mapped cluster, from ``start``."""
    if entry & COMPRESSED:
        return _decompressed(read, header, entry, start + length)[start:]
    if entry & ZERO:
        return bytes(length)
    data = read((entry & OFFSET_MASK) + start, length)
    # a truncated file reads short: pad, so the digest (not an exception)
    # says the content is wrong
    return data + bytes(length - len(data))


def _decompressed(read, header, entry, length):
    if header.compression_type != COMPRESSION_ZLIB:
        raise Unsupported('compression type %d' % header.compression_type)
    shift = 62 - (header.cluster_bits - 8)
    offset = entry & ((1 << shift) - 1)
    sectors = (entry & ((1 << 62) - 1)) >> shift
    size = (sectors + 1) * 512 - (offset & 511)
    try:
        data = zlib.decompressobj(-15).decompress(read(offset, size),
                                                  length)
    except zlib.error:
        data = b''  # wrong bytes: the digest reports it
    return data + bytes(length - len(data))


class File(object):
    """A qcow2 (or raw) file opened read-only, with its backing chain.

    ``guest_read`` reads what a guest of the file's active state sees; the
    snapshot methods read one internal snapshot's own clusters.
    """

    def __init__(self, path):
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._backing = None
        self._l2_cache = {}
        try:
            self.header = (parse_header(self.read)
                           if self.read(0, 4) == MAGIC else None)
        except Exception:
            os.close(self._fd)
            raise

    def read(self, offset, size):
        return os.pread(self._fd, size, offset)

    def close(self):
        if self._backing is not None:
            self._backing.close()
        os.close(self._fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def cluster_size(self):
        return 1 << self.header.cluster_bits

    def snapshot(self, name):
        return find_snapshot(self.read, self.header, name)

    def snapshot_clusters(self, snap, skip=()):
        return clusters(self.read, self.header.cluster_bits,
                        snap.l1_table_offset, snap.l1_size, snap.disk_size,
                        skip)

    def snapshot_tables(self, snap):
        return l2_offsets(self.read, snap.l1_table_offset, snap.l1_size)

    def cluster_bytes(self, entry, length, start=0):
        return cluster_bytes(self.read, self.header, entry, length, start)

    def _backing_file(self):
        if self._backing is None and self.header.backing_file:
            self._backing = File(os.path.join(os.path.dirname(self.path),
                                              self.header.backing_file))
        return self._backing

    def _active_entry(self, index):
        per_l2 = self.cluster_size // 8
        j, k = divmod(index, per_l2)
        if j >= self.header.l1_size:
            return 0
        l2_offset = _ENTRY.unpack(self.read(
            self.header.l1_table_offset + j * 8, 8))[0] & OFFSET_MASK
        if not l2_offset:
            return 0
        if l2_offset not in self._l2_cache:
            if len(self._l2_cache) > 64:
                self._l2_cache.clear()
            self._l2_cache[l2_offset] = self.read(l2_offset,
                                                  self.cluster_size)
        return _ENTRY.unpack_from(self._l2_cache[l2_offset],
                                  k * 8)[0] & ~COPIED

    def backing_read(self, offset, length):
        """What the guest reads at ``offset`` where the file maps nothing."""
        if self._backing_file() is None:
            return bytes(length)
        return self._backing_file().guest_read(offset, length)

    def guest_read(self, offset, length):
        """``length`` bytes at guest ``offset`` of the active state."""
        if self.header is None:
            data = self.read(offset, length)
            return data + bytes(length - len(data))
        if offset >= self.header.size:
            return bytes(length)
        parts = []
        end = offset + length
        while offset < end:
            index, within = divmod(offset, self.cluster_size)
            size = min(self.cluster_size - within, end - offset)
            entry = self._active_entry(index)
            if entry:
                parts.append(self.cluster_bytes(
                    entry, within + size)[within:])
            elif self._backing_file() is not None:
                parts.append(self._backing_file().guest_read(offset, size))
            else:
                parts.append(bytes(size))
            offset += size
        return b''.join(parts)
