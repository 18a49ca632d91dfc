"""Migrating what snapext's external-overlay release left on disk.

Until the qcow2 internal snapshots, a snapshot moved every disk to a new
overlay ``<disk file>.snapext-<8 chars of the id>`` whose backing file, the
disk's previous active file, became the snapshot's read-only *state file*;
a revert put a fresh overlay on a state file, so an instance's files form a
tree of overlays under the disk's own file (Nova's ``disk``, a Cinder
``volume-<id>``), and the records are ``schema_version`` 1.

The migration brings every disk back onto its own file (the *original*):
for each state file of a record, the original's content is made that state
and kept as the internal snapshot ``snapext-<id>``; last the live data is
made the original's active state.  The original's content before anything
changed is kept first as the internal snapshot ``legacy-migration-base``,
so that every step can start from it (``qemu-img commit -b <original>``
copies what every layer above the original holds, so the original must
hold what those layers were made over) and so that a failure rolls back to
the old chain, still consistent.  Overlay files are never written (their
headers neither: a commit with ``-b`` keeps the committed images) and never
deleted.

:func:`plan` is pure: files are described by :class:`FileInfo` from an
``inspect`` callable, so the rules are unit-tested without qemu-img.
:class:`Migrator` runs a plan on a real domain, for
``Engine.recover()``.
"""

import collections
import json
import os
import time

import libvirt
import libvirt_qemu
from oslo_log import log as logging
from oslo_utils import timeutils

from nova_snapext.capture import domain_xml
from nova_snapext.capture import durable
from nova_snapext.capture import guest as guest_mod
from nova_snapext.capture import qemu_img
from nova_snapext.capture import quiesce
from nova_snapext.capture import states
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod

LOG = logging.getLogger(__name__)

LEGACY_SCHEMA = 1
OVERLAY_MARK = '.snapext-'
# Neither starts with states.PREFIX: recovery's orphan pass never drops
# them, whatever happens.
BASE = 'legacy-migration-base'
KEPT_PREFIX = 'legacy-kept-'
JOURNAL = '.legacy-migration.json'
SAVE_FILE = '.legacy-migration.save'

FileInfo = collections.namedtuple('FileInfo', 'backing fmt size snapshots')
"""What qemu-img tells of one file: backing file (absolute) or None, format,
virtual size, internal snapshot names."""

# -- steps, run in order; all offline (no QEMU holds the files) --

CreateOriginal = collections.namedtuple('CreateOriginal',
                                        'path backing backing_fmt size')
"""The original file is gone (an old delete merged it away): an empty qcow2
over the backing the overlays sit on, so it reads as that backing does."""

Adopt = collections.namedtuple('Adopt', 'path original')
"""``qemu-img rebase -u`` an overlay from the backing onto the empty new
original: the same data, a header change only."""

SnapshotCreate = collections.namedtuple('SnapshotCreate', 'path name')
SnapshotApply = collections.namedtuple('SnapshotApply', 'path name')

Commit = collections.namedtuple('Commit', 'top base')
"""``qemu-img commit -d -b base top``: ``base`` gets the data of ``top``
and of every layer between them; no layer is changed."""

Plan = collections.namedtuple(
    'Plan', 'originals steps migrated unavailable head kept refused')
"""What the migration of one instance does.

originals: {target: original file} of the disks that move back onto it;
steps: the offline steps; migrated: {record id: {target: original}};
unavailable: {record id: reason}; head: the snapshot the live data
continues from, or None; kept: [(overlay file, what it holds now)];
refused: why nothing can be done (left on the old chains), or None.
"""


def is_overlay(path):
    return OVERLAY_MARK in os.path.basename(path)


def original_of(path):
    """The disk's own file an overlay is named after."""
    directory, name = os.path.split(path)
    return os.path.join(directory, name.split(OVERLAY_MARK)[0])


def is_legacy(record):
    return record.get('schema_version') == LEGACY_SCHEMA


def needs_migration(records, active):
    """Whether an instance has anything of the old layout."""
    return (any(is_legacy(r) for r in records)
            or any(is_overlay(p) for p in active.values()))


def chain(path, inspect):
    """``path`` and the files under it, top first; stops at a missing one."""
    files = []
    while path and path not in files:
        info = inspect(path)
        if info is None:
            break
        files.append(path)
        path = info.backing
    return files


def _same_family(path, original):
    return (is_overlay(path) and original_of(path) == original)


def _tree_root(path, original, anchor, inspect):
    """The overlay of ``path``'s chain that sits on ``anchor``, or None.

    ``path`` is in the original's tree when its chain runs through overlays
    named after the original down to ``anchor`` (the original, or, when the
    original is gone, the file the overlays sit on).
    """
    files = chain(path, inspect)
    for i, f in enumerate(files):
        if f == anchor:
            return files[i - 1] if i else f
        if not _same_family(f, original):
            return None
    if anchor is None and files and inspect(files[-1]).backing is None:
        # The original had no backing file, and is gone.
        return files[-1]
    return None


def _depth(path, anchor, inspect):
    files = chain(path, inspect)
    return files.index(anchor) if anchor in files else len(files)


def _disk_layout(target, active, inspect):
    """(original, anchor, create, refused) of one disk running on overlays.

    ``anchor`` is the file the overlays' tree hangs from: the original, or
    the original's old backing when it is gone (``create`` is then the
    CreateOriginal step).
    """
    original = original_of(active)
    files = chain(active, inspect)
    run = 0
    while run < len(files) and _same_family(files[run], original):
        run += 1
    below = files[run] if run < len(files) else None
    bottom = inspect(files[run - 1]) if run else None
    if bottom is None:
        return original, None, None, (
            'disk %s runs on %s, which does not exist' % (target, active))
    if below == original:
        info = inspect(original)
        if info.fmt != 'qcow2':
            return original, None, None, (
                'disk %s: %s is %s and cannot hold internal snapshots; the '
                'disk is left on its overlays' % (target, original,
                                                  info.fmt))
        return original, original, None, None
    if inspect(original) is not None:
        return original, None, None, (
            'disk %s: the chain of %s runs to %s, not through %s; the disk '
            'is left on its overlays' % (target, active, below, original))
    if below is None and bottom.backing is not None:
        return original, None, None, (
            'disk %s: %s, under %s, does not exist'
            % (target, bottom.backing, files[run - 1]))
    below_fmt = inspect(below).fmt if below else None
    return original, below, CreateOriginal(original, below, below_fmt,
                                           bottom.size), None


def plan(records, active, inspect, listdir):
    """Plan the migration of one instance.

    :param records: the instance's records as stored, any schema
    :param active: {target: active file} of the domain's definition (the
        running one when the domain runs)
    :param inspect: callable(path) -> FileInfo, or None when it is missing
    :param listdir: callable(directory) -> file names (os.listdir)
    """
    legacy = [r for r in records if is_legacy(r)]
    originals, anchors, layout_steps, refusals = {}, {}, {}, []
    for target, path in sorted(active.items()):
        if not is_overlay(path):
            continue
        original, anchor, create, refused = _disk_layout(target, path,
                                                         inspect)
        if refused:
            refusals.append(refused)
            continue
        originals[target], anchors[target] = original, anchor
        layout_steps[target] = [create] if create else []
    if refusals:
        return Plan({}, [], {}, {}, None, [], '; '.join(refusals))

    # The files of each original's tree: the active chain, every record's
    # state, every overlay named after the original beside it.
    tree = {}
    for target, original in originals.items():
        candidates = set(chain(active[target], inspect))
        candidates.update(d['path'] for r in legacy for d in r['disks']
                          if d['target'] == target)
        directory = os.path.dirname(original)
        candidates.update(os.path.join(directory, n)
                          for n in listdir(directory)
                          if _same_family(os.path.join(directory, n),
                                          original))
        tree[target] = {
            f: _tree_root(f, original, anchors[target], inspect)
            for f in sorted(candidates) if inspect(f) is not None}
        tree[target] = {f: root for f, root in tree[target].items()
                        if root is not None}

    migrated, unavailable = {}, {}
    for record in legacy:
        reasons = []
        for disk in record['disks']:
            reason = _state_problem(disk, active, originals, tree, inspect)
            if reason:
                reasons.append(reason)
        if reasons:
            unavailable[record['id']] = (
                'a snapshot of the previous (external overlay) layout that '
                'could not be brought into the disks\' own files: %s'
                % '; '.join(reasons))
        else:
            migrated[record['id']] = {d['target']: originals[d['target']]
                                      for d in record['disks']}

    steps, kept = [], []
    for target, original in sorted(originals.items()):
        target_steps, target_kept = _disk_steps(
            target, original, anchors[target], active[target],
            tree[target], layout_steps[target], legacy, migrated, inspect)
        steps.extend(target_steps)
        kept.extend(target_kept)
    for target, path in sorted(active.items()):
        if target not in originals:
            kept.extend(_stale_overlays(target, path, inspect, listdir))
    return Plan(originals, steps, migrated, unavailable,
                _head(legacy, migrated, active, inspect), kept, None)


def _state_problem(disk, active, originals, tree, inspect):
    """Why one disk state of a legacy record cannot be migrated, or None."""
    target, path = disk['target'], disk['path']
    if target not in active:
        return ('disk %s is no longer attached; its state file %s is kept'
                % (target, path))
    if inspect(path) is None:
        return ('disk %s: its state file %s no longer exists'
                % (target, path))
    if target in originals:
        if path in tree[target]:
            return None
        return ('disk %s: its state file %s is not over %s, the disk\'s '
                'file; it is kept' % (target, path, originals[target]))
    current = active[target]
    if path == current or current in chain(path, inspect):
        return ('disk %s has run directly on %s since the snapshot (its '
                'definition was regenerated, e.g. by a hard reboot), so %s '
                'no longer holds the snapshot\'s state; it is kept'
                % (target, current, path))
    if path in chain(current, inspect):
        return ('disk %s: the state file %s lies under %s, the disk\'s '
                'active file, in a chain snapext does not manage; it is '
                'kept' % (target, path, current))
    return ('disk %s: its state file %s is not in the chain of %s; it is '
            'kept' % (target, path, current))


def _disk_steps(target, original, anchor, active, tree, steps, legacy,
                migrated, inspect):
    """Steps and kept-file notes for one disk."""
    steps = list(steps)
    if steps:
        roots = sorted({root for root in tree.values()
                        if inspect(root).backing == anchor})
        steps.extend(Adopt(root, original) for root in roots)
    names = collections.defaultdict(list)
    for record in legacy:
        if record['id'] not in migrated:
            continue
        for disk in record['disks']:
            if disk['target'] == target:
                names[disk['path']].append(states.internal_name(record['id']))
    on_chain = set(chain(active, inspect))
    for path in tree:
        if path not in names and path not in on_chain and path != original:
            # An overlay no record names and the live data does not run
            # on: its data is kept inside the original too.
            names[path].append(KEPT_PREFIX + os.path.basename(path))
    steps.append(SnapshotCreate(original, BASE))
    at_base = True
    order = sorted((p for p in names if p != active),
                   key=lambda p: (p != original, _depth(p, anchor, inspect)
                                  if p != original else 0, p))
    kept = []
    for path in order + [active]:
        if path != original:
            if not at_base:
                steps.append(SnapshotApply(original, BASE))
            steps.append(Commit(path, original))
            at_base = False
        if path == active:
            break
        for name in sorted(names[path]):
            steps.append(SnapshotCreate(original, name))
        if path != original:
            kept.append((path, 'its data is in %s as internal snapshot %s'
                         % (original, ', '.join(sorted(names[path])))))
    for path in sorted(set(tree) - set(names)):
        if path == active:
            kept.append((path, 'the live data it held is in %s' % original))
        elif path != original:
            kept.append((path, 'an intermediate layer of the live chain; '
                         'what it adds is in %s' % original))
    return steps, kept


def _stale_overlays(target, current, inspect, listdir):
    """Overlays beside a disk that runs on its own file already."""
    directory = os.path.dirname(current)
    try:
        names = listdir(directory)
    except OSError:
        return []
    found = []
    for name in sorted(names):
        path = os.path.join(directory, name)
        if _same_family(path, current):
            found.append((path, 'disk %s runs on %s, not over this file: '
                          'nothing of it was brought in' % (target, current)))
    return found


def _head(legacy, migrated, active, inspect):
    """The snapshot the old active layers descended from directly."""
    backing = {}
    for target, path in active.items():
        info = inspect(path)
        backing[target] = info.backing if info else None
    for record in legacy:
        if record['id'] in migrated and all(
                backing.get(d['target']) == d['path']
                for d in record['disks']):
            return record['id']
    return None


# -- the records --

def _legacy_note(record, now):
    return {'schema_version': LEGACY_SCHEMA, 'migrated_at': now,
            'disks': {d['target']: {'path': d['path'],
                                    'format': d.get('format'),
                                    'backing': d.get('backing')}
                      for d in record['disks']}}


def _partial(record):
    """Whether the old capture covered only some disks (a Cinder group)."""
    if 'partial' in record:
        return record['partial']
    try:
        had = {d.target for d in domain_xml.writable_disks(
            record['domain_xml'])}
    except exception.SnapextError:
        return False
    return bool(had) and {d['target'] for d in record['disks']} < had


def _disk_fields(disk):
    return {k: disk.get(k) for k in ('target', 'role', 'volume_id',
                                     'cinder_snapshot_id', 'sha256')}


def migrated_record(record, originals, backing, now):
    """The schema-2 record of a migrated legacy snapshot.

    :param originals: {target: original file}
    :param backing: {target: the original's backing file or None}
    """
    new = dict(record, schema_version=manifest_mod.SCHEMA_VERSION,
               legacy=_legacy_note(record, now), partial=_partial(record))
    new['disks'] = [dict(_disk_fields(d), path=originals[d['target']],
                         snapshot=states.internal_name(record['id']),
                         format='qcow2', virtual_size=d['virtual_size'],
                         backing=backing.get(d['target']))
                    for d in record['disks']]
    return new


def unavailable_record(record, reason, now):
    """The schema-2 record of a legacy snapshot left in its old files."""
    new = dict(record, schema_version=manifest_mod.SCHEMA_VERSION,
               legacy=_legacy_note(record, now), partial=_partial(record),
               status={'reason': reason, 'since': now})
    # The disks still name the state files, kept where they were.
    new['disks'] = [dict(_disk_fields(d), path=d['path'],
                         snapshot=states.internal_name(record['id']),
                         format='qcow2', virtual_size=d['virtual_size'],
                         backing=d.get('backing'))
                    for d in record['disks']]
    return new


# -- running a plan --

def inspect_file(path):
    """FileInfo of ``path`` through qemu-img, None when it is missing."""
    if not os.path.exists(path):
        return None
    data = qemu_img.info(path)
    return FileInfo(qemu_img.backing_file(path, data), data['format'],
                    data['virtual-size'], qemu_img.snapshot_names(path, data))


def run_step(step):
    """One offline step: no QEMU holds the files."""
    if isinstance(step, CreateOriginal):
        qemu_img.create(step.path, step.size, step.backing, step.backing_fmt)
    elif isinstance(step, Adopt):
        qemu_img.rebase_unsafe(step.path, step.original)
    elif isinstance(step, SnapshotCreate):
        qemu_img.snapshot_create(step.path, step.name)
    elif isinstance(step, SnapshotApply):
        qemu_img.snapshot_apply(step.path, step.name)
    elif isinstance(step, Commit):
        qemu_img.commit(step.top, step.base)
    else:
        raise exception.SnapextError('unknown migration step %r' % (step,))


class Migrator(object):
    """Runs the migration of one instance for ``Engine.recover()``.

    A journal in the store's instance directory is written before any
    change.  Until the domain is defined (or restored) on the original
    files, a failure, or a crash found by the next run, rolls the files back
    to the old chain (the originals go back to ``legacy-migration-base``)
    and the domain runs on it again; after that point a later run only
    finishes (records, HEAD, persistent definition).  Both are safe to
    repeat.
    """

    def __init__(self, engine):
        self.engine = engine
        self.store = engine.store
        self.root = getattr(engine.store, 'root', None)

    # -- the store's raw records (schema 1 does not validate any more) --

    def _instance_dir(self, instance_uuid):
        return os.path.join(self.root, instance_uuid)

    def raw_records(self, instance_uuid):
        directory = self._instance_dir(instance_uuid)
        if not os.path.isdir(directory):
            # An interrupted first capture: recovery aborted its staged
            # record, and the store removed the directory left empty.
            return []
        records = []
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name, 'manifest.json')
            if name.startswith('.') or not os.path.isfile(path):
                continue
            try:
                with open(path) as f:
                    records.append(json.load(f))
            except ValueError as exc:
                LOG.error('ignoring snapshot record %s: %s', path, exc)
        return records

    def _journal_path(self, instance_uuid):
        return os.path.join(self._instance_dir(instance_uuid), JOURNAL)

    def _write_journal(self, instance_uuid, journal):
        durable.write_json(self._journal_path(instance_uuid), journal)

    # -- the domain --

    @staticmethod
    def _sources(guest, inactive=False):
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return {d.target: d.path
                for d in domain_xml.writable_disks(guest.dom.XMLDesc(flags))}

    def _on_originals(self, guest, originals):
        current = self._sources(guest)
        return all(current.get(t) == p for t, p in originals.items())

    def _redefine(self, guest, originals):
        """The persistent definition names the original files."""
        if not guest.dom.isPersistent():
            return
        xml = guest.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE |
                                libvirt.VIR_DOMAIN_XML_SECURE)
        there = {d.target for d in domain_xml.writable_disks(xml)}
        sources = {t: p for t, p in originals.items() if t in there}
        if any(self._sources(guest, inactive=True).get(t) != p
               for t, p in sources.items()):
            self.engine.conn.defineXML(
                domain_xml.with_disk_sources(xml, sources))

    @staticmethod
    def _frozen(guest):
        try:
            reply = libvirt_qemu.qemuAgentCommand(
                guest.dom, '{"execute": "guest-fsfreeze-status"}', 5, 0)
        except libvirt.libvirtError:
            return False
        return json.loads(reply).get('return') == 'frozen'

    # -- the migration --

    def migrate(self, guest, done):
        """Migrate one instance if it has anything of the old layout."""
        if self.root is None:
            return
        instance_uuid = guest.uuid
        if os.path.exists(self._journal_path(instance_uuid)):
            with open(self._journal_path(instance_uuid)) as f:
                journal = json.load(f)
            if self._on_originals(guest, journal['originals']):
                LOG.info('%s: finishing an interrupted migration of the '
                         'previous snapshot layout', guest.name)
                self._finish(guest, journal, done)
                return
            LOG.warning('%s: rolling back an interrupted migration of the '
                        'previous snapshot layout', guest.name)
            self._rollback(guest, journal)
        records = self.raw_records(instance_uuid)
        active = self._sources(guest)
        if not needs_migration(records, active):
            return
        the_plan = plan(records, active, inspect_file, os.listdir)
        if the_plan.refused:
            LOG.error('%s: the previous snapshot layout cannot be migrated '
                      'and is left as it is (the domain runs on its old '
                      'chain): %s', guest.name, the_plan.refused)
            raise exception.SnapextError(
                'legacy layout of %s not migrated: %s'
                % (guest.name, the_plan.refused))
        self.engine._report('legacy-planned', domain=guest.name,
                            steps=len(the_plan.steps),
                            migrated=len(the_plan.migrated),
                            unavailable=len(the_plan.unavailable))
        journal = {
            'originals': the_plan.originals,
            'created': sorted({(s.path, s.name) for s in the_plan.steps
                               if isinstance(s, SnapshotCreate)}),
            'migrated': the_plan.migrated,
            'unavailable': the_plan.unavailable,
            'head': the_plan.head,
            'kept': the_plan.kept,
            'running': guest.is_active(),
            'paused': guest.is_active() and guest.is_paused(),
            'frozen': False,
            'save': os.path.join(self._instance_dir(instance_uuid),
                                 SAVE_FILE),
        }
        if the_plan.steps:
            self._switch(guest, the_plan, journal)
        else:
            self._write_journal(instance_uuid, journal)
        self._finish(guest, journal, done)

    def _switch(self, guest, the_plan, journal):
        """Run the offline steps and put the domain on the originals."""
        running = journal['running']
        if running and not journal['paused']:
            journal['frozen'] = self._frozen(guest)
        self._write_journal(guest.uuid, journal)
        started = time.monotonic()
        timings = {}
        try:
            if running:
                guest.dom.save(journal['save'])
                timings['save_ms'] = _ms(started)
            mark = time.monotonic()
            for step in the_plan.steps:
                LOG.info('%s: legacy migration: %s', guest.name, step)
                run_step(step)
            timings['disks_ms'] = _ms(mark)
            if running:
                mark = time.monotonic()
                xml = domain_xml.with_disk_sources(
                    domain_xml.with_console_appended(
                        self.engine.host.saved_xml(journal['save'])),
                    the_plan.originals)
                self.engine.host.restore(journal['save'], xml,
                                         paused=journal['paused'])
                timings['restore_ms'] = _ms(mark)
                timings['paused_ms'] = _ms(started)
            else:
                self._redefine(guest, the_plan.originals)
        except Exception as exc:
            LOG.error('%s: migration of the previous snapshot layout '
                      'failed (%s); rolling back to the old chain',
                      guest.name, exc)
            self._rollback(guest, journal)
            raise exception.SnapextError(
                'legacy layout of %s not migrated: %s; it runs on its old '
                'chain' % (guest.name, exc)) from exc
        journal['timings_ms'] = timings
        self._write_journal(guest.uuid, journal)
        self.engine._report('legacy-switched', domain=guest.name, **timings)
        if running and journal['frozen']:
            # The save kept a freeze nobody is left to thaw (recovery runs
            # at service start).
            quiesce.thaw_when_ready(
                guest.dom, self.engine.conf.snapext.thaw_after_restore_timeout)

    def _rollback(self, guest, journal):
        """Back to the old chain; raises if the domain cannot run on it."""
        by_file = collections.defaultdict(set)
        for path, name in journal['created']:
            by_file[path].add(name)
        for path, names in sorted(by_file.items()):
            if not os.path.exists(path):
                continue
            held = set(qemu_img.snapshot_names(path))
            if BASE not in held:
                continue
            qemu_img.snapshot_apply(path, BASE)
            for name in sorted((names & held) - {BASE}):
                qemu_img.snapshot_delete(path, name)
            qemu_img.snapshot_delete(path, BASE)
        save = journal['save']
        if journal['running'] and not guest.is_active():
            if not os.path.exists(save):
                raise exception.SnapextError(
                    '%s was running before the migration and is shut off, '
                    'with no saved memory at %s' % (guest.name, save))
            xml = self.engine.host.saved_xml(save)
            # Its own disks, without the <backingStore> it had: libvirt
            # reads the chains from the files.
            old = {d.target: d.path for d in domain_xml.writable_disks(xml)
                   if d.target in journal['originals']}
            xml = domain_xml.with_disk_sources(
                domain_xml.with_console_appended(xml), old)
            self.engine.host.restore(save, xml, paused=journal['paused'])
            LOG.info('%s runs on its old chain again', guest.name)
        if os.path.exists(save) and guest.is_active():
            os.unlink(save)
        os.unlink(self._journal_path(guest.uuid))

    def _finish(self, guest, journal, done):
        """After the switch: persistent definition, records, HEAD."""
        guest = guest_mod.Guest(
            self.engine.conn.lookupByUUIDString(guest.uuid))
        originals = journal['originals']
        if guest.is_active():
            self._redefine(guest, originals)
        now = timeutils.utcnow().isoformat() + 'Z'
        backing = {t: qemu_img.backing_file(p) for t, p in originals.items()}
        for record in self.raw_records(guest.uuid):
            if not is_legacy(record):
                continue
            if record['id'] in journal['migrated']:
                new = migrated_record(record, originals, backing, now)
            else:
                new = unavailable_record(
                    record, journal['unavailable'].get(
                        record['id'], 'a snapshot of the previous layout '
                        'that was not migrated'), now)
            self.store.update(new)
            LOG.info('%s: snapshot %s %s', guest.name, record['id'],
                     'migrated into %s' % ', '.join(sorted(set(
                         new['disks'][i]['path']
                         for i in range(len(new['disks'])))))
                     if 'status' not in new
                     else 'unavailable: %s' % new['status']['reason'])
        if journal['head'] and self.store.head(guest.uuid) is None:
            self.store.set_head(guest.uuid, journal['head'])
        self.engine._drop_states(
            guest, [(p, BASE) for p in sorted(set(originals.values()))])
        for path, note in journal['kept']:
            LOG.warning('%s: kept %s (not deleted): %s; remove it once not '
                        'needed', guest.name, path, note)
        if os.path.exists(journal['save']) and guest.is_active():
            os.unlink(journal['save'])
        os.unlink(self._journal_path(guest.uuid))
        done.setdefault('migrated', []).append(guest.name)
        done.setdefault('kept', []).extend(p for p, _ in journal['kept'])
        self.engine._report('legacy-migrated', domain=guest.name,
                            snapshots=len(journal['migrated']),
                            unavailable=len(journal['unavailable']),
                            kept=len(journal['kept']),
                            **journal.get('timings_ms', {}))


def _ms(since):
    return round((time.monotonic() - since) * 1000, 1)
