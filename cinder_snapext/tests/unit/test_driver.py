"""SnapextNfsDriver pieces that need no guest: shares, stats, specs."""

import os

from cinder.tests.unit import fake_snapshot
from cinder.tests.unit import fake_volume
import fixtures

from cinder_snapext import consistency
from cinder_snapext import driver
from cinder_snapext.tests import base


class DriverTest(base.GroupTestCase):

    volume_driver = driver.__name__ + '.SnapextNfsDriver'

    def configure(self):
        root = self.useFixture(fixtures.TempDir()).path
        self.share = os.path.join(root, 'share')
        os.mkdir(self.share)
        shares = os.path.join(root, 'shares.conf')
        with open(shares, 'w') as f:
            f.write('localhost:%s\n' % self.share)
        for name, value in (('nfs_shares_config', shares),
                            ('nfs_qcow2_volumes', True),
                            ('nfs_snapshot_support', True),
                            ('nas_secure_file_operations', 'false'),
                            ('nas_secure_file_permissions', 'false'),
                            ('snapext_local_shares', True)):
            self.override_config(name, value, group='backend_defaults')

    def test_local_share_is_used_in_place(self):
        self.driver.do_setup(self.context)
        share = 'localhost:%s' % self.share
        self.assertEqual([share], self.driver._mounted_shares)
        self.assertEqual(self.share,
                         self.driver._get_mount_point_for_share(share))
        volume = fake_volume.fake_volume_obj(self.context,
                                             provider_location=share)
        self.assertEqual(os.path.join(self.share, volume.name),
                         self.driver.local_path(volume))

    def test_stats_report_consistent_group_snapshots(self):
        self.driver.do_setup(self.context)
        stats = self.driver.get_volume_stats(refresh=True)
        self.assertTrue(stats['consistent_group_snapshot_enabled'])
        self.assertEqual('1.0.0', stats['driver_version'])

    def test_capture_spec_names_overlays_as_cinder_does(self):
        self.driver.do_setup(self.context)
        volume = fake_volume.fake_volume_obj(
            self.context, provider_location='localhost:%s' % self.share)
        snapshot = fake_snapshot.fake_snapshot_obj(self.context,
                                                   volume=volume)
        item = consistency.Attached(snapshot, 'compute-1', 'inst', 'vdb')
        spec = self.driver._capture_spec('inst', [item], 'required', 'op')
        self.assertEqual({'vdb': '%s.%s' % (volume.name, snapshot.id)},
                         spec['overlays'])
        self.assertTrue(spec['reuse_overlays'])
        self.assertEqual('op', spec['freeze_op'])
        self.assertEqual(['vdb'], spec['targets'])
        self.assertFalse(spec['memory'])
