"""A bundle image deleted in Glance is uploaded again.

The bundles of the glance store are hidden images, but an admin (or a
clean-up script) can still delete one.  The compute host hears Glance's
image.delete, stops claiming the lost bundle in the records that needed
it (the snapshot's own, and its children's deltas on it), and uploads
them again, parents first, shared with the server's project.  The proof:
the first snapshot's cached memory image is then lost too, and a revert
through the API fetches it from the new bundle (the snapshot image's
``snapext_bundle`` link still names the deleted one) and the guest
continues from the snapshot.  A damaged record deleted through the API
takes its bundle (named by Glance, not by the record) with it.
"""

import os
import time

import openstack

from nova_snapext.tests.integration import base


class BundleImageDeletedTest(base.TestCase):

    def wait_redone(self, server_id, snapshot_id, lost, timeout=120):
        """The record's new ``durable``, once it names no lost image."""
        deadline = time.monotonic() + timeout
        while True:
            durable = base.cached_record(server_id, snapshot_id).get(
                'durable')
            if durable and not set(lost) & set(durable['chain']):
                return durable
            self.assertLess(time.monotonic(), deadline,
                            'snapshot %s still names %s: %s'
                            % (snapshot_id, lost, durable))
            time.sleep(1)

    def test_a_deleted_bundle_is_uploaded_again(self):
        server, guest = self.boot(base.unique_name('redo'))
        before = guest.write_file('/mnt/vda/before.bin')
        image1, ticks1 = self.full_snapshot_image(server, guest, 'redo')
        snap1 = image1['properties']['snapext_manifest']
        guest.write_file('/mnt/vda/after.bin', mib=4)
        image2, _ = self.full_snapshot_image(server, guest, 'redo')
        snap2 = image2['properties']['snapext_manifest']
        lost = base.cached_record(server.id, snap1)['durable']['image_id']
        old_delta = base.cached_record(server.id, snap2)['durable'][
            'image_id']
        self.assertEqual(lost, image1['properties']['snapext_bundle'])

        self.admin.image.delete_image(lost)
        redone1 = self.wait_redone(server.id, snap1, [lost])
        redone2 = self.wait_redone(server.id, snap2, [lost, old_delta])
        # the child is a delta on its parent's new bundle again
        self.assertEqual(snap1, redone2['since'])
        self.assertEqual([redone2['image_id'], redone1['image_id']],
                         redone2['chain'])
        for image_id in (redone1['image_id'], redone2['image_id']):
            # the server's project sees it (a member), as a revert needs
            found = self.demo.image.get_image(image_id)
            self.assertEqual(('active', True),
                             (found.status, found.is_hidden))
        self.assertRaises(openstack.exceptions.NotFoundException,
                          self.admin.image.get_image, old_delta)

        # The cached memory image of the first snapshot is lost as well:
        # the revert fetches it from the new bundle.
        os.unlink(base.cached(server.id, snap1, 'memory.save'))
        self.revert_to(server.id, snap1, ticks1,
                       kept={'/mnt/vda/before.bin': before},
                       gone=['/mnt/vda/after.bin'])

        # A record the host can no longer read is deleted through the API
        # (an admin's call: policy delete_broken) with its bundle, which
        # Glance names (the record cannot).
        with open(base.cached(server.id, snap2), 'w') as f:
            f.write('{"damaged')
        base.cli('server', 'snapshot', 'delete', '--wait', snap2,
                 user='admin', as_json=False)
        self.assertRaises(openstack.exceptions.NotFoundException,
                          self.admin.image.get_image, redone2['image_id'])
        self.assertEqual('active', self.admin.image.get_image(
            redone1['image_id']).status)

        # Deleting the server takes the last bundle with it.
        self.delete_server(server.id)
        self.assertRaises(openstack.exceptions.NotFoundException,
                          self.admin.image.get_image, redone1['image_id'])
