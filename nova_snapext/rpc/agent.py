"""The snapext agent: the RPC server on each compute host.

Runs inside nova-compute (started by the driver's init_host) or standalone
as ``snapext-agent``.  It serves the API of :mod:`nova_snapext.rpc.api` on
exchange ``snapext``, topic ``snapext-agent``, server = the host name, and
owns the guests it froze (see :mod:`nova_snapext.rpc.watchdog`).  It also
deletes the snapshots of images Glance deleted
(:mod:`nova_snapext.rpc.notifications`).
"""

import contextlib
import functools
import os
import threading
import time

from oslo_log import log as logging
import oslo_messaging as messaging

from nova_snapext import bundle
from nova_snapext.capture import domain_xml
from nova_snapext.capture import quiesce
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod
from nova_snapext import rpc
from nova_snapext.rpc import notifications
from nova_snapext.rpc import ops
from nova_snapext.rpc import watchdog
from nova_snapext.virt import policy

LOG = logging.getLogger(__name__)

# seconds between two looks at a record whose volume states Cinder is
# adopting
ADOPTION_POLL = 0.5


def _operation(method, with_context=False):
    """Record the call in the operation log; errors stay snapext errors.

    :param with_context: pass the caller's context (a dict) on as
        ``ctxt``, for methods that act on the caller's behalf elsewhere
        (Glance)
    """

    def decorator(f):
        @functools.wraps(f)
        @messaging.expected_exceptions(exception.SnapextError)
        def wrapper(self, ctxt, **kwargs):
            with self._recorded(method, _instances_of(kwargs),
                                op_id=_op_id_of(kwargs),
                                request_id=(ctxt or {}).get('request_id')
                                ) as op:
                if with_context:
                    kwargs['ctxt'] = ctxt or {}
                result = f(self, op, **kwargs)
            if isinstance(result, dict):
                result.setdefault('op_id', op.op_id)
            return result
        return wrapper
    return decorator


def _instances_of(kwargs):
    if 'instances' in kwargs:
        return list(kwargs['instances'] or [])
    if 'instance' in kwargs:
        return [kwargs['instance']]
    spec = kwargs.get('spec') or {}
    return [spec[k] for k in ('instance', 'snapshot_id') if spec.get(k)]


def _op_id_of(kwargs):
    spec = kwargs.get('spec')
    return spec.get('op_id') if isinstance(spec, dict) else None


def _active_disks(dom, targets=None):
    return {d.target: d.path for d in domain_xml.writable_disks(dom.XMLDesc(0))
            if targets is None or d.target in targets}


class AgentEndpoint(object):
    """The agent's RPC methods; see api.AgentAPI for the contract."""

    target = messaging.Target(version='2.4')

    def __init__(self, conf, engine, host, images=None, project_of=None):
        self.conf = conf
        self.engine = engine
        self.host = host
        # Glance (nova_snapext.glance.Images) where the agent runs in
        # nova-compute; None in the standalone agent
        self.images = images
        # callable(instance uuid) -> the project of that server in this
        # cloud, or None when there is none (nova-compute's; None here)
        self.project_of = project_of
        self.ops = ops.OperationLog()
        self.watchdog = watchdog.Watchdog(self._watchdog_thaw,
                                          marker_dir=conf.snapext.lock_path)
        self._lock = threading.Lock()
        self._busy = {}
        self._thawed = {}  # uuid -> how its last freeze ended

    @contextlib.contextmanager
    def _recorded(self, method, instances, op_id=None, request_id=None):
        """An operation in the log, from start to its outcome."""
        op = self.ops.start(method, instances, op_id=op_id)
        LOG.info('snapext agent %s %s request_id=%s', method, op.instances,
                 request_id)
        try:
            yield op
        except exception.SnapextError as exc:
            self.ops.finish(op, exc)
            raise
        except Exception as exc:
            self.ops.finish(op, exc)
            LOG.exception('snapext agent %s failed', method)
            raise
        self.ops.finish(op)

    # -- per-instance exclusion -------------------------------------------

    @contextlib.contextmanager
    def _claim(self, uuids, op):
        """Refuse, rather than queue, a second operation on an instance.

        The engine's file lock does the same across processes; this one
        also covers the freeze window, where no engine call runs.
        """
        with self._lock:
            for uuid in uuids:
                if uuid in self._busy:
                    other = self._busy[uuid]
                    raise exception.Conflict(
                        'instance %s is busy with %s (op %s) on host %s'
                        % (uuid, other.method, other.op_id, self.host))
            for uuid in uuids:
                self._busy[uuid] = op
        try:
            yield
        finally:
            with self._lock:
                for uuid in uuids:
                    self._busy.pop(uuid, None)

    def _domains(self, instances):
        if not instances:
            raise exception.InvalidRequest('no instance given')
        doms = [(ident, self.engine.domain(ident)) for ident in instances]
        uuids = [d.UUIDString() for _, d in doms]
        if len(set(uuids)) != len(uuids):
            raise exception.InvalidRequest('an instance is named twice')
        return doms

    def _refuse_frozen(self, uuid, what):
        state = self.watchdog.get(uuid)
        if state is not None:
            raise exception.Conflict(
                'instance %s is frozen by op %s; thaw it before %s'
                % (uuid, state.op_id, what))

    # -- 1.0 ------------------------------------------------------------------

    @_operation('ping')
    def ping(self, op):
        return {'host': self.host, 'version': self.target.version,
                'pid': os.getpid(), 'frozen': self.watchdog.frozen()}

    @_operation('freeze')
    def freeze(self, op, instances, timeout_ms):
        limit = self.conf.snapext.max_freeze_ms
        timeout_ms = max(1, min(int(timeout_ms), limit))
        doms = self._domains(instances)
        uuids = [d.UUIDString() for _, d in doms]
        result = {}
        with self._claim(uuids, op):
            for uuid in uuids:
                self._refuse_frozen(uuid, 'freezing it again')
            frozen = []
            try:
                for ident, dom in doms:
                    op.stage = 'freezing %s' % ident
                    started = time.monotonic()
                    count = quiesce.freeze(dom)
                    state = watchdog.Frozen(dom.UUIDString(), dom.name(),
                                            op.op_id, timeout_ms / 1000.0)
                    state.frozen_at = started
                    self.watchdog.arm(state)
                    frozen.append(dom)
                    result[ident] = {
                        'uuid': state.uuid, 'filesystems': count,
                        'freeze_ms': round(
                            (time.monotonic() - started) * 1000, 1)}
            except Exception:
                for dom in frozen:
                    self.watchdog.release(dom.UUIDString())
                    quiesce.thaw(dom)
                raise
        return {'timeout_ms': timeout_ms, 'instances': result}

    @_operation('thaw')
    def thaw(self, op, instances):
        result = {}
        for ident, dom in self._domains(instances):
            uuid = dom.UUIDString()
            state = self.watchdog.release(uuid)
            if state is not None:
                # Suspended by a capture still running (caller gave up on
                # it): thawing under it is what the caller asked for.
                thawed = quiesce.thaw(dom)
                ended = self._ended(state, 'caller')
                if not thawed:
                    ended['thawed_by'] = 'caller-failed'
            else:
                # Not frozen by us, or the watchdog was first; thaw anyway,
                # a thaw never hurts and a stray freeze would.
                quiesce.thaw(dom)
                ended = self._thawed.get(uuid, {'thawed_by': 'not-frozen',
                                                'frozen_ms': None})
            result[ident] = dict(ended, uuid=uuid)
        return {'instances': result}

    def _ended(self, state, by):
        ended = {'thawed_by': by, 'frozen_ms': state.elapsed_ms(),
                 'freeze_op': state.op_id}
        self._thawed[state.uuid] = ended
        self._record_window(state, ended['frozen_ms'])
        self._digest_later(state.snapshots)
        LOG.info('%s: thawed by %s after %.1f ms', state.name, by,
                 ended['frozen_ms'])
        return ended

    def _record_window(self, state, frozen_ms):
        """Put the real frozen window into manifests captured inside it."""
        for snapshot_id in state.snapshots:
            try:
                record = self.engine.store.get(snapshot_id)
                record['quiesce']['frozen_ms'] = frozen_ms
                self.engine.store.update(record)
            except Exception:
                # The guest is thawed already; a record without its window
                # must not turn the thaw into an error.
                LOG.exception('cannot record the frozen window of %s',
                              snapshot_id)

    def _digest_later(self, snapshot_ids):
        """Disk digests of captures made inside a freeze, once thawed.

        Not in the thaw's reply path either: hashing a first snapshot
        reads all its data, longer than a thaw call waits.  A record whose
        digests are lost with this process is verified "incomplete".
        """
        def run():
            for snapshot_id in snapshot_ids:
                try:
                    self.engine.record_digests(snapshot_id)
                except Exception:
                    LOG.exception('no disk digests for snapshot %s',
                                  snapshot_id)
        if snapshot_ids:
            threading.Thread(target=run, name='snapext-digests',
                             daemon=True).start()

    def thaw_leftovers(self):
        """Thaw the guests a killed agent left frozen (no watchdog ran)."""
        for uuid in self.watchdog.leftovers():
            try:
                quiesce.thaw_when_ready(
                    self.engine.domain(uuid),
                    self.conf.snapext.thaw_after_restore_timeout)
            except exception.NotFound:
                pass
            except exception.SnapextError:
                LOG.exception('cannot thaw %s, frozen by a previous agent',
                              uuid)
                continue
            LOG.warning('thawed %s, left frozen by a previous agent', uuid)
            self.watchdog.forget(uuid)

    def _watchdog_thaw(self, state):
        dom = self.engine.domain(state.uuid)
        quiesce.thaw(dom)
        self._ended(state, 'watchdog')

    @_operation('capture')
    def capture(self, op, spec):
        spec = _capture_spec(spec)
        dom = self.engine.domain(spec['instance'])
        uuid = dom.UUIDString()
        started = time.monotonic()
        with self._claim([uuid], op):
            state = self.watchdog.suspend(uuid)
            try:
                if spec['freeze_op'] and (
                        state is None or state.op_id != spec['freeze_op']):
                    ended = self._thawed.get(uuid) or {}
                    raise exception.Conflict(
                        'instance %s is no longer frozen by op %s (thawed '
                        'by %s after %s ms); nothing was captured'
                        % (uuid, spec['freeze_op'],
                           ended.get('thawed_by', 'nobody'),
                           ended.get('frozen_ms')))
                op.stage = 'capturing'
                record = self._take(dom, spec, state)
            finally:
                if state is not None:
                    self.watchdog.rearm(uuid)
        timings = dict(record.get('timings_ms') or {})
        timings['agent_total'] = round((time.monotonic() - started) * 1000,
                                       1)
        return {'manifest': record, 'timings_ms': timings,
                'active_disks': _active_disks(
                    dom, {d['target'] for d in record['disks']})}

    def _take(self, dom, spec, state):
        extra = dict(spec['extra'] or {})
        policy = spec['quiesce']
        if state is not None:
            # Frozen by our own freeze: capturing must not freeze (or thaw)
            # again; the window's length is filled in at thaw.
            extra['quiesce'] = {'policy': policy or 'required',
                                'outcome': manifest_mod.QUIESCE_FROZEN,
                                'frozen_ms': None}
            policy = 'off'
        record = self.engine.take(
            dom.UUIDString(), memory=spec['memory'], quiesce_policy=policy,
            disk_roles=spec['disk_roles'], extra=extra,
            targets=spec['targets'], digests=state is None)
        if state is not None:
            state.snapshots.append(record['id'])
        return record

    @_operation('revert', with_context=True)
    def revert(self, op, ctxt, spec):
        # a snapshot this host's cache lost is fetched (glance store)
        record = self.engine.resumable(_snapshot_id(spec), ctxt)
        uuid = record['instance_uuid']
        started = time.monotonic()
        with self._claim([uuid], op):
            self._refuse_frozen(uuid, 'reverting it')
            self.engine.revert(record['id'], context=ctxt)
        return {'snapshot_id': record['id'], 'instance_uuid': uuid,
                'timings_ms': {'total': round(
                    (time.monotonic() - started) * 1000, 1)}}

    @_operation('current')
    def current(self, op, instance):
        return self.engine.current(instance)

    @_operation('tree')
    def tree(self, op, instance):
        # With the records (2.2): the caller may have no access to the
        # store; a 2.0 caller ignores the keys it does not know.
        return self.engine.tree(instance, records=True)

    @_operation('status')
    def status(self, op, op_id):
        return self.ops.status(op_id)

    @_operation('delete', with_context=True)
    def delete(self, op, ctxt, spec):
        snapshot_id = _snapshot_id(spec)
        try:
            record = self.engine.store.get(snapshot_id)
        except exception.BrokenRecord as exc:
            # Removable all the same; only its instance is known.
            record = {'id': exc.snapshot_id,
                      'instance_uuid': exc.instance_uuid}
        uuid = record['instance_uuid']
        result = self._delete(op, record, ctxt)
        try:
            active = _active_disks(self.engine.domain(uuid))
        except exception.NotFound:
            active = {}
        return {'snapshot_id': record['id'], 'instance_uuid': uuid,
                'active_disks': active, 'broken': result['broken'],
                'kept': result['kept'],
                'manifests': self.engine.store.list(uuid)}

    def _delete(self, op, record, ctxt=None):
        """Delete a snapshot, whoever asked: a caller, or an image's end.

        :param ctxt: the caller's context; None for an image's end (the
            store then acts in Glance as Nova's service user)
        """
        uuid = record['instance_uuid']
        with self._claim([uuid], op):
            self._refuse_frozen(uuid, 'deleting its snapshot')
            return self.engine.delete(record['id'], context=ctxt)

    # -- 2.1 ------------------------------------------------------------------

    @_operation('release')
    def release(self, op, spec):
        spec = _release_spec(spec)
        uuid = self.engine.domain(spec['instance']).UUIDString()
        with self._claim([uuid], op):
            self._refuse_frozen(uuid, 'releasing its snapshots')
            result = self.engine.release(uuid, spec['disks'])
        return dict(result, instance_uuid=uuid)

    @_operation('adopt')
    def adopt(self, op, spec):
        spec = _adopt_spec(spec)
        record = self.engine.store.get(spec['snapshot_id'])
        uuid = record['instance_uuid']
        with self._claim([uuid], op):
            disk = self.engine.adopt(
                record['id'], spec['volume_id'], spec['file'],
                spec['cinder_snapshot_id'])
        return {'snapshot_id': record['id'], 'target': disk['target'],
                'name': disk['snapshot']}

    # -- 2.2 ------------------------------------------------------------------

    @_operation('get', with_context=True)
    def get(self, op, ctxt, snapshot_id):
        try:
            record = self.engine.store.get(snapshot_id)
        except exception.NotFound:
            # The glance store's cache lost it (a disk replaced): rebuilt
            # from its bundle with the caller's context, here only if its
            # instance runs here.
            op.stage = 'rebuilding the cache entry from Glance'
            record = self.engine.rebuild_lost(snapshot_id, ctxt)
        _, reason = self.engine.availability(record)
        return {'manifest': record, 'reason': reason}

    # -- 2.3 ------------------------------------------------------------------

    def _glance(self, ctxt):
        if self.images is None:
            raise exception.InvalidRequest(
                'the snapext agent on host %s runs without Nova\'s image API '
                '(standalone): bundles go through Glance only from the '
                'agent inside nova-compute' % self.host)
        return self.images.context(ctxt)

    @_operation('export', with_context=True)
    def export(self, op, ctxt, spec):
        spec = _export_spec(spec)
        context = self._glance(ctxt)
        record = self.engine.store.get(spec['snapshot_id'])
        uuid = record['instance_uuid']
        image = self.images.get(context, spec['image_id'])
        if image.get('status') != 'queued':
            raise exception.Conflict(
                'image %s is %s: an export goes into a new, queued image'
                % (spec['image_id'], image.get('status')))
        with self._claim([uuid], op):
            plan = self.engine.open_export(record['id'], spec['since'])
        # The upload runs on without the instance: see open_export.
        upload = self.ops.start('export-upload', [uuid])
        threading.Thread(target=self._upload_export, name='snapext-export',
                         args=(upload, context, spec['image_id'], plan),
                         daemon=True).start()
        return {'image_id': spec['image_id'], 'snapshot_id': record['id'],
                'since': spec['since'], 'op_id': upload.op_id}

    def _upload_export(self, op, context, image_id, plan):
        """The export's bytes into its image; Images.upload cleans up.

        A thread of its own (a green one where nova-compute runs under
        eventlet): the bundle is pulled chunk by chunk by the upload, so
        memory stays bounded and nothing waits on another thread.
        """
        what = 'the bundle of snapshot %s%s' % (
            plan.record['id'],
            ' since %s' % plan.since if plan.since else '')

        def notify(done):
            op.stage = 'uploaded %d bytes' % done
        try:
            self.images.upload(context, image_id, plan.chunks(), what,
                               notify)
        except Exception as exc:
            LOG.error('export of %s into image %s failed (the image is '
                      'deleted): %s', what, image_id, exc)
            self.ops.finish(op, exc)
            return
        self.ops.finish(op)
        LOG.info('exported %s into image %s', what, image_id)

    def _check_owner(self, context, record):
        """Only a server's own project may add to its snapshot tree.

        A bundle names the server it was taken of; where that server
        exists, an imported snapshot joins its tree (listed, reverted,
        deleted with it), so a bundle crafted with another project's
        server would plant a snapshot there.
        """
        owner = self.project_of and self.project_of(record['instance_uuid'])
        if owner and owner != context.project_id and not context.is_admin:
            raise exception.InvalidRequest(
                'snapshot %s was taken of server %s, which belongs to '
                'another project: only that project may import it'
                % (record['id'], record['instance_uuid']))

    @_operation('import_bundle', with_context=True)
    def import_bundle(self, op, ctxt, spec):
        spec = _import_spec(spec)
        context = self._glance(ctxt)
        what = 'a bundle'
        download = self.images.download(
            context, spec['image_id'], what,
            lambda done: setattr(op, 'stage', 'read %d bytes' % done))
        made = {}

        def bootable(record, directory):
            # the whole image read and checked before anything is kept
            download.finish()
            self._check_owner(context, record)
            root, meta = policy.bootable_image(
                record, spec['name'], self.host, self.engine.store.name)
            disk = self.engine.standalone_disk(
                root, os.path.join(directory, bundle.disk_member(
                    root['target'])))
            op.stage = 'uploading the root disk'
            made['image'] = self.images.create(
                context, meta, disk.chunks(),
                'the root disk of snapshot %s' % record['id'])
            record['image_id'] = made['image']['id']
        try:
            record = self.engine.import_bundle(download, bootable)
        except BaseException as exc:
            if made:
                self.images.delete(context, made['image']['id'])
            if isinstance(exc, bundle.BundleError):
                # the plain class travels over RPC; bundle's does not
                raise exception.InvalidRequest(str(exc)) from None
            raise
        LOG.info('imported snapshot %s from image %s; it boots from image '
                 '%s', record['id'], spec['image_id'], record['image_id'])
        return {'snapshot_id': record['id'], 'image_id': record['image_id'],
                'instance_uuid': record['instance_uuid']}

    # -- 2.4 ------------------------------------------------------------------

    @_operation('make_durable', with_context=True)
    def make_durable(self, op, ctxt, spec):
        spec = _durable_spec(spec)
        snapshot_id = spec['snapshot_id']
        if not self.engine.store.keeps_bundles:
            return {'snapshot_id': snapshot_id, 'durable': None}
        # Without the instance's claim: the guest runs on, and Cinder's
        # adoption of the snapshot's volume states must not be refused.
        op.stage = 'waiting for Cinder to adopt the volume states'
        self._wait_adopted(snapshot_id, spec['adopted'])

        def notify(done):
            op.stage = 'uploaded %d bytes' % done
        durable = self.engine.make_durable(snapshot_id, ctxt, notify)
        return {'snapshot_id': snapshot_id, 'durable': durable}

    def _wait_adopted(self, snapshot_id, volume_ids):
        """Until Cinder's snapshots own the record's volume states.

        The bundle carries the record: one made before the adoption would
        not say which states Cinder owns, and a record rebuilt from it
        would let a snapext delete drop them.
        """
        deadline = time.monotonic() + self.conf.snapext.rpc_timeout
        while True:
            disks = self.engine.store.get(snapshot_id)['disks']
            waiting = sorted(d['volume_id'] for d in disks
                             if d.get('volume_id') in volume_ids and
                             not d.get('cinder_snapshot_id'))
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise exception.Conflict(
                    'Cinder did not adopt the state of volume %s in '
                    'snapshot %s within %d s: no bundle made'
                    % (', '.join(waiting), snapshot_id,
                       self.conf.snapext.rpc_timeout))
            time.sleep(ADOPTION_POLL)

    def _thaw_all(self):
        """Thaw every guest this agent froze (on stop)."""
        for state in self.watchdog.release_all():
            try:
                quiesce.thaw(self.engine.domain(state.uuid))
                self._ended(state, 'agent-stop')
            except Exception:
                LOG.exception('cannot thaw %s on stop', state.name)


def _snapshot_id(spec):
    if not isinstance(spec, dict) or not spec.get('snapshot_id'):
        raise exception.InvalidRequest('spec needs a snapshot_id')
    return spec['snapshot_id']


def _durable_spec(spec):
    snapshot_id = _snapshot_id(spec)
    adopted = spec.get('adopted') or []
    if not isinstance(adopted, list):
        raise exception.InvalidRequest('adopted must be a list of volume '
                                       'ids')
    unknown = set(spec) - {'snapshot_id', 'adopted', 'op_id'}
    if unknown:
        raise exception.InvalidRequest(
            'make_durable spec has unknown keys: %s'
            % ', '.join(sorted(unknown)))
    return {'snapshot_id': snapshot_id, 'adopted': adopted}


def _release_spec(spec):
    if not isinstance(spec, dict) or not spec.get('instance'):
        raise exception.InvalidRequest('release spec needs an instance')
    disks = spec.get('disks')
    if not isinstance(disks, list) or not disks:
        raise exception.InvalidRequest('release spec needs disks')
    for disk in disks:
        if not isinstance(disk, dict) or not disk.get('target') or not (
                disk.get('name') or '').startswith('snapext-'):
            raise exception.InvalidRequest(
                'each disk to release needs a target and a snapext-* '
                'internal snapshot name: %r' % (disk,))
    return {'instance': spec['instance'],
            'disks': [{'target': d['target'], 'file': d.get('file'),
                       'volume_id': d.get('volume_id'), 'name': d['name']}
                      for d in disks]}


def _adopt_spec(spec):
    keys = ('snapshot_id', 'volume_id', 'file', 'cinder_snapshot_id')
    if not isinstance(spec, dict) or not all(spec.get(k) for k in keys):
        raise exception.InvalidRequest('adopt spec needs %s'
                                       % ', '.join(keys))
    return {k: spec[k] for k in keys}


def _export_spec(spec):
    if not isinstance(spec, dict) or not spec.get('snapshot_id') or not (
            spec.get('image_id')):
        raise exception.InvalidRequest('export spec needs a snapshot_id and '
                                       'an image_id')
    unknown = set(spec) - {'snapshot_id', 'since', 'image_id', 'op_id'}
    if unknown:
        raise exception.InvalidRequest(
            'export spec has unknown keys: %s' % ', '.join(sorted(unknown)))
    return {'snapshot_id': spec['snapshot_id'],
            'since': spec.get('since') or None,
            'image_id': spec['image_id']}


def _import_spec(spec):
    if not isinstance(spec, dict) or not spec.get('image_id') or not (
            isinstance(spec.get('name'), str) and spec['name'].strip()):
        raise exception.InvalidRequest('import spec needs an image_id and '
                                       'a name for the bootable image')
    unknown = set(spec) - {'image_id', 'name', 'op_id'}
    if unknown:
        raise exception.InvalidRequest(
            'import spec has unknown keys: %s' % ', '.join(sorted(unknown)))
    return {'image_id': spec['image_id'], 'name': spec['name']}


def _capture_spec(spec):
    if not isinstance(spec, dict) or not spec.get('instance'):
        raise exception.InvalidRequest('capture spec needs an instance')
    unknown = set(spec) - {'instance', 'memory', 'quiesce', 'targets',
                           'disk_roles', 'extra', 'freeze_op', 'op_id'}
    if unknown:
        raise exception.InvalidRequest(
            'capture spec has unknown keys: %s' % ', '.join(sorted(unknown)))
    quiesce_policy = spec.get('quiesce')
    if quiesce_policy is not None and quiesce_policy not in quiesce.POLICIES:
        raise exception.InvalidRequest(
            'quiesce must be one of %s' % ', '.join(quiesce.POLICIES))
    targets = spec.get('targets')
    if targets is not None and not isinstance(targets, list):
        raise exception.InvalidRequest('targets must be a list or None')
    return {'instance': spec['instance'],
            'memory': bool(spec.get('memory', False)),
            'quiesce': quiesce_policy, 'targets': targets,
            'disk_roles': spec.get('disk_roles'), 'extra': spec.get('extra'),
            'freeze_op': spec.get('freeze_op')}


class AgentService(object):
    """The agent's RPC server: ``start()`` in init_host, ``stop()`` after.

    :param conf: ConfigOpts with the [snapext] options registered
    :param engine: a nova_snapext.capture.engine.Engine
    :param host: the server name callers address (``CONF.host``)
    """

    def __init__(self, conf, engine, host, transport=None,
                 notification_transport=None, images=None, project_of=None):
        self.conf = conf
        self.host = host
        self.endpoint = AgentEndpoint(conf, engine, host, images, project_of)
        self._transport = transport
        self._notification_transport = notification_transport
        self._server = None
        self._listener = None

    def start(self):
        self.endpoint.thaw_leftovers()
        transport = self._transport or rpc.get_transport(self.conf)
        rpc.register_global_only_opts(transport.conf)
        target = messaging.Target(exchange=rpc.EXCHANGE, topic=rpc.TOPIC,
                                  server=self.host)
        self._server = messaging.get_rpc_server(
            transport, target, [self.endpoint], executor='threading',
            access_policy=messaging.DefaultRPCAccessPolicy)
        self._server.start()
        LOG.info('snapext agent listening: exchange %s topic %s server %s',
                 rpc.EXCHANGE, rpc.TOPIC, self.host)
        if self.conf.snapext.image_delete_listener:
            self._listener = notifications.ImageDeleteListener(
                self.conf, self.host, notifications.ImageDeleteEndpoint(
                    self.endpoint.engine.store, self.delete_snapshot,
                    redo_durable=self.redo_durable),
                transport=self._notification_transport).start()
        return self

    def delete_snapshot(self, snapshot_id):
        """Delete a snapshot for this host's own reasons (not over RPC).

        With the exclusion and the operation log of the RPC ``delete``.
        """
        record = self.endpoint.engine.store.get(snapshot_id)
        with self.endpoint._recorded(
                'delete', [record['instance_uuid']]) as op:
            self.endpoint._delete(op, record)

    def redo_durable(self, image_id, snapshot_ids):
        """Upload again, in the background, the bundles ``image_id`` held.

        Parents first (the order given), each under the operation log;
        one that fails stays in the cache only and says so in the log.
        """
        def run():
            engine = self.endpoint.engine
            for snapshot_id in snapshot_ids:
                try:
                    uuid = engine.store.get(snapshot_id)['instance_uuid']
                    with self.endpoint._recorded('redo-durable', [uuid]):
                        engine.redo_durable(snapshot_id, image_id)
                except Exception:
                    LOG.exception('snapshot %s lives in this host\'s cache '
                                  'only: its bundle could not be uploaded '
                                  'again after image %s was deleted',
                                  snapshot_id, image_id)
        threading.Thread(target=run, name='snapext-redo-durable',
                         daemon=True).start()

    def stop(self):
        """Stop serving, wait for running requests, thaw what we froze.

        The thaw comes whatever stopping the servers raised: a guest must
        never stay frozen because a listener failed to stop.
        """
        try:
            if self._listener is not None:
                self._listener.stop()
                self._listener = None
            if self._server is not None:
                self._server.stop()
                self._server.wait()
                self._server = None
        finally:
            self.endpoint._thaw_all()
