"""Export and import of bundles, on small qcow2 files qemu-img makes.

The engine's export and import need no libvirt: each test exports from
one file store and imports into another, empty one, then checks what QEMU
reads from the imported files.  Crafted archives check every refusal.
"""

import hashlib
import io
import json
import os
import shutil
import tarfile

import fixtures
import testtools

from nova_snapext import bundle
from nova_snapext.capture import digest
from nova_snapext.capture import engine as engine_mod
from nova_snapext.capture import qcow2_stream
from nova_snapext.capture import verify
from nova_snapext import exception
from nova_snapext.stores import file as file_store
from nova_snapext.tests.unit import fakes
from nova_snapext.tests.unit import qemu_tools

_run = qemu_tools.run
_io = qemu_tools.qemu_io

UUID = '6f1c7c1e-0000-4000-8000-000000000001'
MIB = 1 << 20


def _raw(path, snapshot=None):
    out = path + '.raw-out'
    args = ['qemu-img', 'convert', '-U', '-O', 'raw']
    if snapshot:
        args += ['-l', 'snapshot.name=' + snapshot]
    _run(*(args + [path, out]))
    with open(out, 'rb') as f:
        data = f.read()
    os.unlink(out)
    return data


def _engine(root):
    conf = fakes.conf(file_store_path=os.path.join(root, 'store'),
                      lock_path=os.path.join(root, 'locks'))
    return engine_mod.Engine(conf, store=file_store.FileStore(conf),
                             conn=object())


def _with_disk(members, disk):
    """The bundle with ``disk`` as vda, its index entry made to match."""
    members = [(i, disk if i.name == 'disks/vda.qcow2' else d)
               for i, d in members]

    def fix(index):
        for m in index['members']:
            if m['name'] == 'disks/vda.qcow2':
                m.update(bytes=len(disk),
                         sha256=hashlib.sha256(disk).hexdigest())
    return _with_index(members, fix)


def _members(data):
    """[(TarInfo, bytes)] of a bundle in memory."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(i, tar.extractfile(i).read() if i.isreg() else b'')
                for i in tar]


def _tar(members):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode='w', format=tarfile.PAX_FORMAT) as t:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            t.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def _with_index(members, edit):
    index = json.loads(members[0][1])
    edit(index)
    return [(members[0][0], json.dumps(index).encode())] + members[1:]


@testtools.skipUnless(shutil.which('qemu-img') and shutil.which('qemu-io'),
                      'needs qemu-img and qemu-io')
class BundleTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.src = _engine(os.path.join(self.dir, 'a'))
        self.dst = _engine(os.path.join(self.dir, 'b'))
        self.disk = os.path.join(self.dir, 'disk')
        _run('qemu-img', 'create', '-q', '-f', 'qcow2', self.disk, '8M')
        _io(self.disk, 'write -P 0xaa 64k 128k', 'write -z 1M 64k',
            'write -P 0x33 3M 10k')
        self._take('s1', None)
        _io(self.disk, 'write -P 0xbb 64k 64k', 'write -P 0xcc 2M 64k',
            'write -z 3M 64k')
        self._take('s2', 's1')
        _io(self.disk, 'write -P 0xdd 0 64k')  # the live state differs

    def _take(self, sid, parent):
        name = 'snapext-' + sid
        _run('qemu-img', 'snapshot', '-c', name, self.disk)
        store = self.src.store
        staging = store.stage(UUID, sid)
        memory = os.path.join(staging, 'memory.save')
        with open(memory, 'wb') as f:
            f.write(b'memory of ' + sid.encode() * 1000)
        size, vsize, done, hashed = verify.digest_state(self.disk, name)
        with open(os.path.join(staging, 'vda.digests'), 'wb') as f:
            f.write(digest.encode(size, vsize, done))
        with open(memory, 'rb') as f:
            mem = f.read()
        record = fakes.record(
            sid, parent_id=parent,
            memory={'store': 'file', 'location': 'memory.save',
                    'bytes': len(mem),
                    'sha256': hashlib.sha256(mem).hexdigest()},
            nova={'flavor': {'name': 'm1.tiny'}},
            disks=[{'target': 'vda', 'role': 'root', 'path': self.disk,
                    'format': 'qcow2', 'virtual_size': 8 * MIB,
                    'snapshot': name, 'backing': None,
                    'digest': {'algorithm': digest.ALGORITHM,
                               'root': digest.root(size, vsize, done),
                               'location': 'vda.digests'}}])
        store.commit(record)

    def _export(self, sid, since=None):
        out = io.BytesIO()
        index = self.src.export(sid, out, since)
        return out.getvalue(), index

    def _import(self, data):
        return self.dst.import_bundle(io.BytesIO(data))

    def assertNothingStaged(self):
        root = self.dst.store.root
        left = [os.path.join(d, f) for d, _, files in os.walk(root)
                for f in files if f != 'manifest.json']
        self.assertEqual([], [p for p in left if '.staging' in p])
        self.assertEqual([], self.dst.store.staged(UUID))

    def test_a_standalone_export_imports_into_an_empty_store(self):
        data, index = self._export('s1')
        names = [i.name for i, _ in _members(data)]
        self.assertEqual(['bundle.json', 'record.json', 'domain.xml',
                          'nova.json', 'memory.save', 'disks/vda.qcow2',
                          'disks/vda.digests'], names)
        record = self._import(data)
        path = record['disks'][0]['path']
        self.assertTrue(path.startswith(self.dst.store.root))
        self.assertEqual(_raw(self.disk, 'snapext-s1'), _raw(path))
        self.assertEqual(_raw(path), _raw(path, 'snapext-s1'))
        got = self.dst.store.get('s1')
        self.assertEqual('s1', got['id'])
        self.assertEqual({'flavor': {'name': 'm1.tiny'}}, got['nova'])
        self.assertEqual('imported', got['history'][-1]['event'])
        self.assertEqual('ok', self.dst.verify('s1')['result'])

    def test_a_delta_applies_on_its_imported_base(self):
        full, _ = self._export('s2')
        delta, index = self._export('s2', since='s1')
        # only what changed since s1: 64k, 2M and the zeroed 3M
        disk = [m for m in index['members'] if m['kind'] == 'disk'][0]
        self.assertEqual('disks/vda.qcow2', disk['base'])
        self.assertLess(len(delta), len(full))
        self.assertEqual((3 + 1 + 1 + 2) * qcow2_stream.CLUSTER_SIZE,
                         disk['bytes'])
        self._import(self._export('s1')[0])
        record = self._import(delta)
        path = record['disks'][0]['path']
        self.assertEqual(_raw(self.disk, 'snapext-s2'), _raw(path))
        self.assertEqual('s1', record['imported']['since'])

    def test_a_delta_without_its_base_is_refused(self):
        delta, _ = self._export('s2', since='s1')
        exc = self.assertRaises(bundle.BundleError, self._import, delta)
        self.assertIn('delta on snapshot s1, which is not in the store',
                      str(exc))
        self.assertNothingStaged()

    def test_since_must_be_an_ancestor(self):
        self.assertRaises(exception.InvalidRequest, self._export, 's1', 's2')

    def test_a_second_import_is_a_conflict(self):
        data, _ = self._export('s1')
        self._import(data)
        self.assertRaises(exception.Conflict, self._import, data)

    def _refused(self, members, why):
        exc = self.assertRaises(bundle.BundleError, self._import,
                                _tar(members))
        self.assertIn(why, str(exc))
        self.assertNothingStaged()
        self.assertRaises(exception.NotFound, self.dst.store.get, 's1')

    def _edited(self, name, edit):
        members = _members(self._export('s1')[0])
        return [(i, edit(d) if i.name == name else d) for i, d in members]

    def test_refusals(self):
        members = _members(self._export('s1')[0])

        def extra(info_edit, data=b'x'):
            info = tarfile.TarInfo('extra')
            info_edit(info)
            return members[:2] + [(info, data)] + members[2:]

        cases = [
            (extra(lambda i: setattr(i, 'name', '/etc/passwd')),
             'absolute paths are refused'),
            (extra(lambda i: setattr(i, 'name', 'disks/../../x')),
             '".."'),
            (extra(lambda i: (setattr(i, 'type', tarfile.SYMTYPE),
                              setattr(i, 'linkname', '/etc/passwd'))),
             'links and devices are refused'),
            (extra(lambda i: setattr(i, 'type', tarfile.LNKTYPE)),
             'links and devices are refused'),
            (extra(lambda i: setattr(i, 'type', tarfile.CHRTYPE)),
             'links and devices are refused'),
            (extra(lambda i: None), 'member extra is not listed'),
            (members[1:], 'the first member is record.json'),
            (_with_index(members, lambda x: x.update(schema_version=9)),
             'bundle schema_version 9 is not supported'),
            (_with_index(members, lambda x: x['members'][3].update(
                bytes=x['members'][3]['bytes'] + 1)),
             'member memory.save is'),
            (_with_index(members, lambda x: x['members'][3].update(
                sha256='0' * 64)),
             'member memory.save does not match its sha256'),
            (_with_index(members, lambda x: x['members'][3].update(
                name='../memory.save')), '".."'),
            (members[:-1], 'members listed in bundle.json are missing'),
            (self._edited('memory.save', lambda d: d[:-1] + b'!'),
             'does not match its sha256'),
        ]
        for crafted, why in cases:
            self._refused(crafted, why)

    def test_a_disk_naming_a_backing_file_is_refused(self):
        members = _members(self._export('s1')[0])
        evil = os.path.join(self.dir, 'evil')
        _run('qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'raw', '-b',
             '/etc/hostname', evil, '8M')
        with open(evil, 'rb') as f:
            disk = f.read()
        self._refused(_with_disk(members, disk), "names backing file")

    def test_a_disk_that_is_not_the_state_is_refused(self):
        # a consistent bundle (checksums fine) whose disk is another state
        members = _members(self._export('s1')[0])
        other = _members(self._export('s2')[0])
        disk = dict((i.name, d) for i, d in other)['disks/vda.qcow2']
        self._refused(_with_disk(members, disk),
                      "disk vda does not hold the snapshot's state")

    def test_not_a_tar(self):
        exc = self.assertRaises(bundle.BundleError, self._import,
                                b'not a bundle' * 100)
        self.assertIn('not a tar archive', str(exc))


class VerifyTest(testtools.TestCase):
    """bundle.verify: import's checks, nothing written (the client's)."""

    def _bundle(self):
        out = io.BytesIO()
        bundle.write(out, {'snapshot_id': 's1', 'instance_uuid': UUID,
                           'since': None},
                     [bundle.bytes_member(bundle.RECORD, 'record', b'{}'),
                      bundle.bytes_member(bundle.MEMORY, 'memory',
                                          b'm' * 5000)])
        return out.getvalue()

    def test_a_good_bundle_gives_its_index(self):
        self.useFixture(fixtures.MockPatch(
            'os.open', side_effect=AssertionError('verify wrote a file')))
        index = bundle.verify(io.BytesIO(self._bundle()))
        self.assertEqual('s1', index['snapshot_id'])
        self.assertEqual([bundle.RECORD, bundle.MEMORY],
                         [m['name'] for m in index['members']])

    def test_every_member_is_checked(self):
        members = _members(self._bundle())
        for crafted, why in [
                ([(i, d[:-1] + b'!' if i.name == bundle.MEMORY else d)
                  for i, d in members], 'does not match its sha256'),
                (members[:-1], 'members listed in bundle.json are missing'),
                (members[1:], 'the first member is record.json')]:
            exc = self.assertRaises(bundle.BundleError, bundle.verify,
                                    io.BytesIO(_tar(crafted)))
            self.assertIn(why, str(exc))
