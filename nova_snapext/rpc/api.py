"""Client side of the snapext agent RPC API."""

import time

import oslo_messaging as messaging

from nova_snapext import exception
from nova_snapext import rpc


class AgentAPI(object):
    """Client of the snapext agent on a compute host.

    API version history:

    * 1.0 - Initial version: ping, freeze, thaw, capture, revert, status.
    * 1.1 - Add delete (merge a snapshot away; its children survive).
    * 1.2 - Add current (the snapshot an instance's disks descend from).
    * 2.0 - Disk states are qcow2 internal snapshots inside the disks' own
      files: capture's spec has no 'overlays' or 'reuse_overlays', delete
      drops the internal snapshots instead of merging files; add tree (the
      records with each one's availability, which only the host can tell).
    * 2.1 - Add release (drop internal snapshots Cinder owns from an
      instance's disks) and adopt (Cinder takes over one disk of a record).
    * 2.2 - tree also answers the validated records ('records') and the
      broken ones ('broken'), and a uuid with no domain on the host has a
      tree; add get (one record with its availability).  With them
      nova-api serves the snapext API without reading any store.
    * 2.3 - Add export (a snapshot's bundle into a queued Glance image, in
      the background) and import_bundle (a bundle from a Glance image into
      this host's store, plus a bootable image of it); both act in Glance
      with the caller's context.
    * 2.4 - Add make_durable (a committed snapshot's bundle into the
      agent's store, for the volume-backed createImage nova-api serves).
      Not a signature change, so no version of its own: get rebuilds a
      snapshot the glance store's cache lost from its bundle, on the host
      that runs the snapshot's instance, with the caller's context.

    Not a version change: the long calls (capture, revert, delete, release,
    import_bundle, make_durable)
    are made with oslo.messaging's ``call_monitor_timeout`` ([snapext]
    rpc_call_monitor_timeout), as Nova's compute RPC API makes its long
    ones.  Every agent heartbeats them (oslo.messaging's RPC server does,
    whatever its version), so a caller learns within about that time that
    the agent died (``exception.AgentLost``), while a slow capture on a live
    agent runs up to ``rpc_capture_timeout``.  get is watched the same
    way, its lookup timeout as the monitor's: a dead agent is passed over
    as fast as before, while a live one rebuilding a lost record from
    Glance takes the time the download needs.  A broken record raises
    ``exception.BrokenRecord`` with its ``snapshot_id``, ``instance_uuid``
    and ``reason``.

    Every method takes the request context as a dict (an oslo.context
    object is turned into one) and the target ``host`` (the compute host's
    ``CONF.host``, which is also a Cinder attachment's ``attached_host``).

    Errors: a snapext error raised by the agent (Conflict, NotFound,
    QuiesceRequired, CaptureFailed, ...) is raised here as the same
    ``nova_snapext.exception`` class with the agent's message; no agent
    answering within the timeout raises ``exception.AgentUnavailable``; any
    other failure on the agent raises ``exception.AgentError``.  All of them
    are ``exception.SnapextError``.
    """

    VERSION_ALIASES = {}
    LATEST = '2.4'

    def __init__(self, conf, transport=None):
        self.conf = conf
        transport = transport or rpc.get_transport(conf)
        rpc.register_global_only_opts(transport.conf)
        target = messaging.Target(exchange=rpc.EXCHANGE, topic=rpc.TOPIC,
                                  version='2.0')
        cap = conf.snapext.agent_version_cap or self.LATEST
        self.client = messaging.get_rpc_client(
            transport, target, version_cap=cap)

    def _long_call(self, ctxt, host, method, version='2.0', monitor=None,
                   **kwargs):
        """A call that may run for minutes, watched by the call monitor.

        :param monitor: seconds without a heartbeat that mean the agent is
            gone, instead of [snapext] rpc_call_monitor_timeout
        """
        timeout = self.conf.snapext.rpc_capture_timeout
        if monitor is None:
            monitor = self.conf.snapext.rpc_call_monitor_timeout
        if not monitor or monitor >= timeout:
            monitor = None
        else:
            # oslo.messaging's server heartbeats every int(timeout) / 2 s
            # and ignores a monitor timeout under 2 s.
            monitor = max(2, monitor)
        return self._call(ctxt, host, method, version=version,
                          timeout=timeout, call_monitor_timeout=monitor,
                          **kwargs)

    def _call(self, ctxt, host, method, version='2.0', timeout=None,
              call_monitor_timeout=None, **kwargs):
        if not self.client.can_send_version(version):
            raise exception.AgentUnavailable(
                '%s needs snapext agent RPC %s but the version cap is %s'
                % (method, version, self.client.version_cap))
        if hasattr(ctxt, 'to_dict'):
            ctxt = ctxt.to_dict()
        timeout = timeout or self.conf.snapext.rpc_timeout
        cctxt = self.client.prepare(
            server=host, version=version, timeout=timeout,
            call_monitor_timeout=call_monitor_timeout)
        started = time.monotonic()
        try:
            return cctxt.call(ctxt or {}, method, **kwargs)
        except exception.SnapextError as exc:
            # oslo.messaging rebuilds it as a "<Class>_Remote" subclass
            # whose str() carries the agent's traceback; callers want the
            # plain class and message.
            raise _plain(exc) from None
        except messaging.MessagingTimeout:
            elapsed = time.monotonic() - started
            if call_monitor_timeout and elapsed < timeout:
                # The heartbeat stopped long before the call's own timeout:
                # the agent was working on it, then went silent.
                raise exception.AgentLost(
                    'snapext agent on host %s stopped answering %s after '
                    '%.0f s (no heartbeat for %d s): it died or its host is '
                    'cut off; what %s did is known once the agent is back'
                    % (host, method, elapsed, call_monitor_timeout,
                       method)) from None
            raise exception.AgentUnavailable(
                'no snapext agent on host %s answered %s within %d s'
                % (host, method, timeout)) from None
        except messaging.MessageUndeliverable:
            raise exception.AgentUnavailable(
                'no snapext agent is listening on host %s (%s)'
                % (host, method)) from None
        except messaging.RemoteError as exc:
            raise exception.AgentError(
                'snapext agent on host %s failed in %s: %s: %s'
                % (host, method, exc.exc_type, exc.value)) from None
        except messaging.MessagingException as exc:
            raise exception.AgentUnavailable(
                'snapext agent RPC %s to host %s failed after %.1f s: %s'
                % (method, host, time.monotonic() - started, exc)) from None
        except Exception as exc:
            # Builtin exceptions of the agent arrive as themselves, their
            # message followed by the agent's traceback.
            raise exception.AgentError(
                'snapext agent on host %s failed in %s: %s: %s'
                % (host, method, type(exc).__name__,
                   str(exc).split('\n')[0])) from None

    def ping(self, ctxt, host):
        """{'host', 'version', 'pid', 'frozen': [instance uuids]}."""
        return self._call(ctxt, host, 'ping')

    def freeze(self, ctxt, host, instances, timeout_ms):
        """Freeze the filesystems of ``instances`` (uuids or names).

        All or none: if one cannot be frozen the others are thawed and the
        error is raised.  The agent thaws each guest itself when neither
        thaw nor capture arrives within ``timeout_ms`` (capped by the
        agent's [snapext] max_freeze_ms); a capture re-arms that timer.

        :returns: {'op_id', 'timeout_ms', 'instances': {instance:
            {'uuid', 'filesystems', 'freeze_ms'}}}; pass ``op_id`` as the
            capture spec's ``freeze_op`` to insist on this freeze
        """
        return self._call(ctxt, host, 'freeze', instances=list(instances),
                          timeout_ms=int(timeout_ms))

    def thaw(self, ctxt, host, instances):
        """Thaw ``instances``; safe to call for guests that are not frozen.

        :returns: {'instances': {instance: {'uuid', 'thawed_by' (caller,
            watchdog, not-frozen), 'frozen_ms'}}}
        """
        return self._call(ctxt, host, 'thaw', instances=list(instances))

    def capture(self, ctxt, host, spec):
        """One snapshot of one instance's disks (and memory), one instant.

        :param spec: {'instance': uuid or name, 'memory': bool,
            'quiesce': 'required' | 'preferred' | 'off', 'targets': [dev]
            or None, 'disk_roles': {dev: {...}} or None, 'extra': {...} or
            None; optionally 'freeze_op': the op_id of a freeze this
            capture must happen inside (Conflict if that freeze is gone)}
        :returns: {'op_id', 'manifest': the committed manifest,
            'timings_ms': {...}, 'active_disks': {dev: path now written}}
        """
        return self._long_call(ctxt, host, 'capture', spec=dict(spec))

    def revert(self, ctxt, host, spec):
        """Revert an instance: spec {'snapshot_id'}.

        :returns: {'op_id', 'snapshot_id', 'instance_uuid', 'timings_ms'}
        """
        return self._long_call(ctxt, host, 'revert', spec=dict(spec))

    def delete(self, ctxt, host, spec):
        """Delete a snapshot (its children stay): spec {'snapshot_id'}.

        A broken record (unreadable or foreign) is removed with its
        memory image; the disk states its name marks stay (only a readable
        record tells which Cinder owns) and are listed in 'kept'.

        :returns: {'op_id', 'snapshot_id', 'instance_uuid',
            'active_disks': {dev: path}, 'broken': bool, 'kept': ['file:
            internal snapshot name'], 'manifests': the instance's
            remaining records}
        """
        return self._long_call(ctxt, host, 'delete', spec=dict(spec))

    def current(self, ctxt, host, instance):
        """Id of the snapshot the instance's disks now continue from.

        :returns: a snapshot id or None
        """
        return self._call(ctxt, host, 'current', instance=instance)

    def tree(self, ctxt, host, instance):
        """The instance's snapshot tree, each node with its availability.

        Only the host can tell whether a disk still holds a snapshot.
        :returns: {'instance_uuid', 'current', 'snapshots': [nodes with
            'state' (available, unavailable) and 'reason'], 'records': the
            validated records, 'broken': [{'id', 'instance_uuid',
            'reason'}] of those that cannot be used}; the last two from a
            2.2 agent only
        """
        # The same call; sent as 2.2 it insists on the records.
        version = '2.2' if self.client.can_send_version('2.2') else '2.0'
        return self._call(ctxt, host, 'tree', version=version,
                          instance=instance)

    def get(self, ctxt, host, snapshot_id, timeout=None):
        """One record, with whether it can be reverted to now.

        An agent whose glance store lost the record rebuilds it from the
        snapshot's bundle first, if the snapshot's instance runs there.

        :param timeout: seconds without an answer or a heartbeat from the
            agent after which it counts as gone ([snapext] rpc_timeout if
            None); a rebuild that heartbeats runs up to
            rpc_capture_timeout
        :returns: {'manifest': the validated record, 'reason': why it
            cannot be reverted to now, or None}
        :raises NotFound: the host has no such record
        :raises BrokenRecord: the record cannot be used
        """
        return self._long_call(
            ctxt, host, 'get', version='2.2',
            monitor=timeout or self.conf.snapext.rpc_timeout,
            snapshot_id=snapshot_id)

    def make_durable(self, ctxt, host, spec):
        """Put a committed snapshot's bundle into the agent's store.

        For the glance store: one hidden image holding the bundle (a delta
        on the parent's when that is in Glance), uploaded while the guest
        runs on, noted in the record's ``durable``.  A failed upload leaves
        no image; the record stays as it was.

        The bundle carries the record, so it is made once Cinder's
        snapshots own the volume states named in ``adopted`` (within
        [snapext] rpc_timeout, else Conflict).

        :param spec: {'snapshot_id', 'adopted': [volume ids whose state a
            Cinder snapshot is adopting]}
        :returns: {'op_id', 'snapshot_id', 'durable': the record's durable
            ({'image_id', 'since', 'chain', 'bytes', 'seconds'}), or None
            when the agent's store keeps no bundles}; None from an agent
            older than 2.4 (its snapshots stay on its host)
        """
        if not self.client.can_send_version('2.4'):
            return None
        return self._long_call(ctxt, host, 'make_durable', version='2.4',
                               spec=dict(spec))

    def release(self, ctxt, host, spec):
        """Drop internal snapshots from disks of a running instance.

        Cinder's delete of a snapshot of an attached volume: the agent
        drops the named internal snapshot from the disk (through QEMU when
        the domain runs, qemu-img otherwise), and each snapext record that
        named it forgets that disk (a record left with nothing is deleted).

        :param spec: {'instance': uuid, 'disks': [{'target': dev, 'file':
            basename the disk's file must have (or None), 'volume_id',
            'name': internal snapshot name}]}
        :returns: {'op_id', 'instance_uuid', 'released': [dev],
            'records': {record id: 'updated' | 'deleted'}}
        """
        return self._long_call(ctxt, host, 'release', version='2.1',
                               spec=dict(spec))

    def adopt(self, ctxt, host, spec):
        """Cinder takes over one volume disk of a snapext record.

        :param spec: {'snapshot_id': record id, 'volume_id', 'file': the
            volume file's basename, 'cinder_snapshot_id'}
        :returns: {'op_id', 'snapshot_id', 'target', 'name'}
        """
        return self._call(ctxt, host, 'adopt', version='2.1',
                          spec=dict(spec))

    def export(self, ctxt, host, spec):
        """Export a snapshot's bundle into a queued Glance image.

        The agent checks the request at once (the snapshot is on this host
        with every disk state and its digests, ``since`` is an ancestor,
        no snapshot operation holds the instance, the image is queued)
        and returns; the bundle then streams into the image in the
        background, without holding the instance.  A failed upload (the
        snapshot deleted meanwhile, Glance refusing) deletes the image:
        it never turns active holding part of a bundle.

        :param spec: {'snapshot_id', 'since': an ancestor's id or None (a
            delta holding only what changed since), 'image_id': the queued
            image (container_format bare, disk_format raw), made with the
            caller's context}
        :returns: {'image_id', 'snapshot_id', 'since', 'op_id': the
            upload's operation, which ``status`` follows to done or error}
        """
        return self._call(ctxt, host, 'export', version='2.3',
                          spec=dict(spec))

    def import_bundle(self, ctxt, host, spec):
        """Import a bundle from a Glance image; make it bootable.

        The agent reads the image (no copy on disk), verifies every
        member before anything enters its store, uploads the snapshot's
        root disk state as a new qcow2 image named ``name`` (with the
        snapext properties and the Nova context the bundle carries: a
        server booted from it resumes the snapshot's memory on this host),
        then commits the record.  A failure leaves no record, no file and
        no image behind; a snapshot already in the store is a Conflict.

        :param spec: {'image_id': the bundle's image, 'name': the bootable
            image's name}
        :returns: {'op_id', 'snapshot_id', 'image_id': the bootable image,
            'instance_uuid': the snapshot's instance}
        """
        return self._long_call(ctxt, host, 'import_bundle', version='2.3',
                               spec=dict(spec))

    def status(self, ctxt, host, op_id):
        """What a recent operation of this agent is doing, or did.

        :returns: {'op_id', 'method', 'state' (running, done, error,
            unknown), 'instances', 'stage', 'error', 'elapsed_ms'}
        """
        return self._call(ctxt, host, 'status', op_id=op_id)


def _plain(exc):
    for klass in type(exc).__mro__:
        if (issubclass(klass, exception.SnapextError) and
                klass.__module__ == exception.__name__):
            # Keyword details (BrokenRecord's) travel in ``kwargs``.
            return klass(*exc.args, **getattr(exc, 'kwargs', {}))
    return exc
