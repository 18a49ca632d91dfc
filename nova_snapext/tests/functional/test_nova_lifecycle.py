"""Nova's own server actions on a server that has snapext snapshots.

Each test is one row of the lifecycle matrix (issue 8).  The server is
spawned by Nova's real ``driver.spawn()`` (Nova's XML, its disk a qcow2
over ``_base`` in instances_path), gets a full snapext snapshot through
``driver.snapshot()`` (``nova image-create`` with ``snapext_full=true``)
and a disks-only one; then a file is written and synced; then the action
runs through the driver's real methods, called the way nova-compute calls
them (task and vm states set as its manager sets them).  The proof comes
from inside the guest: the file is there with the same sha256, and every
earlier snapshot still reverts (the counter continues, files match), or,
where a snapshot cannot follow the server, its record is unavailable with a
reason, a revert is refused with Conflict, and nothing is corrupted.
"""

import hashlib
import os
import subprocess
import time

from nova.compute import power_state
from nova.compute import task_states
from nova.compute import vm_states
import nova.conf
from nova.network import model as network_model
from nova import objects
from nova import utils as nova_utils
from nova.virt.libvirt.volume import mount as nova_mount
from oslo_utils import uuidutils

from nova_snapext import exception
from nova_snapext.testing import guest as guest_mod
from nova_snapext.tests.functional import nova_base

CONF = nova.conf.CONF
NO_NETWORK = network_model.NetworkInfo([])


class Snaps(object):
    """The snapshots of one server and the files around them."""

    def __init__(self, disks):
        self.targets = disks
        self.before_full = {}   # written before the full snapshot
        self.before_disks = {}  # after the full one, before the disks-only
        self.after = {}         # after the last snapshot
        self.full = None
        self.disks = None
        self.full_ticks = None  # (low, high) bounds of the capture tick

    def ids(self):
        return [self.full, self.disks]


def _path(target, name):
    return '/mnt/%s/%s.bin' % (target, name)


class LifecycleBase(nova_base.NovaGuestTestCase):

    @property
    def engine(self):
        return self.driver.snapext

    def boot(self, **kw):
        instance, guest, _ = self.spawn(self.image, **kw)
        return instance, guest

    def snapshot_image(self, instance, **properties):
        """The image nova-api creates for createImage/shelve of ``instance``.

        Like nova-api, it inherits the server's image properties (kernel,
        ramdisk, command line, guest agent), then the request's metadata.
        """
        props = nova_utils.get_image_from_system_metadata(
            instance.system_metadata)['properties']
        props.update(properties)
        return self.create_image(**props)

    # -- snapshots -------------------------------------------------------

    def full_snapshot(self, instance, guest):
        """``nova image-create`` with snapext_full=true; the record id."""
        seen = {}
        self.engine._progress = (
            lambda stage, **kw: seen.setdefault('tick', guest.last_tick()[0])
            if stage == 'captured' else None)
        low = guest.last_tick()[0]
        image_id = self.snapshot_image(instance, snapext_full='true')
        self.driver.snapshot(self.context, instance, image_id,
                             self.update_task_state)
        self.engine._progress = None
        props = self.glance.show(self.context, image_id)['properties']
        self.assertEqual('full', props['snapext_kind'])
        # The capture instant lies between the tick seen before the call
        # and the one seen when the engine reports it (which may lag the
        # guest's resume by a few ticks on a loaded host).
        bounds = (low, seen.get('tick', guest.last_tick()[0]))
        return props['snapext_manifest'], bounds, image_id

    def disks_snapshot(self, instance):
        guest = self.driver._host.get_guest(instance)
        return self.engine.take(
            instance.uuid, memory=False, quiesce_policy='preferred',
            disk_roles=self.driver._disk_roles(self.context, instance,
                                               guest))['id']

    def take_snapshots(self, instance, guest, disks=('vda',)):
        s = Snaps(disks)
        s.before_full = {d: guest.write_file(_path(d, 'before-full'))
                         for d in disks}
        s.full, s.full_ticks, s.full_image = self.full_snapshot(instance,
                                                                guest)
        s.before_disks = {d: guest.write_file(_path(d, 'before-disks'))
                          for d in disks}
        s.disks = self.disks_snapshot(instance)
        s.after = {d: guest.write_file(_path(d, 'after'))
                   for d in disks}
        return s

    # -- proofs ----------------------------------------------------------

    def assertFiles(self, guest, expected, absent=(), prefix=None):
        """Each {target: sha256} file present, each in ``absent`` gone."""
        for name, files in expected.items():
            for target, digest in files.items():
                path = _path(prefix or target, name)
                self.assertEqual(digest, guest.sha256(path),
                                 '%s changed or is missing' % path)
        for name, targets in absent:
            for target in targets:
                path = _path(prefix or target, name)
                self.assertIsNone(guest.sha256(path),
                                  '%s should not exist' % path)

    def assertDataKept(self, guest, s):
        self.assertFiles(guest, {'before-full': s.before_full,
                                 'before-disks': s.before_disks,
                                 'after': s.after})

    def console_mark(self, guest):
        with open(guest.console, 'rb') as f:
            data = guest_mod.complete_lines(f.read())
        ticks = guest_mod.TICK_RE.findall(data)
        return (len(data),
                tuple(int(x) for x in ticks[-1]) if ticks else (-1, -1))

    def resumed_tick(self, guest, mark, timeout=120):
        """The first counter value the guest printed after ``mark``.

        Nova's console log may be truncated by the restored QEMU
        (append='off') or appended to; either way the restored guest's
        first tick is the first one that does not continue the old run:
        its counter or its clock (guest milliseconds) jumps.
        """
        offset, last = mark
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(guest.console, 'rb') as f:
                data = guest_mod.complete_lines(f.read())
            if len(data) < offset:
                ticks = guest_mod.TICK_RE.findall(data)
                if ticks:
                    return int(ticks[0][0])
            else:
                n0, ms0 = last
                for n, ms in guest_mod.TICK_RE.findall(data[offset:]):
                    n, ms = int(n), int(ms)
                    if n != n0 + 1 or not 0 <= ms - ms0 < 5000:
                        return n
                    n0, ms0 = n, ms
            time.sleep(0.1)
        with open(guest.console, 'rb') as f:
            data = f.read()
        self.fail('the counter never restarted after the revert; before: '
                  '%s; after: %s' % (
                      guest_mod.TICK_RE.findall(data[:offset])[-3:],
                      guest_mod.TICK_RE.findall(data[offset:])[:5]))

    def assertRevertable(self, instance, guest, s):
        """Both snapshots still revert, proven inside the guest."""
        disks = s.targets
        low, high = s.full_ticks
        # After a reboot the counter starts again from 0: let it pass the
        # snapshot's, so that the restored counter drops back visibly.
        guest.wait_for_tick(after=high + 10, timeout=120)
        mark = self.console_mark(guest)
        self.engine.revert(s.full)
        guest.refresh()
        resumed = self.resumed_tick(guest, mark)
        self.assertTrue(low - 1 <= resumed <= high + 3,
                        'counter resumed at %d, the snapshot was taken '
                        'between ticks %d and %d' % (resumed, low, high))
        self.assertEqual(power_state.RUNNING,
                         self.driver.get_info(instance).state)
        self.assertFiles(guest, {'before-full': s.before_full},
                         absent=[('before-disks', disks), ('after', disks)])
        self.assertEqual('thawed', guest.freeze_status())

        self.engine.revert(s.disks)
        self.wait_running(instance, guest)
        self.assertFiles(guest, {'before-full': s.before_full,
                                 'before-disks': s.before_disks},
                         absent=[('after', disks)])

    def assertUnavailable(self, s, *reason_words):
        for snapshot_id in s.ids():
            record = self.engine.store.get(snapshot_id)
            ok, reason = self.engine.availability(record)
            self.assertFalse(ok, 'snapshot %s should be unavailable'
                             % snapshot_id)
            self.assertTrue(reason)
            self.assertTrue(
                any(w in reason for w in reason_words),
                'reason %r names none of %s' % (reason, reason_words))
            self.assertRaises(exception.Conflict, self.engine.revert,
                              snapshot_id)

    def assertAvailable(self, s):
        for snapshot_id in s.ids():
            ok, reason = self.engine.availability(
                self.engine.store.get(snapshot_id))
            self.assertTrue(ok, reason)

    def assertNovaLayout(self, instance):
        """The instance's disk is one qcow2 directly over its _base."""
        disk = os.path.join(self.instance_dir(instance), 'disk')
        info = subprocess.run(
            ['qemu-img', 'info', '-U', '--output=json', '--backing-chain',
             disk], check=True, capture_output=True, text=True).stdout
        self.assertIn('_base', info)
        self.assertNotIn('snapext', ''.join(
            os.listdir(self.instance_dir(instance))))

    def act(self, instance, task_state, vm_state=None):
        """Set the states nova-compute's manager sets around an action."""
        instance.task_state = task_state
        if vm_state is not None:
            instance.vm_state = vm_state


class NovaLifecycleTest(LifecycleBase):
    """Rows of the matrix on an image-backed server with no volume."""

    def setUp(self):
        super().setUp()
        self.instance, self.g = self.boot()

    def test_power_off_power_on(self):
        i, g = self.instance, self.g
        s = self.take_snapshots(i, g)
        self.act(i, task_states.POWERING_OFF)
        self.driver.power_off(i)
        self.act(i, task_states.POWERING_ON, vm_states.STOPPED)
        self.driver.power_on(self.context, i, NO_NETWORK)
        self.act(i, None, vm_states.ACTIVE)
        self.wait_running(i, g)
        self.assertDataKept(g, s)
        self.assertNovaLayout(i)
        self.assertRevertable(i, g, s)

    def test_reboot_soft(self):
        i, g = self.instance, self.g
        s = self.take_snapshots(i, g)
        self.act(i, task_states.REBOOTING)
        self.driver.reboot(self.context, i, NO_NETWORK, 'SOFT')
        self.act(i, None)
        self.wait_running(i, g)
        self.assertDataKept(g, s)
        self.assertRevertable(i, g, s)

    def test_reboot_hard(self):
        i, g = self.instance, self.g
        s = self.take_snapshots(i, g)
        self.act(i, task_states.REBOOTING_HARD)
        self.driver.reboot(self.context, i, NO_NETWORK, 'HARD')
        self.act(i, None)
        self.wait_running(i, g)
        self.assertDataKept(g, s)
        self.assertNovaLayout(i)
        self.assertRevertable(i, g, s)

    def test_pause_unpause(self):
        i, g = self.instance, self.g
        s = self.take_snapshots(i, g)
        self.driver.pause(i)
        self.assertEqual(power_state.PAUSED, self.driver.get_info(i).state)
        self.driver.unpause(i)
        self.wait_running(i, g, after=g.last_tick()[0])
        self.assertDataKept(g, s)
        self.assertRevertable(i, g, s)

    def test_suspend_resume(self):
        i, g = self.instance, self.g
        s = self.take_snapshots(i, g)
        self.act(i, task_states.SUSPENDING)
        self.driver.suspend(self.context, i)
        self.act(i, task_states.RESUMING, vm_states.SUSPENDED)
        tick = g.last_tick()[0]
        self.driver.resume(self.context, i, NO_NETWORK)
        self.act(i, None, vm_states.ACTIVE)
        self.wait_running(i, g, after=tick)
        self.assertDataKept(g, s)
        self.assertRevertable(i, g, s)

    def test_rescue_unrescue(self):
        i, g = self.instance, self.g
        s = self.take_snapshots(i, g)
        self.act(i, task_states.RESCUING)
        self.driver.rescue(self.context, i, NO_NETWORK,
                           objects.ImageMeta.from_dict(self.image), 'pw',
                           None, objects.ShareMappingList(objects=[]))
        self.act(i, None, vm_states.RESCUED)
        self.wait_running(i, g)
        # the rescue guest boots the rescue disk and sees the server's
        # root disk, with its live data, as vdb
        self.assertFiles(g, {'after': s.after}, prefix='vdb')
        self.act(i, task_states.UNRESCUING)
        self.driver.unrescue(self.context, i)
        self.act(i, None, vm_states.ACTIVE)
        self.wait_running(i, g)
        self.assertDataKept(g, s)
        self.assertRevertable(i, g, s)

    def resize(self, i, new_flavor):
        migration = objects.Migration(
            id=1, uuid=uuidutils.generate_uuid(),
            source_compute=CONF.host, dest_compute=CONF.host,
            source_node=CONF.host, dest_node=CONF.host,
            migration_type='resize', status='migrating')
        self.act(i, task_states.RESIZE_MIGRATING)
        disk_info = self.driver.migrate_disk_and_power_off(
            self.context, i, self.driver.get_host_ip_addr(), new_flavor,
            NO_NETWORK)
        i.old_flavor, i.new_flavor = i.flavor, new_flavor
        i.flavor = new_flavor
        i.memory_mb, i.root_gb = new_flavor.memory_mb, new_flavor.root_gb
        self.act(i, task_states.RESIZE_FINISH)
        self.driver.finish_migration(
            self.context, migration, i, disk_info, NO_NETWORK,
            objects.ImageMeta.from_dict(self.image), True, {})
        self.act(i, None, vm_states.RESIZED)
        return migration

    def test_resize_same_host_confirm(self):
        i, g = self.instance, self.g
        s = self.take_snapshots(i, g)
        migration = self.resize(i, self.flavor('bigger', memory_mb=320,
                                               root_gb=1, flavorid=2))
        self.wait_running(i, g)
        self.assertDataKept(g, s)
        self.assertEqual(320 << 10, g.dom.maxMemory())
        self.act(i, None)
        self.driver.confirm_migration(self.context, migration, i,
                                      NO_NETWORK)
        self.act(i, None, vm_states.ACTIVE)
        self.assertFalse(os.path.exists(self.instance_dir(i) + '_resize'))
        self.assertDataKept(g, s)
        self.assertNovaLayout(i)
        self.assertUnavailable(s, 'resize')
        self.assertDataKept(g, s)

    def test_resize_same_host_revert(self):
        i, g = self.instance, self.g
        s = self.take_snapshots(i, g)
        migration = self.resize(i, self.flavor('bigger', memory_mb=320,
                                               root_gb=1, flavorid=2))
        self.wait_running(i, g)
        self.assertDataKept(g, s)
        # revert_resize on the destination (the same host: shared storage)
        self.act(i, task_states.RESIZE_REVERTING)
        self.driver.destroy(self.context, i, NO_NETWORK, None, False)
        # finish_revert_resize on the source
        i.flavor, i.new_flavor = i.old_flavor, i.flavor
        i.memory_mb, i.root_gb = i.flavor.memory_mb, i.flavor.root_gb
        self.driver.finish_revert_migration(self.context, i, NO_NETWORK,
                                            migration)
        self.act(i, None, vm_states.ACTIVE)
        self.wait_running(i, g)
        self.assertDataKept(g, s)
        self.assertNovaLayout(i)
        self.assertAvailable(s)
        self.assertRevertable(i, g, s)

    def test_shelve_offload_unshelve(self):
        i, g = self.instance, self.g
        s = self.take_snapshots(i, g)
        # shelve: power off, snapshot (Nova's image for the unshelve)
        self.act(i, task_states.SHELVING)
        self.driver.power_off(i)
        self.act(i, task_states.SHELVING_IMAGE_PENDING_UPLOAD)
        shelved = self.snapshot_image(i, snapext_full='true')
        self.driver.snapshot(self.context, i, shelved,
                             self.update_task_state)
        self.act(i, task_states.SHELVING_OFFLOADING, vm_states.SHELVED)
        self.driver.destroy(self.context, i, NO_NETWORK)
        self.act(i, None, vm_states.SHELVED_OFFLOADED)
        self.assertFalse(os.path.exists(os.path.join(
            self.instance_dir(i), 'disk')))
        self.assertUnavailable(s, 'shelve')
        # unshelve: spawn from the shelved image
        image = self.glance.show(self.context, shelved)
        self.assertNotEqual('full', image['properties'].get('snapext_kind'))
        i.image_ref = shelved
        self.act(i, task_states.SPAWNING)
        self.driver.spawn(self.context, i, objects.ImageMeta.from_dict(image),
                          [], None, {}, network_info=NO_NETWORK)
        self.act(i, None, vm_states.ACTIVE)
        self.wait_running(i, g)
        self.assertDataKept(g, s)
        self.assertNovaLayout(i)
        self.assertUnavailable(s, 'shelve')

    def test_rebuild(self):
        i, g = self.instance, self.g
        s = self.take_snapshots(i, g)
        self.act(i, task_states.REBUILDING)
        self.driver.destroy(self.context, i, NO_NETWORK)
        self.act(i, task_states.REBUILD_SPAWNING)
        self.driver.spawn(self.context, i,
                          objects.ImageMeta.from_dict(self.image), [], None,
                          {}, network_info=NO_NETWORK)
        self.act(i, None)
        self.wait_running(i, g)
        # a rebuild replaces the root disk with the image, by definition
        self.assertFiles(g, {}, absent=[('after', ['vda'])])
        self.assertUnavailable(s, 'rebuil')
        self.assertNovaLayout(i)

    def test_delete_forgets_records_and_memory_images(self):
        i, g = self.instance, self.g
        s = self.take_snapshots(i, g)
        record = self.engine.store.get(s.full)
        memory = self.engine.store.local_path(record,
                                              record['memory']['location'])
        self.assertTrue(os.path.exists(memory))
        self.act(i, task_states.DELETING)
        self.driver.destroy(self.context, i, NO_NETWORK)
        self.assertEqual([], self.engine.store.list(i.uuid))
        self.assertFalse(os.path.exists(memory))
        for snapshot_id in s.ids():
            self.assertRaises(exception.NotFound, self.engine.store.get,
                              snapshot_id)
        self.assertFalse(os.path.exists(self.instance_dir(i)))

    def test_host_reboot_resumes_guests(self):
        """The host went down: domains gone, nova-compute starts again.

        nova-compute's init_host() runs (Nova's host checks, then
        snapext's recovery), then its manager calls
        resume_state_on_host_boot() for each instance that was running
        (resume_guests_state_on_host_boot = True).
        """
        i, g = self.instance, self.g
        s = self.take_snapshots(i, g)
        self.conn.lookupByUUIDString(i.uuid).destroy()
        self.flags(resume_guests_state_on_host_boot=True)
        # Nova's test fixtures forbid its libvirt event thread; the rest of
        # Nova's init_host() runs.
        self.stub_out('nova.virt.libvirt.host.Host._init_events',
                      lambda host: None)
        self.stub_out('nova.compute.utils.get_machine_ips',
                      lambda: [CONF.my_ip])
        # what the database lists on this host
        self.stub_out('nova.objects.InstanceList.get_by_host',
                      lambda *a, **kw: objects.InstanceList(objects=[i]))
        self.driver.init_host(CONF.host)
        self.addCleanup(self.driver.cleanup_host, CONF.host)
        self.driver.resume_state_on_host_boot(
            self.context, i, NO_NETWORK, objects.ShareMappingList())
        self.wait_running(i, g)
        self.assertDataKept(g, s)
        self.assertNovaLayout(i)
        self.assertRevertable(i, g, s)

    def test_stock_snapshot_after_snapext(self):
        i, g = self.instance, self.g
        s = self.take_snapshots(i, g)
        stock = self.snapshot_image(i, snapext_full='false')
        self.driver.snapshot(self.context, i, stock, self.update_task_state)
        image = self.glance.show(self.context, stock)
        self.assertEqual('active', image['status'])
        self.assertNotIn('snapext_manifest', image['properties'])
        data = self.uploaded[stock]
        self.assertEqual(b'QFI\xfb', data[:4])
        self.assertEqual(b'\0' * 8, data[8:16], 'the image has a backing')
        self.assertDataKept(g, s)
        self.assertRevertable(i, g, s)
        # the image holds the server's data: boot another server from it
        self.act(i, task_states.DELETING)
        self.driver.destroy(self.context, i, NO_NETWORK)
        _, g2, _ = self.spawn(image)
        self.assertDataKept(g2, s)

    def test_boot_from_full_snapshot_after_source_deleted(self):
        a, ga = self.instance, self.g
        before = ga.write_file('/mnt/vda/before.bin')
        _, _, image_id = self.full_snapshot(a, ga)
        image = self.glance.show(self.context, image_id)
        # a clone of A, then A is deleted
        b, gb, _ = self.spawn(image)
        xml = gb.dom.XMLDesc(0)
        self.assertNotIn(a.uuid, xml)
        self.assertIn(b.uuid + '/kernel', xml)
        self.act(a, task_states.DELETING)
        self.driver.destroy(self.context, a, NO_NETWORK)
        # B does not depend on anything of A's: its own definition boots
        self.act(b, task_states.REBOOTING)
        self.driver.reboot(self.context, b, NO_NETWORK, 'SOFT')
        self.act(b, None)
        self.wait_running(b, gb)
        self.assertEqual(before, gb.sha256('/mnt/vda/before.bin'))
        self.act(b, task_states.DELETING)
        self.driver.destroy(self.context, b, NO_NETWORK)
        # C boots from A's image after A is gone: cold, never ERROR
        c, gc, _ = self.spawn(image)
        self.assertEqual(before, gc.sha256('/mnt/vda/before.bin'))


class NfsShare(object):
    """A share Nova's NFS volume driver uses without mounting NFS.

    The share is its own tmpfs; it is bind-mounted where Nova would mount
    the export, so Nova's ``os.path.ismount()`` check skips the mount.
    QEMU runs in its own mount namespace, so the bind must exist before
    the guest starts, and must stay: it is bound twice, since Nova
    unmounts one after a detach and would remove the mount point (which
    detaches the mount in QEMU's namespace too) if nothing were left.
    """

    def __init__(self, workdir, mount_base):
        self.export = '127.0.0.1:/srv/snapext-%s' % uuidutils.generate_uuid()
        self.share = os.path.join(workdir, 'share')
        self.mountpoint = os.path.join(
            mount_base, hashlib.md5(self.export.encode()).hexdigest())
        os.makedirs(self.share)
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=512m', 'tmpfs',
                        self.share], check=True)

    def layers(self):
        with open('/proc/self/mountinfo') as f:
            return sum(1 for line in f
                       if line.split()[4] == self.mountpoint)

    def bind(self):
        os.makedirs(self.mountpoint, exist_ok=True)
        while self.layers() < 2:
            subprocess.run(['mount', '--bind', self.share, self.mountpoint],
                           check=True)

    def cleanup(self):
        for path in (self.mountpoint, self.share):
            while os.path.ismount(path):
                subprocess.run(['umount', '-l', path], check=False)

    def create_volume(self, volume_id, size_mib=64):
        name = 'volume-%s' % volume_id
        guest_mod.make_disk(os.path.join(self.share, name), size_mib)
        return {'driver_volume_type': 'nfs', 'serial': volume_id,
                'data': {'export': self.export, 'name': name,
                         'format': 'qcow2', 'options': None}}


class VolumeLifecycleTest(LifecycleBase):
    """Rows with a qcow2 file volume attached through Nova's NFS driver."""

    VOLUME_ID = 'c0ffee00-0000-4000-8000-0000000000b0'

    def setUp(self):
        super().setUp()
        mount_base = os.path.join(self.workdir, 'mnt')
        self.flags(nfs_mount_point_base=mount_base, group='libvirt')
        # No libvirt event loop here: Nova's detach waits this long for
        # the device-removed event, then checks the domain itself.
        self.flags(device_detach_timeout=2, group='libvirt')
        self.share = NfsShare(self.workdir, mount_base)
        self.addCleanup(self.share.cleanup)
        self.share.bind()
        nova_mount.get_manager().host_up(self.driver._host)
        self.addCleanup(nova_mount.get_manager().host_down)
        self.connection_info = self.share.create_volume(self.VOLUME_ID)
        self.instance, self.g = self.boot()

    def attach(self, mount=True):
        i, g = self.instance, self.g
        self.share.bind()
        self.driver.attach_volume(self.context, self.connection_info, i,
                                  '/dev/vdb', disk_bus='virtio',
                                  device_type='disk')
        self.bdms[i.uuid] = [objects.BlockDeviceMapping(
            source_type='volume', destination_type='volume',
            device_name='/dev/vdb', volume_id=self.VOLUME_ID,
            instance_uuid=i.uuid)]
        if mount:
            g.check_sh('n=0; while [ ! -b /dev/vdb ] && [ $n -lt 100 ]; do '
                       'sleep 0.1; n=$((n+1)); done; mkdir -p /mnt/vdb; '
                       'mount -t ext4 /dev/vdb /mnt/vdb')

    def detach(self):
        i, g = self.instance, self.g
        g.check_sh('sync; umount /mnt/vdb')
        self.driver.detach_volume(self.context, self.connection_info, i,
                                  '/dev/vdb')
        self.bdms[i.uuid] = []
        self.assertNotIn("dev='vdb'", g.dom.XMLDesc(0))

    def volume_file(self):
        return os.path.join(self.share.share,
                            self.connection_info['data']['name'])

    def test_detach_attach_snapshotted_volume(self):
        i, g = self.instance, self.g
        self.attach()
        s = self.take_snapshots(i, g, disks=('vda', 'vdb'))
        self.assertEqual({'vda', 'vdb'}, {
            d['target']
            for d in self.engine.store.get(s.full)['disks']})
        self.detach()
        # attached again from what Cinder's records name: the live data
        self.attach()
        self.assertDataKept(g, s)
        self.assertEqual(['volume-%s' % self.VOLUME_ID],
                         os.listdir(self.share.share))
        self.assertRevertable(i, g, s)

    def test_attach_after_snapshot(self):
        i, g = self.instance, self.g
        s = self.take_snapshots(i, g)
        self.attach()
        on_volume = g.write_file('/mnt/vdb/new.bin')
        self.assertDataKept(g, s)
        # the snapshots cover vda only: not revertable while vdb is there
        for snapshot_id in s.ids():
            self.assertRaises(exception.Conflict, self.engine.revert,
                              snapshot_id)
        self.assertEqual(on_volume, g.sha256('/mnt/vdb/new.bin'))
        self.detach()
        self.assertRevertable(i, g, s)

    def test_extend_snapshotted_volume(self):
        i, g = self.instance, self.g
        self.attach()
        s = self.take_snapshots(i, g, disks=('vda', 'vdb'))
        new_size = 128 << 20
        self.driver.extend_volume(self.context, self.connection_info, i,
                                  new_size)
        self.assertEqual(str(new_size // 512),
                         g.check_sh('cat /sys/block/vdb/size').strip())
        self.assertDataKept(g, s)
        self.assertEqual(['volume-%s' % self.VOLUME_ID],
                         os.listdir(self.share.share))
        self.assertRevertable(i, g, s)
        # the volume keeps the size Cinder recorded
        info = subprocess.run(['qemu-img', 'info', '-U', self.volume_file()],
                              check=True, capture_output=True,
                              text=True).stdout
        self.assertIn('(%d bytes)' % new_size, info)
