"""The engine's Cinder operations on real qcow2 files, domain shut off.

A shut-off domain (a fake virDomain with file disks) makes every drop an
offline ``qemu-img snapshot -d``; the live QMP path is the same
``_drop_states`` the engine's delete uses, proven on the real guest.
"""

import os
import subprocess
from unittest import mock

import fixtures
from oslo_config import cfg
import testtools

from nova_snapext.capture import engine as engine_mod
from nova_snapext.capture import qemu_img
from nova_snapext import conf as snapext_conf
from nova_snapext import exception
from nova_snapext.tests.unit import fakes

UUID = '6f1c7c1e-0000-4000-8000-000000000001'
XML = """<domain type='qemu'><name>i-1</name><uuid>%s</uuid><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='%s'/><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='%s'/><target dev='vdb' bus='virtio'/></disk>
</devices></domain>"""


class FakeDom(object):

    def __init__(self, xml):
        self.xml = xml

    def XMLDesc(self, flags=0):
        return self.xml

    def UUIDString(self):
        return UUID

    def name(self):
        return 'i-1'

    def isActive(self):
        return False


class CinderOpsTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        root = self.useFixture(fixtures.TempDir()).path
        conf = cfg.ConfigOpts()
        snapext_conf.register_opts(conf)
        conf([], project='snapext')
        conf.set_override('file_store_path', os.path.join(root, 'store'),
                          'snapext')
        conf.set_override('lock_path', os.path.join(root, 'locks'),
                          'snapext')
        self.root_disk = os.path.join(root, 'disk')
        self.volume = os.path.join(root, 'volume-1')
        for path in (self.root_disk, self.volume):
            subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path,
                            '16M'], check=True)
        self.engine = engine_mod.Engine(conf, conn=mock.Mock())
        dom = FakeDom(XML % (UUID, self.root_disk, self.volume))
        self.engine._lookup = lambda ident: dom

    def commit(self, snapshot_id, memory=True, owner=None):
        name = 'snapext-' + snapshot_id
        disks = [{'target': 'vda', 'role': 'root', 'path': self.root_disk,
                  'format': 'qcow2', 'virtual_size': 16 << 20,
                  'snapshot': name, 'backing': None, 'volume_id': None},
                 {'target': 'vdb', 'role': 'volume', 'path': self.volume,
                  'format': 'qcow2', 'virtual_size': 16 << 20,
                  'snapshot': name, 'backing': None, 'volume_id': 'vol-1',
                  'cinder_snapshot_id': owner}]
        if not memory:
            disks = disks[1:]
        record = fakes.record(snapshot_id, instance_uuid=UUID, disks=disks)
        if not memory:
            record.update(kind='disks', memory=None)
        for disk in disks:
            qemu_img.snapshot_create(disk['path'], name)
        self.engine.store.stage(UUID, snapshot_id)
        self.engine.store.commit(record)
        return record

    def names(self, path):
        return qemu_img.snapshot_names(path)

    def test_adopt_then_record_delete_leaves_cinders_state(self):
        self.commit('full-1')
        disk = self.engine.adopt('full-1', 'vol-1', 'volume-1', 'cs-1')
        self.assertEqual('cs-1', disk['cinder_snapshot_id'])
        self.assertEqual('cs-1', self.engine.store.get('full-1')['disks'][1][
            'cinder_snapshot_id'])
        # idempotent for the same owner, refused for another
        self.engine.adopt('full-1', 'vol-1', 'volume-1', 'cs-1')
        self.assertRaises(exception.Conflict, self.engine.adopt, 'full-1',
                          'vol-1', 'volume-1', 'cs-2')
        self.assertRaises(exception.InvalidRequest, self.engine.adopt,
                          'full-1', 'vol-1', 'volume-2', 'cs-1')
        self.assertRaises(exception.NotFound, self.engine.adopt, 'full-1',
                          'vol-9', 'volume-1', 'cs-1')

        self.engine.delete('full-1')
        self.assertRaises(exception.NotFound, self.engine.store.get,
                          'full-1')
        self.assertEqual([], self.names(self.root_disk))
        self.assertEqual(['snapext-full-1'], self.names(self.volume))
        # recovery does not take it for an interrupted capture's
        self.engine.conn.lookupByUUIDString = lambda u: self.engine._lookup(
            u)
        self.engine.store.set_head(UUID, None)
        self.engine.recover()
        self.assertEqual(['snapext-full-1'], self.names(self.volume))
        # Cinder's delete releases it; no record is left to tell
        result = self.engine.release(UUID, [{
            'target': 'vdb', 'file': 'volume-1', 'volume_id': 'vol-1',
            'name': 'snapext-full-1'}])
        self.assertEqual({'released': ['vdb'], 'records': {}}, result)
        self.assertEqual([], self.names(self.volume))

    def test_release_marks_a_full_record_unavailable(self):
        record = self.commit('full-2', owner='cs-9')
        self.assertEqual((True, None), self.engine.availability(record))
        result = self.engine.release(UUID, [{
            'target': 'vdb', 'file': 'volume-1', 'volume_id': 'vol-1',
            'name': 'snapext-full-2'}])
        self.assertEqual({'full-2': 'unavailable'}, result['records'])
        ok, reason = self.engine.availability(
            self.engine.store.get('full-2'))
        self.assertFalse(ok)
        self.assertIn('no longer holds', reason)
        self.assertEqual(['snapext-full-2'], self.names(self.root_disk))

    def test_release_of_a_cinder_capture_deletes_its_record(self):
        self.commit('disks-1', memory=False, owner='cs-1')
        result = self.engine.release(UUID, [{
            'target': 'vdb', 'file': 'volume-1', 'volume_id': 'vol-1',
            'name': 'snapext-disks-1'}])
        self.assertEqual({'disks-1': 'deleted'}, result['records'])
        self.assertEqual([], self.engine.store.list(UUID))
        self.assertEqual([], self.names(self.volume))

    def test_release_checks_the_device_is_the_volume(self):
        self.commit('disks-2', memory=False, owner='cs-1')
        self.assertRaises(exception.InvalidRequest, self.engine.release,
                          UUID, [{'target': 'vdb', 'file': 'volume-2',
                                  'volume_id': 'vol-1',
                                  'name': 'snapext-disks-2'}])
        self.assertRaises(exception.InvalidRequest, self.engine.release,
                          UUID, [{'target': 'vdz', 'file': None,
                                  'volume_id': 'vol-1',
                                  'name': 'snapext-disks-2'}])
        self.assertEqual(['snapext-disks-2'], self.names(self.volume))
