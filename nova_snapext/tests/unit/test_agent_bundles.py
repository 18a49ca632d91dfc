"""The agent's export and import through Glance (a fake image API).

Real engines over file stores and small qcow2 disks (test_bundle's
fixture), the agent's RPC methods called directly: an export streams into
its queued image in the background, an import makes a record and a
bootable image, and every failure leaves neither a record nor an image.
"""

import io
import json
import os
import subprocess
import time

from oslo_messaging.rpc import dispatcher

from nova_snapext import bundle
from nova_snapext import exception
from nova_snapext import glance
from nova_snapext.rpc import agent
from nova_snapext.tests.unit import fake_images
from nova_snapext.tests.unit import test_bundle

CTXT = {'request_id': 'req-1', 'user_id': 'u', 'project_id': 'p'}


def _call(endpoint, method, **kwargs):
    """The agent's method as the RPC server calls it; its error, plain."""
    try:
        return getattr(endpoint, method)(CTXT, **kwargs)
    except dispatcher.ExpectedException as exc:
        raise exc.exc_info[1] from None


class AgentBundleTest(test_bundle.BundleFixture):

    def setUp(self):
        super().setUp()
        self.api = fake_images.FakeImageAPI()
        images = glance.Images(self.api)
        self.source = agent.AgentEndpoint(self.src.conf, self.src, 'host-a',
                                          images)
        self.target = agent.AgentEndpoint(self.dst.conf, self.dst, 'host-b',
                                          images)

    def _queued(self):
        return self.api.add(b'', status='queued', name='bundle',
                            disk_format='raw', container_format='bare')

    def _export(self, sid, since=None):
        image_id = self._queued()
        result = _call(self.source, 'export', spec={
            'snapshot_id': sid, 'since': since, 'image_id': image_id})
        self.assertEqual((image_id, sid, since), (
            result['image_id'], result['snapshot_id'], result['since']))
        return image_id, self._finished(result['op_id'])

    def _finished(self, op_id):
        deadline = time.monotonic() + 30
        while True:
            status = _call(self.source, 'status', op_id=op_id)
            if status['state'] != 'running':
                return status
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)

    def _import(self, image_id, name='booted'):
        return _call(self.target, 'import_bundle',
                     spec={'image_id': image_id, 'name': name})

    def test_export_then_import_makes_a_bootable_image(self):
        self.src.store.update(dict(
            self.src.store.get('s1'),
            nova={'flavor': 'small', 'flavor_spec': {'memory_mb': 256,
                                                     'root_gb': 1},
                  'image_properties': {'hw_qemu_guest_agent': 'yes',
                                       'os_command_line': 'console=ttyS0',
                                       'os_hash_value': 'stale'}}))
        image_id, status = self._export('s1')
        self.assertEqual('done', status['state'], status)
        with io.BytesIO(self.api.data[image_id]) as f:
            index = bundle.extract_index(f)
        self.assertEqual('s1', index['snapshot_id'])

        result = self._import(image_id)
        self.assertEqual('s1', result['snapshot_id'])
        record = self.dst.store.get('s1')
        self.assertEqual(result['image_id'], record['image_id'])
        image = self.api.get(None, result['image_id'])
        self.assertEqual(('booted', 'qcow2', 'bare', 256, 1), (
            image['name'], image['disk_format'], image['container_format'],
            image['min_ram'], image['min_disk']))
        props = image['properties']
        self.assertEqual(('s1', 'full', 'host-b', 'yes', 'console=ttyS0'), (
            props['snapext_manifest'], props['snapext_kind'],
            props['snapext_host'], props['hw_qemu_guest_agent'],
            props['os_command_line']))
        self.assertNotEqual('stale', props['os_hash_value'])
        # the image is the root disk's state, a standalone qcow2
        path = os.path.join(self.dir, 'bootable.qcow2')
        with open(path, 'wb') as f:
            f.write(self.api.data[result['image_id']])
        info = json.loads(subprocess.run(
            ['qemu-img', 'info', '--output=json', path], check=True,
            capture_output=True, text=True).stdout)
        self.assertEqual('qcow2', info['format'])
        self.assertNotIn('backing-filename', info)
        self.assertNotIn('snapshots', info)
        self.assertEqual(test_bundle._raw(self.disk, 'snapext-s1'),
                         test_bundle._raw(path))

    def test_an_incremental_export_imports_on_its_base(self):
        full, _ = self._export('s1')
        delta, status = self._export('s2', since='s1')
        self.assertEqual('done', status['state'], status)
        self.assertLess(len(self.api.data[delta]),
                        len(self.api.data[full]))
        self._import(full, 'one')
        result = self._import(delta, 'two')
        path = os.path.join(self.dir, 'two.qcow2')
        with open(path, 'wb') as f:
            f.write(self.api.data[result['image_id']])
        self.assertEqual(test_bundle._raw(self.disk, 'snapext-s2'),
                         test_bundle._raw(path))

    def test_export_refusals_are_synchronous(self):
        image_id = self._queued()
        cases = [
            ({'snapshot_id': 'nope', 'image_id': image_id},
             exception.NotFound),
            ({'snapshot_id': 's1', 'since': 's2', 'image_id': image_id},
             exception.InvalidRequest),
            ({'snapshot_id': 's1', 'image_id': 'nope'}, exception.NotFound),
            ({'snapshot_id': 's1', 'image_id': self.api.add(b'x')},
             exception.Conflict),
            ({'snapshot_id': 's1'}, exception.InvalidRequest),
        ]
        for spec, error in cases:
            self.assertRaises(error, _call, self.source, 'export', spec=spec)
        record = self.src.store.get('s1')
        record['disks'][0]['digest'] = None
        self.src.store.update(record)
        exc = self.assertRaises(
            exception.Conflict, _call, self.source, 'export',
            spec={'snapshot_id': 's1', 'image_id': image_id})
        self.assertIn('no digest of disk vda yet', str(exc))
        self.assertEqual('queued', self.api.get(None, image_id)['status'])

    def _deleted_during_export(self, at):
        """Export s1 and delete it once ``at(bundle size)`` bytes went."""
        self.src.store.delete('s2')
        whole = len(self.api.data[self._export('s1')[0]])

        def delete(image_id, received):
            if received >= at(whole) and self.src.store.list(
                    test_bundle.UUID):
                self.src.store.delete('s1')
                test_bundle._run('qemu-img', 'snapshot', '-d', 'snapext-s1',
                                 self.disk)
        self.api.during_upload = delete
        image_id, status = self._export('s1')
        self.assertEqual('error', status['state'])
        self.assertIn('snapshot s1 was deleted while it was exported',
                      status['error'])
        self.assertNotIn(image_id, self.api.images)

    def test_a_snapshot_deleted_before_the_archive_ends_fails_it(self):
        # every member read, the end of the archive not yet sent
        self._deleted_during_export(lambda whole: whole - fake_images.CHUNK)

    def test_a_snapshot_deleted_while_its_disk_is_read_fails_it(self):
        # its clusters freed under the reader
        self._deleted_during_export(lambda whole: 3 * fake_images.CHUNK)

    def assertNothingImported(self, images_before):
        self.assertNothingStaged()
        self.assertRaises(exception.NotFound, self.dst.store.get, 's1')
        self.assertEqual(images_before, set(self.api.images))

    def test_a_bad_bundle_leaves_nothing(self):
        image_id, _ = self._export('s1')
        data = bytearray(self.api.data[image_id])
        at = data.index(b'memory of s1') + 10
        data[at] ^= 0xff
        bad = self.api.add(bytes(data))
        before = set(self.api.images)
        exc = self.assertRaises(exception.InvalidRequest, self._import, bad)
        self.assertIn('member memory.save does not match its sha256',
                      str(exc))
        self.assertNothingImported(before)

    def test_a_failed_bootable_upload_leaves_nothing(self):
        image_id, _ = self._export('s1')
        before = set(self.api.images)
        self.api.fail_upload = IOError(5, 'glance store full')
        exc = self.assertRaises(exception.ImageTransferFailed, self._import,
                                image_id)
        self.assertIn('glance store full', str(exc))
        self.assertNothingImported(before)

    def test_another_projects_server_keeps_its_tree(self):
        image_id, _ = self._export('s1')
        before = set(self.api.images)
        uuid = self.src.store.get('s1')['instance_uuid']
        owners = {uuid: 'other'}
        self.target.project_of = owners.get
        exc = self.assertRaises(exception.InvalidRequest, self._import,
                                image_id)
        self.assertIn('belongs to another project', str(exc))
        self.assertNothingImported(before)
        # its own project may (CTXT's), to revert into it
        owners[uuid] = CTXT['project_id']
        self.assertEqual('s1', self._import(image_id)['snapshot_id'])

    def test_a_snapshot_already_here_is_a_conflict(self):
        image_id, _ = self._export('s1')
        self._import(image_id, 'first')
        before = set(self.api.images)
        self.assertRaises(exception.Conflict, self._import, image_id)
        self.assertEqual(before, set(self.api.images))

    def test_a_snapshot_with_volumes_does_not_become_an_image(self):
        record = self.src.store.get('s1')
        record['disks'][0].update(role='volume', volume_id='v1')
        self.src.store.update(record)
        image_id, _ = self._export('s1')
        before = set(self.api.images)
        exc = self.assertRaises(exception.InvalidRequest, self._import,
                                image_id)
        self.assertIn('only a snapshot of a root disk alone', str(exc))
        self.assertNothingImported(before)

    def test_a_standalone_agent_has_no_glance(self):
        bare = agent.AgentEndpoint(self.src.conf, self.src, 'host-a')
        exc = self.assertRaises(exception.InvalidRequest, _call, bare,
                                'import_bundle',
                                spec={'image_id': 'x', 'name': 'n'})
        self.assertIn('without Nova\'s image API', str(exc))
