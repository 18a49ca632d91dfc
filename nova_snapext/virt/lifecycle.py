"""What Nova's own operations mean for an instance's snapshots.

Pure decisions from the states nova-compute's manager sets (task state, vm
state, host, flavors), so each rule is unit-tested without Nova or libvirt.
The driver applies them: it forgets a deleted server's snapshots, and marks
them unavailable, with a reason the API and the CLI show, where they cannot
follow the server (its disks replaced or removed, the server moved to
another host or to another flavor).

Snapshots live inside the disk files (qcow2 internal snapshots) and the
memory images in this host's store, so:

* reboot, stop/start, pause, suspend, rescue, volume attach/detach/extend and
  Nova's stock snapshot leave them as they are;
* a resize on this host copies the disk file (``cp``, which keeps internal
  snapshots), but a full snapshot's memory image describes the old flavor
  and a revert would shrink the resized disk: they are marked when the
  resize is confirmed, and the mark is lifted when it is reverted;
* a move to another host (cold or live migration, evacuation) leaves the
  memory images and the records on this host, and a live block migration
  copies only the current data: marked on this host;
* shelve-offload and rebuild remove or replace the disks: marked;
* delete: forgotten (records and memory images removed).
"""

FORGET = 'forget'
MARK = 'mark'

DELETING = 'deleting'
DELETED = 'deleted'
SHELVED_STATES = ('shelved', 'shelved_offloaded')
SHELVING_TASKS = ('shelving', 'shelving_image_pending_upload',
                  'shelving_image_uploading', 'shelving_offloading')
REBUILD_TASKS = ('rebuilding', 'rebuild_block_device_mapping',
                 'rebuild_spawning')
# Moves whose own driver hooks decide; their cleanups change nothing.
MOVE_TASKS = ('migrating', 'resize_prep', 'resize_migrating',
              'resize_migrated', 'resize_finish', 'resize_reverting',
              'resize_confirming')

IN_PROGRESS_PREFIX = 'in progress: '


def on_cleanup(task_state, vm_state, deleted, instance_host, this_host,
               destroy_disks):
    """(action, reason) for destroy()/cleanup() of an instance here.

    :param instance_host: ``instance.host``: the host Nova has the server on
    :param destroy_disks: whether Nova removes the instance's disks
    :returns: (FORGET, None), (MARK, reason) or (None, None)
    """
    if deleted or vm_state == DELETED or task_state == DELETING:
        return FORGET, None
    if task_state in MOVE_TASKS:
        return None, None
    if instance_host and this_host and instance_host != this_host:
        # The source host cleaning up a server evacuated while it was down.
        return MARK, ('evacuated to host %s: the snapshots stay on host %s'
                      % (instance_host, this_host))
    if task_state in REBUILD_TASKS:
        return MARK, 'rebuilt: the root disk was replaced from the image'
    if not destroy_disks:
        return None, None  # hard reboot, power on, host boot: disks stay
    if task_state in SHELVING_TASKS or vm_state in SHELVED_STATES:
        return MARK, ('shelve-offloaded: the disks were removed from host %s'
                      % this_host)
    return MARK, ('the disks were removed from host %s (task %s)'
                  % (this_host, task_state))


def _shape(flavor):
    return (flavor['memory_mb'], flavor['vcpus'], flavor['root_gb'],
            flavor['ephemeral_gb'], flavor['swap'])


def migration_reason(source_host, dest_host, old_flavor, new_flavor):
    """Why the snapshots cannot follow a resize/cold migration, or None.

    :param old_flavor: the flavor at the snapshots (dict-like)
    :param new_flavor: the flavor after the move
    """
    if dest_host != source_host:
        return ('migrated to host %s: the snapshots stay on host %s'
                % (dest_host, source_host))
    if _shape(old_flavor) != _shape(new_flavor):
        return ('resized from flavor %s to %s: the snapshots hold the old '
                'flavor\'s memory and disk sizes'
                % (old_flavor['name'], new_flavor['name']))
    return None


def in_progress(reason):
    """The mark set while a move runs; lifted if it is reverted."""
    return IN_PROGRESS_PREFIX + reason


def live_migration_reason(source_host, dest_host):
    return ('live-migrated to host %s: the snapshots stay on host %s'
            % (dest_host or 'another host', source_host))


def on_arrival(known, source_host, this_host):
    """(action, reason) when a server arrives on this host from another.

    Only a store shared between hosts knows the server's records here; its
    disks on this host were copied without their snapshots, rebuilt, or
    are shared while the memory images stay behind.
    """
    if not known or source_host == this_host:
        return None, None
    if source_host is None:
        return MARK, ('rebuilt on host %s from the image: the disks here '
                      'hold no snapshot' % this_host)
    return MARK, ('moved from host %s to host %s: the disks here hold no '
                  'snapshot' % (source_host, this_host))
