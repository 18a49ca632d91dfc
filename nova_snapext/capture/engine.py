"""The capture engine: take, revert and delete complete snapshots.

Drives libvirt and qemu-img; the decisions (XML, chain plans, the record)
come from the pure modules next to it.
"""

import contextlib
import hashlib
import os
import time

import libvirt
from oslo_log import log as logging
from oslo_utils import timeutils
from oslo_utils import uuidutils

from nova_snapext.capture import chain
from nova_snapext.capture import domain_xml
from nova_snapext.capture import locks
from nova_snapext.capture import qemu_img
from nova_snapext.capture import quiesce
from nova_snapext.capture import save_image
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod
from nova_snapext import stores

LOG = logging.getLogger(__name__)

MEMORY_FILE = 'memory.save'


def _log_progress(stage, **details):
    LOG.info('snapext %s %s', stage,
             ' '.join('%s=%s' % kv for kv in sorted(details.items())))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _elapsed_ms(since):
    return round((time.monotonic() - since) * 1000, 1)


def _overlay(disk_path, snapshot_id, name=None):
    if name is None:
        return chain.overlay_path(disk_path, snapshot_id[:8])
    if os.path.basename(name) != name or name in ('.', '..'):
        raise exception.InvalidRequest(
            'overlay name %r must be a plain file name' % name)
    return os.path.join(os.path.dirname(disk_path), name)


@contextlib.contextmanager
def _timed(timings, key):
    started = time.monotonic()
    try:
        yield
    finally:
        timings[key] = _elapsed_ms(started)


class Engine(object):
    """Snapshot operations on libvirt domains.

    :param conf: an oslo.config ConfigOpts with the [snapext] options
    :param store: a SnapshotStore; the configured plugin when omitted
    :param progress: callable(stage, **details) told about each step; every
        step is logged either way
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
            self._conn = libvirt.open(self.conf.snapext.libvirt_uri)
        return self._conn

    def _report(self, stage, **details):
        _log_progress(stage, **details)
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

    def _lock(self, instance_uuid):
        return locks.instance_lock(self.conf.snapext.lock_path, instance_uuid)

    # -- queries ---------------------------------------------------------

    def list(self, domain):
        return self.store.list(self._lookup(domain).UUIDString())

    def current(self, domain):
        """Id of the snapshot the running disks descend from, or None."""
        dom = self._lookup(domain)
        return self._current(dom.UUIDString(), dom.XMLDesc(0))

    def _current(self, instance_uuid, xml):
        backing = {d.target: qemu_img.backing_file(d.path)
                   for d in domain_xml.writable_disks(xml)}
        return chain.current_snapshot(self.store.list(instance_uuid), backing)

    def tree(self, domain):
        dom = self._lookup(domain)
        instance_uuid = dom.UUIDString()
        manifests = self.store.list(instance_uuid)
        current = self._current(instance_uuid, dom.XMLDesc(0))
        return {'instance_uuid': instance_uuid, 'current': current,
                'snapshots': manifest_mod.tree(manifests, current)}

    # -- take --------------------------------------------------------------

    def take(self, domain, memory=True, quiesce_policy=None, disk_roles=None,
             extra=None, targets=None, overlay_names=None,
             reuse_overlays=False):
        """Capture memory + device state + every disk at one instant.

        :param memory: False for a disk-only snapshot
        :param quiesce_policy: required | preferred | off (default: config)
        :param targets: capture only these disks (e.g. the volumes of one
            Cinder group); default: every writable disk
        :param disk_roles: {target: {'role': ..., 'volume_id': ...}}
        :param extra: more top-level manifest fields (image_id, nova)
        :param overlay_names: {target: file name} of the new overlays, each
            created beside its disk's current file (Cinder names them
            after its snapshot ids); default <disk>.snapext-<id>
        :param reuse_overlays: the overlays exist already (made by the
            caller, e.g. Cinder with a relative backing file name); libvirt
            switches to them instead of creating them
        :returns: the committed manifest
        """
        dom = self._lookup(domain)
        policy = quiesce_policy or self.conf.snapext.quiesce_policy
        with self._lock(dom.UUIDString()):
            return self._take(dom, memory, policy, disk_roles or {},
                              extra or {}, targets, overlay_names or {},
                              reuse_overlays)

    def _take(self, dom, memory, policy, disk_roles, extra, targets,
              overlay_names=None, reuse_overlays=False):
        started = time.monotonic()
        instance_uuid = dom.UUIDString()
        running = dom.isActive()
        if memory and not running:
            raise exception.InvalidRequest(
                'a memory snapshot needs a running domain; %s is not '
                'running' % dom.name())
        xml = dom.XMLDesc(0)
        disks = domain_xml.writable_disks(xml)
        excluded = domain_xml.excluded_targets(xml)
        if targets is not None:
            if memory:
                raise exception.InvalidRequest(
                    'a memory snapshot must cover every writable disk: the '
                    'memory would not match the disks left out')
            unknown = set(targets) - {d.target for d in disks}
            if unknown:
                raise exception.InvalidRequest(
                    'domain %s has no writable disk %s'
                    % (dom.name(), ', '.join(sorted(unknown))))
            excluded += [d.target for d in disks if d.target not in targets]
            disks = [d for d in disks if d.target in targets]
        if not disks:
            raise exception.InvalidRequest(
                'domain %s has no disk to snapshot' % dom.name())
        snapshot_id = uuidutils.generate_uuid()
        overlays = {d.target: _overlay(d.path, snapshot_id,
                                       (overlay_names or {}).get(d.target))
                    for d in disks}
        taken = [p for p in overlays.values() if os.path.exists(p)]
        if reuse_overlays:
            missing = sorted(set(overlays.values()) - set(taken))
            if missing:
                raise exception.InvalidRequest(
                    'overlay %s to reuse does not exist' % missing[0])
        elif taken:
            raise exception.Conflict('overlay %s already exists' % taken[0])
        parent_id = self._current(instance_uuid, xml)
        staging = self.store.stage(instance_uuid, snapshot_id)
        memory_file = os.path.join(staging, MEMORY_FILE) if memory else None
        snap_xml = domain_xml.snapshot_xml(
            'snapext-%s' % snapshot_id, overlays, excluded, memory_file)
        flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC |
                 libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
        flags |= (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_LIVE if memory
                  else libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY)
        if reuse_overlays:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
        self._report('planned', snapshot=snapshot_id, domain=dom.name(),
                     disks=','.join(overlays), memory=bool(memory))
        timings = {}
        try:
            q_policy = policy if running else 'off'
            with quiesce.frozen(dom, q_policy) as q:
                if q.outcome == manifest_mod.QUIESCE_FROZEN:
                    self._report('frozen', snapshot=snapshot_id)
                with _timed(timings, 'snapshot_call'):
                    dom.snapshotCreateXML(snap_xml, flags)
            self._report('captured', snapshot=snapshot_id,
                         quiesce=q.outcome, frozen_ms=q.frozen_ms,
                         snapshot_call_ms=timings['snapshot_call'])
            record = self._record(dom, snapshot_id, parent_id, xml, disks,
                                  disk_roles, q, memory_file, extra)
            timings['total'] = _elapsed_ms(started)
            record['timings_ms'] = timings
            self.store.commit(record)
        except Exception as exc:
            self._undo_take(dom, overlays)
            self.store.abort(instance_uuid, snapshot_id)
            if isinstance(exc, exception.SnapextError):
                raise
            raise exception.CaptureFailed(
                'snapshot of %s failed: %s' % (dom.name(), exc)) from exc
        self._report('stored', snapshot=snapshot_id,
                     total_ms=timings['total'])
        return record

    def _record(self, dom, snapshot_id, parent_id, xml, disks, disk_roles,
                q, memory_file, extra):
        record = {
            'schema_version': manifest_mod.SCHEMA_VERSION,
            'id': snapshot_id,
            'instance_uuid': dom.UUIDString(),
            'domain': dom.name(),
            'parent_id': parent_id,
            'created_at': timeutils.utcnow().isoformat() + 'Z',
            'kind': (manifest_mod.KIND_FULL if memory_file
                     else manifest_mod.KIND_DISKS),
            'quiesce': q.as_dict(),
            'memory': None,
            'domain_xml': xml,
            'disks': [],
        }
        if memory_file:
            record['memory'] = {
                'store': self.store.name, 'location': MEMORY_FILE,
                'bytes': os.path.getsize(memory_file),
                'sha256': _sha256(memory_file)}
        for i, disk in enumerate(disks):
            info = qemu_img.info(disk.path)
            role = disk_roles.get(disk.target, {})
            record['disks'].append({
                'target': disk.target,
                'role': role.get('role', 'root' if i == 0 else 'disk'),
                'volume_id': role.get('volume_id'),
                'cinder_snapshot_id': role.get('cinder_snapshot_id'),
                'path': disk.path,
                'format': info['format'],
                'virtual_size': info['virtual-size'],
                'backing': qemu_img.backing_file(disk.path),
                'bytes': info.get('actual-size', 0),
                'sha256': None,
            })
        record.update(extra)
        return record

    def _undo_take(self, dom, overlays):
        """Remove overlays of a failed capture that the domain does not use.

        With ATOMIC, libvirt switches all disks or none; if it did switch
        (the failure came later), the overlays are the domain's live disks
        and must stay.
        """
        try:
            in_use = {d.path for d in
                      domain_xml.writable_disks(dom.XMLDesc(0))}
        except libvirt.libvirtError:
            LOG.exception('cannot tell which overlays %s uses; keeping them',
                          dom.name())
            return
        for path in overlays.values():
            if path not in in_use and os.path.exists(path):
                LOG.info('removing overlay %s of the failed capture', path)
                os.unlink(path)

    # -- revert ------------------------------------------------------------

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
            with _timed(timings, 'overlays'):
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
            with _timed(timings, 'destroy'):
                if was_active:
                    dom.destroy()
            if dom.isPersistent():
                self.conn.defineXML(domain_xml.with_disk_sources(
                    dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE |
                                libvirt.VIR_DOMAIN_XML_SECURE),
                    overlays))
            with _timed(timings, 'restore' if full else 'boot'):
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
                     total_ms=_elapsed_ms(started))

    def _undo_revert(self, dom, record, created, old_disks, was_active):
        """Bring the domain back on its old disks after a failed revert."""
        old = {d.target: d.path for d in old_disks}
        try:
            if dom.isPersistent():
                self.conn.defineXML(domain_xml.with_disk_sources(
                    dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE |
                                libvirt.VIR_DOMAIN_XML_SECURE), old))
            if was_active and not dom.isActive():
                LOG.warning('revert failed; booting %s on its previous '
                            'disks', dom.name())
                dom.create()
        except libvirt.libvirtError:
            LOG.exception('could not bring %s back after the failed revert',
                          dom.name())
        in_use = set()
        try:
            in_use = {d.path for d in
                      domain_xml.writable_disks(dom.XMLDesc(0))}
        except libvirt.libvirtError:
            LOG.exception('cannot read %s; keeping new overlays', dom.name())
            return
        for path in created:
            if path not in in_use and os.path.exists(path):
                os.unlink(path)

    # -- clone -------------------------------------------------------------

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
                     total_ms=_elapsed_ms(started))
        return dom

    def thaw_clone(self, snapshot_id, dom):
        """Thaw a clone that was started paused, once it runs."""
        self._thaw_if_frozen(self.store.get(snapshot_id), dom)

    def _thaw_if_frozen(self, record, dom):
        # The memory image was taken with the filesystems frozen.
        if record['quiesce']['outcome'] == manifest_mod.QUIESCE_FROZEN:
            with _timed(record.setdefault('timings_ms', {}), 'thaw'):
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

    # -- recovery ----------------------------------------------------------

    def recover(self):
        """Clean up what captures interrupted by a crash left behind.

        Run at service start (Nova's init_host): a guest the dead process
        froze is thawed, a guest libvirt left paused by a snapshot is
        resumed, staged records are dropped, and overlay files that no disk
        chain and no snapshot record uses are removed.  Instances another
        live process is working on are left alone.
        """
        done = {'thawed': [], 'resumed': [], 'aborted': [], 'removed': [],
                'failed': []}
        # Only instances this store knows: a capture stages its record
        # before libvirt creates any overlay.
        for instance_uuid in self.store.instances():
            try:
                dom = self.conn.lookupByUUIDString(instance_uuid)
            except libvirt.libvirtError:
                continue
            try:
                with self._lock(instance_uuid):
                    self._recover_domain(dom, done)
            except exception.Conflict:
                LOG.info('%s is busy; not recovering it', dom.name())
            except Exception:
                LOG.exception('recovering %s failed', dom.name())
                done['failed'].append(dom.name())
        self._report('recovered', **{k: len(v) for k, v in done.items()})
        return done

    def _recover_domain(self, dom, done):
        instance_uuid = dom.UUIDString()
        staged = self.store.staged(instance_uuid)
        if staged:
            self._wait_for_libvirt_job(dom)
        if staged and dom.isActive():
            state, reason = dom.state()
            if (state == libvirt.VIR_DOMAIN_PAUSED and
                    reason == libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT):
                dom.resume()
                done['resumed'].append(dom.name())
            # A capture was under way, so the freeze, if any, was ours.
            quiesce.thaw_when_ready(
                dom, self.conf.snapext.thaw_after_restore_timeout)
            done['thawed'].append(dom.name())
        for snapshot_id in staged:
            self.store.abort(instance_uuid, snapshot_id)
            done['aborted'].append(snapshot_id)
        disks = domain_xml.writable_disks(dom.XMLDesc(0))
        # Everything reachable from a live disk or a snapshot's state file.
        pending = [d.path for d in disks] + [
            d['path'] for m in self.store.list(instance_uuid)
            for d in m['disks']]
        used = set()
        while pending:
            path = pending.pop()
            if path and path not in used and os.path.exists(path):
                used.add(path)
                pending.append(qemu_img.backing_file(path))
        for path in chain.orphan_overlays(
                [d.path for d in disks], used, os.listdir):
            LOG.warning('removing orphan overlay %s of %s', path, dom.name())
            os.unlink(path)
            done['removed'].append(path)

    # -- delete ------------------------------------------------------------

    def delete(self, snapshot_id):
        """Delete a snapshot; its children stay revertable.

        Its state files are merged into the files that depend on them (block
        pull or commit where the running domain uses them, qemu-img rebase
        where not), then removed, and its children are re-parented.
        """
        record = self.store.get(snapshot_id)
        with self._lock(record['instance_uuid']):
            self._delete(record)

    def _live_chains(self, instance_uuid, backing):
        try:
            dom = self._lookup(instance_uuid)
        except exception.NotFound:
            return None, {}
        if not dom.isActive():
            return dom, {}
        chains = {}
        for disk in domain_xml.writable_disks(dom.XMLDesc(0)):
            files = [disk.path]
            while files[-1] in backing and backing[files[-1]]:
                files.append(backing[files[-1]])
            chains[disk.target] = files
        return dom, chains

    def _delete(self, record):
        instance_uuid = record['instance_uuid']
        manifests = self.store.list(instance_uuid)
        known = {d['path'] for m in manifests for d in m['disks']}
        try:
            dom = self._lookup(instance_uuid)
            known.update(d.path for d in
                         domain_xml.writable_disks(dom.XMLDesc(0)))
        except exception.NotFound:
            pass
        backing = {p: qemu_img.backing_file(p) for p in sorted(known)
                   if os.path.exists(p)}
        dom, live_chains = self._live_chains(instance_uuid, backing)
        states = {d['target']: d['path'] for d in record['disks']}
        steps = chain.plan_delete(states, backing, live_chains)
        self._report('delete-planned', snapshot=record['id'],
                     steps=len(steps))
        relocated = {}
        for step in steps:
            if isinstance(step, chain.RebaseOffline):
                self._report('rebase', path=step.path)
                qemu_img.rebase(step.path, step.new_backing)
            elif isinstance(step, chain.PullLive):
                self._report('block-pull', disk=step.target)
                dom.blockRebase(step.target, step.base, 0, 0)
                self._wait_block_job(dom, step.target,
                                     dropped=states[step.target])
            elif isinstance(step, chain.CommitLive):
                self._report('block-commit', disk=step.target, top=step.top)
                dom.blockCommit(step.target, step.base, step.top, 0, 0)
                self._wait_block_job(dom, step.target, dropped=step.top)
            elif isinstance(step, chain.Relocate):
                relocated[step.old_path] = step.new_path
        self._update_records(manifests, record, relocated)
        for step in steps:
            if isinstance(step, chain.Unlink) and os.path.exists(step.path):
                os.unlink(step.path)
        self.store.delete(record['id'])
        self._report('deleted', snapshot=record['id'])

    def _update_records(self, manifests, deleted, relocated):
        new_parent = dict(manifest_mod.reparent_on_delete(manifests,
                                                          deleted['id']))
        for m in manifests:
            if m['id'] == deleted['id']:
                continue
            changed = False
            if m['id'] in new_parent:
                m['parent_id'] = new_parent[m['id']]
                changed = True
            for disk in m['disks']:
                path = relocated.get(disk['path'], disk['path'])
                backing = qemu_img.backing_file(path)
                if (path, backing) != (disk['path'], disk['backing']):
                    disk['path'], disk['backing'] = path, backing
                    changed = True
            if changed:
                self.store.update(m)

    def _wait_for_libvirt_job(self, dom):
        """Wait while libvirtd still runs a job on ``dom``.

        libvirtd finishes a snapshot even when the process that asked for it
        died; cleaning up the domain's files meanwhile would pull overlays
        from under it.
        """
        deadline = time.monotonic() + self.conf.snapext.block_job_timeout
        while (dom.isActive() and
               dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE):
            if time.monotonic() > deadline:
                raise exception.Conflict(
                    'libvirt still runs a job on %s after %d s'
                    % (dom.name(), self.conf.snapext.block_job_timeout))
            time.sleep(0.1)

    def _wait_block_job(self, dom, target, dropped):
        """Wait for a pull or commit; check ``dropped`` left the chain.

        A finished job and a failed one both simply vanish from
        blockJobInfo, so success is judged by the chain itself.
        """
        deadline = time.monotonic() + self.conf.snapext.block_job_timeout
        while True:
            info = dom.blockJobInfo(target, 0)
            if not info:
                break
            if time.monotonic() > deadline:
                dom.blockJobAbort(target, 0)
                raise exception.SnapextError(
                    'block job on %s did not finish within %d s'
                    % (target, self.conf.snapext.block_job_timeout))
            self._report('block-job', disk=target, cur=info.get('cur'),
                         end=info.get('end'))
            time.sleep(0.2)
        active = {d.target: d.path for d in
                  domain_xml.writable_disks(dom.XMLDesc(0))}[target]
        path = active
        while path:
            if path == dropped:
                raise exception.SnapextError(
                    'block job on %s of %s failed: %s is still in its '
                    'chain' % (target, dom.name(), dropped))
            path = qemu_img.backing_file(path)
