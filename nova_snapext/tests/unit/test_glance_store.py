"""The glance store's rules, against a fake of Nova's image API.

Bundles here are real bundles (bundle.write) of small members; the store
talks to the fake through the real nova_snapext.glance.Images.
"""

import hashlib
import io
import os
import shutil

import fixtures
import testtools

from nova_snapext import bundle
from nova_snapext import exception
from nova_snapext import glance
from nova_snapext.stores import glance as glance_store
from nova_snapext.tests.unit import fake_images
from nova_snapext.tests.unit import fakes
from nova_snapext.tests.unit import test_bundle

MEMORY = b'the guest RAM ' * 1000
DIGESTS = b'per-cluster digests'
DISK = b'a qcow2 delta, never kept by a fetch'
CONTEXT = {'auth_token': 'user-token', 'project_id': 'p1'}


def _record(snapshot_id, parent_id=None):
    record = fakes.record(snapshot_id, parent_id)
    record['memory'].update(bytes=len(MEMORY),
                            sha256=hashlib.sha256(MEMORY).hexdigest())
    record['disks'][0]['digest'] = {'algorithm': 'sha256-clusters',
                                    'root': 'e' * 64,
                                    'location': 'vda.digests'}
    return record


def _bundle(record, since=None, memory=MEMORY):
    members = [
        bundle.bytes_member(bundle.RECORD, 'record',
                            fakes.manifest.dumps(record).encode('utf-8')),
        bundle.bytes_member(bundle.DOMAIN_XML, 'domain-xml',
                            record['domain_xml'].encode('utf-8')),
        bundle.bytes_member(bundle.NOVA, 'nova', b'{}'),
        bundle.bytes_member(bundle.MEMORY, 'memory', memory),
        bundle.Member(bundle.disk_member('vda'), 'disk', len(DISK),
                      lambda: iter([DISK]), target='vda'),
        bundle.bytes_member(bundle.digests_member('vda'), 'digests',
                            DIGESTS),
    ]
    out = io.BytesIO()
    bundle.write(out, {'snapshot_id': record['id'],
                       'instance_uuid': record['instance_uuid'],
                       'since': since}, members)
    return out.getvalue()


class ServiceImages(glance.Images):
    """Images whose service context is a marker the test can see."""

    def service_context(self):
        return 'service'


class GlanceStoreTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.api = fake_images.FakeImageAPI()
        self.store = glance_store.GlanceStore(
            fakes.conf(file_store_path=self.root),
            images=ServiceImages(self.api))

    def commit(self, record):
        staging = self.store.stage(record['instance_uuid'], record['id'])
        with open(os.path.join(staging, 'memory.save'), 'wb') as f:
            f.write(MEMORY)
        with open(os.path.join(staging, 'vda.digests'), 'wb') as f:
            f.write(DIGESTS)
        self.store.commit(record)

    def durable(self, record, since=None):
        """Commit ``record`` and upload its bundle, as the engine does."""
        self.commit(record)
        base = self.store.delta_base(record)
        self.assertEqual(since, base and base[0])
        durable = self.store.upload_bundle(
            CONTEXT, record, iter([_bundle(record, since)]), base)
        fresh = self.store.get(record['id'])
        fresh['durable'] = durable
        self.store.update(fresh)
        return fresh

    def live_images(self):
        return set(self.api.images)

    # -- upload --

    def test_first_bundle_is_standalone_and_hidden(self):
        record = self.durable(_record('s1'))
        image = self.api.images[record['durable']['image_id']]
        self.assertEqual('active', image['status'])
        self.assertTrue(image['os_hidden'])
        self.assertEqual({'snapext_bundle_of': 's1',
                          'snapext_instance': record['instance_uuid']},
                         {k: v for k, v in image['properties'].items()
                          if k.startswith('snapext_')})
        self.assertEqual({'image_id': image['id'], 'since': None,
                          'chain': [image['id']],
                          'bytes': image['size']}, record['durable'])

    def test_a_child_of_a_durable_parent_is_a_delta_on_it(self):
        parent = self.durable(_record('s1'))
        child = self.durable(_record('s2', 's1'), since='s1')
        self.assertEqual('s1', child['durable']['since'])
        self.assertEqual([child['durable']['image_id'],
                          parent['durable']['image_id']],
                         child['durable']['chain'])
        self.assertEqual('s1', self.api.images[child['durable'][
            'image_id']]['properties']['snapext_since'])

    def test_a_child_of_a_parent_not_in_glance_is_standalone(self):
        self.commit(_record('s1'))
        self.assertIsNone(self.store.delta_base(_record('s2', 's1')))
        self.assertIsNone(self.store.delta_base(_record('s3', 'gone')))

    def test_a_failed_upload_leaves_no_image(self):
        self.commit(_record('s1'))
        self.api.fail_upload = IOError('glance went away')
        self.assertRaises(exception.ImageTransferFailed,
                          self.store.upload_bundle, CONTEXT,
                          _record('s1'), iter([b'x' * 100]), None)
        self.assertEqual(set(), self.live_images())

    # -- deletion --

    def test_delete_keeps_a_parent_bundle_a_child_delta_needs(self):
        parent = self.durable(_record('s1'))
        child = self.durable(_record('s2', 's1'), since='s1')
        self.store.delete('s1', context=CONTEXT)
        # the child's delta still reads the parent's bundle, marked so that
        # no host rebuilds the deleted snapshot from it
        self.assertEqual(set(child['durable']['chain']), self.live_images())
        kept = self.api.images[parent['durable']['image_id']]
        self.assertEqual('true', kept['properties']['snapext_deleted'])
        self.assertRaises(exception.NotFound, self.store.find_bundle,
                          CONTEXT, 's1')
        self.assertEqual(child['durable']['image_id'],
                         self.store.bundle_image(CONTEXT, 's2'))
        self.store.delete('s2', context=CONTEXT)
        self.assertEqual(set(), self.live_images())
        self.assertEqual(sorted(child['durable']['chain']),
                         sorted(self.api.deleted))
        self.assertIn(parent['durable']['image_id'], self.api.deleted)

    def test_delete_of_a_leaf_keeps_its_parent(self):
        parent = self.durable(_record('s1'))
        self.durable(_record('s2', 's1'), since='s1')
        self.store.delete('s2', context=CONTEXT)
        self.assertEqual({parent['durable']['image_id']},
                         self.live_images())
        self.assertEqual(parent['durable']['image_id'],
                         self.store.bundle_image(CONTEXT, 's1'))

    def test_a_kept_bundle_glance_will_not_mark_is_logged(self):
        self.durable(_record('s1'))
        self.durable(_record('s2', 's1'), since='s1')

        def refuse(context, image_id, meta, data=None, purge_props=False):
            raise RuntimeError('glance said no')
        self.api.update = refuse
        logged = self.useFixture(fixtures.FakeLogger())
        self.store.delete('s1', context=CONTEXT)
        self.assertRaises(exception.NotFound, self.store.get, 's1')
        self.assertIn('not marked deleted (glance said no)', logged.output)

    def test_forget_deletes_every_bundle_of_the_instance(self):
        self.durable(_record('s1'))
        self.durable(_record('s2', 's1'), since='s1')
        self.durable(_record('s3', 's1'), since='s1')
        self.assertEqual(3, self.store.forget(_record('s1')[
            'instance_uuid'], context=CONTEXT))
        self.assertEqual(set(), self.live_images())

    def test_delete_without_a_context_acts_as_the_service(self):
        record = self.durable(_record('s1'))
        deleted = []
        self.api.delete = lambda context, image_id: deleted.append(
            (context, image_id))
        self.store.delete('s1')
        self.assertEqual([('service', record['durable']['image_id'])],
                         deleted)

    def break_record(self, record):
        with open(self.store.local_path(record, 'manifest.json'), 'w') as f:
            f.write('{not json')

    def test_a_broken_record_takes_its_bundle_found_in_glance(self):
        record = self.durable(_record('s1'))
        self.break_record(record)
        self.store.delete_broken(record['instance_uuid'], 's1')
        self.assertEqual(set(), self.live_images())

    def test_a_broken_record_keeps_the_bundle_a_child_needs(self):
        parent = self.durable(_record('s1'))
        child = self.durable(_record('s2', 's1'), since='s1')
        self.break_record(parent)
        self.store.delete_broken(parent['instance_uuid'], 's1')
        self.assertEqual(set(child['durable']['chain']), self.live_images())
        self.assertRaises(exception.NotFound, self.store.find_bundle,
                          CONTEXT, 's1')

    def test_images_to_drop_follows_whole_chains(self):
        a = {'durable': {'chain': ['A']}}
        b = {'durable': {'chain': ['B', 'A']}}
        c = {'durable': {'chain': ['C', 'B', 'A']}}
        # b goes while c still reads it: nothing goes
        self.assertEqual([], glance_store.images_to_drop([b], [a, c]))
        # then a and c go: all three
        self.assertEqual(['C', 'B', 'A'],
                         glance_store.images_to_drop([c, a], []))
        self.assertEqual([], glance_store.images_to_drop([{}], [a]))

    # -- fetching a lost cache entry --

    def memory_path(self, record):
        return self.store.local_path(record, 'memory.save')

    def test_fetch_restores_a_lost_memory_image(self):
        record = self.durable(_record('s1'))
        os.unlink(self.memory_path(record))
        self.assertEqual('its memory image is not in the cache',
                         self.store.needs_fetch(record))
        fetched = self.store.fetch(CONTEXT, 's1')
        self.assertEqual(record, fetched)
        with open(self.memory_path(record), 'rb') as f:
            self.assertEqual(MEMORY, f.read())
        self.assertIsNone(self.store.needs_fetch(record))
        # the disk member was verified, not kept; no fetch area left
        self.assertEqual(['manifest.json', 'memory.save', 'vda.digests'],
                         sorted(os.listdir(os.path.dirname(
                             self.memory_path(record)))))
        self.assertEqual([record['id']], os.listdir(
            os.path.join(self.root, record['instance_uuid'])))

    def test_fetch_rebuilds_a_lost_record_found_in_glance(self):
        record = self.durable(_record('s1'))
        os.unlink(self.memory_path(record))
        os.unlink(self.store.local_path(record, 'manifest.json'))
        self.assertRaises(exception.NotFound, self.store.get, 's1')
        fetched = self.store.fetch(CONTEXT, 's1')
        self.assertEqual(fetched, self.store.get('s1'))
        self.assertEqual(record['durable']['image_id'],
                         fetched['durable']['image_id'])
        with open(self.store.local_path(fetched, 'vda.digests'), 'rb') as f:
            self.assertEqual(DIGESTS, f.read())

    def test_fetch_refuses_a_bundle_that_lies_and_changes_nothing(self):
        record = self.durable(_record('s1'))
        image_id = record['durable']['image_id']
        data = self.api.data[image_id]
        at = data.index(MEMORY)
        # one byte of the memory image changed in Glance
        self.api.data[image_id] = (data[:at] + b'X' + data[at + 1:])
        with open(self.memory_path(record), 'wb') as f:
            f.write(b'damaged')
        self.assertRaises(exception.SnapextError, self.store.fetch,
                          CONTEXT, 's1')
        with open(self.memory_path(record), 'rb') as f:
            self.assertEqual(b'damaged', f.read())
        self.assertEqual([record['id']], os.listdir(
            os.path.join(self.root, record['instance_uuid'])))

    def test_fetch_refuses_another_snapshots_bundle(self):
        record = self.durable(_record('s1'))
        other = self.durable(_record('s2', 's1'), since='s1')
        os.unlink(self.memory_path(record))
        self.assertRaises(exception.Conflict, self.store.fetch, CONTEXT,
                          's1', other['durable']['image_id'])
        self.assertFalse(os.path.exists(self.memory_path(record)))

    def test_fetch_of_a_snapshot_glance_does_not_have(self):
        self.assertRaises(exception.NotFound, self.store.fetch, CONTEXT,
                          'nowhere')


class DurableEngineTest(test_bundle.BundleFixture):
    """The engine's upload and fetch, on real qcow2 states (qemu-img)."""

    def setUp(self):
        super().setUp()
        self.api = fake_images.FakeImageAPI()
        # the same directory, now as the glance store's cache
        self.src.store = glance_store.GlanceStore(
            self.src.conf, images=ServiceImages(self.api))

    def bundle_data(self, snapshot_id):
        return self.api.data[self.src.store.get(snapshot_id)['durable'][
            'image_id']]

    def test_bundles_are_standalone_then_deltas_and_import(self):
        first = self.src.make_durable('s1', CONTEXT)
        second = self.src.make_durable('s2', CONTEXT)
        self.assertIsNone(first['since'])
        self.assertEqual('s1', second['since'])
        self.assertEqual([second['image_id'], first['image_id']],
                         second['chain'])
        self.assertLess(len(self.bundle_data('s2')),
                        len(self.bundle_data('s1')))
        self.assertEqual(first, self.src.store.get('s1')['durable'])
        # what Glance holds is a valid chain of bundles
        self._import(self.bundle_data('s1'))
        record = self._import(self.bundle_data('s2'))
        self.assertEqual(test_bundle._raw(self.disk, 'snapext-s2'),
                         test_bundle._raw(record['disks'][0]['path']))

    def test_a_failed_upload_leaves_no_image_and_no_durable(self):
        self.api.fail_upload = IOError('glance went away')
        self.assertRaises(exception.ImageTransferFailed,
                          self.src.make_durable, 's1', CONTEXT)
        self.assertEqual({}, self.api.images)
        self.assertNotIn('durable', self.src.store.get('s1'))

    def test_the_file_store_keeps_nothing_elsewhere(self):
        self.assertIsNone(self.dst.make_durable('s1', CONTEXT))

    def test_a_lost_cache_entry_is_fetched_for_a_resume(self):
        self.src.make_durable('s1', CONTEXT)
        self.src.make_durable('s2', CONTEXT)
        record = self.src.store.get('s2')
        memory = self.src.store.local_path(record, 'memory.save')
        with open(memory, 'rb') as f:
            want = f.read()
        shutil.rmtree(os.path.dirname(memory))
        got = self.src.resumable('s2', CONTEXT)
        # the chain known from the parent's cached record
        self.assertEqual(record['durable']['chain'], got['durable']['chain'])
        with open(memory, 'rb') as f:
            self.assertEqual(want, f.read())
        # and it verifies: memory image and disk state against the digests
        self.assertEqual('ok', self.src.verify('s2')['result'])

    def test_a_damaged_cached_memory_image_is_fetched_again(self):
        self.src.make_durable('s1', CONTEXT)
        record = self.src.store.get('s1')
        memory = self.src.store.local_path(record, 'memory.save')
        with open(memory, 'r+b') as f:
            f.write(b'X')
        record, path = self.src._verified_resumable(record, CONTEXT)
        self.assertEqual(memory, path)
        self.assertEqual('ok', self.src.verify('s1')['result'])

    def test_a_deleted_bundle_is_uploaded_again_parents_first(self):
        first = self.src.make_durable('s1', CONTEXT)
        second = self.src.make_durable('s2', CONTEXT)
        record = self.src.store.get('s1')
        record['nova'] = {'project_id': 'p1'}
        self.src.store.update(record)
        self.api.delete(None, first['image_id'])
        for snapshot_id in ('s1', 's2'):
            self.src.redo_durable(snapshot_id, first['image_id'])
        redone = [self.src.store.get(s)['durable'] for s in ('s1', 's2')]
        # s1 standalone again, shared with its project; s2 a delta on it
        self.assertIsNone(redone[0]['since'])
        image = self.api.images[redone[0]['image_id']]
        self.assertEqual(('shared', 'p1'), (
            image['visibility'], image['properties']['instance_owner']))
        self.assertEqual([redone[1]['image_id'], redone[0]['image_id']],
                         redone[1]['chain'])
        # the old delta, useless without its base, is gone
        self.assertNotIn(second['image_id'], self.api.images)
        self.assertEqual({redone[0]['image_id'], redone[1]['image_id']},
                         set(self.api.images))
        # done once: a second notice changes nothing
        self.assertIsNone(self.src.redo_durable('s2', first['image_id']))
        # and a lost cache entry comes back from the new bundle
        shutil.rmtree(os.path.dirname(self.src.store.local_path(
            self.src.store.get('s2'), 'memory.save')))
        self.assertEqual(redone[1]['chain'], self.src.resumable(
            's2', CONTEXT)['durable']['chain'])

    # -- a cache entry lost altogether (the agent's get) --

    def lose(self, snapshot_id):
        """Remove a snapshot's whole cache entry; downloads count anew."""
        record = self.src.store.get(snapshot_id)
        shutil.rmtree(os.path.dirname(
            self.src.store.local_path(record, 'manifest.json')))
        del self.api.downloaded[:]
        return record

    def runs_here(self, *uuids):
        self.useFixture(fixtures.MockPatchObject(
            self.src, '_guest_or_none',
            lambda uuid: object() if uuid in uuids else None))

    def test_a_lost_record_is_rebuilt_where_its_instance_runs(self):
        self.src.make_durable('s1', CONTEXT)
        record = self.lose('s1')
        self.runs_here(record['instance_uuid'])
        got = self.src.rebuild_lost('s1', CONTEXT)
        self.assertEqual(got, self.src.store.get('s1'))
        self.assertEqual(record['durable']['image_id'],
                         got['durable']['image_id'])
        self.assertEqual([record['durable']['image_id']], self.api.downloaded)
        self.assertEqual('ok', self.src.verify('s1')['result'])
        # a second request finds it in the cache: no second download
        self.assertEqual(self.src.store.get('s1'),
                         self.src._fetch(CONTEXT, 's1', None, 'again'))
        self.assertEqual(1, len(self.api.downloaded))

    def test_another_host_answers_not_found_without_a_download(self):
        self.src.make_durable('s1', CONTEXT)
        record = self.lose('s1')
        self.runs_here()
        err = self.assertRaises(exception.NotFound, self.src.rebuild_lost,
                                's1', CONTEXT)
        self.assertIn(record['instance_uuid'], str(err))
        self.assertEqual([], self.api.downloaded)
        self.assertRaises(exception.NotFound, self.src.store.get, 's1')

    def test_a_snapshot_glance_never_had_is_not_found(self):
        self.runs_here()
        self.assertRaises(exception.NotFound, self.src.rebuild_lost,
                          'nowhere', CONTEXT)
        # the file store keeps nothing to rebuild from
        self.assertRaises(exception.NotFound, self.dst.rebuild_lost, 's1',
                          CONTEXT)

    def test_glance_failing_to_answer_is_not_a_not_found(self):
        def broken(context, filters):
            raise RuntimeError('glance is down')
        self.api.get_all = broken
        err = self.assertRaises(exception.ImageTransferFailed,
                                self.src.rebuild_lost, 's1', CONTEXT)
        self.assertIn('glance is down', str(err))
