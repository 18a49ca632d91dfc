"""Task states of snapext's own server actions, and their recovery.

nova-api sets one of these on the server for the whole of a snapext
action, atomically (``expected_task_state=[None]``), as Nova's own actions
do, so that Nova refuses every other action meanwhile (they all need
``task_state`` None, except delete) and snapext refuses to start while a
Nova action runs.  Nova's ``_init_instance`` leaves task states it does
not know untouched at a nova-compute start, which would leave a server
refusing every action for good after a crash in the middle; the driver's
``init_host`` clears them instead (:func:`clear_stale`): every snapext
operation on a host runs in the agent inside that nova-compute, so none is
in flight any more.  The volume-backed createImage uses Nova's own
``image_snapshot``, which ``_init_instance`` already resets.
"""

from nova.compute import task_states as nova_task_states
from nova import exception as nova_exception
from nova import objects
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

REVERTING = 'snapext_reverting'
DELETING_SNAPSHOT = 'snapext_deleting'
CAPTURING = nova_task_states.IMAGE_SNAPSHOT

# Those only snapext sets; Nova knows CAPTURING already.
OWN = (REVERTING, DELETING_SNAPSHOT)


def clear_stale(context, host):
    """Clear snapext task states of the instances on ``host``.

    :returns: the uuids cleared
    """
    cleared = []
    try:
        instances = objects.InstanceList.get_by_host(context, host,
                                                     expected_attrs=[])
    except Exception:
        # Never keep nova-compute from starting over this.
        LOG.exception('cannot look for snapext task states left on %s', host)
        return cleared
    for instance in instances:
        if instance.task_state not in OWN:
            continue
        stale = instance.task_state
        instance.task_state = None
        try:
            instance.save(expected_task_state=[stale])
        except (nova_exception.UnexpectedTaskStateError,
                nova_exception.InstanceNotFound):
            continue
        LOG.warning('cleared task state %s left by a snapext action that '
                    'ended with the previous nova-compute', stale,
                    instance=instance)
        cleared.append(instance.uuid)
    return cleared
