"""Resuming a snapshot: revert in place, clone into a new domain."""

import os
import time

import libvirt
from oslo_log import log as logging
from oslo_utils import uuidutils

from nova_snapext.capture import chain
from nova_snapext.capture import domain_xml
from nova_snapext.capture import progress
from nova_snapext.capture import qemu_img
from nova_snapext.capture import quiesce
from nova_snapext.capture import save_image
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod

LOG = logging.getLogger(__name__)


class RestoreOps(object):
    """Engine operations that bring a snapshot's state back to life."""

    def revert(self, snapshot_id):
        """Put the instance back at the snapshot's instant.

        A full snapshot resumes its memory (the guest continues where it
        was); a disk-only one cold-boots its disks if the domain was
        running.  The state since the last snapshot is discarded; every
        other snapshot, on any branch, stays revertable.
        """
        record = self.store.get(snapshot_id)
        dom = self._lookup(record['instance_uuid'])
        with self._lock(record['instance_uuid']):
            self._revert(dom, record)

    def _revert(self, dom, record):
        started = time.monotonic()
        full = record['kind'] == manifest_mod.KIND_FULL
        memory_file = (self.store.local_path(record,
                                             record['memory']['location'])
                       if full else None)
        if full and not os.path.exists(memory_file):
            raise exception.RevertFailed(
                'memory image of snapshot %s is missing: %s'
                % (record['id'], memory_file))
        current_disks = domain_xml.writable_disks(dom.XMLDesc(0))
        current_targets = {d.target for d in current_disks}
        wanted = {d['target'] for d in record['disks']}
        if wanted != current_targets:
            raise exception.Conflict(
                'snapshot %s covers disks %s but the domain now has %s; '
                'attach or detach volumes to match before reverting'
                % (record['id'], ', '.join(sorted(wanted)),
                   ', '.join(sorted(current_targets))))
        token = uuidutils.generate_uuid()[:8]
        overlays = {d['target']: chain.overlay_path(d['path'], token)
                    for d in record['disks']}
        self._report('revert-planned', snapshot=record['id'],
                     domain=dom.name())
        was_active = dom.isActive()
        created = []
        timings = {}
        try:
            with progress.timed(timings, 'overlays'):
                for disk in record['disks']:
                    qemu_img.create_overlay(overlays[disk['target']],
                                            disk['path'], disk['format'])
                    created.append(overlays[disk['target']])
            restore_xml = None
            if full:
                restore_xml = domain_xml.with_disk_sources(
                    self.conn.saveImageGetXMLDesc(
                        memory_file, libvirt.VIR_DOMAIN_SAVE_IMAGE_XML_SECURE),
                    overlays)
            with progress.timed(timings, 'destroy'):
                if was_active:
                    dom.destroy()
            self._redefine_on(dom, overlays)
            with progress.timed(timings, 'restore' if full else 'boot'):
                if full:
                    self.conn.restoreFlags(memory_file, restore_xml,
                                           libvirt.VIR_DOMAIN_SAVE_RUNNING)
                elif was_active:
                    dom.create()
        except Exception as exc:
            self._undo_revert(dom, record, created, current_disks, was_active)
            raise exception.RevertFailed(
                'revert of %s to %s failed: %s'
                % (dom.name(), record['id'], exc)) from exc
        self._report('restored', snapshot=record['id'],
                     **{k + '_ms': v for k, v in timings.items()})
        if full:
            self._thaw_if_frozen(record,
                                 self._lookup(record['instance_uuid']))
        states = {d['path'] for m in self.store.list(record['instance_uuid'])
                  for d in m['disks']}
        for path in chain.discarded_by_revert(
                [d.path for d in current_disks], states):
            LOG.info('discarding %s: state after the last snapshot', path)
            os.unlink(path)
        self._report('reverted', snapshot=record['id'],
                     total_ms=progress.elapsed_ms(started))

    def _undo_revert(self, dom, record, created, old_disks, was_active):
        """Bring the domain back on its old disks after a failed revert."""
        try:
            self._redefine_on(dom, {d.target: d.path for d in old_disks})
            if was_active and not dom.isActive():
                LOG.warning('revert failed; booting %s on its previous '
                            'disks', dom.name())
                dom.create()
        except libvirt.libvirtError:
            LOG.exception('could not bring %s back after the failed revert',
                          dom.name())
        self._remove_unused(dom, created, 'overlay of the failed revert')

    def _redefine_on(self, dom, sources):
        """Point a persistent domain's next boot at ``sources``.

        :param sources: {target: file}
        """
        if dom.isPersistent():
            self.conn.defineXML(domain_xml.with_disk_sources(
                dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE |
                            libvirt.VIR_DOMAIN_XML_SECURE), sources))

    def clone(self, snapshot_id, name, uuid, disk_sources, path_moves=None,
              xml_edit=None, paused=False, before_start=None):
        """Start a new domain by resuming a full snapshot's memory.

        The clone continues where the snapshot was, instead of booting.

        :param disk_sources: {target: file} for every disk of the snapshot;
            the caller provides them (e.g. Nova's disks made from the
            snapshot image) and they must hold the snapshot's disk state
        :param path_moves: {old prefix: new prefix} for the other files the
            domain writes (console logs), so the clone leaves its source's
            files alone
        :param xml_edit: callable(xml) -> xml for last changes (Nova's
            metadata, interface MACs)
        :param paused: leave the clone paused (Nova waits for its network);
            whoever resumes it calls :meth:`thaw_clone` afterwards
        :param before_start: callable() run once the domain is defined and
            before its memory is restored (Nova builds the config drive
            there)
        :returns: the running (or paused), persistent virDomain
        """
        record = self.store.get(snapshot_id)
        if record['kind'] != manifest_mod.KIND_FULL:
            raise exception.InvalidRequest(
                'snapshot %s has no memory image to resume' % snapshot_id)
        missing = {d['target'] for d in record['disks']} - set(disk_sources)
        if missing:
            raise exception.InvalidRequest(
                'clone of %s needs a file for disk %s'
                % (snapshot_id, ', '.join(sorted(missing))))
        memory_file = self.store.local_path(record,
                                            record['memory']['location'])
        started = time.monotonic()
        xml = self.conn.saveImageGetXMLDesc(
            memory_file, libvirt.VIR_DOMAIN_SAVE_IMAGE_XML_SECURE)
        xml = domain_xml.with_identity(xml, name, uuid)
        xml = domain_xml.with_disk_sources(xml, disk_sources)
        xml = domain_xml.with_paths_moved(xml, path_moves or {})
        if xml_edit:
            xml = xml_edit(xml)
        clone_file = os.path.join(os.path.dirname(memory_file),
                                  '.clone-%s.save' % uuid)
        self._report('clone-planned', snapshot=snapshot_id, domain=name)
        dom = None
        try:
            save_image.copy_with_xml(memory_file, clone_file, xml)
            dom = self.conn.defineXML(xml)
            if before_start is not None:
                before_start()
            self.conn.restoreFlags(clone_file, None,
                                   libvirt.VIR_DOMAIN_SAVE_PAUSED if paused
                                   else libvirt.VIR_DOMAIN_SAVE_RUNNING)
        except Exception as exc:
            if dom is not None:
                dom.undefineFlags(0)
            if isinstance(exc, exception.SnapextError):
                raise
            raise exception.SnapextError(
                'clone of snapshot %s as %s failed: %s'
                % (snapshot_id, name, exc)) from exc
        finally:
            if os.path.exists(clone_file):
                os.unlink(clone_file)
        dom = self.conn.lookupByUUIDString(uuid)
        if not paused:
            self._thaw_if_frozen(record, dom)
        self._report('cloned', snapshot=snapshot_id, domain=name,
                     total_ms=progress.elapsed_ms(started))
        return dom

    def thaw_clone(self, snapshot_id, dom):
        """Thaw a clone that was started paused, once it runs."""
        self._thaw_if_frozen(self.store.get(snapshot_id), dom)

    def _thaw_if_frozen(self, record, dom):
        # The memory image was taken with the filesystems frozen.
        if record['quiesce']['outcome'] == manifest_mod.QUIESCE_FROZEN:
            with progress.timed(record.setdefault('timings_ms', {}), 'thaw'):
                quiesce.thaw_when_ready(
                    dom, self.conf.snapext.thaw_after_restore_timeout)
            self._report('thawed', snapshot=record['id'],
                         thaw_ms=record['timings_ms']['thaw'])

    def export_disk(self, snapshot_id, target, dest, fmt='qcow2'):
        """Write one disk of a snapshot as a standalone image file.

        The state file is read-only since the snapshot, so this reads it
        while the guest runs on, without a block copy.
        """
        record = self.store.get(snapshot_id)
        disks = {d['target']: d for d in record['disks']}
        if target not in disks:
            raise exception.NotFound('snapshot %s has no disk %s'
                                     % (snapshot_id, target))
        qemu_img.convert(disks[target]['path'], dest, fmt)
