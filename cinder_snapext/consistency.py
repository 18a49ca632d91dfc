"""Application-consistent group snapshots for any Cinder backend.

:class:`ConsistentGroupSnapshotMixin` wraps a backend's own (crash-
consistent) snapshots in a freeze of every guest the group's volumes are
attached to: freeze all, snapshot, thaw all (always, in ``finally``).  The
guests are frozen through the snapext agent on their compute hosts, over
oslo.messaging; the agent's watchdog thaws them should this process die.

Put it before the driver class: ``class D(ConsistentGroupSnapshotMixin,
SomeDriver)``.  Only group types with
``consistent_group_snapshot_enabled="<is> True"`` take this path (nothing in
Cinder checks that spec for the driver); others raise NotImplementedError,
which sends Cinder down its generic, per-volume path.
"""

import collections
import contextlib
import os
import time

from cinder import exception as cinder_exception
from cinder.objects import fields
from cinder.volume import volume_utils
from oslo_config import cfg
from oslo_log import log as logging

from cinder_snapext import conf as snapext_conf
from cinder_snapext import exception
from nova_snapext import exception as snapext_exception
from nova_snapext.rpc import api as agent_api

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
snapext_conf.register_opts(CONF)

Attached = collections.namedtuple('Attached', 'snapshot host instance target')


def plan(snapshots):
    """Split a group's snapshots by where their volumes are attached.

    :returns: ({host: {instance uuid: [Attached]}}, [unattached snapshots])
    """
    attached = collections.defaultdict(lambda: collections.defaultdict(list))
    unattached = []
    for snapshot in snapshots:
        volume = snapshot.volume
        attachments = [
            a for a in (volume.volume_attachment or [])
            if a.attach_status == fields.VolumeAttachStatus.ATTACHED]
        if not attachments:
            unattached.append(snapshot)
            continue
        if len(attachments) > 1:
            raise cinder_exception.VolumeDriverException(
                message='volume %s is attached more than once (multiattach); '
                        'a consistent group snapshot cannot freeze it'
                        % volume.id)
        att = attachments[0]
        if not (att.attached_host and att.instance_uuid and att.mountpoint):
            raise cinder_exception.VolumeDriverException(
                message='attachment %s of volume %s lacks its host, instance '
                        'or device' % (att.id, volume.id))
        attached[att.attached_host][att.instance_uuid].append(Attached(
            snapshot, att.attached_host, att.instance_uuid,
            os.path.basename(att.mountpoint)))
    return ({h: dict(i) for h, i in sorted(attached.items())}, unattached)


class ConsistentGroupSnapshotMixin(object):
    """freeze-all -> the backend's snapshots -> thaw-all.

    Hooks a backend may override:

    * :meth:`_group_locks` - locks to hold around the whole operation
    * :meth:`_snapshot_unattached` - before the freeze (they cannot change)
    * :meth:`_prepare_attached` - before the freeze, to keep it short
    * :meth:`_snapshot_frozen` - while every guest is frozen
    * :meth:`_after_thaw` - bookkeeping once the guests run again
    * :meth:`_undo` - remove what a failed group snapshot made
    """

    _agent = None

    def _agent_api(self):
        if self._agent is None:
            self._agent = agent_api.AgentAPI(CONF)
        return self._agent

    def _conf_value(self, name, default):
        return getattr(self.configuration, name, default) or default

    # -- the flow ---------------------------------------------------------

    def create_group_snapshot(self, context, group_snapshot, snapshots):
        if not volume_utils.is_group_a_cg_snapshot_type(group_snapshot):
            raise NotImplementedError()
        started = time.monotonic()
        try:
            hosts, unattached = plan(snapshots)
            with self._group_locks(snapshots):
                made = []
                try:
                    updates = self._consistent(context, hosts, unattached,
                                               made)
                except Exception:
                    self._undo(context, made)
                    raise
        except cinder_exception.VolumeDriverException as exc:
            raise exception.GroupSnapshotFailed(
                group_snapshot=group_snapshot.id, reason=exc.msg)
        except (snapext_exception.SnapextError,
                cinder_exception.CinderException) as exc:
            raise exception.GroupSnapshotFailed(
                group_snapshot=group_snapshot.id, reason=str(exc))
        except Exception as exc:
            LOG.exception('group snapshot %s failed', group_snapshot.id)
            raise exception.GroupSnapshotFailed(
                group_snapshot=group_snapshot.id,
                reason='%s: %s' % (type(exc).__name__, exc))
        LOG.info('consistent group snapshot %s of %d volume(s) on %d '
                 'host(s) done in %.0f ms', group_snapshot.id,
                 len(snapshots), len(hosts),
                 (time.monotonic() - started) * 1000)
        return ({'status': fields.GroupSnapshotStatus.AVAILABLE},
                [dict(updates.get(s.id, {}), id=s.id,
                      status=fields.SnapshotStatus.AVAILABLE)
                 for s in snapshots])

    def _consistent(self, context, hosts, unattached, made):
        """Snapshot everything; {snapshot id: model update}."""
        ctxt = context.to_dict()
        self._snapshot_unattached(context, unattached, made)
        self._prepare_attached(context, hosts, made)
        frozen = {}
        windows = {}
        try:
            self._freeze_all(ctxt, hosts, frozen)
            self._snapshot_frozen(context, hosts, frozen, made)
        finally:
            windows = self._thaw_all(ctxt, frozen)
        return self._after_thaw(context, hosts, windows, made)

    def _freeze_all(self, ctxt, hosts, frozen):
        timeout = self._conf_value('snapext_freeze_timeout_ms', 30000)
        for host, instances in hosts.items():
            reply = self._agent_api().freeze(ctxt, host, sorted(instances),
                                             timeout)
            frozen[host] = reply

    def _thaw_all(self, ctxt, frozen):
        """Thaw every frozen guest; {instance: the agent's thaw record}.

        A thaw that fails is logged, not raised: the snapshot (if taken)
        is good, and the agent's watchdog thaws the guest anyway.
        """
        windows = {}
        for host, reply in frozen.items():
            try:
                thawed = self._agent_api().thaw(ctxt, host,
                                                sorted(reply['instances']))
            except snapext_exception.SnapextError:
                LOG.exception('thaw on %s failed; the agent\'s watchdog thaws '
                              'its guests within %s ms', host,
                              reply.get('timeout_ms'))
                continue
            windows.update(thawed['instances'])
            for instance, record in thawed['instances'].items():
                LOG.info('instance %s on %s was frozen %s ms (thawed by %s)',
                         instance, host, record.get('frozen_ms'),
                         record.get('thawed_by'))
        return windows

    # -- hooks --------------------------------------------------------------

    @contextlib.contextmanager
    def _group_locks(self, snapshots):
        # The backend's create_snapshot takes its own per-volume locks.
        yield

    def _snapshot_unattached(self, context, snapshots, made):
        for snapshot in snapshots:
            self.create_snapshot(snapshot)
            made.append(('native', snapshot))

    def _prepare_attached(self, context, hosts, made):
        """Work for the attached volumes that need not wait in the freeze."""

    def _snapshot_frozen(self, context, hosts, frozen, made):
        """The backend's own snapshots, now application-consistent."""
        for instances in hosts.values():
            for items in instances.values():
                for item in items:
                    self.create_snapshot(item.snapshot)
                    made.append(('native', item.snapshot))

    def _after_thaw(self, context, hosts, windows, made):
        """Bookkeeping with the guests running; {snapshot id: update}.

        Records each attached volume's frozen window in its snapshot's
        metadata, so an operator sees what "consistent" cost.
        """
        updates = {}
        for instances in hosts.values():
            for instance, items in instances.items():
                window = windows.get(instance) or {}
                for item in items:
                    metadata = dict(item.snapshot.metadata or {})
                    metadata['snapext_frozen_ms'] = str(
                        window.get('frozen_ms'))
                    metadata['snapext_thawed_by'] = str(
                        window.get('thawed_by'))
                    updates[item.snapshot.id] = {'metadata': metadata}
        return updates

    def _undo(self, context, made):
        for kind, snapshot in reversed(made):
            if kind != 'native':
                continue
            try:
                self.delete_snapshot(snapshot)
            except Exception:
                LOG.exception('cannot remove snapshot %s of the failed '
                              'group snapshot', snapshot.id)
