"""Bundles in a real cloud: export to a file, import, boot from it.

What a user types (``openstack server image create``, ``openstack server
snapshot export/import``, ``openstack server create``), the API's answers
to bad requests, and the proof from inside the guest booted from the
imported snapshot: its RAM counter continues from the snapshot's and a file
written before the snapshot is there with its sha256.  A bundle imported
back with ``--server`` after its snapshot was deleted reverts that server:
memory and disks, its other snapshots kept, and Nova's stop/start and
hard reboot keep the reverted data (it is in the files Nova names).
"""

import http.client
import json
import os
import socket
import subprocess
import time
import urllib.parse
import uuid

import fixtures
import requests

from nova_snapext.api import bundles as api_bundles
from nova_snapext import bundle
from nova_snapext.capture import domain_xml
from nova_snapext.tests.integration import base

V12 = {'OpenStack-API-Version': 'instance-snapshot 1.2'}
V13 = 'instance-snapshot 1.3'
CHUNK = 1 << 20


class BundleTest(base.LifecycleMixin, base.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path

    def full_snapshot(self, server, guest):
        """(snapshot id, image, (low, high) ticks around the capture)."""
        image, ticks = self.full_snapshot_image(server, guest)
        return image['properties']['snapext_manifest'], image, ticks

    def assertCliError(self, code, *args, words=None):
        """The CLI fails with exit 1 and one line naming HTTP ``code``.

        The error's line may follow the command's own progress line (an
        import says what it uploads before nova-api answers).
        """
        proc = base.cli(*args, check=False, as_json=False)
        self.assertEqual(1, proc.returncode, proc.stdout)
        lines = proc.stderr.strip().splitlines()
        if len(lines) == 2 and lines[0].startswith('uploading '):
            lines = lines[1:]
        self.assertEqual(1, len(lines), proc.stderr)
        self.assertNotIn('Traceback', proc.stderr)
        if code:
            self.assertIn('HTTP %d' % code, lines[0])
        if words:
            self.assertIn(words, lines[0])
        return lines[0]

    def staging_images(self):
        """Hidden upload staging images left in Glance (any project)."""
        return [i.name for i in self.admin.image.images(is_hidden=True)
                if (i.name or '').startswith(api_bundles.STAGING_PREFIX)]

    def upload_url(self, name):
        return '%s/snapext-snapshots/import?%s' % (
            self.demo.compute.get_endpoint(),
            urllib.parse.urlencode({'name': name}))

    def upload_headers(self):
        # A token from the real Keystone, as any API user has one.
        return {'X-Auth-Token': self.demo.session.get_token(),
                'Content-Type': 'application/octet-stream',
                'OpenStack-API-Version': V13}

    def post_chunked(self, chunks, name):
        """POST the bundle as a chunked body (requests, a generator)."""
        return requests.post(self.upload_url(name), data=chunks,
                             headers=self.upload_headers(), timeout=900)

    def post_cut_off(self, path, name, sent):
        """Announce the whole file, send ``sent`` bytes, stop sending."""
        url = urllib.parse.urlsplit(self.upload_url(name))
        conn = http.client.HTTPConnection(url.hostname, url.port,
                                          timeout=300)
        conn.putrequest('POST', '%s?%s' % (url.path, url.query))
        for key, value in self.upload_headers().items():
            conn.putheader(key, value)
        conn.putheader('Content-Length', str(os.path.getsize(path)))
        conn.endheaders()
        with open(path, 'rb') as f:
            conn.send(f.read(sent))
        # The client goes away in the middle of its upload.
        conn.sock.shutdown(socket.SHUT_WR)
        resp = conn.getresponse()
        body = resp.read().decode()
        conn.close()
        return resp.status, body

    def post_curl(self, path, name):
        """POST the file with curl (a Content-Length, streamed)."""
        argv = ['curl', '-sS', '-X', 'POST', '-T', path,
                '-w', '\n%{http_code} %{time_total} %{size_upload}']
        for key, value in self.upload_headers().items():
            argv += ['-H', '%s: %s' % (key, value)]
        proc = subprocess.run(argv + [self.upload_url(name)],
                              capture_output=True, text=True, check=True,
                              timeout=900)
        body, _, tail = proc.stdout.rpartition('\n')
        code, seconds, sent = tail.split()
        return int(code), body, float(seconds), int(float(sent))

    def bundle_images(self, snapshot_id):
        return [i.id for i in self.demo.image.images()
                if (i.properties or {}).get(bundle.IMAGE_OF) == snapshot_id]

    # -- what the API answers before any agent call ------------------------

    def test_refusals(self):
        server, guest = self.boot(base.unique_name('bundle-bad'))
        snap_id, _, _ = self.full_snapshot(server, guest)
        action = '/servers/%s/action' % server.id

        def export(entity, **kw):
            return self.api('POST', action, headers=V12,
                            json_body={'snapextExport': entity}, **kw)

        def import_(entity, **kw):
            return self.api('POST', '/snapext-snapshots/import',
                            headers=V12, json_body={'import': entity}, **kw)

        # Bad bodies, unknown or foreign snapshots, ancestry, version,
        # policy: each answered before any image is made.
        self.assertEqual(400, export({'snapshot_id': '../x'}).status_code)
        self.assertEqual(400, export({'snapshot_id': snap_id,
                                      'force': True}).status_code)
        resp = export({'snapshot_id': str(uuid.uuid4())})
        self.assertEqual(404, resp.status_code, resp.text)
        resp = export({'snapshot_id': snap_id, 'since': snap_id})
        self.assertEqual(400, resp.status_code, resp.text)
        self.assertIn('not an ancestor', resp.text)
        resp = self.api('POST', action, json_body={
            'snapextExport': {'snapshot_id': snap_id}},
            headers={'OpenStack-API-Version': 'instance-snapshot 1.1'})
        self.assertEqual(404, resp.status_code, resp.text)
        self.assertIn('1.2', resp.text)
        resp = export({'snapshot_id': snap_id},
                      conn=base.connect('demo-reader'))
        self.assertEqual(403, resp.status_code, resp.text)
        resp = export({'snapshot_id': snap_id}, conn=base.connect('alt'))
        self.assertEqual(404, resp.status_code, resp.text)
        self.assertEqual([], self.bundle_images(snap_id))

        # Import: the bundle image must be the caller's to see, and active.
        resp = import_({'image_id': str(uuid.uuid4()), 'name': 'n'})
        self.assertEqual(404, resp.status_code, resp.text)
        queued = self.demo.image.create_image(
            name=base.unique_name('queued'), disk_format='raw',
            container_format='bare')
        self.addCleanup(self.admin.image.delete_image, queued.id,
                        ignore_missing=True)
        resp = import_({'image_id': queued.id, 'name': 'n'})
        self.assertEqual(409, resp.status_code, resp.text)
        resp = import_({'image_id': queued.id, 'name': 'n'},
                       conn=base.connect('alt'))
        self.assertEqual(404, resp.status_code, resp.text)
        resp = import_({'image_id': queued.id, 'name': 'n',
                        'host': 'anywhere'})
        self.assertEqual(403, resp.status_code, resp.text)
        resp = import_({'image_id': 'not-a-uuid', 'name': 'n'})
        self.assertEqual(400, resp.status_code, resp.text)
        resp = self.api('POST', '/snapext-snapshots/import', headers=V12)
        self.assertEqual(415, resp.status_code, resp.text)
        # A bundle body needs 1.3; without a token not a byte is read.
        resp = requests.post(self.upload_url('n'), data=b'x' * 200000,
                             headers=dict(self.upload_headers(),
                                          **V12), timeout=60)
        self.assertEqual(404, resp.status_code, resp.text)
        self.assertIn('1.3', resp.text)
        resp = requests.post(self.upload_url('n'), data=b'x' * 200000,
                             headers=dict(self.upload_headers(),
                                          **{'X-Auth-Token': 'bad'}),
                             timeout=60)
        self.assertEqual(401, resp.status_code, resp.text)
        # Other requests keep nova-api's size limit.
        resp = self.api('POST', '/snapext-snapshots/import', headers=V12,
                        json_body={'import': {'image_id': 'x' * 200000,
                                              'name': 'n'}})
        self.assertEqual(413, resp.status_code, resp.text)

        # The same through the CLI: one line, exit 1, no traceback.
        path = os.path.join(self.dir, 'b.tar')
        self.assertCliError(404, 'server', 'snapshot', 'export',
                            str(uuid.uuid4()), path)
        self.assertCliError(400, 'server', 'snapshot', 'export', snap_id,
                            path, '--since', snap_id,
                            words='not an ancestor')
        self.assertFalse(os.path.exists(path))
        with open(path, 'wb') as f:
            f.write(b'not a bundle' * 1000)
        self.assertCliError(None, 'server', 'snapshot', 'import', path,
                            '--name', 'n', words='not a tar archive')
        self.assertCliError(409, 'server', 'snapshot', 'import', '--image',
                            queued.id, '--name', 'n')
        self.assertCliError(None, 'server', 'snapshot', 'import',
                            '--name', 'n', words='one of them')

    # -- the whole trip (needs the agent's export and import) -----------

    def snapshot_between_files(self, prefix):
        """A server's full snapshot taken between two files' writes.

        :returns: (server, guest, the first file's sha256, the snapshot
            id, (low, high) ticks around the capture)
        """
        server, guest = self.boot(base.unique_name(prefix))
        before = guest.write_file('/mnt/vda/before.bin')
        snap_id, _, ticks = self.full_snapshot(server, guest)
        guest.write_file('/mnt/vda/after.bin')
        return server, guest, before, snap_id, ticks

    def test_export_import_boot(self):
        server, guest, before, snap_id, (low, high) = (
            self.snapshot_between_files('bundle'))

        path = os.path.join(self.dir, 'snap.bundle')
        started = time.monotonic()
        shown = base.cli('server', 'snapshot', 'export', snap_id, path)
        export_s = time.monotonic() - started
        self.assertEqual(snap_id, shown['snapshot_id'])
        self.assertIsNone(shown['image_id'])
        self.assertEqual(os.path.getsize(path), shown['bytes'])
        with open(path, 'rb') as f:
            index = bundle.verify(f)
        self.assertEqual(server.id, index['instance_uuid'])
        self.assertIsNone(index['since'])
        names = {m['name'] for m in index['members']}
        self.assertTrue({bundle.RECORD, bundle.MEMORY,
                         bundle.disk_member('vda')} <= names, names)
        self.assertEqual([], self.bundle_images(snap_id),
                         'the export left its image behind')
        self.assertEqual([], [p for p in os.listdir(self.dir)
                              if p.endswith('.part')])

        # The snapshot exists here already: 409 with the agent's message,
        # and the uploaded image is gone all the same.
        self.assertCliError(409, 'server', 'snapshot', 'import', path,
                            '--name', base.unique_name('dup'))
        self.assertEqual([], self.bundle_images(snap_id))

        # A bundle image the agent refuses: 400 with its reason.
        junk = self.demo.image.create_image(
            name=base.unique_name('junk'), disk_format='raw',
            container_format='bare', data=b'junk' * 4096)
        self.addCleanup(self.admin.image.delete_image, junk.id,
                        ignore_missing=True)
        self.assertCliError(400, 'server', 'snapshot', 'import', '--image',
                            junk.id, '--name', 'n', words='tar')

        # Gone from this cloud (with its image), then imported back.
        base.cli('server', 'snapshot', 'delete', '--wait', snap_id,
                 as_json=False)
        started = time.monotonic()
        imported = base.cli('server', 'snapshot', 'import', path, '--name',
                            base.unique_name('imported'))
        import_s = time.monotonic() - started
        self.addCleanup(self.admin.image.delete_image, imported['image_id'],
                        ignore_missing=True)
        self.assertEqual(snap_id, imported['snapshot_id'])
        self.assertEqual([], self.bundle_images(snap_id),
                         'the import left the uploaded bundle behind')
        self.assertEqual([], self.staging_images())
        print('export %.1f s (%d bytes), import %.1f s'
              % (export_s, os.path.getsize(path), import_s))
        self.boot_and_check(imported, server, guest, before, low, high)

    def boot_and_check(self, imported, server, guest, before, low, high):
        """A server booted from ``imported`` resumes the snapshot."""
        # A new server from the bootable image resumes the snapshot.
        booted = base.cli('server', 'create', '--image',
                          imported['image_id'], '--flavor', base.FLAVOR,
                          '--nic', 'none', '--wait',
                          base.unique_name('from-bundle'))
        self.addCleanup(self.delete_server, booted['id'])
        clone = self.guest(booted['id'])
        clone.wait_for_tick(timeout=120)
        first = clone.ticks()[0][0]
        self.assertTrue(low <= first <= high + 2,
                        'counter resumed at %d, the snapshot was taken '
                        'between ticks %d and %d' % (first, low, high))
        clone.wait_for_agent(timeout=180)
        self.assertEqual(before, clone.sha256('/mnt/vda/before.bin'))
        self.assertIsNone(clone.sha256('/mnt/vda/after.bin'))
        # The first server runs on, untouched.
        self.assertEqual(before, guest.sha256('/mnt/vda/before.bin'))

    def test_upload_import_boot(self):
        """The bundle as the request body, raw HTTP with a real token."""
        server, guest, before, snap_id, (low, high) = (
            self.snapshot_between_files('upload'))
        path = os.path.join(self.dir, 'snap.bundle')
        base.cli('server', 'snapshot', 'export', snap_id, path)
        size = os.path.getsize(path)
        base.cli('server', 'snapshot', 'delete', '--wait', snap_id,
                 as_json=False)

        # A tampered bundle, sent chunked: the agent's 400, one line, and
        # no staging image left.
        def tampered():
            with open(path, 'rb') as f:
                offset = 0
                while True:
                    chunk = f.read(CHUNK)
                    if not chunk:
                        return
                    if offset <= size // 2 < offset + len(chunk):
                        i = size // 2 - offset
                        chunk = (chunk[:i] + bytes([chunk[i] ^ 0xff]) +
                                 chunk[i + 1:])
                    offset += len(chunk)
                    yield chunk
        resp = self.post_chunked(tampered(), base.unique_name('tampered'))
        self.assertEqual(400, resp.status_code, resp.text)
        message = resp.json()['badRequest']['message']
        self.assertNotIn('\n', message)
        self.assertEqual([], self.staging_images())

        # The client stops sending halfway: 400, no staging image.
        status, body = self.post_cut_off(path, base.unique_name('cut'),
                                         size // 2)
        self.assertEqual(400, status, body)
        self.assertIn('ended after', body)
        self.assertEqual([], self.staging_images())

        # The whole bundle, streamed by curl with its Content-Length.
        code, body, seconds, sent = self.post_curl(
            path, base.unique_name('uploaded'))
        self.assertEqual(201, code, body)
        imported = json.loads(body)
        self.addCleanup(self.admin.image.delete_image, imported['image_id'],
                        ignore_missing=True)
        self.assertEqual(snap_id, imported['snapshot_id'])
        self.assertEqual(size, sent)
        self.assertEqual([], self.staging_images())
        print('upload import: %d bytes in %.1f s (%.1f MiB/s end to end)'
              % (sent, seconds, sent / seconds / CHUNK))
        self.boot_and_check(imported, server, guest, before, low, high)

    def test_import_reverts_its_server(self):
        server, guest = self.boot(base.unique_name('bundle-back'))
        early = guest.write_file('/mnt/vda/early.bin')
        other, _, _ = self.full_snapshot(server, guest)
        before = guest.write_file('/mnt/vda/before.bin')
        snap_id, _, (low, high) = self.full_snapshot(server, guest)
        path = os.path.join(self.dir, 'snap.bundle')
        base.cli('server', 'snapshot', 'export', snap_id, path)
        base.cli('server', 'snapshot', 'delete', '--wait', snap_id,
                 as_json=False)
        guest.write_file('/mnt/vda/after.bin')

        imported = base.cli('server', 'snapshot', 'import', path, '--name',
                            base.unique_name('back'), '--server',
                            server.name)
        self.addCleanup(self.admin.image.delete_image, imported['image_id'],
                        ignore_missing=True)
        self.assertEqual(snap_id, imported['snapshot_id'])
        self.assertEqual({other: 'available', snap_id: 'available'},
                         {i: st for i, (st, _) in
                          self.states(server.id).items()})

        # the counter must pass the snapshot's to drop back visibly
        guest.wait_for_tick(after=high + 10, timeout=180)
        offset = guest.console_size()
        disks = self._disk_files(server)
        started = time.monotonic()
        base.cli('server', 'snapshot', 'revert', '--wait', server.id,
                 snap_id, as_json=False)
        print('revert to the imported snapshot %.1f s'
              % (time.monotonic() - started))
        guest = self.guest(server.id)
        resumed = guest.resumed_tick(offset)
        self.assertIsNotNone(resumed, 'no TICK after the revert')
        self.assertTrue(low - 1 <= resumed <= high + 3,
                        'counter resumed at %d, the snapshot was taken '
                        'between ticks %d and %d' % (resumed, low, high))
        guest.wait_for_agent(timeout=180)
        self.assertGuestHolds(guest, early, before)
        # still on the files Nova names; the other snapshot still reverts
        self.assertEqual(disks, self._disk_files(server))
        self.assertEqual(snap_id, self.tree(server.id)['current'])
        self.assertEqual('available', self.states(server.id)[other][0])

        self.stop(server)
        guest = self.start(server)
        self.assertGuestHolds(guest, early, before)
        self.assertEqual(disks, self._disk_files(server))
        base.cli('server', 'reboot', '--hard', '--wait', server.id,
                 as_json=False)
        guest = self.running_guest(server.id)
        self.assertGuestHolds(guest, early, before)

    def assertGuestHolds(self, guest, early, before):
        self.assertEqual(early, guest.sha256('/mnt/vda/early.bin'))
        self.assertEqual(before, guest.sha256('/mnt/vda/before.bin'))
        self.assertIsNone(guest.sha256('/mnt/vda/after.bin'))

    def _disk_files(self, server):
        """{target: file} of the server's domain now."""
        return {d.target: d.path for d in domain_xml.writable_disks(
            self.guest(server.id).dom.XMLDesc(0))}
