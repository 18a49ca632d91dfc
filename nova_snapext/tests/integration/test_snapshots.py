"""Full snapshots in a real cloud: the CLI, the API, the guest's proof."""

import time
import uuid

from nova_snapext.tests.integration import base


class FullSnapshotTest(base.TestCase):

    def test_image_create_revert_clone_delete(self):
        server, guest = self.boot(base.unique_name('full'))
        before = guest.write_file('/mnt/vda/before.bin')

        # What a user types: a full snapshot through Nova's createImage.
        tick_before = guest.last_tick()[0]
        image = base.cli('server', 'image', 'create', '--name',
                         base.unique_name('img'), '--wait', server.id)
        tick_after = guest.last_tick()[0]
        self.addCleanup(self.admin.image.delete_image, image['id'],
                        ignore_missing=True)
        props = image['properties']
        self.assertEqual('full', props['snapext_kind'])
        self.assertEqual('frozen', props['snapext_quiesce'])
        snap_id = props['snapext_manifest']
        self.assertEqual(server.id, props['instance_uuid'])
        self.assertEqual('thawed', guest.freeze_status())

        # The tree and the record through the openstack CLI plugin...
        listed = base.cli('server', 'snapshot', 'list', server.name)
        self.assertEqual([snap_id], [s['ID'] for s in listed])
        self.assertTrue(listed[0]['Current'])
        shown = base.cli('server', 'snapshot', 'show', snap_id)
        self.assertEqual('full', shown['kind'])
        self.assertEqual(image['id'], shown['image_id'])
        self.assertEqual('frozen', shown['quiesce']['outcome'])
        self.assertGreater(shown['memory']['bytes'], 0)
        self.assertEqual(['vda'], [d['target'] for d in shown['disks']])
        table = base.cli('server', 'snapshot', 'show', snap_id,
                         as_json=False).stdout
        self.assertIn('frozen (', table)

        # ... and each answer's real status through nova-api.
        resp = self.api('GET', '/servers/%s/snapext-snapshots' % server.id)
        self.assertEqual(200, resp.status_code)
        self.assertEqual('instance-snapshot 1.0',
                         resp.headers['OpenStack-API-Version'])
        self.assertEqual(snap_id, resp.json()['current'])
        self.assertEqual(200, self.api(
            'GET', '/snapext-snapshots/%s' % snap_id).status_code)
        self.assertEqual(404, self.api(
            'GET', '/snapext-snapshots/%s' % uuid.uuid4()).status_code)
        self.assertEqual(406, self.api(
            'GET', '/snapext-snapshots/%s' % snap_id,
            headers={'OpenStack-API-Version':
                     'instance-snapshot 9.9'}).status_code)
        self.assertEqual(400, self.api(
            'POST', '/servers/%s/action' % server.id,
            json_body={'snapextRevert': {'snapshot_id': '../x'}}).status_code)
        self.assertEqual(404, self.api(
            'POST', '/servers/%s/action' % server.id,
            json_body={'snapextRevert': {
                'snapshot_id': str(uuid.uuid4())}}).status_code)

        # Change the guest, then revert with the CLI: memory and disk.
        guest.write_file('/mnt/vda/after.bin')
        guest.write_file('/mnt/vda/before.bin')
        offset = guest.console_size()
        proc = base.cli('server', 'snapshot', 'revert', '--wait',
                        server.name, snap_id, as_json=False)
        self.assertIn('ACTIVE', proc.stderr)
        resumed = guest.resumed_tick(offset)
        self.assertIsNotNone(resumed, 'no TICK after the revert')
        self.assertGreaterEqual(resumed, tick_before)
        self.assertLessEqual(resumed, tick_after + 2)
        guest.wait_for_agent()
        self.assertEqual(before, guest.sha256('/mnt/vda/before.bin'))
        self.assertIsNone(guest.sha256('/mnt/vda/after.bin'))

        # python-novaclient's image-create, once: a second full snapshot,
        # a child of the one the server was reverted to.
        name2 = base.unique_name('nova')
        base.cli('image-create', '--poll', server.id, name2,
                 as_json=False, command='nova')
        for img in self.admin.image.images(name=name2):
            self.addCleanup(self.admin.image.delete_image, img.id,
                            ignore_missing=True)
        tree = self.api('GET', '/servers/%s/snapext-snapshots'
                        % server.id).json()
        self.assertEqual(snap_id, tree['snapshots'][0]['id'])
        child = tree['snapshots'][0]['children'][0]
        self.assertEqual(child['id'], tree['current'])
        self.assertEqual('full', child['kind'])

        # A second server from the first snapshot's image resumes its
        # memory: its first TICK continues the snapshot's counter.
        clone, clone_guest = self.boot(base.unique_name('clone'),
                                       image=image['id'])
        first = clone_guest.ticks()[0][0]
        self.assertGreaterEqual(first, tick_before)
        self.assertLessEqual(first, tick_after + 2)
        self.assertEqual(before, clone_guest.sha256('/mnt/vda/before.bin'))
        self.assertIsNone(clone_guest.sha256('/mnt/vda/after.bin'))

        # Delete the first snapshot with the CLI: its child is kept.
        proc = base.cli('server', 'snapshot', 'delete', '--wait', snap_id,
                        as_json=False)
        self.assertIn('deleted', proc.stderr)
        self.assertEqual(404, self.api(
            'GET', '/snapext-snapshots/%s' % snap_id).status_code)
        tree = self.api('GET', '/servers/%s/snapext-snapshots'
                        % server.id).json()
        self.assertEqual([child['id']], [s['id'] for s in tree['snapshots']])
        self.assertEqual(204, self.api(
            'DELETE', '/snapext-snapshots/%s' % child['id']).status_code)
        self.assertEqual(404, self.api(
            'DELETE', '/snapext-snapshots/%s' % child['id']).status_code)
        # The server still runs, its guest intact.
        self.assertEqual(before, guest.sha256('/mnt/vda/before.bin'))
        tick = guest.last_tick()[0]
        time.sleep(1)
        self.assertGreater(guest.last_tick()[0], tick)


class PolicyTest(base.TestCase):

    def test_defaults(self):
        server, guest = self.boot(base.unique_name('policy'))
        image = self.demo.compute.create_server_image(
            server, base.unique_name('img'), wait=True, timeout=300)
        self.addCleanup(self.admin.image.delete_image, image.id,
                        ignore_missing=True)
        image = self.wait_image(image.id)
        snap_id = image.properties['snapext_manifest']
        tree = '/servers/%s/snapext-snapshots' % server.id
        show = '/snapext-snapshots/%s' % snap_id
        action = '/servers/%s/action' % server.id
        revert = {'snapextRevert': {'snapshot_id': snap_id}}

        # Another project's member sees nothing: 404, as for the server.
        alt = base.connect('alt')
        self.assertEqual(404, self.api('GET', tree, conn=alt).status_code)
        self.assertEqual(404, self.api('GET', show, conn=alt).status_code)
        self.assertEqual(404, self.api('DELETE', show, conn=alt).status_code)
        self.assertEqual(404, self.api('POST', action, conn=alt,
                                       json_body=revert).status_code)
        err = base.cli('server', 'snapshot', 'show', snap_id, user='alt',
                       check=False, as_json=False)
        self.assertEqual(1, err.returncode)
        self.assertIn('404', err.stderr)

        # A reader reads, and cannot revert or delete: 403.
        reader = base.connect('demo-reader')
        self.assertEqual(200, self.api('GET', tree, conn=reader).status_code)
        self.assertEqual(200, self.api('GET', show, conn=reader).status_code)
        resp = self.api('POST', action, conn=reader, json_body=revert)
        self.assertEqual(403, resp.status_code)
        self.assertIn('snapext:snapshots:revert', resp.text)
        self.assertEqual(403, self.api('DELETE', show,
                                       conn=reader).status_code)
        err = base.cli('server', 'snapshot', 'revert', server.id, snap_id,
                       user='demo-reader', check=False, as_json=False)
        self.assertEqual(1, err.returncode)
        self.assertIn('403', err.stderr)

        # The owner may; admin may delete.
        self.assertEqual(202, self.api('POST', action,
                                       json_body=revert).status_code)
        self.wait_settled(server.id)
        guest.wait_for_agent()
        self.assertEqual(204, self.api('DELETE', show,
                                       conn=self.admin).status_code)
