"""Fast clone through Nova: spawn() from a full-snapshot image resumes.

Everything is Nova's real spawn path on the real libvirtd: Nova fetches the
kernel, ramdisk and root images from its Glance fixture, builds the
instance's disks and domain XML, and creates the domain; the project's
guest runs inside.  Instance A boots cold from a plain image; ``nova
image-create`` of A gives a full-snapshot image; instance B boots from it
and must continue A's counter and see A's files.
"""

from nova.network import model as network_model
from nova import objects
import testtools

from nova_snapext.tests.functional import nova_base


class SpawnFromSnapshotTest(nova_base.NovaGuestTestCase):

    def test_boot_from_full_snapshot_resumes_memory(self):
        a, guest_a, cold_s = self.spawn(self.image)
        before = guest_a.write_file('/mnt/vda/before.bin')
        seen = {}
        self.driver.snapext._progress = (
            lambda stage, **kw: seen.setdefault('tick',
                                                guest_a.last_tick()[0])
            if stage == 'captured' else None)
        snap_id = self.glance.create(self.context, {
            'name': 'a-full', 'properties': {'snapext_full': 'true'}})['id']
        self.driver.snapshot(self.context, a, snap_id,
                             self.update_task_state)
        guest_a.write_file('/mnt/vda/after.bin')
        snapshot_image = self.glance.show(self.context, snap_id)
        self.assertEqual('full',
                         snapshot_image['properties']['snapext_kind'])

        b, guest_b, resume_s = self.spawn(snapshot_image)
        self.addDetail('boot_times', testtools.content.text_content(
            'cold boot %.2f s, resumed from snapshot %.2f s'
            % (cold_s, resume_s)))
        print('cold boot %.2f s, resumed from snapshot %.2f s'
              % (cold_s, resume_s))

        first = guest_b.ticks()[0][0]
        self.assertLessEqual(abs(first - (seen['tick'] + 1)), 2,
                             'B started counting at %d, A was at %d'
                             % (first, seen['tick']))
        self.assertEqual(before, guest_b.sha256('/mnt/vda/before.bin'))
        self.assertIsNone(guest_b.sha256('/mnt/vda/after.bin'))
        self.assertEqual('thawed', guest_b.freeze_status())
        self.assertEqual(b.uuid, guest_b.dom.UUIDString())
        self.assertLess(resume_s, cold_s)
        # the disks Nova made from the image were checked against the
        # snapshot's digests before the memory was resumed on them
        verified = self.driver.snapext.store.get(
            snapshot_image['properties']['snapext_manifest'])['verification']
        self.assertEqual(('ok', 'clone files'),
                         (verified['result'], verified['of']))
        self.assertEqual('ok', verified['artifacts']['disk vda copy'])
        # A runs on with its own files and console
        self.assertIsNotNone(guest_a.sha256('/mnt/vda/after.bin'))
        self.assertNotEqual(guest_a.console, guest_b.console)

    def test_damaged_memory_image_boots_cold_on_the_image(self):
        a, guest_a, _ = self.spawn(self.image)
        snap_id = self.glance.create(self.context, {
            'name': 'a-full', 'properties': {'snapext_full': 'true'}})['id']
        self.driver.snapshot(self.context, a, snap_id,
                             self.update_task_state)
        snapshot_image = self.glance.show(self.context, snap_id)
        store = self.driver.snapext.store
        record = store.get(snapshot_image['properties']['snapext_manifest'])
        memory = store.local_path(record, record['memory']['location'])
        with open(memory, 'r+b') as f:
            f.seek(record['memory']['bytes'] // 2)
            f.write(b'\xde\xad\xbe\xef')

        # (the snapshot image does not ask for the guest agent: a cold
        # boot of it has none, so the counter is the proof)
        b = self.new_instance(snapshot_image)
        guest_b = self.guest_of(b)
        self.addCleanup(self.undefine, b.name)
        self.driver.spawn(self.context, b,
                          objects.ImageMeta.from_dict(snapshot_image), [],
                          None, {}, network_info=network_model.NetworkInfo(
                              []))
        guest_b.refresh()
        guest_b.wait_for_tick()
        # the memory was refused: the server booted, on disks that hold
        # the snapshot's state
        self.assertEqual(0, guest_b.ticks()[0][0])
        verified = store.get(record['id'])['verification']
        self.assertEqual(('failed', 'mismatch', 'ok'), (
            verified['result'], verified['artifacts']['memory image'],
            verified['artifacts']['disk vda copy']))

    def test_plain_image_boots_cold(self):
        instance, guest, seconds = self.spawn(self.image)
        self.assertEqual(0, guest.ticks()[0][0])
