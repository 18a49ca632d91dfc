"""Snapshots that outlive the compute host's copy: the glance store.

In the real cloud, whose nova-compute runs ``[snapext] store = glance``:
a full snapshot through ``openstack server image create`` puts its bundle
in Glance as one hidden image the snapshot's image links to; the second
snapshot's bundle is a delta (its disk member holds what the guest wrote
in between); with the host's cached memory image of the first snapshot
gone, a revert through the API fetches it and the guest continues from the
snapshot; with the whole cache entry gone (record, memory image,
digests), ``openstack server snapshot show``, the server's snapshot list
and a revert work again, the host's agent rebuilding the entry from the
bundle, and a server booted from the snapshot's image still resumes its
memory.  A volume-backed server's full snapshot (which nova-api takes, not
the driver) gets its bundle too, and reverts with its cached memory image
gone.  Proofs from inside the guests; no bundle image outlives its
snapshots.
"""

import hashlib
import json
import os
import shutil
import time

import openstack
from testtools import content

from nova_snapext import bundle
from nova_snapext.tests.integration import base

MIB = 1 << 20
WRITTEN_MIB = 8


class _Hashing(object):
    """A file object over a download that hashes what it hands out."""

    def __init__(self, raw):
        self.raw = raw
        self.sha512 = hashlib.sha512()
        self.count = 0

    def read(self, size=-1):
        data = self.raw.read(size)
        self.sha512.update(data)
        self.count += len(data)
        return data


class GlanceStoreTest(base.VolumeMixin, base.TestCase):

    def snapshot(self, server, guest):
        """A full snapshot: (its image, (tick before, tick after))."""
        return self.full_snapshot_image(server, guest, 'durable')

    def bundle_of(self, image):
        """The bundle image, verified whole: (its Glance view, index).

        Every byte is read back from Glance: its sha512 must be Glance's
        os_hash_value, and every member its size and sha256 in the index.
        """
        bundle_id = image['properties']['snapext_bundle']
        found = self.admin.image.get_image(bundle_id)
        self.assertEqual('active', found.status)
        self.assertTrue(found.is_hidden)
        self.assertEqual(image['properties']['snapext_manifest'],
                         found.properties['snapext_bundle_of'])
        response = self.admin.image.download_image(found, stream=True)
        data = _Hashing(response.raw)
        index, _ = bundle.extract(data, lambda index: None,
                                  wanted=lambda member: False)
        while data.read(MIB):
            pass
        self.assertEqual(found.size, data.count)
        self.assertEqual(found.hash_value, data.sha512.hexdigest())
        return found, index

    @staticmethod
    def members(index):
        return {m['name']: m for m in index['members']}

    def test_snapshots_outlive_the_local_copy(self):
        server, guest = self.boot(base.unique_name('durable'))
        before = guest.write_file('/mnt/vda/before.bin')

        # The first snapshot: a standalone bundle, linked, checksums right.
        image1, ticks1 = self.snapshot(server, guest)
        snap1 = image1['properties']['snapext_manifest']
        bundle1, index1 = self.bundle_of(image1)
        self.assertIsNone(index1['since'])
        with open(base.cached(server.id, snap1)) as f:
            record1 = json.load(f)
        self.assertEqual(bundle1.id, record1['durable']['image_id'])
        memory1 = self.members(index1)[bundle.MEMORY]
        self.assertEqual((record1['memory']['sha256'],
                          record1['memory']['bytes']),
                         (memory1['sha256'], memory1['bytes']))
        full_disk = self.members(index1)[bundle.disk_member('vda')]['bytes']

        # The second: a delta on the first, its disk ~ what was written.
        guest.write_file('/mnt/vda/after.bin', mib=WRITTEN_MIB)
        image2, _ = self.snapshot(server, guest)
        bundle2, index2 = self.bundle_of(image2)
        self.assertEqual(snap1, index2['since'])
        delta_disk = self.members(index2)[bundle.disk_member('vda')]['bytes']
        self.addDetail('bundle-bytes', content.text_content(
            'bundle 1 (standalone): %d bytes, disk member %d; bundle 2 '
            '(delta after writing %d MiB): %d bytes, disk member %d; memory '
            'image %d' % (bundle1.size, full_disk, WRITTEN_MIB, bundle2.size,
                          delta_disk, memory1['bytes'])))
        self.assertGreaterEqual(delta_disk, WRITTEN_MIB * MIB)
        self.assertLessEqual(delta_disk, 1.1 * WRITTEN_MIB * MIB + MIB)

        # The host loses its cached memory image of the first snapshot:
        # the revert through the API fetches it from Glance.
        os.unlink(base.cached(server.id, snap1, 'memory.save'))
        guest = self.revert_to(server.id, snap1, ticks1,
                               kept={'/mnt/vda/before.bin': before},
                               gone=['/mnt/vda/after.bin'])
        with open(base.cached(server.id, snap1, 'memory.save'), 'rb') as f:
            self.assertEqual(record1['memory']['sha256'],
                             hashlib.sha256(f.read()).hexdigest())

        # The whole cache entry (record, memory image, digests) is gone:
        # the API finds the snapshot again (its host's agent rebuilds the
        # entry from the bundle), and a revert to it works.
        guest.write_file('/mnt/vda/later.bin')
        guest.wait_for_tick(after=ticks1[1] + 10, timeout=180)
        shutil.rmtree(os.path.dirname(base.cached(server.id, snap1)))
        started = time.monotonic()
        shown = base.cli('server', 'snapshot', 'show', snap1)
        fetch_seconds = time.monotonic() - started
        self.addDetail('fetch', content.text_content(
            'show of a snapshot whose cache entry was lost: %.1f s (bundle '
            'image %d bytes, memory image %d bytes)'
            % (fetch_seconds, bundle1.size, memory1['bytes'])))
        self.assertEqual((snap1, server.id, 'available'),
                         (shown['id'], shown['server_id'], shown['state']))
        self.assertTrue(os.path.exists(base.cached(server.id, snap1,
                                                   'memory.save')))
        listed = {n['ID']: n for n in base.cli('server', 'snapshot', 'list',
                                               server.id)}
        self.assertEqual('available', listed[snap1]['State'])
        self.assertEqual(snap1, listed[image2['properties'][
            'snapext_manifest']]['Parent'])
        guest = self.revert_to(server.id, snap1, ticks1,
                               kept={'/mnt/vda/before.bin': before},
                               gone=['/mnt/vda/later.bin',
                                     '/mnt/vda/after.bin'])

        # Gone again: a server booted from the first snapshot's image
        # still resumes its memory, from what the bundle holds.
        shutil.rmtree(os.path.dirname(base.cached(server.id, snap1)))
        clone, clone_guest = self.boot(base.unique_name('durable-clone'),
                                       image=image1['id'])
        first = clone_guest.ticks()[0][0]
        self.assertGreaterEqual(first, ticks1[0])
        self.assertLessEqual(first, ticks1[1] + 2)
        self.assertEqual(before, clone_guest.sha256('/mnt/vda/before.bin'))
        self.assertIsNone(clone_guest.sha256('/mnt/vda/after.bin'))
        self.assertTrue(os.path.exists(base.cached(server.id, snap1)))

        # Deleting the first snapshot keeps its bundle: the second's delta
        # sits on it; deleting the second then takes both.
        # (--wait sees the snapshot gone: the kept bundle is marked, so the
        # host, whose cache no longer has it, does not rebuild it)
        base.cli('server', 'snapshot', 'delete', '--wait', snap1,
                 as_json=False)
        kept = self.admin.image.get_image(bundle1.id)
        self.assertEqual(('active', 'true'), (
            kept.status, kept.properties.get('snapext_deleted')))
        base.cli('server', 'snapshot', 'delete', '--wait',
                 image2['properties']['snapext_manifest'], as_json=False)
        for gone in (bundle1, bundle2):
            self.assertRaises(openstack.exceptions.NotFoundException,
                              self.admin.image.get_image, gone.id)
        self.assertEqual([], self.bundles_of(server))

    def bundles_of(self, server):
        """The hidden bundle images of a server's snapshots in Glance."""
        return [i.id for i in self.admin.image.images(is_hidden=True)
                if i.properties.get('snapext_instance') == server.id]

    def test_a_volume_backed_snapshot_outlives_the_local_copy(self):
        # nova-api takes this one (createImage of a volume-backed server),
        # not the driver: its bundle is made all the same.
        server = self.boot_from_volume(base.unique_name('durable-bfv'))
        guest = self.guest(server.id)
        guest.wait_for_agent(timeout=180)
        guest.wait_for_tick(timeout=120)
        before = guest.write_file('/mnt/vda/before.bin')
        image, ticks = self.snapshot(server, guest)
        snap = image['properties']['snapext_manifest']
        found, index = self.bundle_of(image)
        self.assertEqual(server.id, found.properties['snapext_instance'])
        with open(base.cached(server.id, snap)) as f:
            record = json.load(f)
        self.assertEqual(found.id, record['durable']['image_id'])
        # made once Cinder adopted the root volume's state (the agent waits
        # for it), so that a record rebuilt from it says it is Cinder's
        self.assertIsNotNone(record['disks'][0]['cinder_snapshot_id'])
        memory = self.members(index)[bundle.MEMORY]
        self.assertEqual((record['memory']['sha256'],
                          record['memory']['bytes']),
                         (memory['sha256'], memory['bytes']))
        self.addDetail('volume-backed-bundle', content.text_content(
            'bundle %d bytes, memory image %d bytes, uploaded in %s s'
            % (found.size, memory['bytes'], record['durable']['seconds'])))

        # The host loses the cached memory image: the revert fetches it.
        guest.write_file('/mnt/vda/after.bin')
        guest.wait_for_tick(after=ticks[1] + 10, timeout=180)
        os.unlink(base.cached(server.id, snap, 'memory.save'))
        self.revert_to(server.id, snap, ticks,
                       kept={'/mnt/vda/before.bin': before},
                       gone=['/mnt/vda/after.bin'])
        with open(base.cached(server.id, snap, 'memory.save'), 'rb') as f:
            self.assertEqual(record['memory']['sha256'],
                             hashlib.sha256(f.read()).hexdigest())

        base.cli('server', 'snapshot', 'delete', '--wait', snap,
                 as_json=False)
        self.assertRaises(openstack.exceptions.NotFoundException,
                          self.admin.image.get_image, found.id)
        self.assertEqual([], self.bundles_of(server))
