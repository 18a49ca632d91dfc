"""Resuming a snapshot: revert in place, clone into a new domain."""

import os
import time

from oslo_log import log as logging

from nova_snapext.capture import domain_xml
from nova_snapext.capture import progress
from nova_snapext.capture import qemu_img
from nova_snapext.capture import quiesce
from nova_snapext.capture import revert_plan
from nova_snapext.capture import save_image
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod

LOG = logging.getLogger(__name__)


class RestoreOps(object):
    """Engine operations that bring a snapshot's state back to life."""

    def revert(self, snapshot_id, context=None):
        """Put the instance back at the snapshot's instant.

        A full snapshot resumes its memory (the guest continues where it
        was); a disk-only one cold-boots its disks if the domain was
        running.  The state since the last snapshot is discarded; every
        other snapshot, on any branch, stays revertable.

        :param context: the request context, for a store that fetches a
            snapshot the local cache lost (see :mod:`durability`)
        """
        record = self.resumable(snapshot_id, context)
        guest = self._guest_or_none(record['instance_uuid'])
        if guest is None:
            # A shelved-offloaded or moved server: the record says why.
            raise exception.Conflict(
                'snapshot %s cannot be reverted to: %s'
                % (record['id'], self._unavailable_reason(record, None)))
        with self._lock(record['instance_uuid']):
            self._revert(guest, record, context)

    def _revert(self, guest, record, context=None):
        started = time.monotonic()
        reason = self._unavailable_reason(record, guest)
        if not reason and record.get('partial'):
            reason = ('it holds only disks %s (a volume group snapshot): '
                      'revert those volumes through Cinder'
                      % ', '.join(d['target'] for d in record['disks']))
        if reason:
            raise exception.Conflict('snapshot %s cannot be reverted to: %s'
                                     % (record['id'], reason))
        full = record['kind'] == manifest_mod.KIND_FULL
        # Every artifact the revert resumes from (memory image, disk
        # states) is verified before anything is stopped.
        record, memory_file = self._verified_resumable(record, context)
        files = revert_plan.revert_files(
            record, {d.target: d.path for d in guest.disks()})
        restore_xml = None
        if full:
            # Readable by libvirt (header and XML) as well as intact.
            restore_xml = self._restore_xml(memory_file, files)
        self._report('revert-planned', snapshot=record['id'],
                     domain=guest.name)
        self._run_revert(guest, record, files, memory_file, restore_xml,
                         started)

    def _restore_xml(self, memory_file, files):
        """The image's own XML, to restore it in place.

        Each disk on the file the revert leaves it on
        (:func:`revert_plan.revert_files`: the file the record names, which
        differs from the image's for a snapshot migrated from the
        external-overlay layout; the instance's own for an imported one)
        and the console logs appending to the server's history.
        """
        return domain_xml.with_disk_sources(
            domain_xml.with_console_appended(
                self.host.saved_xml(memory_file)), files)

    def clone(self, snapshot_id, name, uuid, disk_sources, path_moves=None,
              xml_edit=None, paused=False, before_start=None, context=None,
              bundle_image=None):
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
        :param context: the request context, for a store that fetches a
            snapshot this host's cache lacks (see :mod:`durability`)
        :param bundle_image: the snapshot's bundle image, when known
        :returns: the running (or paused), persistent virDomain
        """
        record = self.resumable(snapshot_id, context, bundle_image)
        if record['kind'] != manifest_mod.KIND_FULL:
            raise exception.InvalidRequest(
                'snapshot %s has no memory image to resume' % snapshot_id)
        missing = {d['target'] for d in record['disks']} - set(disk_sources)
        if missing:
            raise exception.InvalidRequest(
                'clone of %s needs a file for disk %s'
                % (snapshot_id, ', '.join(sorted(missing))))
        record, memory_file = self._verified_resumable(record, context,
                                                       disk_sources)
        started = time.monotonic()
        xml = self.host.saved_xml(memory_file)
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
            self.host.restore(clone_file, paused=paused)
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

        The internal snapshot is read while the guest runs on: its clusters
        are never written while it exists.
        """
        record = self.store.get(snapshot_id)
        disks = {d['target']: d for d in record['disks']}
        if target not in disks:
            raise exception.NotFound('snapshot %s has no disk %s'
                                     % (snapshot_id, target))
        qemu_img.convert(disks[target]['path'], dest, fmt,
                         snapshot=disks[target]['snapshot'])
