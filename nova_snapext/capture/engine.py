"""The capture engine: take, revert, clone and delete complete snapshots.

``Engine`` is the one entry point; each kind of operation lives in its own
module (take, restore, delete, recovery).  They speak to libvirt through
:mod:`guest` and to disk files through :mod:`qemu_img`; the decisions
(which state is where, what a delete does) come from :mod:`states`.
"""

import os

import libvirt
from oslo_log import log as logging
from oslo_utils import timeutils
from oslo_utils import uuidutils

from nova_snapext.capture import cinder
from nova_snapext.capture import delete
from nova_snapext.capture import durability
from nova_snapext.capture import export
from nova_snapext.capture import guest as guest_mod
from nova_snapext.capture import host_errors
from nova_snapext.capture import locks
from nova_snapext.capture import progress
from nova_snapext.capture import qemu_img
from nova_snapext.capture import recovery
from nova_snapext.capture import restore
from nova_snapext.capture import revert
from nova_snapext.capture import states
from nova_snapext.capture import take
from nova_snapext.capture import verify
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod
from nova_snapext import stores

LOG = logging.getLogger(__name__)


@host_errors.translated_all
class Engine(take.TakeOps, restore.RestoreOps, revert.RevertOps,
             delete.DeleteOps, recovery.RecoveryOps, cinder.CinderOps,
             verify.VerifyOps, export.ExportOps, durability.DurableOps):
    """Snapshot operations on libvirt domains.

    :param conf: an oslo.config ConfigOpts with the [snapext] options
    :param store: a SnapshotStore; the configured plugin when omitted
    :param progress: callable(stage, **details) told about each step; every
        step is logged either way

    Every public method raises snapext errors only: libvirt, file system
    and qemu-img failures arrive as exception.HostError subclasses with a
    one-line cause (:mod:`host_errors`).
    """

    def __init__(self, conf, store=None, conn=None, progress=None):
        self.conf = conf
        self.store = store or stores.load(conf.snapext.store, conf)
        self._conn = conn
        self._progress = progress
        # libvirt prints every error to stderr by default; the engine turns
        # them into exceptions with messages, so printing is just noise.
        libvirt.registerErrorHandler(lambda ctx, err: None, None)

    @property
    def conn(self):
        if self._conn is None:
            self._conn = guest_mod.connect(self.conf.snapext.libvirt_uri)
        return self._conn

    @property
    def host(self):
        return guest_mod.Host(self.conn)

    def _report(self, stage, **details):
        progress.log_progress(stage, **details)
        if self._progress:
            self._progress(stage, **details)

    def domain(self, ident):
        """The libvirt domain named by uuid or name; NotFound if none."""
        return self._lookup(ident)

    def _lookup(self, ident):
        try:
            if uuidutils.is_uuid_like(ident):
                return self.conn.lookupByUUIDString(ident)
            return self.conn.lookupByName(ident)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise exception.NotFound('domain %s not found' % ident)
            raise

    def _guest_or_none(self, instance_uuid):
        try:
            return guest_mod.Guest(self._lookup(instance_uuid))
        except exception.NotFound:
            return None

    def _lock(self, instance_uuid):
        return locks.instance_lock(self.conf.snapext.lock_path, instance_uuid)

    # -- disk states --

    @staticmethod
    def _held(paths, guest=None):
        """{file: internal snapshot names} of those ``paths`` that exist.

        The files a running ``guest`` writes are read through its QEMU.
        """
        paths = sorted(set(paths))
        held = {}
        if guest is not None and guest.is_active():
            active = {d.path for d in guest.disks()}
            held = guest.internal_snapshots(
                [p for p in paths if p in active])
        held.update({path: set(qemu_img.snapshot_names(path))
                     for path in paths
                     if path not in held and os.path.exists(path)})
        return held

    def _drop_states(self, guest, wanted):
        """Drop internal snapshots [(file, name)] wherever they still are."""
        running = guest is not None and guest.is_active()
        live = ({d.target: d.path for d in guest.disks()} if running
                else {})
        steps = states.plan_delete(wanted, live,
                                   self._held((p for p, _ in wanted),
                                              guest))
        nodes = guest.format_nodes(live) if any(
            isinstance(s, states.DeleteLive) for s in steps) else {}
        for step in steps:
            if isinstance(step, states.DeleteLive):
                guest.delete_internal(nodes[step.target], step.name)
            else:
                qemu_img.snapshot_delete(step.path, step.name)

    def _unavailable_reason(self, record, guest):
        current = ({d.target: d.path for d in guest.disks()}
                   if guest is not None else None)
        sizes = None
        if record.get('imported') and current is not None:
            # its states are written into these files: sizes must match
            sizes = {target: qemu_img.virtual_size(path)
                     for target, path in current.items()}
        return states.unavailable_reason(
            record, current, self._held(d['path'] for d in record['disks']),
            sizes)

    # -- queries --

    def list(self, domain):
        return self.store.list(self._lookup(domain).UUIDString())

    def availability(self, record):
        """(True, None), or (False, why it cannot be reverted to now)."""
        reason = self._unavailable_reason(
            record, self._guest_or_none(record['instance_uuid']))
        return reason is None, reason

    def current(self, domain):
        """Id of the snapshot the live disks continue from, or None."""
        return self._current_id(guest_mod.Guest(self._lookup(domain)))

    def _current_id(self, guest):
        head = self.store.head(guest.uuid)
        if head is None:
            return None
        by_id = {m['id']: m for m in self.store.list(guest.uuid)}
        reasons = ({head: self._unavailable_reason(by_id[head], guest)}
                   if head in by_id else {})
        return states.current_snapshot(head, by_id, reasons)

    def tree(self, domain, records=False):
        """The snapshot tree of an instance, each node with its state.

        An instance uuid with no domain on this host (the server is
        shelved, or its domain is not defined yet) still has its records
        here, each one unavailable for that reason.

        :param records: also give the validated records ('records') and the
            broken ones ('broken'), for a caller with no access to the
            store (nova-api builds its answers from them)
        """
        if uuidutils.is_uuid_like(domain):
            guest = self._guest_or_none(domain)
            uuid = domain
        else:
            guest = guest_mod.Guest(self._lookup(domain))
            uuid = guest.uuid
        manifests = self.store.list(uuid)
        broken = self.store.broken(uuid)
        reasons = {m['id']: self._unavailable_reason(m, guest)
                   for m in manifests}
        current = states.current_snapshot(
            self.store.head(uuid), {m['id']: m for m in manifests}, reasons)
        tree = {'instance_uuid': uuid, 'current': current,
                'snapshots': manifest_mod.tree(manifests, current, reasons,
                                               broken)}
        if records:
            tree.update(records=manifests, broken=broken)
        return tree

    # -- what Nova's own operations tell the records --

    def mark(self, instance_uuid, reason):
        """Record that no snapshot of the instance can follow it any more.

        For the moves whose result the disks cannot show (the instance went
        to another host): the tree and the API report every snapshot as
        unavailable with ``reason``, and revert refuses them.
        """
        with self._lock(instance_uuid):
            for record in self.store.list(instance_uuid):
                if record.get('status'):
                    continue
                record['status'] = {
                    'reason': reason,
                    'since': timeutils.utcnow().isoformat() + 'Z'}
                self.store.update(record)
        LOG.info('snapshots of %s marked unavailable: %s', instance_uuid,
                 reason)

    def unmark(self, instance_uuid, reason_prefix=None):
        """Undo :meth:`mark` (a move that was reverted).

        :param reason_prefix: lift only the marks whose reason starts with
            it (a reverted resize lifts its own "in progress" mark, never
            the mark of an earlier move that was confirmed)
        """
        with self._lock(instance_uuid):
            for record in self.store.list(instance_uuid):
                status = record.get('status')
                if not status or (reason_prefix is not None and not
                                  status['reason'].startswith(
                                      reason_prefix)):
                    continue
                del record['status']
                self.store.update(record)

    def forget_instance(self, instance_uuid, context=None):
        """Remove every record and memory image of a deleted instance.

        Its disks (and the internal snapshots inside them) go with the
        instance.

        :param context: the request context, for a store that deletes
            the snapshots' bundles elsewhere too
        """
        with self._lock(instance_uuid):
            removed = self.store.forget(instance_uuid, context=context)
        if removed:
            LOG.info('removed %d snapshot records of deleted instance %s',
                     removed, instance_uuid)
        return removed
