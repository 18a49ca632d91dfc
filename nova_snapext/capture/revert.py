"""Running a verified revert step by step, journaled; finishing or undoing one.

:mod:`restore` verifies what a revert will resume from; this module runs
the steps :mod:`revert_plan` orders, writes the journal
(:mod:`revert_journal`) before each, and, when a step raises or a revert
is found dead by ``recover()``, carries out what :mod:`revert_plan`
decides.  Every outcome goes to the log and to the snapshot's history.
"""

import time

import libvirt
from oslo_log import log as logging
from oslo_utils import uuidutils

from nova_snapext.capture import domain_xml
from nova_snapext.capture import guest as guest_mod
from nova_snapext.capture import progress
from nova_snapext.capture import qemu_img
from nova_snapext.capture import revert_journal as journal_mod
from nova_snapext.capture import revert_plan as plan_mod
from nova_snapext.capture import save_image
from nova_snapext.capture import states
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod

LOG = logging.getLogger(__name__)


class RevertOps(object):
    """Engine operations that run, finish or roll back a revert."""

    # -- the journal --

    def _journal_write(self, journal, phase):
        journal_mod.write(self.conf, self.store, journal, phase)

    def _journal_remove(self, journal):
        journal_mod.remove(self.conf, self.store, journal)

    # -- a revert --

    def _run_revert(self, guest, record, files, memory_file, restore_xml,
                    started):
        """Revert ``guest`` to ``record``, everything verified already.

        :param files: :func:`revert_plan.revert_files`
        :raises RevertFailed: a step failed; the guest is given back as
            it was before (see :func:`revert_plan.plan_failure`) and the
            message says how
        """
        paths = [files[d['target']] for d in record['disks']]
        running = guest.is_active()
        journal = journal_mod.new(
            self.conf, self.store, record,
            states.undo_name(uuidutils.generate_uuid()[:8]), files,
            {path: qemu_img.virtual_size(path) for path in paths},
            running, running and guest.is_paused())
        timings = {}
        steps = plan_mod.plan_revert(running,
                                     self.conf.snapext.revert_keeps_memory)
        self._run_steps(guest, record, journal, steps, timings, memory_file,
                        restore_xml)
        self._report('reverted', snapshot=record['id'],
                     total_ms=progress.elapsed_ms(started),
                     **{k + '_ms': v for k, v in timings.items()})

    def _run_steps(self, guest, record, journal, steps, timings,
                   memory_file=None, restore_xml=None):
        for step in steps:
            self._journal_write(journal, step.phase)
            try:
                with progress.timed(timings, step.phase):
                    self._step(step.phase, guest, record, journal,
                               memory_file, restore_xml)
            except Exception as exc:
                if step.phase == plan_mod.FINISH:
                    # Past the commit point the guest runs the snapshot;
                    # the journal stays for recover() to finish it.
                    raise exception.RevertFailed(
                        '%s runs from snapshot %s, but finishing the revert '
                        'failed (%s); the next agent start finishes it'
                        % (guest.name, record['id'], exc)) from exc
                decision, how = self._after_failure(guest, record, journal,
                                                    exc)
                if decision and decision.outcome == plan_mod.FINISHED:
                    # The step's error came after the restore took effect
                    # (libvirtd restarted while answering): it is done.
                    return
                raise exception.RevertFailed(
                    'revert of %s to %s failed: %s; %s'
                    % (guest.name, record['id'], exc, how)) from exc
            self._report('revert-' + step.phase, snapshot=record['id'],
                         ms=timings[step.phase])

    def _step(self, phase, guest, record, journal, memory_file, restore_xml):
        if phase == plan_mod.SAVE:
            # The guest's RAM, to give it back if the snapshot's guest
            # never runs.  virDomainSave stops the domain.
            guest.dom.saveFlags(journal['save'], None, 0)
        elif phase == plan_mod.DESTROY:
            guest.destroy()
        elif phase == plan_mod.UNDO:
            for path in journal['paths']:
                if journal['undo'] not in qemu_img.snapshot_names(path):
                    qemu_img.snapshot_create(path, journal['undo'])
        elif phase == plan_mod.APPLY:
            for step in plan_mod.plan_apply(record,
                                            journal_mod.files(journal,
                                                              record)):
                if isinstance(step, plan_mod.WriteState):
                    qemu_img.write_state(*step)
                else:
                    qemu_img.snapshot_apply(*step)
            for path, size in states.sizes_to_keep(journal['sizes'], {
                    p: qemu_img.virtual_size(p)
                    for p in journal['paths']}).items():
                LOG.info('%s was extended since the snapshot; growing it '
                         'back to %d bytes', path, size)
                qemu_img.grow(path, size)
        elif phase == plan_mod.RESTORE:
            if record['kind'] == manifest_mod.KIND_FULL:
                if memory_file is None:
                    memory_file, restore_xml = self._restore_source(
                        record, journal_mod.files(journal, record))
                self.host.restore(memory_file, restore_xml)
            elif journal['was_active']:
                guest.create()
        elif phase == plan_mod.FINISH:
            self._finish_revert(record, journal, journal.get('recovered'))

    def _restore_source(self, record, files):
        """(memory image, XML to restore it with), verified."""
        memory_file = self._verified_memory(record)
        return memory_file, self._restore_xml(memory_file, files)

    def _finish_revert(self, record, journal, how=None):
        """The snapshot's guest runs: HEAD, thaw, drop the undo state."""
        self.store.set_head(record['instance_uuid'], record['id'])
        guest = guest_mod.Guest(self._lookup(record['instance_uuid']))
        if record['kind'] == manifest_mod.KIND_FULL and guest.is_active():
            self._thaw_if_frozen(record, guest.dom)
        self._drop_states(guest, [(p, journal['undo'])
                                  for p in journal['paths']])
        self._journal_remove(journal)
        self._note(record['id'], how or 'reverted',
                   'the guest runs from the snapshot')

    # -- when it goes wrong --

    def _facts(self, guest, journal):
        """(active, save complete, undo in every disk) as they are now."""
        self._wait_for_libvirt_job(guest)
        held = self._held(journal['paths'])
        return (guest.is_active(),
                save_image.is_complete(journal['save']),
                all(journal['undo'] in held.get(p, ())
                    for p in journal['paths']))

    def _after_failure(self, guest, record, journal, exc):
        """Give the guest back after a failed step.

        :returns: (the decision carried out or None, how it ended in words)
        """
        try:
            guest = self._fresh_guest(guest)
            decision = plan_mod.plan_failure(
                journal['phase'], *self._facts(guest, journal),
                was_active=journal['was_active'])
            self._carry_out(guest, record, journal, decision,
                            'revert failed: %s' % exc)
        except Exception as again:
            LOG.exception('could not bring %s back after the failed revert',
                          guest.name)
            return None, ('bringing it back failed too (%s); the journal %s '
                          'is kept for recovery at the next agent start'
                          % (again, journal_mod.path(self.conf, self.store,
                                                     guest.uuid)))
        return decision, decision.why

    def _fresh_guest(self, guest):
        """The guest on a working connection (libvirtd may have restarted).

        A failed step may be libvirtd going away; the domain is looked up
        again, on a new connection once libvirtd answers.
        """
        try:
            if self.conn.isAlive():
                return guest_mod.Guest(self._lookup(guest.uuid))
        except libvirt.libvirtError:
            pass
        deadline = (time.monotonic() +
                    self.conf.snapext.libvirt_reconnect_timeout)
        while True:
            try:
                self._conn = libvirt.open(self.conf.snapext.libvirt_uri)
                LOG.warning('reconnected to libvirtd at %s',
                            self.conf.snapext.libvirt_uri)
                return guest_mod.Guest(self._lookup(guest.uuid))
            except libvirt.libvirtError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _carry_out(self, guest, record, journal, decision, cause):
        """Run a recovery decision; the journal goes once it is done."""
        log = LOG.error if decision.outcome == plan_mod.STUCK else (
            LOG.warning)
        log('%s: %s to snapshot %s (phase %s): %s', guest.name, cause,
            record['id'] if record else journal['snapshot_id'],
            journal['phase'], decision.why)
        if decision.outcome == plan_mod.STUCK:
            raise exception.SnapextError(
                '%s: interrupted revert left as it is: %s'
                % (guest.name, decision.why))
        revert_steps = [plan_mod.Step(s) for s in decision.steps
                        if s in plan_mod.PHASES]
        if revert_steps:
            # Completing the revert: its own steps, journaled as before.
            journal['recovered'] = 'revert-' + decision.outcome
            self._run_steps(guest, record, journal, revert_steps, {})
            return
        for action in decision.steps:
            if action == plan_mod.APPLY_UNDO:
                for path in journal['paths']:
                    qemu_img.snapshot_apply(path, journal['undo'])
            elif action == plan_mod.RESTORE_SAVE:
                self.host.restore(
                    journal['save'], domain_xml.with_console_appended(
                        self.host.saved_xml(journal['save'])),
                    paused=journal['was_paused'])
            elif action == plan_mod.BOOT:
                guest.create()
            elif action == plan_mod.DISCARD:
                guest = self._fresh_guest(guest)
                self._drop_states(guest, [(p, journal['undo'])
                                          for p in journal['paths']])
                self._journal_remove(journal)
        self._note(journal['snapshot_id'], 'revert-' + decision.outcome,
                   '%s; %s' % (cause, decision.why))

    def _recover_revert(self, guest, done):
        """Finish or roll back a revert whose journal outlived it."""
        journal = journal_mod.read(self.conf, self.store, guest.uuid)
        if journal is None:
            return
        try:
            record = self.store.get(journal['snapshot_id'])
        except exception.SnapextError as exc:
            record = None
            LOG.error('%s: the record of the interrupted revert cannot be '
                      'read: %s', guest.name, exc)
        decision = plan_mod.plan_recovery(journal['phase'],
                                          *self._facts(guest, journal))
        if record is None and decision.outcome in (plan_mod.FINISHED,
                                                   plan_mod.ROLLED_FORWARD):
            decision = plan_mod.Recovery(
                plan_mod.STUCK, [], 'its snapshot record is unreadable')
        cause = 'revert interrupted (found at start)'
        outcome = decision.outcome
        try:
            self._carry_out(guest, record, journal, decision, cause)
        except exception.RevertFailed as exc:
            # Completing it failed; the revert's own failure handling gave
            # the guest back (the message says how).
            LOG.error('%s: %s', guest.name, exc)
            outcome += '-failed'
        done.setdefault('reverts', []).append(
            '%s:%s' % (guest.name, outcome))

    def _note(self, snapshot_id, event, detail):
        """Add an event to the snapshot's history; never fails the caller."""
        try:
            record = self.store.get(snapshot_id)
            manifest_mod.add_history(record, event, detail)
            self.store.update(record)
        except Exception as exc:
            LOG.warning('could not record "%s" in the history of snapshot '
                        '%s: %s', event, snapshot_id, exc)
