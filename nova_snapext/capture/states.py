"""Where a snapshot's disk states live, and what follows: pure rules.

A snapshot's state of a disk is the qcow2 internal snapshot
``snapext-<snapshot id>`` inside the disk's own file (a Nova instance's
``disk``, a Cinder volume's file).  The files keep their names and chains,
so Nova and Cinder go on naming the live data; a snapshot is only
revertable while the file its record names still holds that internal
snapshot and is still the instance's disk.  Every function here works on
plain paths, names and dicts, so the rules are tested without libvirt or
qemu-img.
"""

import collections

PREFIX = 'snapext-'
UNDO_PREFIX = 'snapext-undo-'

DeleteLive = collections.namedtuple('DeleteLive', 'target path name')
"""Drop an internal snapshot through the QEMU that runs on ``path``."""

DeleteOffline = collections.namedtuple('DeleteOffline', 'path name')
"""Drop an internal snapshot with qemu-img: no QEMU holds ``path``."""


def internal_name(snapshot_id):
    return PREFIX + snapshot_id


def undo_name(token):
    """The internal snapshot a revert keeps of the state it replaces."""
    return UNDO_PREFIX + token


def unavailable_reason(record, current_paths, held, current_sizes=None):
    """Why the snapshot cannot be reverted to now, or None.

    :param record: the snapshot's manifest; a ``partial`` one (some of the
        disks, e.g. a Cinder group's volumes) need not cover every disk
    :param current_paths: {target: file} of the instance's disks now, or
        None when the instance has no domain on this host
    :param held: {file: internal snapshot names in it} for the files of the
        record that exist; a missing file is absent
    :param current_sizes: {target: virtual size} of the instance's disks
        now; needed for an ``imported`` record only
    """
    status = record.get('status')
    if status:
        return status['reason']
    for disk in record['disks']:
        if disk['path'] not in held:
            return 'disk %s: %s no longer exists' % (disk['target'],
                                                     disk['path'])
        if disk['snapshot'] not in held[disk['path']]:
            return ('disk %s: %s no longer holds the snapshot\'s state '
                    '(the disk was replaced or its snapshot deleted)'
                    % (disk['target'], disk['path']))
    if current_paths is None:
        return 'the instance has no domain on this host'
    wanted = {d['target'] for d in record['disks']}
    if wanted - set(current_paths) or (
            not record.get('partial') and wanted != set(current_paths)):
        return ('the snapshot covers disks %s, the instance now has %s: '
                'attach or detach volumes to match'
                % (', '.join(sorted(wanted)),
                   ', '.join(sorted(current_paths))))
    if record.get('imported'):
        return _unwritable_reason(record, current_sizes)
    for disk in record['disks']:
        if current_paths[disk['target']] != disk['path']:
            return ('disk %s now runs on %s; the snapshot\'s state is in %s'
                    % (disk['target'], current_paths[disk['target']],
                       disk['path']))
    return None


def _unwritable_reason(record, current_sizes):
    """Why an imported snapshot's states cannot replace the disks' data.

    Its states are files in the store; a revert writes each into the
    instance's disk file as it is now (see :func:`revert_plan.plan_writes`),
    which keeps the file Nova and Cinder name, its backing file, its size
    and its own snapshots: so the sizes must match.
    """
    for disk in record['disks']:
        size = current_sizes[disk['target']]
        if size != disk['virtual_size']:
            return ('disk %s is %d bytes now, its imported state %d: a '
                    'revert writes the state into the disk as it is, so '
                    'their sizes must match' % (
                        disk['target'], size, disk['virtual_size']))
    return None


def plan_delete(wanted, live_paths, held):
    """Steps that drop internal snapshots from their files.

    A file that no longer holds the state needs nothing.

    :param wanted: [(file, internal snapshot name)]
    :param live_paths: {target: active file} of the running domain, {} when
        it is not running
    :param held: as for :func:`unavailable_reason`
    """
    live_targets = {path: target for target, path in live_paths.items()}
    steps = []
    for path, name in wanted:
        if name not in held.get(path, ()):
            continue
        if path in live_targets:
            steps.append(DeleteLive(live_targets[path], path, name))
        else:
            steps.append(DeleteOffline(path, name))
    return steps


def record_states(record):
    """[(file, internal snapshot name)] the record's delete drops.

    A state Cinder owns (a Cinder snapshot names it) stays for Cinder to
    delete; the record only refers to it.
    """
    return [(d['path'], d['snapshot']) for d in record['disks']
            if not d.get('cinder_snapshot_id')]


def orphan_states(held, recorded):
    """(file, name) of snapext internal snapshots no record explains.

    They are left by a capture that died between its QEMU transaction and
    its record; they are past states, never the live data, so dropping
    them loses nothing.  A revert's undo state is not an orphan: it holds
    what the guest had before an interrupted revert.

    :param held: {file: internal snapshot names in it}
    :param recorded: internal names that committed records use
    """
    return sorted((path, name) for path, names in held.items()
                  for name in names
                  if name.startswith(PREFIX)
                  and not name.startswith(UNDO_PREFIX)
                  and name not in recorded)


def current_snapshot(head, records_by_id, reasons):
    """The snapshot the live disks continue from, or None.

    :param head: the id the store remembers (last taken or reverted to)
    :param reasons: {snapshot id: unavailable reason or None}
    """
    if head in records_by_id and reasons.get(head) is None:
        return head
    return None


def sizes_to_keep(before, after):
    """{file: size} for the files a revert shrank, to grow them back.

    Applying an internal snapshot gives the file the size it had then; an
    extend or resize since (a Cinder extend, Nova's resize) is what Nova's
    and Cinder's records say the disk is, so a revert keeps that size.

    :param before: {file: virtual size} before the revert
    :param after: {file: virtual size} once the snapshots are applied
    """
    return {path: size for path, size in before.items()
            if after.get(path, size) < size}
