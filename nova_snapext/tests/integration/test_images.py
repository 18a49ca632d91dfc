"""A createImage snapshot and its Glance image go away together.

Both ways, in the real cloud: deleting the snapshot deletes its image
(nova-api), and deleting the image deletes the snapshot (the agent hears
Glance's image.delete notification).
"""

import os
import time

import openstack

from nova_snapext.tests.integration import base

STORE = os.path.join(base.DATA, 'snapext')


class ImageSnapshotConsistencyTest(base.TestCase):

    def _full_snapshot(self, server):
        image = base.cli('server', 'image', 'create', '--name',
                         base.unique_name('img'), '--wait', server.id)
        self.addCleanup(self.admin.image.delete_image, image['id'],
                        ignore_missing=True)
        snap_id = image['properties']['snapext_manifest']
        memory = os.path.join(STORE, server.id, snap_id, 'memory.save')
        self.assertTrue(os.path.exists(memory), memory)
        return image['id'], snap_id, memory

    def _snapshot_ids(self, server):
        resp = self.api('GET', '/servers/%s/snapext-snapshots' % server.id)
        self.assertEqual(200, resp.status_code, resp.text)
        return [s['id'] for s in resp.json()['snapshots']]

    def test_snapshot_and_image_are_deleted_together(self):
        server, guest = self.boot(base.unique_name('images'))
        data = guest.write_file('/mnt/vda/data.bin')

        # The snapshot's deletion takes its image along.
        image_id, snap_id, memory = self._full_snapshot(server)
        proc = base.cli('server', 'snapshot', 'delete', '--wait', snap_id,
                        as_json=False)
        self.assertIn('deleted', proc.stderr)
        self.assertRaises(openstack.exceptions.NotFoundException,
                          self.demo.image.get_image, image_id)
        self.assertFalse(os.path.exists(memory))

        # The image's deletion takes its snapshot along, on the host.
        image_id, snap_id, memory = self._full_snapshot(server)
        self.assertEqual([snap_id], self._snapshot_ids(server))
        base.cli('image', 'delete', image_id, as_json=False)
        deadline = time.monotonic() + 60
        while snap_id in self._snapshot_ids(server):
            self.assertLess(time.monotonic(), deadline,
                            'snapshot %s outlived its image' % snap_id)
            time.sleep(1)
        self.assertEqual(404, self.api(
            'GET', '/snapext-snapshots/%s' % snap_id).status_code)
        self.assertFalse(os.path.exists(memory))

        # The server runs on, its data intact.
        self.assertEqual('ACTIVE',
                         self.demo.compute.get_server(server.id).status)
        self.assertEqual(data, guest.sha256('/mnt/vda/data.bin'))
        tick = guest.last_tick()[0]
        guest.wait_for_tick(after=tick, timeout=30)
