"""Rewriting the domain XML inside a libvirt QEMU memory image.

A clone resumes a snapshot's memory as a *new* domain, with its own name
and UUID.  libvirt refuses that through ``virDomainRestoreFlags(dxml)``
("Target domain uuid ... does not match source"), so the clone gets a copy
of the memory image whose embedded XML already names the new domain, and is
restored without dxml.

The layout (libvirt src/qemu/qemu_saveimage.h, stable on-disk ABI): a
92-byte header, ``data_len`` bytes holding the NUL-terminated XML and, from
``cookieOffset``, the NUL-terminated save cookie, zero padded; then QEMU's
migration stream.
"""

import os
import struct

from nova_snapext import exception

_HEADER = struct.Struct('<16sIIIII56s')
_MAGIC = b'LibvirtQemudSave'
_VERSION = 2
_FORMAT_RAW = 0


def _read_header(f, path):
    raw = f.read(_HEADER.size)
    if len(raw) != _HEADER.size:
        raise exception.InvalidRequest('%s is not a memory image' % path)
    magic, version, data_len, running, fmt, cookie_at, unused = \
        _HEADER.unpack(raw)
    if magic != _MAGIC or version != _VERSION:
        raise exception.InvalidRequest(
            '%s is not a complete version-2 libvirt memory image' % path)
    if fmt != _FORMAT_RAW:
        raise exception.InvalidRequest(
            'memory image %s is compressed (format %d); clones need a raw '
            'one' % (path, fmt))
    return data_len, running, cookie_at, unused


def copy_with_xml(src, dst, xml):
    """Write ``dst``: ``src`` with its domain XML replaced by ``xml``.

    The migration stream is copied in the kernel (copy_file_range), which
    is a reflink on filesystems that support one.
    """
    with open(src, 'rb') as fin:
        data_len, running, cookie_at, unused = _read_header(fin, src)
        data = fin.read(data_len)
        stream_at = _HEADER.size + data_len
        cookie = data[cookie_at:].rstrip(b'\0') + b'\0' if cookie_at else b''
        xml_bytes = xml.encode() + b'\0'
        new_len = max(data_len, len(xml_bytes) + len(cookie))
        header = _HEADER.pack(_MAGIC, _VERSION, new_len, running, _FORMAT_RAW,
                              len(xml_bytes) if cookie else 0, unused)
        body = xml_bytes + cookie
        tmp = dst + '.tmp'
        try:
            with open(tmp, 'wb') as fout:
                fout.write(header + body + b'\0' * (new_len - len(body)))
                fout.flush()
                out_at = _HEADER.size + new_len
                remaining = os.fstat(fin.fileno()).st_size - stream_at
                while remaining > 0:
                    copied = os.copy_file_range(fin.fileno(), fout.fileno(),
                                                remaining, stream_at, out_at)
                    if copied == 0:
                        break
                    stream_at += copied
                    out_at += copied
                    remaining -= copied
            os.replace(tmp, dst)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def is_complete(path):
    """Whether ``path`` is a complete libvirt save image.

    libvirt writes the header with the magic ``LibvirtQemudPart`` and
    rewrites it to ``LibvirtQemudSave`` only once QEMU's migration stream
    is complete (qemu_saveimage.c), so a save cut short is told apart
    without reading the stream.
    """
    try:
        with open(path, 'rb') as f:
            return f.read(len(_MAGIC)) == _MAGIC
    except FileNotFoundError:
        return False
