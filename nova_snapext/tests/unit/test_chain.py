import testtools

from nova_snapext.capture import chain


class OverlayNameTest(testtools.TestCase):

    def test_names_follow_the_original_disk(self):
        self.assertEqual('/i/disk.snapext-abcd',
                         chain.overlay_path('/i/disk', 'abcd'))
        self.assertEqual('/i/disk.snapext-ef01',
                         chain.overlay_path('/i/disk.snapext-abcd', 'ef01'))
        self.assertTrue(chain.is_overlay('/i/disk.snapext-ef01'))
        self.assertFalse(chain.is_overlay('/i/disk'))


class CurrentTest(testtools.TestCase):

    def test_current_is_the_snapshot_under_the_active_layer(self):
        records = [
            {'id': 'A', 'disks': [{'target': 'vda', 'path': '/a'},
                                  {'target': 'vdb', 'path': '/a2'}]},
            {'id': 'B', 'disks': [{'target': 'vda', 'path': '/b'},
                                  {'target': 'vdb', 'path': '/b2'}]},
        ]
        self.assertEqual('B', chain.current_snapshot(
            records, {'vda': '/b', 'vdb': '/b2'}))
        self.assertIsNone(chain.current_snapshot(
            records, {'vda': '/b', 'vdb': '/a2'}))
        self.assertIsNone(chain.current_snapshot(records, {}))


class PlanDeleteTest(testtools.TestCase):
    """The tree of the acceptance scenario: A, then B; revert to A; C.

    base0 = A's state; a1 = B's state (backed by base0); r1 = C's state
    (backed by base0); c1 = the running overlay (backed by r1).
    """

    backing = {'/base0': None, '/a1': '/base0', '/r1': '/base0',
               '/c1': '/r1'}
    live = {'vda': ['/c1', '/r1', '/base0']}

    def test_delete_root_with_a_live_and_an_offline_child(self):
        steps = chain.plan_delete({'vda': '/base0'}, self.backing, self.live)
        self.assertEqual([
            chain.RebaseOffline('/a1', None),
            chain.CommitLive('vda', '/r1', '/base0'),
            chain.Relocate('/r1', '/base0'),
            chain.Unlink('/r1'),
        ], steps)

    def test_delete_current_pulls_into_the_active_layer(self):
        steps = chain.plan_delete({'vda': '/r1'}, self.backing, self.live)
        self.assertEqual([chain.PullLive('vda', '/base0'),
                          chain.Unlink('/r1')], steps)

    def test_delete_a_leaf_branch(self):
        self.assertEqual([chain.Unlink('/a1')],
                         chain.plan_delete({'vda': '/a1'}, self.backing,
                                           self.live))

    def test_domain_not_running_rebases_everything_offline(self):
        steps = chain.plan_delete({'vda': '/base0'}, self.backing, {})
        self.assertEqual([chain.RebaseOffline('/a1', None),
                          chain.RebaseOffline('/r1', None),
                          chain.Unlink('/base0')], steps)

    def test_keeps_the_states_own_backing(self):
        backing = {'/s': '/nova_base', '/o': '/s'}
        self.assertEqual([chain.RebaseOffline('/o', '/nova_base'),
                          chain.Unlink('/s')],
                         chain.plan_delete({'vda': '/s'}, backing, {}))

    def test_discarded_by_revert(self):
        self.assertEqual(['/i/disk.snapext-2'], chain.discarded_by_revert(
            ['/i/disk', '/i/disk.snapext-1', '/i/disk.snapext-2'],
            {'/i/disk.snapext-1'}))


class OrphanOverlaysTest(testtools.TestCase):

    def test_only_unused_overlays_of_this_domains_disks(self):
        listing = {'/i': ['disk', 'disk.snapext-1', 'disk.snapext-2',
                          'other.snapext-3', 'console.log']}
        self.assertEqual(['/i/disk.snapext-2'], chain.orphan_overlays(
            ['/i/disk.snapext-1'], {'/i/disk.snapext-1', '/i/disk'},
            listing.__getitem__))
