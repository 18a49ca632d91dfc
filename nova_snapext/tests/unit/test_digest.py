"""The digest plans of disk states: what is hashed, what is reused."""

import hashlib

import testtools

from nova_snapext.capture import digest
from nova_snapext import exception

CS = 16


def _granules(*entries):
    return [digest.Granule(i, e, e == 1) for i, e in entries]


def _reader(data):
    """read(step, length) over {entry: bytes}, counting the reads."""
    calls = []

    def read(step, length):
        calls.append(step.index)
        return data[step.entry][:length]
    return read, calls


class PlanTest(testtools.TestCase):

    def test_no_parent_hashes_every_mapped_cluster(self):
        steps = digest.plan(_granules((0, 0x100), (3, 0x200)))
        self.assertEqual([digest.Hash(0, 0x100, False),
                          digest.Hash(3, 0x200, False)], steps)

    def test_reuses_only_what_the_parent_maps_at_the_same_host_cluster(self):
        parent = [digest.Digested(0, 0x100, b'a' * 32),
                  digest.Digested(3, 0x200, b'b' * 32),
                  digest.Digested(5, 0x300, b'c' * 32)]
        steps = digest.plan(_granules((0, 0x100), (3, 0x400), (7, 0x500)),
                            parent)
        self.assertEqual([digest.Reuse(0, 0x100, b'a' * 32),
                          digest.Hash(3, 0x400, False),
                          digest.Hash(7, 0x500, False)], steps)

    def test_cost_follows_the_change_not_the_disk(self):
        # 1000 clusters mapped, 2 rewritten since the parent: 2 reads
        parent_granules = _granules(*[(i, 0x1000 + i) for i in range(1000)])
        data = {g.entry: bytes([g.index % 256]) * CS
                for g in parent_granules}
        read, calls = _reader(data)
        parent, _ = digest.run(digest.plan(parent_granules), read, CS,
                               1000 * CS)
        child = list(parent_granules)
        child[10] = digest.Granule(10, 0x9000, False)
        child[500] = digest.Granule(500, 0x9001, False)
        data.update({0x9000: b'x' * CS, 0x9001: b'y' * CS})
        del calls[:]
        done, hashed = digest.run(digest.plan(child, parent), read, CS,
                                  1000 * CS)
        self.assertEqual([10, 500], calls)
        self.assertEqual(2 * CS, hashed)
        self.assertEqual(hashlib.sha256(b'x' * CS).digest(), done[10].digest)
        self.assertEqual(parent[11], done[11])


class TablesTest(testtools.TestCase):

    def test_shared_tables(self):
        self.assertEqual(frozenset([0, 3]), digest.shared_tables(
            [0x100, 0x200, 0, 0x400, 0x500], [0x100, 0x900, 0, 0x400]))

    def test_in_tables_and_merged(self):
        d = [digest.Digested(i, i, b'') for i in (0, 3, 4, 7, 8, 12)]
        self.assertEqual([0, 3, 8], [x.index for x in digest.in_tables(
            d, {2, 0}, 4)])
        self.assertEqual([], digest.in_tables(d, {5}, 4))
        self.assertEqual(d, digest.merged(digest.in_tables(d, {1}, 4),
                                          digest.in_tables(d, {0, 2, 3},
                                                           4)))


class RunTest(testtools.TestCase):

    def test_zero_clusters_are_not_read(self):
        read, calls = _reader({})
        done, hashed = digest.run([digest.Hash(0, 1, True)], read, CS, CS)
        self.assertEqual([], calls)
        self.assertEqual(0, hashed)
        self.assertEqual(hashlib.sha256(bytes(CS)).digest(), done[0].digest)

    def test_last_cluster_is_clipped_to_the_virtual_size(self):
        read, calls = _reader({0x100: b'z' * CS})
        done, hashed = digest.run([digest.Hash(1, 0x100, False)], read, CS,
                                  CS + 5)
        self.assertEqual(5, hashed)
        self.assertEqual(hashlib.sha256(b'z' * 5).digest(), done[0].digest)


class RootAndFileTest(testtools.TestCase):

    DIGESTS = [digest.Digested(0, 0x100, b'a' * 32),
               digest.Digested(9, 0x200, b'b' * 32)]

    def test_root_depends_on_position_content_and_shape(self):
        base = digest.root(CS, 10 * CS, self.DIGESTS)
        moved = [self.DIGESTS[0], self.DIGESTS[1]._replace(index=8)]
        changed = [self.DIGESTS[0],
                   self.DIGESTS[1]._replace(digest=b'c' * 32)]
        self.assertNotEqual(base, digest.root(CS, 10 * CS, moved))
        self.assertNotEqual(base, digest.root(CS, 10 * CS, changed))
        self.assertNotEqual(base, digest.root(CS, 11 * CS, self.DIGESTS))
        self.assertNotEqual(base, digest.root(CS, 10 * CS, self.DIGESTS[:1]))

    def test_root_ignores_where_the_host_keeps_the_cluster(self):
        # a clone's file maps the same content elsewhere
        elsewhere = [d._replace(entry=0) for d in self.DIGESTS]
        self.assertEqual(digest.root(CS, 10 * CS, self.DIGESTS),
                         digest.root(CS, 10 * CS, elsewhere))

    def test_file_round_trip_checked_against_the_root(self):
        data = digest.encode(CS, 10 * CS, self.DIGESTS)
        self.assertEqual(16 + 8 + 2 * 48, len(data))
        root = digest.root(CS, 10 * CS, self.DIGESTS)
        self.assertEqual((CS, 10 * CS, self.DIGESTS),
                         digest.decode(data, root))
        self.assertRaises(exception.ManifestError, digest.decode, data,
                          '0' * 64)
        self.assertRaises(exception.ManifestError, digest.decode,
                          data[:-1])
        self.assertRaises(exception.ManifestError, digest.decode, b'junk')


class FirstDifferenceTest(testtools.TestCase):

    def test_same(self):
        d = [digest.Digested(0, 1, b'a')]
        self.assertIsNone(digest.first_difference(d, list(d)))

    def test_reports_the_first_cluster_in_guest_order(self):
        want = [digest.Digested(i, 0, b'a') for i in (1, 4, 6)]
        have = [digest.Digested(1, 0, b'a'), digest.Digested(4, 0, b'x'),
                digest.Digested(5, 0, b'a')]
        self.assertEqual(digest.Difference(4, 'content differs'),
                         digest.first_difference(want, have))
        self.assertEqual('no longer mapped by the snapshot',
                         digest.first_difference(want, want[:2]).why)
        self.assertIn('not when it was taken', digest.first_difference(
            want[:2], want).why)


class ChangesTest(testtools.TestCase):
    """A delta bundle's digests: only what changed, whole again on import."""

    base = [digest.Digested(0, 0x100, b'a' * 32),
            digest.Digested(3, 0x200, b'b' * 32),
            digest.Digested(5, 0x300, b'c' * 32)]
    state = [digest.Digested(0, 0x100, b'a' * 32),
             digest.Digested(3, 0x400, b'd' * 32),
             digest.Digested(7, 0x500, b'e' * 32)]

    def test_only_what_changed_and_what_went(self):
        # 0: same host cluster, same digest; 3: rewritten; 5: discarded;
        # 7: new
        self.assertEqual([digest.Digested(3, 0x400, b'd' * 32),
                          digest.Digested(5, 0, bytes(32)),
                          digest.Digested(7, 0x500, b'e' * 32)],
                         digest.changes(self.base, self.state))

    def test_applied_gives_the_whole_list_and_its_root(self):
        whole = digest.applied(self.base,
                               digest.changes(self.base, self.state))
        self.assertEqual(self.state, whole)
        self.assertEqual(digest.root(CS, 8 * CS, self.state),
                         digest.root(CS, 8 * CS, whole))

    def test_a_change_left_out_does_not_give_the_root(self):
        partial = digest.changes(self.base, self.state)[1:]
        self.assertNotEqual(
            digest.root(CS, 8 * CS, self.state),
            digest.root(CS, 8 * CS, digest.applied(self.base, partial)))
