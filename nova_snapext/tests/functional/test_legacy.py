"""Migrating a layout the external-overlay release made, on the real guest.

The layout is built for real, the way commit 01d10ae's take and revert
made it: one libvirt external snapshot (LIVE | ATOMIC | NO_METADATA) that
moves every disk to ``<file>.snapext-<id8>``, a revert that restores the
memory image onto fresh overlays of the state files and redefines the
domain on them, and schema-1 manifests with the old field set.  Then
``Engine.recover()`` runs, and the guest proves the result.
"""

import hashlib
import json
import os
import subprocess
import time
import uuid

import fixtures
import libvirt
import testtools
from xml.etree import ElementTree as ET

from nova_snapext.capture import domain_xml
from nova_snapext.capture import legacy
from nova_snapext.capture import qemu_img
from nova_snapext.capture import quiesce
from nova_snapext.testing import guest as guest_mod
from nova_snapext.tests.functional import base

FILE = '/mnt/%s/%s.bin'


def old_snapshot_xml(name, overlays, excluded=(), memory_file=None):
    """domain_xml.snapshot_xml of 01d10ae."""
    snap = ET.Element('domainsnapshot')
    ET.SubElement(snap, 'name').text = name
    if memory_file:
        ET.SubElement(snap, 'memory', snapshot='external', file=memory_file)
    else:
        ET.SubElement(snap, 'memory', snapshot='no')
    disks_el = ET.SubElement(snap, 'disks')
    for target, path in overlays.items():
        disk = ET.SubElement(disks_el, 'disk', name=target,
                             snapshot='external', type='file')
        ET.SubElement(disk, 'driver', type='qcow2')
        ET.SubElement(disk, 'source', file=path)
    for target in excluded:
        ET.SubElement(disks_el, 'disk', name=target, snapshot='no')
    return ET.tostring(snap, encoding='unicode')


def overlay_path(current_path, token):
    """chain.overlay_path of 01d10ae."""
    directory, name = os.path.split(current_path)
    stem = name.split(legacy.OVERLAY_MARK)[0]
    return os.path.join(directory, '%s%s%s' % (stem, legacy.OVERLAY_MARK,
                                               token))


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


class OldRelease(object):
    """The take and revert of the external-overlay release, as they were."""

    def __init__(self, test):
        self.test = test
        self.conn = test.conn
        self.guest = test.guest
        self.root = test.conf.snapext.file_store_path

    def take(self, parent_id, memory=True):
        dom = self.guest.refresh()
        uuid_ = dom.UUIDString()
        xml = dom.XMLDesc(0)
        disks = domain_xml.writable_disks(xml)
        excluded = domain_xml.excluded_targets(xml)
        snapshot_id = str(uuid.uuid4())
        overlays = {d.target: overlay_path(d.path, snapshot_id[:8])
                    for d in disks}
        staging = os.path.join(self.root, uuid_, '.%s.staging' % snapshot_id)
        os.makedirs(staging)
        memory_file = (os.path.join(staging, 'memory.save') if memory
                       else None)
        flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC |
                 libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
        flags |= (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_LIVE if memory
                  else libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY)
        with quiesce.frozen(dom, 'preferred') as q:
            dom.snapshotCreateXML(old_snapshot_xml(
                'snapext-%s' % snapshot_id, overlays, excluded, memory_file),
                flags)
        tick = self.guest.last_tick()[0]
        record = {
            'schema_version': 1, 'id': snapshot_id, 'instance_uuid': uuid_,
            'domain': dom.name(), 'parent_id': parent_id,
            'created_at': time.strftime('%Y-%m-%dT%H:%M:%S.000000Z',
                                        time.gmtime()),
            'kind': 'full' if memory else 'disks', 'quiesce': q.as_dict(),
            'memory': None, 'domain_xml': xml, 'disks': [],
            'timings_ms': {'snapshot_call': 1.0}}
        if memory:
            record['memory'] = {'store': 'file', 'location': 'memory.save',
                                'bytes': os.path.getsize(memory_file),
                                'sha256': sha256(memory_file)}
        for i, disk in enumerate(disks):
            info = qemu_img.info(disk.path)
            record['disks'].append({
                'target': disk.target, 'role': 'root' if i == 0 else 'disk',
                'volume_id': None, 'cinder_snapshot_id': None,
                'path': disk.path, 'format': info['format'],
                'virtual_size': info['virtual-size'],
                'backing': qemu_img.backing_file(disk.path, info),
                'bytes': info.get('actual-size', 0), 'sha256': None})
        with open(os.path.join(staging, 'manifest.json'), 'w') as f:
            json.dump(record, f, indent=2, sort_keys=True)
        os.rename(staging, os.path.join(self.root, uuid_, snapshot_id))
        return record, tick

    def revert(self, record, states):
        """01d10ae's revert: fresh overlays on the state files.

        :param states: every state file of every record (the old release
            removed the active layers that were none of them)
        """
        dom = self.guest.refresh()
        old_active = [d.path for d in domain_xml.writable_disks(
            dom.XMLDesc(0))]
        token = uuid.uuid4().hex[:8]
        overlays = {d['target']: overlay_path(d['path'], token)
                    for d in record['disks']}
        for d in record['disks']:
            subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F',
                            d['format'], '-b', d['path'],
                            overlays[d['target']]], check=True)
        memory_file = os.path.join(self.root, record['instance_uuid'],
                                   record['id'], 'memory.save')
        xml = domain_xml.with_disk_sources(self.conn.saveImageGetXMLDesc(
            memory_file, libvirt.VIR_DOMAIN_SAVE_IMAGE_XML_SECURE), overlays)
        dom.destroy()
        self.conn.defineXML(domain_xml.with_disk_sources(
            dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE |
                        libvirt.VIR_DOMAIN_XML_SECURE), overlays))
        self.conn.restoreFlags(memory_file, xml,
                               libvirt.VIR_DOMAIN_SAVE_RUNNING)
        quiesce.thaw_when_ready(self.guest.refresh(), 30)
        self.guest.wait_for_agent()
        for path in old_active:
            if legacy.is_overlay(path) and path not in states:
                os.unlink(path)


class LegacyMigrationTest(base.GuestTestCase):
    name_prefix = 'snapext-legacy'
    disks = ('vda', 'vdb')

    def before_boot(self):
        # vda laid out as Nova's disk: a qcow2 directly over a flat _base.
        vda = os.path.join(self.guest.workdir, 'vda.qcow2')
        base_dir = os.path.join(self.workdir, '_base')
        os.makedirs(base_dir)
        self.base_file = os.path.join(base_dir, 'f00d')
        subprocess.run(['qemu-img', 'convert', '-q', '-O', 'raw', vda,
                        self.base_file], check=True)
        os.unlink(vda)
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F',
                        'raw', '-b', self.base_file, vda], check=True)

    def originals(self):
        return {d: os.path.join(self.guest.workdir, '%s.qcow2' % d)
                for d in self.disks}

    def write(self, name):
        sums = {}
        for d in self.disks:
            for attempt in range(3):
                try:
                    sums[d] = self.guest.write_file(FILE % (d, name))
                    break
                except libvirt.libvirtError:
                    # the agent reconnects to a restored QEMU
                    if attempt == 2:
                        raise
                    time.sleep(1)
                    self.guest.wait_for_agent()
        return sums

    def assertFiles(self, present, absent):
        g = self.guest
        for name, sums in present.items():
            for d, digest in sums.items():
                self.assertEqual(digest, g.sha256(FILE % (d, name)),
                                 '%s on %s' % (name, d))
        for name in absent:
            for d in self.disks:
                self.assertIsNone(g.sha256(FILE % (d, name)),
                                  '%s on %s is back' % (name, d))

    def assertOnOriginals(self):
        dom = self.guest.refresh()
        for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
            disks = domain_xml.writable_disks(dom.XMLDesc(flags))
            self.assertEqual(self.originals(),
                             {d.target: d.path for d in disks})
        for d, path in self.originals().items():
            files = qemu_img.chain(path)
            self.assertEqual([], [f for f in files if legacy.is_overlay(f)])
        self.assertEqual([self.originals()['vda'], self.base_file],
                         qemu_img.chain(self.originals()['vda']))

    def revert(self, record, tick):
        offset = self.guest.console_size()
        self.engine.revert(record['id'])
        self.assertCounterContinues(offset, tick)
        self.assertRunningAndThawed()

    def test_running_domain_with_a_branch(self):
        g = self.guest
        old = OldRelease(self)
        f0 = self.write('f0')
        a, a_tick = old.take(None)
        f1 = self.write('f1')
        b, b_tick = old.take(a['id'])
        self.write('f2')
        states = {d['path'] for r in (a, b) for d in r['disks']}
        old.revert(a, states)
        f3 = self.write('f3')
        c, c_tick = old.take(a['id'])
        f4 = self.write('f4')
        # The old layout: C's state is the revert's overlay over A's, and
        # B's state is a branch beside it.
        for d in self.disks:
            self.assertTrue(legacy.is_overlay(
                {x['target']: x['path'] for x in c['disks']}[d]))
        overlays = sorted(
            os.path.join(g.workdir, n) for n in os.listdir(g.workdir)
            if legacy.is_overlay(n))
        self.assertEqual(3 * len(self.disks), len(overlays))
        active = {x.target: x.path for x in domain_xml.writable_disks(
            g.refresh().XMLDesc(0))}
        state_sums = {p: sha256(p) for p in overlays
                      if p not in active.values()}

        stamps = []

        def progress(stage, **kw):
            self.progress.append((stage, kw))
            stamps.append((stage, round(time.monotonic() - started, 2)))

        self.engine._progress = progress
        watcher = guest_mod.TickWatcher(g)
        watcher.start()
        before_tick = g.last_tick()[0]
        self.progress = []
        started = time.monotonic()
        done = self.engine.recover()
        took = time.monotonic() - started
        g.wait_for_tick(after=before_tick + 3, timeout=30)
        watcher.stop()

        self.assertEqual([g.name], done['migrated'])
        self.assertEqual([], done['failed'])
        self.assertEqual([], done['dropped'])
        self.assertEqual(sorted(overlays), sorted(done['kept']))
        switched = [kw for stage, kw in self.progress
                    if stage == 'legacy-switched']
        self.engine._progress = None
        self.assertEqual(1, len(switched))
        gap = watcher.largest_gap_ms()
        self.addDetail('pause', testtools.content.text_content(
            'recover %.2f s; %s; largest tick gap %s ms; stages %s'
            % (took, json.dumps(switched[0]), gap, stamps)))
        self.assertLess(switched[0]['paused_ms'], 30000)
        # the guest ran on, on its own files, with every byte it had
        self.assertRunningAndThawed()
        self.assertOnOriginals()
        self.assertFiles({'f0': f0, 'f3': f3, 'f4': f4}, ['f1', 'f2'])
        # every overlay is still there, the states unchanged byte for byte
        for path in overlays:
            self.assertTrue(os.path.exists(path), path)
        for path, digest in state_sums.items():
            self.assertEqual(digest, sha256(path), path)
        self.assertFalse(os.path.exists(os.path.join(
            self.conf.snapext.file_store_path, g.uuid, legacy.SAVE_FILE)))
        # the records are current ones, on the original files
        records = {r['id']: r for r in self.engine.list(g.name)}
        self.assertEqual({a['id'], b['id'], c['id']}, set(records))
        for r in records.values():
            self.assertEqual(2, r['schema_version'])
            self.assertNotIn('status', r)
            self.assertDisksHold(r)
        self.assertEqual(c['id'], self.engine.current(g.name))
        for d, names in self.internal_states().items():
            self.assertNotIn(legacy.BASE, names)
        # running it again changes nothing
        self.assertEqual([], self.engine.recover()['migrated'])

        # a hard reboot (what Nova does: destroy, create from the
        # definition) keeps the live data
        dom = g.refresh()
        dom.destroy()
        dom.create()
        g.wait_for_agent()
        self.assertOnOriginals()
        self.assertFiles({'f0': f0, 'f3': f3, 'f4': f4}, ['f1', 'f2'])
        # the cold-booted counter counts from 0: a revert shows as a drop
        # once it is past the snapshots' ticks
        g.wait_for_tick(after=max(a_tick, b_tick, c_tick) + 3, timeout=300)

        # each migrated snapshot reverts, memory included
        self.revert(records[b['id']], b_tick)
        self.assertFiles({'f0': f0, 'f1': f1}, ['f2', 'f3', 'f4'])
        self.revert(records[a['id']], a_tick)
        self.assertFiles({'f0': f0}, ['f1', 'f3', 'f4'])
        self.revert(records[c['id']], c_tick)
        self.assertFiles({'f0': f0, 'f3': f3}, ['f1', 'f2', 'f4'])
        self.assertOnOriginals()

    def test_failure_rolls_back_then_a_shut_off_domain_migrates(self):
        g = self.guest
        old = OldRelease(self)
        f0 = self.write('f0')
        a, a_tick = old.take(None)
        f1 = self.write('f1')
        old_sources = {x.target: x.path for x in domain_xml.writable_disks(
            g.refresh().XMLDesc(0))}
        store_dir = os.path.join(self.conf.snapext.file_store_path, g.uuid)

        # a failure after the first commit into the original file
        real_run_step = legacy.run_step
        seen = []

        def failing(step):
            seen.append(step)
            if isinstance(step, legacy.Commit):
                real_run_step(step)
                raise RuntimeError('injected failure')
            real_run_step(step)

        self.useFixture(fixtures.MonkeyPatch(
            'nova_snapext.capture.legacy.run_step', failing))
        done = self.engine.recover()
        self.assertEqual([g.name], done['failed'])
        self.assertEqual([], done['migrated'])
        # the guest runs on its old chain, every byte there, nothing left
        self.assertRunningAndThawed()
        self.assertEqual(old_sources, {
            x.target: x.path
            for x in domain_xml.writable_disks(g.refresh().XMLDesc(0))})
        self.assertFiles({'f0': f0, 'f1': f1}, [])
        for path in self.originals().values():
            self.assertEqual([], qemu_img.snapshot_names(path))
        self.assertEqual([], [n for n in os.listdir(store_dir)
                              if n.startswith('.legacy')])
        with open(os.path.join(store_dir, a['id'], 'manifest.json')) as f:
            self.assertEqual(1, json.load(f)['schema_version'])

        # shut off (a clean shutdown: no memory to keep), then migrated
        # offline, with no save
        f2 = self.write('f2')
        g.check_sh('sync')
        g.refresh().destroy()
        self.useFixture(fixtures.MonkeyPatch(
            'nova_snapext.capture.legacy.run_step', real_run_step))
        self.progress[:] = []
        done = self.engine.recover()
        self.assertEqual([g.name], done['migrated'])
        switched = [kw for stage, kw in self.progress
                    if stage == 'legacy-switched']
        self.assertNotIn('save_ms', switched[0])
        dom = g.refresh()
        self.assertFalse(dom.isActive())
        self.assertEqual(self.originals(), {
            x.target: x.path for x in domain_xml.writable_disks(
                dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))})
        dom.create()
        g.wait_for_agent()
        self.assertOnOriginals()
        self.assertFiles({'f0': f0, 'f1': f1, 'f2': f2}, [])
        record = self.engine.list(g.name)[0]
        self.assertDisksHold(record)
        self.assertEqual(a['id'], self.engine.current(g.name))
        g.wait_for_tick(after=a_tick + 3, timeout=300)
        self.revert(record, a_tick)
        self.assertFiles({'f0': f0}, ['f1', 'f2'])
