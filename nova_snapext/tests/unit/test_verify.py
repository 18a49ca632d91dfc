"""The qcow2 reader and the verify checks, on small files qemu-img makes.

qemu-img (which the engine needs anyway) writes the files, so the reader
is checked against QEMU's own idea of the format: what ``convert -l``
copies out of a snapshot must be what the digests cover.
"""

import hashlib
import os
import shutil

import fixtures
import testtools

from nova_snapext.capture import digest
from nova_snapext.capture import locks
from nova_snapext.capture import qcow2
from nova_snapext.capture import verify
from nova_snapext import exception
from nova_snapext.stores import file as file_store
from nova_snapext.tests.unit import fakes
from nova_snapext.tests.unit import qemu_tools

_run = qemu_tools.run
_io = qemu_tools.qemu_io

CS = 65536


def _disk(disk_path, name, digest_info):
    return {'target': 'vda', 'path': disk_path, 'snapshot': name,
            'digest': digest_info}


@testtools.skipUnless(shutil.which('qemu-img') and shutil.which('qemu-io'),
                      'needs qemu-img and qemu-io')
class Qcow2FilesTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.base = os.path.join(self.dir, 'base.raw')
        self.disk = os.path.join(self.dir, 'disk')
        _run('qemu-img', 'create', '-q', '-f', 'raw', self.base, '4M')
        _io(self.base, 'write -P 0x11 0 4M', fmt='raw')
        _run('qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'raw', '-b',
             self.base, self.disk, '4M')
        _io(self.disk, 'write -P 0xaa 64k 128k', 'write -z 1M 64k',
            'write -P 0x33 3M 10k')
        _run('qemu-img', 'snapshot', '-c', 's1', self.disk)
        _io(self.disk, 'write -P 0xbb 64k 64k', 'write -P 0xcc 2M 64k')
        _run('qemu-img', 'snapshot', '-c', 's2', self.disk)
        _io(self.disk, 'write -P 0xdd 0 64k')

    def _raw(self, name):
        out = os.path.join(self.dir, name + '.raw')
        _run('qemu-img', 'convert', '-O', 'raw', '-l',
             'snapshot.name=' + name, self.disk, out)
        with open(out, 'rb') as f:
            return f.read()

    def _record(self, name, parent=None):
        size, vsize, done, hashed = verify.digest_state(self.disk, name,
                                                        parent)
        path = os.path.join(self.dir, name + '.digests')
        with open(path, 'wb') as f:
            f.write(digest.encode(size, vsize, done))
        return {'root': digest.root(size, vsize, done),
                'algorithm': digest.ALGORITHM,
                'location': path}, done, hashed, path

    def test_snapshot_clusters_are_what_qemu_copies_out(self):
        with qcow2.File(self.disk) as f:
            for name in ('s1', 's2'):
                raw = self._raw(name)
                mapped = list(f.snapshot_clusters(f.snapshot(name)))
                self.assertIn(16, [i for i, e in mapped])  # the zero one
                for index, entry in mapped:
                    self.assertEqual(raw[index * CS:(index + 1) * CS],
                                     f.cluster_bytes(entry, CS))

    def test_guest_read_follows_the_chain(self):
        _run('qemu-img', 'convert', '-O', 'raw', self.disk,
             os.path.join(self.dir, 'active.raw'))
        with open(os.path.join(self.dir, 'active.raw'), 'rb') as f:
            want = f.read()
        with qcow2.File(self.disk) as f:
            self.assertEqual(want, f.guest_read(0, 4 << 20))
            self.assertEqual(want[1000:300000], f.guest_read(1000, 299000))

    def test_compressed_clusters(self):
        packed = os.path.join(self.dir, 'packed')
        _run('qemu-img', 'convert', '-c', '-O', 'qcow2', '-l',
             'snapshot.name=s2', self.disk, packed)
        with qcow2.File(packed) as f:
            self.assertEqual(self._raw('s2'), f.guest_read(0, 4 << 20))

    def test_child_hashes_only_what_changed_since_its_parent(self):
        _, s1, hashed1, _ = self._record('s1')
        _, s2, hashed2, _ = self._record('s2', ('s1', 4 << 20, s1))
        # s1 maps 64k-192k and 3M (10k written, one cluster): 3 clusters;
        # s2 rewrote one of them and added 2M
        self.assertEqual(3 * CS, hashed1)
        self.assertEqual(2 * CS, hashed2)
        full = verify.digest_state(self.disk, 's2')[2]
        self.assertEqual(full, s2)

    def test_no_reuse_when_the_parent_state_is_gone(self):
        _, s1, _, _ = self._record('s1')
        _run('qemu-img', 'snapshot', '-d', 's1', self.disk)
        self.assertEqual(4 * CS, verify.digest_state(
            self.disk, 's2', ('s1', 4 << 20, s1))[3])

    def test_no_reuse_across_a_resize(self):
        # the last cluster is clipped to the virtual size: growing the
        # disk within that cluster changes its digest, not its L2 entry
        odd = os.path.join(self.dir, 'odd')
        size = (4 << 20) - 1024
        _run('qemu-img', 'create', '-q', '-f', 'qcow2', odd, str(size))
        _io(odd, 'write -P 4 %d 1024' % (size - 1024))
        _run('qemu-img', 'snapshot', '-c', 'a', odd)
        _run('qemu-img', 'resize', '-q', odd, str(4 << 20))
        _run('qemu-img', 'snapshot', '-c', 'b', odd)
        a = verify.digest_state(odd, 'a')[2]
        full = verify.digest_state(odd, 'b')
        self.assertNotEqual(a, full[2])
        self.assertEqual(full, verify.digest_state(odd, 'b',
                                                   ('a', size, a)))

    def test_shared_l2_tables_are_not_read(self):
        # 4 KiB clusters: one L2 table maps 2 MiB, so the disk has two
        small = os.path.join(self.dir, 'small')
        _run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o',
             'cluster_size=4096', small, '4M')
        _io(small, 'write -P 1 0 64k', 'write -P 2 3M 64k')
        _run('qemu-img', 'snapshot', '-c', 's1', small)
        _io(small, 'write -P 3 3M 4k')
        _run('qemu-img', 'snapshot', '-c', 's2', small)
        s1 = verify.digest_state(small, 's1')[2]
        with qcow2.File(small) as f:
            tables = f.snapshot_tables(f.snapshot('s2'))
        reads = []
        real = qcow2.File.read

        def read(f, offset, size):
            reads.append(offset)
            return real(f, offset, size)
        self.useFixture(fixtures.MonkeyPatch(
            'nova_snapext.capture.qcow2.File.read', read))
        size, vsize, s2, hashed = verify.digest_state(
            small, 's2', ('s1', 4 << 20, s1))
        self.assertNotIn(tables[0], reads)
        self.assertIn(tables[1], reads)
        self.assertEqual(4096, hashed)
        self.assertEqual(verify.digest_state(small, 's2')[2], s2)

    def test_check_state_ok_then_a_flipped_byte_is_found(self):
        info, done, _, path = self._record('s1')
        check = verify.check_state(_disk(self.disk, 's1', info), path)
        self.assertEqual(verify.OK, check.status)
        # the snapshot's cluster at guest 128k, found through its L2 entry
        host = next(e for d in done if d.index == 2
                    for e in [d.entry & qcow2.OFFSET_MASK])
        with open(self.disk, 'r+b') as f:
            f.seek(host + 4096)
            f.write(b'\x00\xff')
        check = verify.check_state(_disk(self.disk, 's1', info), path)
        self.assertEqual(verify.MISMATCH, check.status)
        self.assertIn('snapshot s1 does not match its digest, first at '
                      'guest offset 0x20000: content differs', check.detail)

    def test_check_state_without_a_digest(self):
        check = verify.check_state(_disk(self.disk, 's1', None), None)
        self.assertEqual(verify.NO_DIGEST, check.status)

    def test_check_state_of_a_deleted_snapshot(self):
        info, _, _, path = self._record('s1')
        _run('qemu-img', 'snapshot', '-d', 's1', self.disk)
        check = verify.check_state(_disk(self.disk, 's1', info), path)
        self.assertEqual(verify.MISMATCH, check.status)
        self.assertIn('cannot be read', check.detail)

    def test_check_copy_of_an_exported_state(self):
        info, _, _, path = self._record('s2')
        copy = os.path.join(self.dir, 'copy')
        _run('qemu-img', 'convert', '-O', 'qcow2', '-l', 'snapshot.name=s2',
             self.disk, copy)
        disk = _disk(self.disk, 's2', info)
        self.assertEqual(verify.OK, verify.check_copy(disk, copy,
                                                      path).status)
        _io(copy, 'write -P 0x99 2M 512')
        check = verify.check_copy(disk, copy, path)
        self.assertEqual(verify.MISMATCH, check.status)
        self.assertIn('first at guest offset 0x200000', check.detail)


class MemoryAndOutcomeTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                 'memory.save')
        with open(self.path, 'wb') as f:
            f.write(b'm' * 1000)
        self.memory = {'bytes': 1000, 'sha256': hashlib.sha256(
            b'm' * 1000).hexdigest()}

    def test_memory(self):
        self.assertEqual(verify.OK, verify.check_memory(
            self.memory, self.path).status)
        with open(self.path, 'r+b') as f:
            f.seek(500)
            f.write(b'x')
        check = verify.check_memory(self.memory, self.path)
        self.assertEqual((verify.MISMATCH, 'content does not match its '
                          'sha256'), (check.status, check.detail))
        check = verify.check_memory(dict(self.memory, bytes=999), self.path)
        self.assertIn('has 1000 bytes, its record says 999', check.detail)
        os.unlink(self.path)
        self.assertEqual('missing', verify.check_memory(
            self.memory, self.path).detail)

    def test_outcome(self):
        ok = verify.Check('a', '/f', verify.OK, None, 1)
        none = verify.Check('b', '/g', verify.NO_DIGEST, 'no digest', 0)
        bad = verify.Check('c', '/h', verify.MISMATCH, 'differs', 0)
        self.assertEqual(verify.RESULT_OK, verify.outcome([ok]))
        self.assertEqual(verify.RESULT_INCOMPLETE,
                         verify.outcome([ok, none]))
        self.assertEqual(verify.RESULT_FAILED,
                         verify.outcome([none, bad, ok]))
        self.assertEqual('b (/g): no digest; c (/h): differs',
                         verify.summary([ok, none, bad]))


@testtools.skipUnless(shutil.which('qemu-img') and shutil.which('qemu-io'),
                      'needs qemu-img and qemu-io')
class VerifyOpsTest(testtools.TestCase):
    """The engine's verify operations over a file store, without libvirt."""

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        conf = fakes.conf(file_store_path=os.path.join(self.dir, 's'),
                          lock_path=os.path.join(self.dir, 'l'))
        self.ops = _Ops(conf)
        self.disk = os.path.join(self.dir, 'disk')
        _run('qemu-img', 'create', '-q', '-f', 'qcow2', self.disk, '4M')
        _io(self.disk, 'write -P 7 0 256k')
        self.record = fakes.record('s1', memory=None, kind='disks')
        self.record['disks'][0]['path'] = self.disk
        _run('qemu-img', 'snapshot', '-c', 'snapext-s1', self.disk)
        self.ops.store.stage(self.record['instance_uuid'], 's1')
        self.ops.store.commit(self.record)

    def test_record_then_verify_then_damage(self):
        self.ops.record_digests('s1')
        self.assertEqual(4, self.ops.store.get('s1')['disks'][0]['digest'][
            'clusters'])
        report = self.ops.verify('s1')
        self.assertEqual(('ok', 4 * CS), (report['result'],
                                          report['bytes_read']))
        _io(self.disk, 'write -P 8 0 64k')  # the live data: no harm
        self.assertEqual('ok', self.ops.verify('s1')['result'])
        with qcow2.File(self.disk) as f:
            entry = dict(f.snapshot_clusters(f.snapshot('snapext-s1')))[0]
        flip_at = entry & qcow2.OFFSET_MASK  # now the snapshot's alone
        with open(self.disk, 'r+b') as f:
            f.seek(flip_at + 10)
            f.write(b'\xee')
        e = self.assertRaises(exception.VerificationFailed,
                              self.ops._verify_before_resume,
                              self.ops.store.get('s1'))
        self.assertTrue(e.disks)
        self.assertIn('disk vda (%s): internal snapshot snapext-s1 does not '
                      'match its digest, first at guest offset 0x0' %
                      self.disk, str(e))
        kept = self.ops.store.get('s1')['verification']
        self.assertEqual(('failed', {'disk vda': 'mismatch'}),
                         (kept['result'], kept['artifacts']))

    def test_a_record_without_digests_is_resumed_with_a_warning(self):
        self.assertIsNone(self.ops._verify_before_resume(self.record))
        kept = self.ops.store.get('s1')['verification']
        self.assertEqual(('incomplete', {'disk vda': 'no digest'}),
                         (kept['result'], kept['artifacts']))

    def test_a_state_dropped_while_hashing_is_not_recorded(self):
        real = verify.digest_state

        def dropping(path, name, parent=None):
            found = real(path, name, parent)
            _run('qemu-img', 'snapshot', '-d', name, path)
            return found
        self.useFixture(fixtures.MonkeyPatch(
            'nova_snapext.capture.verify.digest_state', dropping))
        self.ops.record_digests('s1')
        self.assertIsNone(self.ops.store.get('s1')['disks'][0].get(
            'digest'))

    def test_writing_never_takes_the_instance_lock(self):
        # A Cinder driver releasing its capture right after the thaw must
        # not be refused because the digests are being written.
        with self.ops._lock(self.record['instance_uuid']):
            self.ops.record_digests('s1')
        self.assertTrue(self.ops.store.get('s1')['disks'][0]['digest'])

    def test_a_record_deleted_before_the_write_gets_nothing(self):
        real = verify.digest_state

        def deleting(path, name, parent=None):
            found = real(path, name, parent)
            self.ops.store.delete('s1')
            return found
        self.useFixture(fixtures.MonkeyPatch(
            'nova_snapext.capture.verify.digest_state', deleting))
        self.ops.record_digests('s1')
        self.assertRaises(exception.NotFound, self.ops.store.get, 's1')


class _Ops(verify.VerifyOps):
    """What VerifyOps needs of the engine, and nothing of libvirt."""

    def __init__(self, conf):
        self.conf = conf
        self.store = file_store.FileStore(conf)

    def _lock(self, instance_uuid):
        return locks.instance_lock(self.conf.snapext.lock_path,
                                   instance_uuid)

    def _report(self, stage, **details):
        pass
