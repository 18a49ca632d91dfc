"""Nova's own server actions after a snapext snapshot, in a real cloud.

The rows of the lifecycle matrix that lost data before snapshots became
qcow2 internal snapshots: hard reboot, stop/start and Nova's own snapshot,
each through the real ``openstack`` client, each proven from inside the
guest (a file written and synced after the snapshot is there with the same
sha256), and the full snapshot still reverts afterwards.
"""

from nova_snapext.tests.integration import base


class LifecycleTest(base.TestCase):

    def test_reboot_stop_start_and_nova_snapshot_keep_every_byte(self):
        server, guest = self.boot(base.unique_name('life'))
        before = guest.write_file('/mnt/vda/before.bin')
        tick_before = guest.last_tick()[0]
        image = base.cli('server', 'image', 'create', '--name',
                         base.unique_name('full'), '--wait', server.id)
        self.addCleanup(self.admin.image.delete_image, image['id'],
                        ignore_missing=True)
        snap_id = image['properties']['snapext_manifest']
        tick_after = guest.last_tick()[0]
        after = guest.write_file('/mnt/vda/after.bin')

        base.cli('server', 'reboot', '--hard', '--wait', server.id,
                 as_json=False)
        guest = self.guest(server.id)
        guest.wait_for_agent(timeout=180)
        self.assertEqual(after, guest.sha256('/mnt/vda/after.bin'),
                         'a hard reboot lost the write after the snapshot')

        base.cli('server', 'stop', server.id, as_json=False)
        self.wait_settled(server.id)
        base.cli('server', 'start', server.id, as_json=False)
        self.wait_settled(server.id)
        guest = self.guest(server.id)
        guest.wait_for_agent(timeout=180)
        self.assertEqual(after, guest.sha256('/mnt/vda/after.bin'),
                         'stop/start lost the write after the snapshot')

        # Nova's own snapshot of the snapshotted server: a valid image
        stock = base.cli('server', 'image', 'create', '--name',
                         base.unique_name('stock'), '--property',
                         'snapext_full=false',
                         '--wait', server.id)
        self.addCleanup(self.admin.image.delete_image, stock['id'],
                        ignore_missing=True)
        self.assertEqual('active', stock['status'])
        self.assertNotIn('snapext_manifest', stock['properties'])
        self.assertGreater(stock['size'], 0)
        self.assertEqual(after, guest.sha256('/mnt/vda/after.bin'))

        # and the full snapshot still reverts, memory and disk
        tree = self.api('GET', '/servers/%s/snapext-snapshots'
                        % server.id).json()
        self.assertEqual(['available'],
                         [s['state'] for s in tree['snapshots']])
        # the rebooted guest counts from 0: past the snapshot's first
        guest.wait_for_tick(after=tick_after + 10, timeout=120)
        self.revert_to(server.id, snap_id, (tick_before, tick_after),
                       kept={'/mnt/vda/before.bin': before},
                       gone=['/mnt/vda/after.bin'])


class VolumeLifecycleTest(base.VolumeMixin, base.TestCase):

    def test_detach_and_attach_elsewhere_keep_the_volume_live_data(self):
        server, guest = self.boot(base.unique_name('vol'))
        volume = self.volume(base.unique_name('v'))
        self.wait_volume(volume.id, 'available')
        self.attach(server, volume, 'vdb')
        self.write_blocks(guest, 'vdb')
        image = base.cli('server', 'image', 'create', '--name',
                         base.unique_name('full'), '--wait', server.id)
        self.addCleanup(self.admin.image.delete_image, image['id'],
                        ignore_missing=True)
        self.assertEqual('vdb=%s' % volume.id,
                         image['properties']['snapext_volumes'])
        after = self.write_blocks(guest, 'vdb', seek_mib=2)

        # Cinder's records still name the file that holds the live data
        base.cli('server', 'remove', 'volume', server.id, volume.id,
                 as_json=False)
        self.wait_volume(volume.id, 'available')
        other, other_guest = self.boot(base.unique_name('vol2'))
        self.attach(other, volume, 'vdb')
        self.assertEqual(after, self.read_blocks(other_guest, 'vdb', 2),
                         'the volume attached elsewhere lost the write '
                         'after the snapshot')
        # the first server's snapshot covered vdb: it says why it cannot
        # be reverted now
        tree = self.api('GET', '/servers/%s/snapext-snapshots'
                        % server.id).json()
        [node] = tree['snapshots']
        self.assertEqual('unavailable', node['state'])
        self.assertEqual(409, self.api(
            'POST', '/servers/%s/action' % server.id,
            json_body={'snapextRevert': {'snapshot_id': node['id']}})
            .status_code)
