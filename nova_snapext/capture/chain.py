"""qcow2 chain math: overlay names, the current position, delete plans.

A snapshot's *state file* for a disk is the file that was active when the
snapshot was taken; from that instant on it is read-only and serves as the
backing of newer overlays.  Every function here works on plain paths and
dicts so that the rules are tested without libvirt or qemu-img.
"""

import collections
import os

OVERLAY_MARK = '.snapext-'

RebaseOffline = collections.namedtuple('RebaseOffline', 'path new_backing')
"""Copy the soon-gone backing's data into ``path`` (not in use)."""

PullLive = collections.namedtuple('PullLive', 'target base')
"""Block pull into the running domain's active layer down to ``base``."""

CommitLive = collections.namedtuple('CommitLive', 'target top base')
"""Block commit an intermediate layer of the running chain into ``base``."""

Relocate = collections.namedtuple('Relocate', 'old_path new_path')
"""Records that named ``old_path`` as a state must now name ``new_path``."""

Unlink = collections.namedtuple('Unlink', 'path')


def overlay_path(current_path, token):
    """Name of the overlay that goes on top of ``current_path``.

    Overlays live beside the disk they cover (a Cinder share, a Nova
    instance directory), named after the original disk so an operator can
    tell which disk a file belongs to.
    """
    directory, name = os.path.split(current_path)
    stem = name.split(OVERLAY_MARK)[0]
    return os.path.join(directory, '%s%s%s' % (stem, OVERLAY_MARK, token))


def is_overlay(path):
    return OVERLAY_MARK in os.path.basename(path)


def current_snapshot(manifests, active_backing):
    """The snapshot the running disks descend from directly, or None.

    :param manifests: snapshot records of one instance
    :param active_backing: {target: backing file of the active layer}
    """
    for manifest in manifests:
        states = {d['target']: d['path'] for d in manifest['disks']}
        if states and all(active_backing.get(t) == p
                          for t, p in states.items()):
            return manifest['id']
    return None


def dependents(backing, path):
    """Files whose backing file is ``path``."""
    return sorted(f for f, b in backing.items() if b == path)


def plan_delete(states, backing, live_chains):
    """Steps that remove snapshot state files without breaking children.

    :param states: {target: state file of the snapshot being deleted}
    :param backing: {file: its backing file or None} for every known file
        (all snapshot state files and the active layers)
    :param live_chains: {target: [active, backing, backing's backing, ...]}
        of the running domain, or {} when the domain is not running
    :returns: list of steps, to run in order

    Offline dependents get the state's data pulled in with qemu-img rebase.
    A dependent in the running chain is handled by libvirt: the active layer
    by a block pull; an intermediate layer by committing it *into* the state
    file, which then takes over the dependent's role (it is the only user of
    the state file left, because the offline ones were rebased first).
    """
    steps = []
    for target, state in sorted(states.items()):
        chain = live_chains.get(target, [])
        deps = dependents(backing, state)
        live = [d for d in deps if d in chain]
        for dep in deps:
            if dep not in live:
                steps.append(RebaseOffline(dep, backing.get(state)))
        if not live:
            steps.append(Unlink(state))
        elif live[0] == chain[0]:
            steps.append(PullLive(target, backing.get(state)))
            steps.append(Unlink(state))
        else:
            steps.append(CommitLive(target, live[0], state))
            steps.append(Relocate(live[0], state))
            steps.append(Unlink(live[0]))
    return steps


def discarded_by_revert(old_active, kept_states):
    """Active layers a revert throws away: never snapshotted, so lost."""
    return sorted(p for p in old_active
                  if is_overlay(p) and p not in kept_states)


def orphan_overlays(disk_paths, used, listdir):
    """Overlay files beside a domain's disks that nothing uses.

    Only overlays named after one of the domain's own disks are candidates:
    a directory (a Cinder share) may hold other instances' files.

    :param listdir: os.listdir, passed in to keep this free of I/O
    """
    stems = {}
    for path in disk_paths:
        directory, name = os.path.split(path)
        stems.setdefault(directory, set()).add(name.split(OVERLAY_MARK)[0])
    orphans = []
    for directory, names in stems.items():
        for name in listdir(directory):
            path = os.path.join(directory, name)
            if (is_overlay(name) and name.split(OVERLAY_MARK)[0] in names
                    and path not in used):
                orphans.append(path)
    return sorted(orphans)
