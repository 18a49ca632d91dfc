"""The export bundle: one self-describing, streamable tar archive.

Members, in this order (the first one describes all the others)::

    bundle.json          this format: schema_version, the snapshot, and the
                         name, kind, bytes and sha256 of every other member
    record.json          the snapshot's record (manifest.py's schema)
    domain.xml           the domain XML at capture
    nova.json            the Nova context the record carries (flavor, image
                         properties), {} outside Nova
    memory.save          the libvirt memory image (full snapshots)
    disks/<target>.qcow2 each disk's state: standalone, or a delta holding
                         only the clusters changed since ``since`` (its
                         backing file names the base's member)
    disks/<target>.digests  the per-cluster digests taken with the snapshot
                         (a delta: only those of the changed clusters; its
                         ``base`` names the base bundle's member)

The archive is written front to back (:func:`stream`), so it can go to a
pipe or be pulled by an upload;
each member's size and checksum is known before it is written.  Reading
(:func:`extract`) trusts nothing: it accepts regular files under the names
bundle.json lists, of the sizes and checksums it lists, and refuses
everything else before the caller puts anything in a store.
"""

import hashlib
import json
import os
import tarfile

import jsonschema

from nova_snapext import exception

SCHEMA_VERSION = 1
FORMAT = 'snapext-bundle'
BUNDLE = 'bundle.json'
RECORD = 'record.json'
DOMAIN_XML = 'domain.xml'
NOVA = 'nova.json'
MEMORY = 'memory.save'
# the largest bundle.json read into memory (the rest is streamed)
MAX_INDEX_BYTES = 4 << 20
CHUNK = 1 << 20

# Properties of a Glance image that holds a bundle (an export's, or one a
# client uploaded to import).
IMAGE_OF = 'snapext_bundle_of'
IMAGE_SINCE = 'snapext_bundle_since'
IMAGE_FORMAT = 'snapext_bundle_format'

KINDS = ('record', 'domain-xml', 'nova', 'memory', 'disk', 'digests')

_sha256 = {'type': 'string', 'pattern': '^[0-9a-f]{64}$'}
_name = {'type': 'string', 'pattern': r'^[A-Za-z0-9][A-Za-z0-9._/-]*$',
         'maxLength': 200}

SCHEMA = {
    'type': 'object',
    'required': ['format', 'schema_version', 'snapshot_id', 'instance_uuid',
                 'since', 'members'],
    'properties': {
        'format': {'const': FORMAT},
        'schema_version': {'const': SCHEMA_VERSION},
        'snapshot_id': {'type': 'string', 'pattern': '^[A-Za-z0-9-]+$'},
        'instance_uuid': {'type': 'string', 'pattern': '^[A-Za-z0-9-]+$'},
        'since': {'type': ['string', 'null'],
                  'pattern': '^[A-Za-z0-9-]+$'},
        'created_at': {'type': 'string'},
        'members': {
            'type': 'array',
            'minItems': 1,
            'items': {
                'type': 'object',
                'required': ['name', 'kind', 'bytes', 'sha256'],
                'properties': {
                    'name': _name,
                    'kind': {'enum': list(KINDS)},
                    'bytes': {'type': 'integer', 'minimum': 0},
                    'sha256': _sha256,
                    'target': {'type': 'string'},
                    # a delta disk or its digests: the base bundle's
                    # member it sits on
                    'base': {'type': ['string', 'null']},
                },
            },
        },
    },
}

_validator = jsonschema.Draft7Validator(SCHEMA)


class BundleError(exception.InvalidRequest):
    """A bundle that cannot be imported; nothing entered the store."""


def image_properties(snapshot_id, since=None):
    """The properties of a Glance image holding this bundle."""
    properties = {IMAGE_OF: snapshot_id,
                  IMAGE_FORMAT: '%s/%d' % (FORMAT, SCHEMA_VERSION)}
    if since:
        properties[IMAGE_SINCE] = since
    return properties


def disk_member(target):
    return 'disks/%s.qcow2' % target


def digests_member(target):
    return 'disks/%s.digests' % target


def validate_index(index):
    if not isinstance(index, dict):
        raise BundleError('%s is not a JSON object' % BUNDLE)
    if index.get('format') != FORMAT:
        raise BundleError('not a snapext bundle (%s format %r)'
                          % (BUNDLE, index.get('format')))
    if index.get('schema_version') != SCHEMA_VERSION:
        raise BundleError('bundle schema_version %r is not supported (this '
                          'snapext reads %d)' % (index.get('schema_version'),
                                                 SCHEMA_VERSION))
    for member in index.get('members') or []:
        # the clearer reason first for what a path check refuses
        if isinstance(member, dict) and isinstance(member.get('name'), str):
            _check_name(member['name'])
    problems = sorted(_validator.iter_errors(index), key=str)
    if problems:
        where = '/'.join(str(p) for p in problems[0].absolute_path)
        raise BundleError('%s is invalid at %s: %s'
                          % (BUNDLE, where or '(root)', problems[0].message))
    names = [m['name'] for m in index['members']]
    if len(set(names)) != len(names) or BUNDLE in names:
        raise BundleError('%s lists a member twice' % BUNDLE)
    return index


def _check_name(name):
    if name.startswith('/') or '\\' in name:
        raise BundleError('member %s: absolute paths are refused' % name)
    if '..' in name.split('/') or '.' in name.split('/') or '//' in name:
        raise BundleError('member %s: "..", "." and empty path parts are '
                          'refused' % name)


# -- writing --

class Member(object):
    """One member to write: ``chunks()`` yields its bytes, twice if asked.

    The checksum is computed by a first pass over ``chunks()`` unless
    ``sha256`` is given (the memory image's is in the record); the write
    pass checks it again, so a source that changed in between (or lied)
    fails the export rather than making a bundle import refuses.
    """

    def __init__(self, name, kind, size, chunks, sha256=None, **extra):
        self.name, self.kind, self.size = name, kind, size
        self.chunks = chunks
        self.sha256 = sha256
        self.extra = extra

    def digest(self):
        if self.sha256 is None:
            h = hashlib.sha256()
            for chunk in self.chunks():
                h.update(chunk)
            self.sha256 = h.hexdigest()
        return self.sha256

    def describe(self):
        return dict(self.extra, name=self.name, kind=self.kind,
                    bytes=self.size, sha256=self.digest())


def bytes_member(name, kind, data, **extra):
    return Member(name, kind, len(data), lambda: iter([data]),
                  hashlib.sha256(data).hexdigest(), **extra)


def file_member(name, kind, path, sha256=None, **extra):
    def chunks():
        with open(path, 'rb') as f:
            while True:
                block = f.read(CHUNK)
                if not block:
                    return
                yield block
    return Member(name, kind, os.path.getsize(path), chunks, sha256, **extra)


def index_of(fields, members):
    """The bundle.json of ``members``: ``fields`` and what they hold.

    Each member's name, kind, size and sha256 (a first pass over a member
    whose sha256 is not known).
    """
    index = dict(fields, format=FORMAT, schema_version=SCHEMA_VERSION,
                 members=[m.describe() for m in members])
    return validate_index(index)


def stream(index, members, before_end=None):
    """The bundle's bytes, front to back: a tar archive (PAX).

    Written by hand rather than through tarfile's stream mode so that the
    bytes can be pulled (an HTTP upload reads them) with no thread in
    between: a header block, the member's chunks, NUL padding to a block,
    and after the last member two NUL blocks and padding to a record, as
    tarfile writes them.

    :param before_end: callable() run after the last member's bytes and
        before the end of the archive: raising there leaves an archive no
        reader accepts (an export whose source went away meanwhile)
    """
    data = json.dumps(index, indent=2, sort_keys=True).encode('utf-8')
    offset = 0
    for member in [bytes_member(BUNDLE, 'index', data)] + list(members):
        for chunk in _member_bytes(member):
            offset += len(chunk)
            yield chunk
    if before_end is not None:
        before_end()
    end = tarfile.BLOCKSIZE * 2
    end += -(offset + end) % tarfile.RECORDSIZE
    yield tarfile.NUL * end


def _member_bytes(member):
    info = tarfile.TarInfo(member.name)
    info.size = member.size
    info.mode = 0o600
    yield info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, 'surrogateescape')
    h = hashlib.sha256()
    count = 0
    for chunk in member.chunks():
        count += len(chunk)
        if count > member.size:
            break
        h.update(chunk)
        yield chunk
    if count != member.size or h.hexdigest() != member.digest():
        raise exception.SnapextError(
            'export: %s changed while it was written (%d bytes, sha256 %s; '
            'expected %d, %s)' % (member.name, count, h.hexdigest()[:16],
                                  member.size, member.digest()[:16]))
    if member.size % tarfile.BLOCKSIZE:
        yield tarfile.NUL * (tarfile.BLOCKSIZE -
                             member.size % tarfile.BLOCKSIZE)


def write(fileobj, fields, members):
    """Stream a bundle to ``fileobj``: bundle.json, then ``members``.

    :returns: the index written
    """
    index = index_of(fields, members)
    for chunk in stream(index, members):
        fileobj.write(chunk)
    return index


# -- reading --

def extract(fileobj, destination_for, wanted=None):
    """Read a bundle, verifying every member as it streams.

    :param destination_for: callable(index) -> a directory the members are
        written into (called once bundle.json is read and valid), or None
        to write nothing; the caller removes it if this raises
    :param wanted: callable(member of bundle.json) -> whether to write it;
        the others are read and verified all the same, but not kept (a
        cache that needs only a bundle's memory image and digests)
    :returns: (index, directory)
    :raises BundleError: anything the bundle is not allowed to be
    """
    try:
        tar = tarfile.open(fileobj=fileobj, mode='r|*')
    except tarfile.TarError as exc:
        raise BundleError('not a tar archive: %s' % exc) from exc
    index = directory = None
    seen = set()
    try:
        for info in tar:
            _check_name(info.name)
            if not info.isreg():
                raise BundleError('member %s: only regular files are '
                                  'accepted (links and devices are refused)'
                                  % info.name)
            if index is None:
                index = _read_index(tar, info)
                listed = {m['name']: m for m in index['members']}
                directory = destination_for(index)
                continue
            want = listed.get(info.name)
            if want is None:
                raise BundleError('member %s is not listed in %s'
                                  % (info.name, BUNDLE))
            if info.name in seen:
                raise BundleError('member %s appears twice' % info.name)
            seen.add(info.name)
            if info.size != want['bytes']:
                raise BundleError('member %s is %d bytes; %s says %d'
                                  % (info.name, info.size, BUNDLE,
                                     want['bytes']))
            _copy_checked(tar.extractfile(info), want,
                          os.path.join(directory, info.name)
                          if directory and (wanted is None or wanted(want))
                          else None)
    except tarfile.TarError as exc:
        raise BundleError('the archive is damaged or truncated: %s'
                          % exc) from exc
    finally:
        tar.close()
    if index is None:
        raise BundleError('empty archive: no %s' % BUNDLE)
    missing = sorted(set(listed) - seen)
    if missing:
        raise BundleError('members listed in %s are missing: %s'
                          % (BUNDLE, ', '.join(missing)))
    return index, directory


def verify(fileobj):
    """Check a whole bundle as :func:`extract` does, writing nothing.

    :returns: the index
    :raises BundleError: anything the bundle is not allowed to be
    """
    return extract(fileobj, lambda index: None)[0]


def extract_index(fileobj):
    """Only bundle.json, validated (to inspect a bundle)."""
    try:
        with tarfile.open(fileobj=fileobj, mode='r|*') as tar:
            for info in tar:
                return _read_index(tar, info)
    except tarfile.TarError as exc:
        raise BundleError('not a tar archive: %s' % exc) from exc
    raise BundleError('empty archive: no %s' % BUNDLE)


def _read_index(tar, info):
    if info.name != BUNDLE:
        raise BundleError('the first member is %s, not %s: not a snapext '
                          'bundle' % (info.name, BUNDLE))
    if info.size > MAX_INDEX_BYTES:
        raise BundleError('%s is %d bytes, more than %d'
                          % (BUNDLE, info.size, MAX_INDEX_BYTES))
    try:
        index = json.loads(tar.extractfile(info).read().decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError('%s is not JSON: %s' % (BUNDLE, exc)) from exc
    return validate_index(index)


def _copy_checked(src, want, path):
    """Copy a member to ``path`` (None: nowhere), checking size and sum."""
    if path is None:
        _check_member(src, want, lambda block: None)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # O_EXCL: never follow or overwrite what is already there
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'wb') as out:
        try:
            _check_member(src, want, out.write)
        finally:
            out.flush()
            os.fsync(out.fileno())


def _check_member(src, want, write):
    h = hashlib.sha256()
    count = 0
    while True:
        block = src.read(CHUNK)
        if not block:
            break
        count += len(block)
        if count > want['bytes']:
            break
        h.update(block)
        write(block)
    if count != want['bytes']:
        raise BundleError('member %s: %d bytes read, %s says %d'
                          % (want['name'], count, BUNDLE, want['bytes']))
    if h.hexdigest() != want['sha256']:
        raise BundleError('member %s does not match its sha256 in %s'
                          % (want['name'], BUNDLE))
