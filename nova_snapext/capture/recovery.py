"""Cleaning up after captures interrupted by a crash."""

import time

import libvirt
from oslo_log import log as logging

from nova_snapext.capture import guest as guest_mod
from nova_snapext.capture import legacy
from nova_snapext.capture import quiesce
from nova_snapext.capture import states
from nova_snapext import exception

LOG = logging.getLogger(__name__)


class RecoveryOps(object):
    """Engine operations run at service start."""

    def recover(self):
        """Clean up what operations interrupted by a crash left behind.

        Run at service start (Nova's init_host): a revert that died is
        finished or rolled back from its journal (the guest runs thawed,
        either from the snapshot or as before the revert), a guest the dead
        process paused is resumed and one it froze is thawed, staged records
        are dropped, an instance the external-overlay release left on overlays
        is migrated onto its disks' own files (:mod:`legacy`), and the
        internal snapshots of the captures that died (between their QEMU
        transaction and their record) are dropped: they are past states,
        never the live data.  Other internal snapshots no record of the
        instance names are left: a volume's file holds Cinder's and those
        taken while it served another server.  No file is deleted.
        Instances another live process is working on are left alone.
        """
        done = {'thawed': [], 'resumed': [], 'aborted': [], 'dropped': [],
                'failed': [], 'migrated': [], 'kept': [], 'reverts': []}
        # Only instances this store knows: a capture stages its record
        # before QEMU creates any internal snapshot.
        for instance_uuid in self.store.instances():
            try:
                guest = guest_mod.Guest(
                    self.conn.lookupByUUIDString(instance_uuid))
            except libvirt.libvirtError:
                continue
            try:
                with self._lock(instance_uuid):
                    self._recover_domain(guest, done)
            except exception.Conflict:
                LOG.info('%s is busy; not recovering it', guest.name)
            except Exception:
                LOG.exception('recovering %s failed', guest.name)
                done['failed'].append(guest.name)
        self._report('recovered', **{k: len(v) for k, v in done.items()})
        return done

    def _recover_domain(self, guest, done):
        instance_uuid = guest.uuid
        # A revert that died: finished or rolled back from its journal
        # (:mod:`revert`), before anything below reads the disks' states.
        self._recover_revert(guest, done)
        staged = self.store.staged(instance_uuid)
        if staged:
            self._wait_for_libvirt_job(guest)
        if staged and guest.is_active():
            # A capture was under way, so the pause and the freeze, if
            # any, were ours.
            if guest.is_paused():
                guest.dom.resume()
                done['resumed'].append(guest.name)
            quiesce.thaw_when_ready(
                guest.dom, self.conf.snapext.thaw_after_restore_timeout)
            done['thawed'].append(guest.name)
        for snapshot_id in staged:
            self.store.abort(instance_uuid, snapshot_id)
            done['aborted'].append(snapshot_id)
        # What the external-overlay release left: back onto the disks' own
        # files, before anything below reads the records.  A failure stops
        # here, with the domain on its old chain.
        legacy.Migrator(self).migrate(guest, done)
        records = self.store.list(instance_uuid)
        recorded = {d['snapshot'] for m in records for d in m['disks']}
        held = self._held(d.path for d in guest.disks())
        # Only the states of captures that died (their record is staged):
        # a volume's file also holds states no record of this instance
        # names and that are not ours to drop (Cinder's own snapshots,
        # states taken while it was attached to another server).
        interrupted = {states.internal_name(s) for s in staged}
        orphans = [(path, name) for path, name in
                   states.orphan_states(held, recorded)
                   if name in interrupted]
        for path, name in orphans:
            LOG.warning('dropping internal snapshot %s of %s: no record '
                        'names it (an interrupted capture)', name, path)
        self._drop_states(guest, orphans)
        done['dropped'].extend('%s:%s' % o for o in orphans)
        for path, names in sorted(held.items()):
            for name in sorted(names):
                if name.startswith(states.UNDO_PREFIX):
                    LOG.warning('%s keeps %s, the state it had before an '
                                'interrupted revert; drop it with '
                                '"qemu-img snapshot -d" once it is not '
                                'needed', path, name)

    def _wait_for_libvirt_job(self, guest):
        """Wait while libvirtd still runs a job on the domain.

        libvirtd finishes a memory save even when the process that asked
        for it died; resuming meanwhile would fight it.
        """
        deadline = time.monotonic() + self.conf.snapext.libvirt_job_timeout
        while guest.job_active():
            if time.monotonic() > deadline:
                raise exception.Conflict(
                    'libvirt still runs a job on %s after %d s'
                    % (guest.name, self.conf.snapext.libvirt_job_timeout))
            time.sleep(0.1)
