"""Every Nova server action on a server with snapext snapshots, for real.

The rows of the lifecycle matrix (issue 8) through the real API and the
real ``openstack`` client.  A server gets a full snapshot (memory and every
disk, ``openstack server image create``) and a disks-only one (the same
command while it is stopped); its guest writes a file on the root disk and
raw blocks on an attached snapext volume before, between and after them.
After each action the proof comes from inside the guest: every write is
there with its sha256.  Then every snapshot still reverts (the counter
continues, the writes match the snapshot's instant), or, where a snapshot
cannot follow the server (shelve offload, rebuild, a confirmed resize), the
tree says why and a revert is refused with 409.

The rows share servers where one action cannot hide another's loss: each
check names the action it follows.  Hard reboot, stop/start, Nova's own
snapshot and a detach/attach elsewhere are in test_lifecycle.
"""

import json
import os
import subprocess
import time

from nova_snapext.tests.integration import base

VOLUME_API = ['--os-volume-api-version', '3.66']
AIO_SH = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir,
                      os.pardir, 'tools', 'aio', 'aio.sh')


class ImageBackedActionsTest(base.LifecycleMixin, base.VolumeMixin,
                             base.TestCase):
    """An image-backed server with a snapext volume at vdb."""

    def test_actions_keep_every_byte_and_every_snapshot(self):
        server, guest = self.boot(base.unique_name('acts'))
        volume = self.volume(base.unique_name('v'))
        self.wait_volume(volume.id, 'available')
        self.attach(server, volume, 'vdb')
        # take_snapshots stops and starts the server: the stop/start row
        s, guest = self.take_snapshots(server, guest, ('vda', 'vdb'))
        self.assertKept(guest, s, 'stop/start')

        base.cli('server', 'pause', server.id, as_json=False)
        self.wait_status(server.id, 'PAUSED')
        base.cli('server', 'unpause', server.id, as_json=False)
        guest = self.running_guest(server.id)
        self.assertKept(guest, s, 'pause/unpause')

        base.cli('server', 'suspend', server.id, as_json=False)
        self.wait_status(server.id, 'SUSPENDED')
        base.cli('server', 'resume', server.id, as_json=False)
        guest = self.running_guest(server.id)
        self.assertKept(guest, s, 'suspend/resume')

        base.cli('server', 'reboot', '--soft', '--wait', server.id,
                 as_json=False)
        guest = self.running_guest(server.id)
        self.assertKept(guest, s, 'a soft reboot')

        base.cli('server', 'rescue', server.id, as_json=False)
        guest = self.running_guest(server.id, 'RESCUE')
        # The rescue guest boots the rescue disk and sees the server's
        # root disk, with its live data, as vdb.
        self.assertEqual(s.written['after']['vda'],
                         self.read(guest, 'vda', 'after', prefix='vdb'),
                         'rescue does not see the live root disk')
        base.cli('server', 'unrescue', server.id, as_json=False)
        guest = self.running_guest(server.id)
        self.assertKept(guest, s, 'rescue/unrescue')

        # nova-compute stops, the domains are gone, nova-compute starts
        # with resume_guests_state_on_host_boot and brings them back.
        subprocess.run(['bash', AIO_SH, 'host-reboot'], check=True,
                       capture_output=True, timeout=300)
        guest = self.running_guest(server.id)
        self.assertKept(guest, s, 'a host reboot')

        guest = self.resize(server, 'revert')
        self.assertKept(guest, s, 'a reverted resize')
        self.assertAvailable(server.id, s)

        self.cinder_snapshot_and_clones(server, guest, volume, s)
        guest = self.extend_detached(server, volume, s)
        self.assertAvailable(server.id, s)

        guest = self.assertRevertable(server.id, s)

        # A confirmed resize: the data moves on, the snapshots stay behind
        # with the old flavor's memory, marked.
        self.write(guest, s, 'after')
        guest = self.resize(server, 'confirm')
        self.assertKept(guest, s, 'a confirmed resize')
        self.assertUnavailable(server.id, s, 'resized')

    def resize(self, server, answer):
        """To the bigger flavor on this host, then 'revert' or 'confirm'."""
        base.cli('server', 'resize', '--flavor', 'snapext.1024', '--wait',
                 server.id, as_json=False)
        self.wait_status(server.id, 'VERIFY_RESIZE')
        base.cli('server', 'resize', answer, server.id, as_json=False)
        return self.running_guest(server.id)

    def cinder_snapshot_and_clones(self, server, guest, volume, s):
        """Cinder's own snapshot, volume from it and clone, attached."""
        snap = base.cli(*VOLUME_API, 'volume', 'snapshot', 'create',
                        '--volume', volume.id, '--force',
                        base.unique_name('csnap'))
        self.wait_snapshot(snap['id'], 'available')
        from_snap = base.cli(*VOLUME_API, 'volume', 'create', '--snapshot',
                             snap['id'], base.unique_name('fromsnap'))
        self.addCleanup(self._delete_volume, from_snap['id'])
        clone = base.cli(*VOLUME_API, 'volume', 'create', '--source',
                         volume.id, base.unique_name('clone'))
        self.addCleanup(self._delete_volume, clone['id'])
        for made in (from_snap, clone):
            made = self.wait_volume(made['id'], 'available')
            self.attach(server, made, 'vdc')
            self.assertEqual(s.written['after']['vdb'],
                             self.read_blocks(guest, 'vdc', 4),
                             'a volume made by Cinder from the snapshotted '
                             'volume lacks its data')
            if made.id == from_snap['id']:
                # No snapshot has vdc: none may revert while it is there.
                self.assertUnavailable(server.id, s, 'vdc')
            base.cli('server', 'remove', 'volume', server.id, made.id,
                     as_json=False)
            self.wait_volume(made.id, 'available')
        base.cli('volume', 'snapshot', 'delete', snap['id'], as_json=False)
        self.wait_snapshot_deleted(snap['id'])
        self.assertKept(guest, s, "Cinder's snapshot, clones and delete")

    def extend_detached(self, server, volume, s):
        """Cinder's NFS driver extends only detached volumes."""
        base.cli('server', 'remove', 'volume', server.id, volume.id,
                 as_json=False)
        self.wait_volume(volume.id, 'available')
        base.cli('volume', 'set', '--size', '2', volume.id, as_json=False)
        self.wait_volume(volume.id, 'available')
        self.attach(server, self.admin.block_storage.get_volume(volume.id),
                    'vdb')
        guest = self.guest(server.id)
        sectors = int(guest.check_sh('cat /sys/block/vdb/size'))
        self.assertEqual(2 << 30, sectors * 512)
        self.assertKept(guest, s, 'detach, extend and attach')
        return guest

    def wait_snapshot(self, snapshot_id, status):
        return self.admin.block_storage.wait_for_status(
            self.admin.block_storage.get_snapshot(snapshot_id), status,
            failures=['error'], wait=300)

    def wait_snapshot_deleted(self, snapshot_id):
        deadline = time.monotonic() + 300
        while self.admin.block_storage.find_snapshot(
                snapshot_id, ignore_missing=True, all_projects=True):
            self.assertLess(time.monotonic(), deadline,
                            'Cinder snapshot %s not deleted' % snapshot_id)
            time.sleep(1)


class GoneAwayTest(base.LifecycleMixin, base.TestCase):
    """Shelve offload, rebuild and delete: disks that snapshots lose."""

    def test_shelve_rebuild_delete_and_boot_from_the_image(self):
        server, guest = self.boot(base.unique_name('gone'))
        s, guest = self.take_snapshots(server, guest)

        base.cli('server', 'shelve', '--wait', server.id, as_json=False)
        self.wait_status(server.id, 'SHELVED_OFFLOADED')
        base.cli('server', 'unshelve', '--wait', server.id, as_json=False)
        guest = self.running_guest(server.id)
        self.assertKept(guest, s, 'shelve offload/unshelve')
        self.assertUnavailable(server.id, s, 'shelve')

        base.cli('server', 'rebuild', '--wait', server.id, as_json=False)
        guest = self.running_guest(server.id)
        # A rebuild replaces the root disk with the image: by definition.
        self.assertIsNone(guest.sha256('/mnt/vda/after.bin'))
        self.assertUnavailable(server.id, s, 'shelve', 'rebuil')

        store = os.path.join(base.DATA, 'snapext', server.id)
        self.assertTrue(os.path.isdir(store), store)
        base.cli('server', 'delete', '--wait', server.id, as_json=False)
        self.assertEqual(404, self.api('GET', '/snapext-snapshots/%s'
                                       % s.full).status_code)
        self.assertFalse(os.path.exists(store),
                         'records and memory images of a deleted server '
                         'are left in the store')

        # Its full snapshot's image still boots: the memory went with the
        # server, so it boots cold from the root disk in the image.
        clone, clone_guest = self.boot(base.unique_name('orphan'),
                                       image=s.full_image)
        self.assertLess(clone_guest.ticks()[0][0], s.full_ticks[0],
                        'the counter did not start anew')
        self.assertEqual(s.written['before-full']['vda'],
                         clone_guest.sha256('/mnt/vda/before-full.bin'))


class VolumeBackedTest(base.LifecycleMixin, base.VolumeMixin,
                       base.TestCase):
    """A server booted from a snapext volume."""

    def test_full_snapshot_survives_actions_and_resumes_elsewhere(self):
        server = self.boot_from_volume(base.unique_name('bfv'))
        guest = self.running_guest(server.id)
        guest.wait_for_tick(timeout=120)
        s = base.Snaps(('vda',))
        self.write(guest, s, 'before-full')
        self.full_snapshot(server, guest, s)
        image = self.admin.image.get_image(s.full_image)
        # Nova's own shape: the root volume's Cinder snapshot in the
        # image's block_device_mapping.
        [mapping] = [m for m in json.loads(
            image.properties['block_device_mapping'])
            if m.get('boot_index') == 0]
        self.assertEqual('snapshot', mapping['source_type'])
        cinder_snap = self.admin.block_storage.get_snapshot(
            mapping['snapshot_id'])
        self.assertEqual('available', cinder_snap.status)
        self.write(guest, s, 'after')

        base.cli('server', 'reboot', '--hard', '--wait', server.id,
                 as_json=False)
        guest = self.running_guest(server.id)
        self.assertKept(guest, s, 'a hard reboot')
        self.stop(server)
        guest = self.start(server)
        self.assertKept(guest, s, 'stop/start')

        # The memory resumes on the root volume's state of its instant.
        guest.wait_for_tick(after=s.full_ticks[1] + 10, timeout=180)
        guest = self.revert_to(server.id, s.full, s.full_ticks)
        self.assertKept(guest, s, 'the revert', ['before-full'])
        self.assertAbsent(guest, s, ['after'], 'the revert')

        # A server booted from the image gets a volume made from the
        # Cinder snapshot, so it resumes the memory on it.
        clone, clone_guest = self.boot(base.unique_name('bfv-clone'),
                                       image=s.full_image)
        for attached in self.admin.compute.volume_attachments(clone):
            self.addCleanup(self._delete_volume, attached.volume_id)
        first = clone_guest.ticks()[0][0]
        low, high = s.full_ticks
        self.assertTrue(low - 1 <= first <= high + 3, first)
        self.assertKept(clone_guest, s, 'the clone', ['before-full'])
        self.assertAbsent(clone_guest, s, ['after'], 'the clone')


class BackupRestoreTest(base.LifecycleMixin, base.VolumeMixin,
                        base.TestCase):
    """Cinder's backup of a snapshotted volume, restored onto it."""

    def test_restore_keeps_every_snapshot(self):
        server, guest = self.boot(base.unique_name('bkp'))
        volume = self.volume(base.unique_name('v'))
        self.wait_volume(volume.id, 'available')
        self.attach(server, volume, 'vdb')
        s, guest = self.take_snapshots(server, guest, ('vda', 'vdb'))
        backup = base.cli(*VOLUME_API, 'volume', 'backup', 'create',
                          '--force', '--name', base.unique_name('b'),
                          volume.id)
        self.addCleanup(self.delete_backup, backup['id'])
        self.wait_backup(backup['id'])
        # Written after the backup: the restore takes the volume back.
        base.VolumeMixin.write_blocks(guest, 'vdb', 6)

        base.cli('server', 'remove', 'volume', server.id, volume.id,
                 as_json=False)
        self.wait_volume(volume.id, 'available')
        base.cli(*VOLUME_API, 'volume', 'backup', 'restore', '--force',
                 backup['id'], volume.id)
        self.wait_volume(volume.id, 'available')
        self.attach(server, volume, 'vdb')
        guest = self.guest(server.id)
        self.assertKept(guest, s, 'a backup restore')
        self.assertEqual(base.ZEROS_SHA256, self.read_blocks(guest, 'vdb', 6),
                         'the restore kept a write made after the backup')
        # The volume's snapshots are still in it: both revert, vdb too.
        self.assertAvailable(server.id, s)
        self.assertRevertable(server.id, s)

    def wait_backup(self, backup_id):
        deadline = time.monotonic() + 300
        while True:
            status = base.cli(*VOLUME_API, 'volume', 'backup', 'show',
                              backup_id)['status']
            if status == 'available':
                return
            self.assertNotIn('error', status)
            self.assertLess(time.monotonic(), deadline,
                            'backup %s still %s' % (backup_id, status))
            time.sleep(2)

    def delete_backup(self, backup_id):
        base.cli(*VOLUME_API, 'volume', 'backup', 'delete', '--force',
                 backup_id, as_json=False, check=False)
