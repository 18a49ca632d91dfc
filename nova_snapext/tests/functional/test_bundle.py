"""Export and import on the real guest: a bundle boots elsewhere.

A snapshot is exported with the ``snapext`` command (its peak RSS is
measured), imported into an empty store and resumed as a new domain from
the imported files; the proof is the counter and the files inside the
clone.  A delta since an ancestor applies on the imported ancestor.  A
bundle imported back on the host of the guest it was taken of, after the
snapshot was deleted there, reverts that guest: its memory resumes, its
states are written into the guest's own disk files, its other snapshots
stay.
"""

import os
import subprocess
import sys
import time
import uuid

import libvirt
from oslo_config import cfg
import testtools

from nova_snapext import bundle
from nova_snapext.capture import domain_xml
from nova_snapext.capture import engine as engine_mod
from nova_snapext.capture import qemu_img
from nova_snapext import conf as snapext_conf
from nova_snapext import exception
from nova_snapext.testing import guest as guest_mod
from nova_snapext.tests.functional import base

BEFORE = '/mnt/vdb/before.bin'
WRITTEN = '/mnt/vdb/written.bin'
EARLY = '/mnt/vdb/early.bin'
LATE = '/mnt/vdb/late.bin'
ROOT_FILE = '/mnt/vda/root.bin'
N_MIB = 16
MIB = 1 << 20


class BundleTest(base.GuestTestCase):
    disks = ('vda', 'vdb')

    def _other_engine(self):
        """An engine on a new, empty store: another host's."""
        conf = cfg.ConfigOpts()
        snapext_conf.register_opts(conf)
        conf([], project='snapext')
        conf.set_override('file_store_path',
                          os.path.join(self.workdir, 'elsewhere'), 'snapext')
        conf.set_override('lock_path',
                          os.path.join(self.workdir, 'elsewhere-locks'),
                          'snapext')
        conf.set_override('libvirt_uri', base.URI, 'snapext')
        return engine_mod.Engine(conf, conn=self.conn)

    def _export(self, snapshot_id, path, *extra):
        """``snapext export`` in a child: (seconds, peak RSS in KiB).

        GNU time measures the child: a child forked from this (large) test
        process would count the parent's pages until it execs.
        """
        self.run_cli('list', self.guest.name)  # writes the config file
        started = time.monotonic()
        done = subprocess.run(
            ['/usr/bin/time', '-f', 'maxrss=%M', sys.executable, '-m',
             'nova_snapext.cmd.snapext', '--config-file',
             os.path.join(self.workdir, 'snapext.conf'),
             'export', snapshot_id, path] + list(extra),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.monotonic() - started
        self.assertEqual(0, done.returncode, done.stderr)
        rss = int(done.stderr.rsplit('maxrss=', 1)[1].split()[0])
        return seconds, rss

    def _clone(self, engine, record, suffix):
        clone = guest_mod.Guest(self.conn, self.guest.name + suffix,
                                os.path.join(self.workdir, suffix),
                                disks=self.disks)
        os.makedirs(clone.workdir)
        self.addCleanup(clone.destroy)
        sources = {}
        for disk in record['disks']:
            # Nova's disks over an image: an overlay on the imported file
            sources[disk['target']] = os.path.join(
                clone.workdir, '%s.qcow2' % disk['target'])
            qemu_img.create(sources[disk['target']], disk['virtual_size'],
                            backing=disk['path'], backing_fmt='qcow2')
        clone.dom = engine.clone(record['id'], clone.name,
                                 str(uuid.uuid4()), sources,
                                 path_moves={self.guest.workdir:
                                             clone.workdir})
        clone.wait_for_agent()
        return clone

    def _note(self, name, text):
        self.addDetail(name, testtools.content.text_content(text))
        print('%s: %s' % (name, text), file=sys.stderr)

    def test_export_import_clone_full_and_delta(self):
        g = self.guest
        before = g.write_file(BEFORE)
        s1, tick1 = self.take_noting_tick(quiesce_policy='required')
        full = os.path.join(self.workdir, 's1.bundle')
        seconds, rss = self._export(s1['id'], full)
        self._note('full_export', '%d bytes in %.2f s, peak RSS %d KiB '
                   '(memory image %d bytes)' % (
                       os.path.getsize(full), seconds, rss,
                       s1['memory']['bytes']))
        # bounded: far below the memory image or the disks it streamed
        self.assertLess(rss * 1024, 100 * MIB)

        written = g.write_file(WRITTEN, mib=N_MIB)
        s2, tick2 = self.take_noting_tick(quiesce_policy='required')
        delta = os.path.join(self.workdir, 's2.bundle')
        seconds, rss = self._export(s2['id'], delta, '--since', s1['id'])
        with open(delta, 'rb') as f:
            index = bundle.extract_index(f)
        disk_bytes = sum(m['bytes'] for m in index['members']
                         if m['kind'] == 'disk')
        self._note('delta_export', '%d bytes in %.2f s after writing %d MiB;'
                   ' disk members %d bytes (goal <= %d); peak RSS %d KiB'
                   % (os.path.getsize(delta), seconds, N_MIB, disk_bytes,
                      1.1 * N_MIB * MIB + MIB, rss))
        self.assertLessEqual(disk_bytes, 1.1 * N_MIB * MIB + MIB)

        elsewhere = self._other_engine()
        # a tampered real bundle: one byte of the memory image flipped
        tampered = os.path.join(self.workdir, 'tampered.bundle')
        with open(full, 'rb') as src, open(tampered, 'wb') as dst:
            data = bytearray(src.read())
            at = data.index(b'LibvirtQemudSave') + 4096
            data[at] ^= 0xff
            dst.write(data)
        config = os.path.join(self.workdir, 'elsewhere.conf')
        with open(config, 'w') as f:
            f.write('[snapext]\nfile_store_path = %s\nlock_path = %s\n'
                    % (elsewhere.conf.snapext.file_store_path,
                       elsewhere.conf.snapext.lock_path))
        rc, out, err = self.run_cli('--config-file', config, 'import',
                                    tampered)
        self.assertEqual(1, rc)
        self.assertIn('member memory.save does not match its sha256', err)
        with open(tampered, 'rb') as f:
            self.assertRaises(bundle.BundleError, elsewhere.import_bundle, f)
        self.assertEqual([], os.listdir(elsewhere.store.root)
                         if os.path.isdir(elsewhere.store.root) else [])
        with open(delta, 'rb') as f:
            self.assertRaises(bundle.BundleError, elsewhere.import_bundle, f)

        started = time.monotonic()
        with open(full, 'rb') as f:
            elsewhere.import_bundle(f)
        with open(delta, 'rb') as f:
            imported = elsewhere.import_bundle(f)
        self._note('import', 'full + delta imported in %.2f s'
                   % (time.monotonic() - started))
        self.assertEqual(s1['id'], imported['imported']['since'])

        g.dom.destroy()  # the source is gone: only the bundle remains
        one = self._clone(elsewhere, elsewhere.store.get(s1['id']), '-one')
        first = one.wait_for_tick()[0]
        self.assertGreaterEqual(first, tick1)
        self.assertLessEqual(first - tick1, 3)
        self.assertEqual(before, one.sha256(BEFORE))
        self.assertIsNone(one.sha256(WRITTEN))
        one.destroy()

        two = self._clone(elsewhere, imported, '-two')
        first = two.wait_for_tick()[0]
        self.assertGreaterEqual(first, tick2)
        self.assertLessEqual(first - tick2, 3)
        self.assertEqual(before, two.sha256(BEFORE))
        self.assertEqual(written, two.sha256(WRITTEN))

    def assertFilesystemsClean(self):
        """e2fsck -fn of every disk, read while the guest is frozen."""
        g = self.guest
        g.agent('guest-fsfreeze-freeze', timeout=30)
        try:
            copies = []
            for disk in domain_xml.writable_disks(g.dom.XMLDesc(0)):
                raw = os.path.join(self.workdir, '%s.raw' % disk.target)
                subprocess.run(['qemu-img', 'convert', '-U', '-O', 'raw',
                                disk.path, raw], check=True)
                copies.append(raw)
        finally:
            g.agent('guest-fsfreeze-thaw', timeout=30)
        for raw in copies:
            done = subprocess.run(['e2fsck', '-fn', raw],
                                  capture_output=True, text=True)
            os.unlink(raw)
            self.assertEqual(0, done.returncode, done.stdout + done.stderr)

    def test_import_reverts_the_guest_it_came_from(self):
        g = self.guest
        files = os.listdir(g.workdir)
        early = g.write_file(EARLY)
        parent = self.engine.take(g.name, quiesce_policy='required')
        before = g.write_file(BEFORE)
        root = g.write_file(ROOT_FILE)
        s, tick = self.take_noting_tick(quiesce_policy='required')
        path = os.path.join(self.workdir, 's.bundle')
        self._export(s['id'], path)
        written = g.write_file(WRITTEN, mib=4)
        rc, _, err = self.run_cli('delete', s['id'])
        self.assertEqual(0, rc, err)
        later = self.engine.take(g.name, quiesce_policy='required')
        g.write_file(LATE)

        rc, out, err = self.run_cli('import', path)
        self.assertEqual(0, rc, err)
        imported = self.engine.store.get(s['id'])
        self.assertTrue(imported['imported'])
        tree = self.engine.tree(g.name)
        self.assertEqual(
            {parent['id']: 'available', later['id']: 'available',
             s['id']: 'available'},
            {n['id']: n['state'] for n in _nodes(tree['snapshots'])})

        offset = g.console_size()
        started = time.monotonic()
        rc, _, err = self.run_cli('revert', s['id'])
        self.assertEqual(0, rc, err)
        self._note('import_revert', 'reverted to the imported snapshot in '
                   '%.2f s' % (time.monotonic() - started))
        self.assertCounterContinues(offset, tick)
        self.assertEqual(early, g.sha256(EARLY))
        self.assertEqual(before, g.sha256(BEFORE))
        self.assertEqual(root, g.sha256(ROOT_FILE))
        self.assertIsNone(g.sha256(WRITTEN))
        self.assertIsNone(g.sha256(LATE))
        self.assertFilesystemsClean()
        # the guest's own files (no file added), the other snapshots in
        # them, no undo state left; the store's copy untouched
        self.assertEqual(sorted(files), sorted(os.listdir(g.workdir)))
        held = self.internal_states()
        for target in self.disks:
            self.assertEqual(sorted([parent['disks'][0]['snapshot'],
                                     later['disks'][0]['snapshot']]),
                             held[target])
        self.assertEqual(s['id'], self.engine.current(g.name))

        # the data is in the disk files: a cold boot reads it from there
        g.dom.destroy()
        g.boot()
        self.assertEqual(before, g.sha256(BEFORE))
        self.assertEqual(root, g.sha256(ROOT_FILE))
        self.assertIsNone(g.sha256(WRITTEN))
        self.assertIsNone(g.sha256(LATE))

        # the other snapshots revert as before, and back again
        rc, _, err = self.run_cli('revert', later['id'])
        self.assertEqual(0, rc, err)
        self.assertEqual(written, g.sha256(WRITTEN))
        self.assertIsNone(g.sha256(LATE))
        offset = g.console_size()
        rc, _, err = self.run_cli('revert', s['id'])
        self.assertEqual(0, rc, err)
        self.assertCounterContinues(offset, tick)
        self.assertIsNone(g.sha256(WRITTEN))
        self.assertEqual(before, g.sha256(BEFORE))

        # a disk grown since: refused with the reason, nothing changed
        vdb = {d.target: d.path for d in
               domain_xml.writable_disks(g.dom.XMLDesc(0))}['vdb']
        g.dom.blockResize('vdb', 128 << 20,
                          libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
        exc = self.assertRaises(exception.Conflict, self.engine.revert,
                                s['id'])
        self.assertIn('disk vdb is %d bytes now' % (128 << 20), str(exc))
        self.assertEqual(128 << 20, qemu_img.virtual_size(vdb))
        self.assertEqual(before, g.sha256(BEFORE))


def _nodes(nodes):
    for node in nodes:
        yield node
        yield from _nodes(node.get('children', []))
