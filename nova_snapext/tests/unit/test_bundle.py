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
from nova_snapext.capture import export
from nova_snapext.capture import qcow2_stream
from nova_snapext.capture import verify
from nova_snapext import exception
from nova_snapext.stores import file as file_store
from nova_snapext.tests.unit import fakes
from nova_snapext.tests.unit import qemu_tools

_run = qemu_tools.run
_io = qemu_tools.qemu_io

UUID = '6f1c7c1e-0000-4000-8000-000000000001'
DIGESTS = 'disks/vda.digests'
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


def _with_member(members, name, data):
    """The bundle with ``data`` as ``name``, its index entry made to match."""
    members = [(i, data if i.name == name else d) for i, d in members]

    def fix(index):
        for m in index['members']:
            if m['name'] == name:
                m.update(bytes=len(data),
                         sha256=hashlib.sha256(data).hexdigest())
    return _with_index(members, fix)


def _with_disk(members, disk):
    return _with_member(members, 'disks/vda.qcow2', disk)


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


def _clusters(found):
    return [(c.index, c.kind) for c in found]


class ClusterRuleTest(testtools.TestCase):
    """Which bundle clusters a disk state needs, across cluster sizes."""

    DATA, ZERO = qcow2_stream.DATA, qcow2_stream.ZERO
    KIB64, KIB16, KIB4 = 16, 14, 12

    def test_delta_in_smaller_clusters(self):
        state = {0: 0x50000, 2: 0x60000, 3: 1, 5: 0x70000}
        base = {0: 0x50000, 2: 0x40000, 3: 0x30000, 4: 0x20000}
        found = export.changed_clusters(state, base, False, self.KIB64,
                                        self.KIB16, 8 * MIB)
        # 2 rewritten, 3 zeroed, 4 discarded (no backing: zeros), 5 new;
        # 0 is the same cluster in both: not in the delta
        self.assertEqual(
            [(i, self.DATA) for i in range(8, 12)] +
            [(i, self.ZERO) for i in range(12, 20)] +
            [(i, self.DATA) for i in range(20, 24)], _clusters(found))

    def test_discarded_over_a_backing_file_reads_the_backing_file(self):
        found = export.changed_clusters({}, {4: 0x20000}, True, self.KIB64,
                                        self.KIB64, 8 * MIB)
        self.assertEqual([(4, self.DATA)], _clusters(found))

    def test_small_disk_clusters_in_a_larger_bundle_cluster(self):
        # 4 KiB clusters 4-7 make bundle cluster 1: what the guest reads
        # there is zeros only if none of the four holds data
        base = {5: 0x9000}
        self.assertEqual([(1, self.ZERO)], _clusters(
            export.changed_clusters({5: 1}, base, False, self.KIB4,
                                    self.KIB16, MIB)))
        self.assertEqual([(1, self.DATA)], _clusters(
            export.changed_clusters({5: 1, 6: 0x8000},
                                    {5: 0x9000, 6: 0x8000}, False,
                                    self.KIB4, self.KIB16, MIB)))
        # unmapped, over a backing file: not known to be zeros
        self.assertEqual([(1, self.DATA)], _clusters(
            export.changed_clusters({5: 1}, base, True, self.KIB4,
                                    self.KIB16, MIB)))

    def test_standalone_leaves_out_zeros_and_clips_at_the_end(self):
        # a 100 KiB disk: its second 64 KiB cluster holds 36 KiB
        found = export.changed_clusters({0: 1, 1: 0x10000}, None, False,
                                        self.KIB64, self.KIB16, 100 << 10)
        self.assertEqual([(4, self.DATA), (5, self.DATA), (6, self.DATA)],
                         _clusters(found))

    def test_small_cluster_bits(self):
        gib = 1 << 30
        self.assertEqual(14, qcow2_stream.small_cluster_bits(8 * MIB))
        self.assertEqual(14, qcow2_stream.small_cluster_bits(64 * gib))
        self.assertEqual(15, qcow2_stream.small_cluster_bits(64 * gib + 1))
        self.assertEqual(16, qcow2_stream.small_cluster_bits(512 * gib + 1))
        self.assertRaises(ValueError, qcow2_stream.small_cluster_bits,
                          4096 * gib + 1)


@testtools.skipUnless(shutil.which('qemu-img') and shutil.which('qemu-io'),
                      'needs qemu-img and qemu-io')
class BundleFixture(testtools.TestCase):
    """Two snapshots of one small disk in a store, another empty store."""

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.src = _engine(os.path.join(self.dir, 'a'))
        self.dst = _engine(os.path.join(self.dir, 'b'))
        self.disk = os.path.join(self.dir, 'disk')
        self._two_states(self.disk, 's')

    def _two_states(self, disk, prefix, options=()):
        """Snapshots <prefix>1 and <prefix>2 of a new 8 MiB ``disk``."""
        _run(*(['qemu-img', 'create', '-q', '-f', 'qcow2'] + list(options) +
               [disk, '8M']))
        _io(disk, 'write -P 0xaa 64k 128k', 'write -z 1M 64k',
            'write -P 0x33 3M 10k')
        self._take(prefix + '1', None, disk)
        _io(disk, 'write -P 0xbb 64k 64k', 'write -P 0xcc 2M 64k',
            'write -z 3M 64k', 'write -P 0xee 5M 4k')
        self._take(prefix + '2', prefix + '1', disk)
        _io(disk, 'write -P 0xdd 0 64k')  # the live state differs

    def _take(self, sid, parent, disk):
        name = 'snapext-' + sid
        _run('qemu-img', 'snapshot', '-c', name, disk)
        store = self.src.store
        staging = store.stage(UUID, sid)
        memory = os.path.join(staging, 'memory.save')
        with open(memory, 'wb') as f:
            f.write(b'memory of ' + sid.encode() * 1000)
        size, vsize, done, hashed = verify.digest_state(disk, name)
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
            disks=[{'target': 'vda', 'role': 'root', 'path': disk,
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


class BundleTest(BundleFixture):

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
        # only what changed since s1, in 16 KiB clusters: 64k, 2M and 5M
        # (a 64 KiB cluster of the disk each), the zeroed 3M
        disk = [m for m in index['members'] if m['kind'] == 'disk'][0]
        self.assertEqual('disks/vda.qcow2', disk['base'])
        self.assertLess(len(delta), len(full))
        self.assertEqual((3 + 1 + 1 + 3 * 4) * 16384, disk['bytes'])
        # the digests of the four clusters that changed, not all six
        digests = dict((i.name, d) for i, d in _members(delta))[DIGESTS]
        self.assertEqual([1, 32, 48, 80], [
            d.index for d in digest.decode(digests)[2]])
        self.assertEqual(DIGESTS, [m for m in index['members']
                                   if m['name'] == DIGESTS][0]['base'])
        self._import(self._export('s1')[0])
        record = self._import(delta)
        path = record['disks'][0]['path']
        self.assertEqual(_raw(self.disk, 'snapext-s2'), _raw(path))
        self.assertEqual('s1', record['imported']['since'])
        self.assertEqual('ok', self.dst.verify('s2')['result'])

    def test_a_chain_of_deltas(self):
        _io(self.disk, 'write -P 0x11 2M 64k', 'discard 64k 64k')
        self._take('s3', 's2', self.disk)
        for sid, since in [('s1', None), ('s2', 's1'), ('s3', 's2')]:
            record = self._import(self._export(sid, since)[0])
            self.assertEqual(_raw(self.disk, 'snapext-' + sid),
                             _raw(record['disks'][0]['path']), sid)
            self.assertEqual('ok', self.dst.verify(sid)['result'])

    def _delta_digests_refused(self, edit, why):
        self._import(self._export('s1')[0])
        members = _members(self._export('s2', since='s1')[0])
        size, vsize, changes = digest.decode(
            dict((i.name, d) for i, d in members)[DIGESTS])
        crafted = _with_member(members, DIGESTS, digest.encode(
            size, vsize, edit(changes)))
        exc = self.assertRaises(bundle.BundleError, self._import,
                                _tar(crafted))
        self.assertIn(why, str(exc))
        self.assertRaises(exception.NotFound, self.dst.store.get, 's2')

    def test_a_delta_leaving_out_a_change_of_digests_is_refused(self):
        self._delta_digests_refused(
            lambda changes: changes[1:],
            'does not match the root its record holds')

    def test_a_delta_on_a_base_without_its_exported_digests_is_refused(self):
        self._import(self._export('s1')[0])
        os.unlink(self.dst.store.local_path(self.dst.store.get('s1'),
                                            DIGESTS))
        exc = self.assertRaises(bundle.BundleError, self._import,
                                self._export('s2', since='s1')[0])
        self.assertIn('keeps no disks/vda.digests', str(exc))
        self.assertNothingStaged()

    def test_digest_changes_in_a_standalone_bundle_are_refused(self):
        members = _members(self._export('s1')[0])
        self._refused(_with_index(members, lambda x: [
            m.update(base=DIGESTS) for m in x['members']
            if m['name'] == DIGESTS]), 'holds changes to')

    def test_disks_of_other_cluster_sizes(self):
        backing = os.path.join(self.dir, 'backing.raw')
        with open(backing, 'wb') as f:
            f.write(b'\x5a' * (6 * MIB))  # 6 MiB of data under an 8 MiB disk
        for prefix, options in [
                ('k4-', ['-o', 'cluster_size=4096']),
                ('m2-', ['-o', 'cluster_size=2M']),
                ('b4-', ['-o', 'cluster_size=4096', '-F', 'raw', '-b',
                         backing])]:
            disk = os.path.join(self.dir, prefix + 'disk')
            self._two_states(disk, prefix, options)
            for sid, since in [(prefix + '1', None),
                               (prefix + '2', prefix + '1')]:
                record = self._import(self._export(sid, since)[0])
                path = record['disks'][0]['path']
                self.assertEqual(_raw(disk, 'snapext-' + sid), _raw(path),
                                 sid)
                self.assertEqual('ok', self.dst.verify(sid)['result'])

    def test_a_disk_larger_than_a_bundle_disk_is_refused(self):
        disk = os.path.join(self.dir, 'huge')
        _run('qemu-img', 'create', '-q', '-f', 'qcow2', disk, '5T')
        self._take('huge', None, disk)
        exc = self.assertRaises(exception.InvalidRequest, self._export,
                                'huge')
        self.assertIn('disk vda: a disk of 5497558138880 bytes is larger',
                      str(exc))

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

    def test_a_disk_without_its_digests_is_refused(self):
        # the record has digests: the content check cannot be left out
        members = _members(self._export('s1')[0])
        kept = [(i, d) for i, d in members if i.name != 'disks/vda.digests']
        self._refused(_with_index(kept, lambda x: x.update(members=[
            m for m in x['members'] if m['name'] != 'disks/vda.digests'])),
            'the bundle has no disks/vda.digests')

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
