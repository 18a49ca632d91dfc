"""Bundles through the real Glance: the agent's export and import (RPC 2.3).

A full snapshot taken with ``openstack server image create`` is exported
by the nova-compute host's agent into a queued Glance image (what nova-api
makes for ``snapextExport``), read back with ``openstack image save`` and
checked member by member with snapext's own bundle reader; a second
snapshot goes as a delta on the first.  After the original records are
deleted, both bundles are imported from Glance; each import gives an image
that ``openstack server create`` boots, resuming the snapshot's memory:
the proof is the counter and the files inside the new guests.  A crafted
bundle is refused, leaving nothing behind.
"""

import os
import time
import uuid

import fixtures
from openstack.image.v2 import image as image_mod
from oslo_config import cfg

from nova_snapext import bundle
from nova_snapext import conf as snapext_conf
from nova_snapext import exception
from nova_snapext.rpc import api as rpc_api
from nova_snapext.tests.integration import base

STORE = os.path.join(base.DATA, 'snapext')
TRANSPORT_URL = 'rabbit://guest:guest@127.0.0.1:5672/snapext-aio'
BEFORE = '/mnt/vda/before.bin'
WRITTEN = '/mnt/vda/written.bin'
N_MIB = 16
MIB = 1 << 20


def agent_client():
    conf = cfg.ConfigOpts()
    snapext_conf.register_opts(conf)
    conf([], project='snapext')
    conf.set_override('transport_url', TRANSPORT_URL, 'snapext')
    return rpc_api.AgentAPI(conf)


def request_context(conn):
    """The context nova-api would send: the user's token and catalog.

    Its catalog has keystonemiddleware's v2 shape (``publicURL``...).
    """
    access = conn.session.auth.get_access(conn.session)
    catalog = [{'type': s['type'], 'name': s['name'], 'endpoints': [
        {'region': e['region'], '%sURL' % e['interface']: e['url']}
        for e in s['endpoints']]}
        for s in access.service_catalog.catalog if s['type'] == 'image']
    return {'auth_token': access.auth_token, 'user_id': access.user_id,
            'project_id': access.project_id, 'roles': access.role_names,
            'service_catalog': catalog,
            'request_id': 'req-%s' % uuid.uuid4()}


class GlanceBundleTest(base.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.agent = agent_client()

    def setUp(self):
        super().setUp()
        self.ctxt = request_context(self.demo)
        self.workdir = self.useFixture(fixtures.TempDir()).path

    def _snapshot(self, server, guest):
        """A full snapshot's id, the ticks around it."""
        image, ticks = self.full_snapshot_image(server, guest)
        return image['properties']['snapext_manifest'], ticks

    def _queued(self, what):
        """An image with no data yet, as nova-api makes for an export."""
        image = self.demo.image._create(
            image_mod.Image, name=base.unique_name(what), disk_format='raw',
            container_format='bare')
        self.addCleanup(self.admin.image.delete_image, image.id,
                        ignore_missing=True)
        self.assertEqual('queued', image.status)
        return image.id

    def _export(self, host, snapshot_id, since=None):
        image_id = self._queued('bundle')
        spec = {'snapshot_id': snapshot_id, 'since': since,
                'image_id': image_id}
        deadline = time.monotonic() + 60
        while True:
            try:
                result = self.agent.export(self.ctxt, host, spec)
                break
            except exception.Conflict as exc:
                # the disk digests of a fresh snapshot come a moment later
                self.assertIn('no digest', str(exc))
                self.assertLess(time.monotonic(), deadline, str(exc))
                time.sleep(1)
        self.assertEqual((image_id, snapshot_id, since), (
            result['image_id'], result['snapshot_id'], result['since']))
        started = time.monotonic()
        while True:
            status = self.agent.status(self.ctxt, host, result['op_id'])
            if status['state'] != 'running':
                break
            self.assertLess(time.monotonic() - started, 600)
            time.sleep(0.5)
        self.assertEqual('done', status['state'], status)
        image = self.demo.image.get_image(image_id)
        self.assertEqual('active', image.status)
        print('export of %s%s: %d bytes in %.1f s' % (
            snapshot_id, ' since %s' % since if since else '', image.size,
            time.monotonic() - started))
        return image_id

    def _saved(self, image_id):
        """``openstack image save``, then every member checked."""
        path = os.path.join(self.workdir, image_id)
        base.cli('image', 'save', '--file', path, image_id, as_json=False)
        members = os.path.join(self.workdir, image_id + '.members')
        with open(path, 'rb') as f:
            index, _ = bundle.extract(f, lambda index: members)
        for member in index['members']:
            os.unlink(os.path.join(members, member['name']))
        for directory in ('disks', ''):
            os.rmdir(os.path.join(members, directory))
        return index, path

    def _boot(self, image_id):
        """``openstack server create`` from the image; its guest."""
        name = base.unique_name('imported')
        server = base.cli('server', 'create', '--image', image_id,
                          '--flavor', base.FLAVOR, '--nic', 'none',
                          '--wait', name)
        self.addCleanup(self.delete_server, server['id'])
        guest = self.guest(server['id'])
        guest.wait_for_agent(timeout=180)
        return guest

    def _import(self, host, image_id, name):
        result = self.agent.import_bundle(self.ctxt, host, {
            'image_id': image_id, 'name': name})
        self.addCleanup(self.admin.image.delete_image, result['image_id'],
                        ignore_missing=True)
        image = base.cli('image', 'show', result['image_id'])
        self.assertEqual(('active', 'qcow2', name, 256), (
            image['status'], image['disk_format'], image['name'],
            image['min_ram']))
        props = image['properties']
        self.assertEqual(result['snapshot_id'], props['snapext_manifest'])
        # what the source image's server needed to boot, carried over
        for key in ('hw_qemu_guest_agent', 'kernel_id', 'ramdisk_id',
                    'os_command_line'):
            self.assertIn(key, props)
        return result

    def _images_named(self, name):
        return [i.id for i in self.admin.image.images(name=name)]

    def _leftovers(self, instance_uuid):
        directory = os.path.join(STORE, instance_uuid)
        return sorted(n for n in os.listdir(directory)
                      if n.startswith('.')) if os.path.isdir(
                          directory) else []

    def test_export_import_boot(self):
        server, guest = self.boot(base.unique_name('bundles'))
        host = self.admin.compute.get_server(server.id).compute_host
        before = guest.write_file(BEFORE)
        s1, ticks1 = self._snapshot(server, guest)
        written = guest.write_file(WRITTEN, mib=N_MIB)
        s2, ticks2 = self._snapshot(server, guest)

        # Export: the full snapshot, then the second as a delta on it.
        self.assertRaises(exception.NotFound, self.agent.export, self.ctxt,
                          host, {'snapshot_id': str(uuid.uuid4()),
                                 'since': None,
                                 'image_id': self._queued('none')})
        self.assertRaises(exception.InvalidRequest, self.agent.export,
                          self.ctxt, host, {'snapshot_id': s1, 'since': s2,
                                            'image_id': self._queued('bad')})
        full = self._export(host, s1)
        delta = self._export(host, s2, since=s1)
        index, full_path = self._saved(full)
        self.assertEqual((s1, None), (index['snapshot_id'], index['since']))
        self.assertEqual(
            {'record', 'domain-xml', 'nova', 'memory', 'disk', 'digests'},
            {m['kind'] for m in index['members']})
        index, _ = self._saved(delta)
        self.assertEqual((s2, s1), (index['snapshot_id'], index['since']))
        disk_bytes = sum(m['bytes'] for m in index['members']
                         if m['kind'] == 'disk')
        print('delta after writing %d MiB: disk members %d bytes'
              % (N_MIB, disk_bytes))
        self.assertLessEqual(disk_bytes, 1.1 * N_MIB * MIB + MIB)

        # An import of a snapshot this host has: 409, nothing made.
        name = base.unique_name('boot')
        self.assertRaises(exception.Conflict, self.agent.import_bundle,
                          self.ctxt, host, {'image_id': full, 'name': name})
        self.assertEqual([], self._images_named(name))

        # The originals go (their createImage images with them).
        for snapshot_id in (s2, s1):
            base.cli('server', 'snapshot', 'delete', '--wait', snapshot_id,
                     as_json=False)

        # A crafted bundle: one byte of the memory image flipped.
        with open(full_path, 'rb') as f:
            data = bytearray(f.read())
        data[data.index(b'LibvirtQemudSave') + 4096] ^= 0xff
        bad_path = os.path.join(self.workdir, 'bad.bundle')
        with open(bad_path, 'wb') as f:
            f.write(data)
        bad = base.cli('image', 'create', '--disk-format', 'raw',
                       '--container-format', 'bare', '--file', bad_path,
                       base.unique_name('crafted'))
        self.addCleanup(self.admin.image.delete_image, bad['id'],
                        ignore_missing=True)
        exc = self.assertRaises(exception.InvalidRequest,
                                self.agent.import_bundle, self.ctxt, host,
                                {'image_id': bad['id'], 'name': name})
        self.assertIn('member memory.save does not match its sha256',
                      str(exc))
        self.assertEqual([], self._images_named(name))
        self.assertEqual([], self._leftovers(server.id))
        self.assertEqual(404, self.api(
            'GET', '/snapext-snapshots/%s' % s1).status_code)

        # Import both, in order; each gives a bootable image.
        one = self._import(host, full, name + '-1')
        two = self._import(host, delta, name + '-2')
        self.assertEqual((s1, s2), (one['snapshot_id'], two['snapshot_id']))

        # Servers booted from them resume the snapshots' memory.
        for result, (low, high), files in (
                (two, ticks2, {BEFORE: before, WRITTEN: written}),
                (one, ticks1, {BEFORE: before, WRITTEN: None})):
            clone = self._boot(result['image_id'])
            first = clone.ticks()[0][0]
            self.assertTrue(low <= first <= high + 2,
                            'counter started at %d, the snapshot was taken '
                            'between ticks %d and %d' % (first, low, high))
            for path, digest in files.items():
                self.assertEqual(digest, clone.sha256(path), path)
