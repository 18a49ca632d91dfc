"""The order of a revert, and what recovery does with one that died: rules.

A revert replaces the guest's live state (RAM and disks) with a
snapshot's.  Everything it will run on is verified first; then, before
each step that cannot be taken back, its journal records the step (see
:mod:`revert_journal`), so that whoever finds the journal later (the
revert's own failure handling, or ``recover()`` at the next agent or
nova-compute start) knows exactly what was done:

1. ``save``: a running guest's memory is saved to a pending file
   (virDomainSave; the domain stops) -- or, without that fallback point,
   ``destroy``.
2. ``undo``: every disk keeps its pre-revert state as an internal
   snapshot.
3. ``apply``: every disk gets the snapshot's state: its own internal
   snapshot applied, or, for a snapshot imported from a bundle (its states
   are files in the store), the state written over the disk file's data
   (:func:`plan_apply`).
4. ``restore``: the snapshot's memory image is restored (a disk-only
   snapshot boots instead).
5. ``finish``: the restored guest is thawed, HEAD moves, the undo state
   and the pending file are dropped, the journal goes.

The commit point is step 4 taking effect: until the snapshot's guest runs,
a pre-revert memory save lets an interrupted or failed revert give the
guest back exactly as it was (RAM included); once it runs, recovery
finishes the revert rather than throwing the restored guest away.
Without a pre-revert save (the option is off, or the guest was not
running) the guest's RAM is already gone after step 1, so recovery
completes the revert: it loses nothing the user had not asked to discard.

Every function here works on plain values, so the rules are tested
without libvirt or qemu-img.
"""

import collections

SAVE = 'save'
DESTROY = 'destroy'
UNDO = 'undo'
APPLY = 'apply'
RESTORE = 'restore'
FINISH = 'finish'

PHASES = (SAVE, DESTROY, UNDO, APPLY, RESTORE, FINISH)

# What became of a revert that failed or died, as the log, the record's
# history and ``recover()``'s summary name it.
FINISHED = 'finished'
ROLLED_BACK = 'rolled-back'
REBOOTED = 'rebooted'
ROLLED_FORWARD = 'rolled-forward'
ABANDONED = 'abandoned'
STUCK = 'stuck'

# Actions of a recovery besides the revert's own steps (PHASES).
APPLY_UNDO = 'apply-undo'      # the disks go back to their pre-revert state
RESTORE_SAVE = 'restore-save'  # the pre-revert guest resumes, RAM included
BOOT = 'boot'                  # the pre-revert guest boots (its RAM is lost)
DISCARD = 'discard'            # drop the undo state, the save and journal

Step = collections.namedtuple('Step', 'phase')
"""One step of a revert; the journal names it before it starts."""

Recovery = collections.namedtuple('Recovery', 'outcome steps why')
"""What to do with a revert found in its journal.

:param outcome: FINISHED, ROLLED_BACK, REBOOTED, ROLLED_FORWARD, ABANDONED
    or STUCK (nothing is done; the journal stays for the operator)
:param steps: the actions, in order: revert phases (UNDO only keeps the
    undo state of disks that lack it) or the actions above
:param why: one line for the log and the record's history
"""

ApplyState = collections.namedtuple('ApplyState', 'path snapshot')
"""The disk's file holds the state: it becomes the file's active state."""

WriteState = collections.namedtuple('WriteState', 'source snapshot dest')
"""An imported state (internal snapshot ``snapshot`` of the store file
``source``) written over the guest data of the disk's file ``dest``."""


def revert_files(record, current_paths):
    """{target: file} each disk runs on once reverted to ``record``.

    A snapshot's disks run on the files that hold its states.  An imported
    snapshot's states are files in the store, not the instance's: its
    disks stay on the files they run on now (those Nova and Cinder name),
    which get the states written in.

    :param current_paths: {target: file} of the instance's disks now
    """
    if record.get('imported'):
        return {d['target']: current_paths[d['target']]
                for d in record['disks']}
    return {d['target']: d['path'] for d in record['disks']}


def plan_apply(record, files):
    """How each disk gets the snapshot's state (the ``apply`` phase).

    Either step can run again after a crash: applying a state, or writing
    all of one over a file's data, gives the same result every time (the
    undo state keeps what the file held).

    :param files: :func:`revert_files`
    """
    steps = []
    for disk in record['disks']:
        dest = files[disk['target']]
        if not record.get('imported'):
            steps.append(ApplyState(dest, disk['snapshot']))
        elif dest == disk['path']:
            raise ValueError('disk %s: the imported state is in %s, the '
                             'file the disk runs on' % (disk['target'], dest))
        else:
            steps.append(WriteState(disk['path'], disk['snapshot'], dest))
    return steps


def plan_revert(running, keep_memory):
    """The steps of a revert, in order.

    :param running: the domain is active (running or paused)
    :param keep_memory: save a running guest's memory first, so that a
        revert that fails before the snapshot's guest runs gives the guest
        back with its RAM (``[snapext] revert_keeps_memory``)
    """
    first = SAVE if running and keep_memory else DESTROY
    return [Step(p) for p in (first, UNDO, APPLY, RESTORE, FINISH)]


def reached(phase, step):
    """Whether the journal's ``phase`` is at or past ``step``."""
    return phase is not None and PHASES.index(phase) >= PHASES.index(step)


def _settled(phase, active):
    """The cases a failure and a crash treat alike, or None."""
    if reached(phase, FINISH):
        # HEAD may have moved already; a guest stopped since is the
        # user's doing, not the revert's.
        return Recovery(FINISHED, [FINISH], 'the restored guest ran; '
                        'finishing the revert')
    if active:
        if reached(phase, RESTORE):
            # The commit point was passed: the snapshot's guest runs (it
            # may still be frozen, as its image was taken frozen).
            return Recovery(FINISHED, [FINISH],
                            'the restored guest runs; finishing the revert')
        if not reached(phase, UNDO):
            # libvirt did not complete the save (or the destroy): the
            # guest never stopped and its disks were not touched.
            return Recovery(ABANDONED, [DISCARD],
                            'the guest never stopped; nothing to undo')
        return Recovery(STUCK, [],
                        'the domain runs although the revert had stopped it '
                        'and was changing its disks (%s); not touching it'
                        % phase)
    return None


def _back(phase, undo_everywhere, last, outcome, why):
    if not reached(phase, APPLY):
        return Recovery(outcome, last + [DISCARD], why)
    if not undo_everywhere:
        return Recovery(STUCK, [], 'the disks were changed but not every '
                        'one holds the undo state')
    return Recovery(outcome, [APPLY_UNDO] + last + [DISCARD], why)


def plan_failure(phase, active, save_complete, undo_everywhere, was_active):
    """What a revert whose step raised does before it reports the error.

    It goes back: the guest as it was, RAM included when its memory was
    saved; otherwise on its previous disks, booted if it was running.

    :param phase: the step that raised (the journal's last phase)
    :param active: the domain runs now
    :param save_complete: the pending save of the pre-revert guest is a
        complete libvirt save image
    :param undo_everywhere: every disk holds the undo state
    :param was_active: the domain ran before the revert
    """
    settled = _settled(phase, active)
    if settled:
        return settled
    if save_complete:
        return _back(phase, undo_everywhere, [RESTORE_SAVE], ROLLED_BACK,
                     'the guest resumes as it was before the revert')
    return _back(phase, undo_everywhere, [BOOT] if was_active else [],
                 REBOOTED, 'the guest\'s memory was not saved; it %s on '
                 'its previous disks' % ('boots' if was_active else 'stays '
                                         'shut off'))


def plan_recovery(phase, active, save_complete, undo_everywhere):
    """What ``recover()`` does with a revert whose process died.

    :param phase: the last step the journal recorded before it started
    :param active: the domain runs now (after any libvirt job on it ended)
    :param save_complete: as for :func:`plan_failure`
    :param undo_everywhere: as for :func:`plan_failure`
    """
    settled = _settled(phase, active)
    if settled:
        return settled
    if save_complete:
        return _back(phase, undo_everywhere, [RESTORE_SAVE], ROLLED_BACK,
                     'the snapshot\'s guest never ran; resuming the guest '
                     'as it was before the revert')
    # The pre-revert RAM is gone (never saved, or the guest was not
    # running): completing the revert loses nothing more.  Disks not yet
    # changed keep their state as the undo state first, for a restore
    # that fails to fall back on.
    return Recovery(ROLLED_FORWARD, [UNDO, APPLY, RESTORE, FINISH],
                    'the guest was stopped without a memory save; '
                    'completing the revert')
