"""What the snapext endpoints do, once the filter has routed a request.

nova-api reads no snapshot store: everything goes over RPC to the snapext
agent on a compute host.  The tree is the agent's answer on the instance's
host; a record is found through its Glance image or by asking the compute
hosts (:mod:`locate`).  When the agent that holds the answer is down, the
tree and a record are a 503: nova-api has no copy to serve.  A snapshot
belongs to its instance: every request resolves the instance through
Nova's compute API, which hides other projects' instances from non-admins,
so someone else's snapshot is a 404 exactly like one that does not exist.
"""

import contextlib

from nova.api.openstack import api_version_request
from nova.api.openstack import common
from nova import block_device
from nova.compute import instance_actions
from nova.compute import utils as compute_utils
from nova.compute import vm_states
from nova import exception as nova_exception
from nova import objects
from nova.policies import servers as server_policies
from oslo_log import log as logging
from oslo_utils import excutils
from oslo_utils import strutils
from oslo_utils import uuidutils
import webob.exc

from nova_snapext.api import faults
from nova_snapext.api import locate
from nova_snapext.api import policies
from nova_snapext.api import schemas
from nova_snapext.api import views
from nova_snapext.api import volumes as volumes_mod
from nova_snapext import exception
from nova_snapext import task_states
from nova_snapext.virt import policy as virt_policy

LOG = logging.getLogger(__name__)

REVERT_ACTION = 'snapextRevert'
DELETE_ACTION = 'snapextDelete'

# A revert resumes the captured memory, so the server runs afterwards; any
# other starting state would leave Nova's vm_state contradicting the guest.
REVERTABLE = (vm_states.ACTIVE,)
# Delete merges state files: block jobs on a running domain, qemu-img on a
# stopped one; neither works while Nova moves or rebuilds the disks.
DELETABLE = (vm_states.ACTIVE, vm_states.STOPPED, vm_states.PAUSED,
             vm_states.SUSPENDED)
# A full snapshot includes the memory of a running guest.
CAPTURABLE = (vm_states.ACTIVE,)


def _conflict(action, server_id, attr, state):
    # Nova's wording (common.raise_http_conflict_for_instance_invalid_state)
    return faults.Fault(409, "Cannot '%s' instance %s while it is in %s %s"
                        % (action, server_id, attr, state))


def _check_on_host(instance):
    # Its snapshots are known to its host's agent only (a shelved
    # server has no host).
    if not instance.host:
        raise faults.Fault(409, 'Instance %s is not on a compute host.'
                           % instance.uuid)


class Controller(object):

    def __init__(self, conf, compute_api, image_api, agent, host_api,
                 volume_api=None):
        self.conf = conf
        self.compute_api = compute_api
        self.image_api = image_api
        self.agent = agent
        self.locator = locate.Locator(conf, image_api, agent, host_api)
        self._volume_api = volume_api

    @property
    def volume_api(self):
        if self._volume_api is None:
            self._volume_api = volumes_mod.VolumeAPI()
        return self._volume_api

    # -- lookups -----------------------------------------------------------

    def _instance(self, context, server_id):
        try:
            return self.compute_api.get(context, server_id)
        except nova_exception.InstanceNotFound as exc:
            raise faults.Fault(404, exc.format_message())

    def _snapshot(self, context, snapshot_id):
        """The record, its instance; 404 for anyone who may not see it.

        :returns: (the agent's ``get`` answer {'manifest', 'reason'}, or
            the record's exception.BrokenRecord, whose instance is the one
            whose records hold it; the instance)
        """
        not_found = faults.Fault(
            404, 'Snapshot %s could not be found.' % snapshot_id)
        try:
            answer = self.locator.find(context, snapshot_id)
            instance_uuid = (answer.instance_uuid
                             if isinstance(answer, exception.BrokenRecord)
                             else answer['manifest']['instance_uuid'])
            instance = self.compute_api.get(context, instance_uuid)
        except (exception.NotFound, nova_exception.InstanceNotFound):
            raise not_found
        return answer, instance

    def _check_state(self, context, instance, action, vm_states_ok):
        if instance.locked and not context.is_admin:
            raise faults.Fault(409, nova_exception.InstanceIsLocked(
                instance_uuid=instance.uuid).format_message())
        if instance.task_state is not None:
            raise _conflict(action, instance.uuid, 'task_state',
                            instance.task_state)
        if instance.vm_state not in vm_states_ok:
            raise _conflict(action, instance.uuid, 'vm_state',
                            instance.vm_state)
        _check_on_host(instance)

    @contextlib.contextmanager
    def _task_state(self, context, instance, action, task_state):
        """Hold the server's task state for the whole action.

        Set atomically, as Nova's own actions do (the save fails unless the
        database still says None), so that a stop, resize, reboot or
        another snapext action started meanwhile is refused with 409 on
        either side; cleared at the end, failure or not, unless something
        else (an admin's reset-state, a delete) changed it meanwhile.
        """
        instance.task_state = task_state
        try:
            instance.save(expected_task_state=[None])
        except nova_exception.UnexpectedTaskStateError as exc:
            raise faults.Fault(409, "Cannot '%s' instance %s: %s"
                               % (action, instance.uuid,
                                  exc.format_message()))
        except nova_exception.InstanceNotFound as exc:
            raise faults.Fault(404, exc.format_message())
        try:
            yield
        finally:
            instance.task_state = None
            try:
                instance.save(expected_task_state=[task_state])
            except (nova_exception.UnexpectedTaskStateError,
                    nova_exception.InstanceNotFound) as exc:
                LOG.warning('task state of %s not cleared after %s: %s',
                            instance.uuid, action, exc.format_message())

    @staticmethod
    def _record_action(context, instance, action):
        # The server's action list (os-instance-actions) shows who did it.
        objects.InstanceAction.action_start(context, instance.uuid, action,
                                            want_result=False)

    # -- endpoints -----------------------------------------------------------

    def tree(self, context, server_id):
        """The tree as the instance's host tells it (503 if it cannot)."""
        instance = self._instance(context, server_id)
        policies.authorize(context, policies.INDEX, instance)
        _check_on_host(instance)
        host_tree = self.agent.tree(context.to_dict(), instance.host,
                                    instance.uuid)
        if 'records' not in host_tree:
            raise exception.AgentUnavailable(
                'the snapext agent on host %s is older than RPC 2.2: its '
                'tree has no records' % instance.host)
        return views.tree(instance.uuid, host_tree['records'],
                          host_tree['current'],
                          views.reasons(host_tree['snapshots']),
                          host_tree['broken'])

    def show(self, context, snapshot_id, verification=False):
        """The record; with ``verification``, its last check (1.1)."""
        answer, instance = self._snapshot(context, snapshot_id)
        policies.authorize(context, policies.SHOW, instance)
        if isinstance(answer, exception.BrokenRecord):
            return views.broken_snapshot(answer)
        record = answer['manifest']
        return views.snapshot(record, {record['id']: answer['reason']},
                              verification)

    def delete(self, context, snapshot_id):
        answer, instance = self._snapshot(context, snapshot_id)
        broken = isinstance(answer, exception.BrokenRecord)
        policies.authorize(context, policies.DELETE_BROKEN if broken
                           else policies.DELETE, instance)
        self._check_state(context, instance, DELETE_ACTION, DELETABLE)
        with self._task_state(context, instance, DELETE_ACTION,
                              task_states.DELETING_SNAPSHOT):
            self._record_action(context, instance, DELETE_ACTION)
            self.agent.delete(context.to_dict(), instance.host,
                              {'snapshot_id': snapshot_id})
        if not broken:
            # A broken record's image id cannot be trusted.
            self._delete_image(context, answer['manifest'])

    def _delete_image(self, context, record):
        """Delete the image createImage made for a deleted snapshot.

        The snapshot is deleted by now, so nothing here fails the request.
        An image Glance keeps (protected, or the user may not delete it)
        stays a usable image: for an image-backed server its root disk, for
        a volume-backed one its Cinder snapshots, exactly what Nova's own
        snapshot would have made; only the properties that point at the
        record are dropped, so that it stops claiming a memory snapshot
        that no longer exists.  (Booting from an image whose record is gone
        boots cold anyway.)  The deletion is done with the caller's
        context, so Glance's own rules on who may delete it apply.
        """
        image_id = record.get('image_id')
        if not image_id:
            return
        try:
            self.image_api.delete(context, image_id)
        except nova_exception.ImageNotFound:
            LOG.debug('image %s of deleted snapshot %s is gone already',
                      image_id, record['id'])
        except (nova_exception.ImageNotAuthorized,
                nova_exception.ImageDeleteConflict) as exc:
            LOG.warning('image %s of deleted snapshot %s is kept (%s); it '
                        'becomes a plain image', image_id, record['id'],
                        exc.format_message())
            self._unlink_image(context, image_id, record['id'])
        except Exception:
            LOG.exception('image %s of deleted snapshot %s could not be '
                          'deleted; it still names the snapshot', image_id,
                          record['id'])
        else:
            LOG.info('deleted image %s made for snapshot %s', image_id,
                     record['id'])

    def _unlink_image(self, context, image_id, snapshot_id):
        try:
            # Nova passes remove_props through to glanceclient, which drops
            # those of the names the image has.
            self.image_api.update(
                context, image_id,
                {'remove_props': list(virt_policy.RECORD_PROPERTIES)},
                purge_props=False)
        except Exception as exc:
            LOG.warning('image %s still names deleted snapshot %s: %s',
                        image_id, snapshot_id, exc)

    def revert(self, context, server_id, body):
        schemas.validate(schemas.revert, body)
        snapshot_id = body[REVERT_ACTION]['snapshot_id']
        instance = self._instance(context, server_id)
        policies.authorize(context, policies.REVERT, instance)
        _check_on_host(instance)
        try:
            # A revert happens on the instance's host: its agent has the
            # record or there is nothing to revert to.
            record = self.agent.get(
                context.to_dict(), instance.host, snapshot_id,
                timeout=self.conf.snapext.rpc_lookup_timeout)['manifest']
        except exception.BrokenRecord as exc:
            if exc.instance_uuid != instance.uuid:
                record = None
            else:
                raise faults.Fault(409, 'Snapshot %s cannot be reverted to: '
                                        'its record is broken: %s'
                                   % (snapshot_id, exc.reason))
        except exception.NotFound:
            record = None
        if record is None or record['instance_uuid'] != instance.uuid:
            raise faults.Fault(404, 'Snapshot %s of server %s could not be '
                                    'found.' % (snapshot_id, server_id))
        self._check_state(context, instance, REVERT_ACTION, REVERTABLE)
        with self._task_state(context, instance, REVERT_ACTION,
                              task_states.REVERTING):
            self._record_action(context, instance, REVERT_ACTION)
            self.agent.revert(context.to_dict(), instance.host,
                              {'snapshot_id': snapshot_id})

    # -- createImage of a volume-backed server -------------------------------

    def create_image(self, context, server_id, entity, nova_req):
        """Take a full snapshot for createImage, or return None.

        None means "not ours": the server is image-backed (the driver takes
        the full snapshot), full snapshots do not apply, or Nova has an
        error to report; the filter then hands the request to Nova.

        :param entity: the validated body's ``createImage`` object
        :param nova_req: Nova's request with its compute microversion
        :returns: the image id
        """
        metadata = entity.get('metadata') or {}
        try:
            instance = self.compute_api.get(context, server_id)
        except nova_exception.InstanceNotFound:
            return None
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        if (bdms.root_bdm() is None or
                not compute_utils.is_volume_backed_instance(context, instance,
                                                            bdms)):
            # No root BDM: an instance older than BDMs; Nova knows best.
            return None
        # The driver's rule, so both kinds of server decide alike.
        wanted = virt_policy.full_snapshot_requested(
            metadata, instance.system_metadata,
            self.conf.snapext.full_snapshot_default)
        explicit = strutils.bool_from_string(
            metadata.get(schemas.SNAPEXT_FULL), default=None)
        if not wanted:
            return None
        if instance.vm_state not in CAPTURABLE and not explicit:
            # Nova's stock volume snapshot serves stopped servers.
            return None

        target = {'project_id': instance.project_id}
        context.can(server_policies.SERVERS % 'create_image', target=target)
        context.can(server_policies.SERVERS %
                    'create_image:allow_volume_backed', target=target)
        if not policies.authorize(context, policies.CREATE, instance,
                                  fatal=bool(explicit)):
            return None
        if not api_version_request.is_supported(nova_req, '2.39'):
            # Nova stopped counting image metadata against quota in 2.39.
            try:
                common.check_img_metadata_properties_quota(context, metadata)
            except webob.exc.HTTPException as exc:
                raise faults.Fault(exc.code, exc.explanation)
        # Nova's snapshot_volume_backed allows any task-free state; a full
        # snapshot needs the guest running.
        if instance.task_state is not None:
            raise _conflict('createImage', instance.uuid, 'task_state',
                            instance.task_state)
        if instance.vm_state not in CAPTURABLE:
            raise _conflict('createImage', instance.uuid, 'vm_state',
                            instance.vm_state)
        return self._full_snapshot(context, instance, bdms,
                                   common.normalize_name(entity['name']),
                                   metadata, explicit)

    def _full_snapshot(self, context, instance, bdms, name, metadata,
                       explicit):
        """One capture (memory + every volume), then Cinder's snapshots.

        The agent captures the memory and every volume at one instant (an
        internal snapshot ``snapext-<record id>`` in each volume file);
        then, as Nova's ``snapshot_volume_backed`` does, Cinder is asked
        for one snapshot per volume, through Cinder's API, with metadata
        that makes cinder_snapext adopt the captured state instead of
        taking a new one: the snapshots are Cinder's (listed, quota'd,
        deletable there), and the image's ``block_device_mapping`` names
        them, so a server booted from the image gets volumes holding the
        captured state.  With the glance store the agent then uploads the
        snapshot's bundle (once Cinder adopted the states, so the bundle's
        record says which are Cinder's), and the image links it.
        """
        volume_bdms = [b for b in bdms if b.is_volume and not b.no_device]
        self._check_snapshot_quota(context, instance, volume_bdms)
        # The image id is chosen here so that the record can name it.
        image_id = uuidutils.generate_uuid()
        root = bdms.root_bdm()
        root_target = block_device.strip_dev(root.device_name)
        disk_roles = virt_policy.disk_roles(
            root_target, [(b.device_name, b.volume_id) for b in volume_bdms
                          if b is not root and b.device_name])
        # Unlike an image-backed root, this one is a Cinder volume.
        disk_roles[root_target]['volume_id'] = root.volume_id
        spec = {
            'instance': instance.uuid,
            'memory': True,
            'quiesce': virt_policy.quiesce_policy({
                'os_require_quiesce': instance.system_metadata.get(
                    'image_os_require_quiesce')}),
            'targets': None,
            'disk_roles': disk_roles,
            'extra': {'image_id': image_id,
                      'nova': {'image_name': name,
                               'root_device_name':
                                   instance.root_device_name}},
        }
        with self._task_state(context, instance, 'createImage',
                              task_states.CAPTURING):
            try:
                record = self.agent.capture(context.to_dict(),
                                            instance.host, spec)['manifest']
            except exception.InvalidRequest as exc:
                if explicit:
                    raise
                # Volumes snapext cannot capture (rbd, iSCSI): the agent
                # refused before touching anything, and Nova's stock path
                # serves them (once the task state is cleared), as the
                # driver falls back for image-backed servers.
                LOG.info('full snapshot of %s not possible (%s); Nova takes '
                         'a stock snapshot', instance.uuid, exc)
                return None
            self._record_action(context, instance,
                                instance_actions.CREATE_IMAGE)
            try:
                try:
                    snapshots = self._cinder_snapshots(
                        context, instance, record, volume_bdms, name)
                except nova_exception.OverQuota as exc:
                    # Nova's answer to the same in its createImage.
                    raise faults.Fault(403, exc.format_message())
                image_meta = self._image_meta(context, instance, bdms,
                                              volume_bdms, snapshots, name,
                                              metadata)
                image_meta['properties'].update(virt_policy.image_properties(
                    record, instance.host, self.conf.snapext.store))
                # As the driver does for an image-backed server: durable
                # before the image exists, the guest running meanwhile.
                durable = self._make_durable(context, instance, record,
                                             snapshots)
                if durable:
                    image_meta['properties'][
                        virt_policy.BUNDLE_PROPERTY] = durable['image_id']
                image_meta['id'] = image_id
                self.image_api.create(context, image_meta)
            except Exception:
                with excutils.save_and_reraise_exception():
                    self._forget(context, instance, record)
        return image_id

    def _check_snapshot_quota(self, context, instance, volume_bdms):
        # As Nova does before its volume snapshots: best effort, up front.
        if not volume_bdms:
            return
        limits = self.volume_api.get_absolute_limits(context)
        used = limits['totalSnapshotsUsed']
        allowed = limits['maxTotalSnapshots']
        if allowed > -1 and len(volume_bdms) + used > allowed:
            raise faults.Fault(403, nova_exception.OverQuota(
                overs='snapshots').format_message())

    def _cinder_snapshots(self, context, instance, record, volume_bdms,
                          name):
        """{volume id: Cinder snapshot id} adopting the captured state."""
        disks = {d['volume_id']: d for d in record['disks']
                 if d.get('volume_id')}
        snapshots = {}
        for bdm in volume_bdms:
            if bdm.volume_id not in disks:
                raise exception.CaptureFailed(
                    'volume %s of server %s is not in snapshot %s'
                    % (bdm.volume_id, instance.uuid, record['id']))
            volume = self.volume_api.get(context, bdm.volume_id)
            snapshot = self.volume_api.create_snapshot_adopting(
                context, bdm.volume_id, 'snapshot for %s' % name,
                volume.get('display_description'),
                {volumes_mod.ADOPT: record['id'],
                 volumes_mod.HOST: instance.host})
            snapshots[bdm.volume_id] = snapshot['id']
        return snapshots

    def _make_durable(self, context, instance, record, snapshots):
        """The snapshot's bundle into the agent's store; its durable.

        None when the agent's store keeps no bundles (``file``), or the
        agent is older than RPC 2.4 (the snapshot then lives on its host
        only, as before).  A failure raises: the caller forgets the
        snapshot, and the agent left no bundle image.
        """
        answer = self.agent.make_durable(
            context.to_dict(), instance.host,
            {'snapshot_id': record['id'], 'adopted': sorted(snapshots)})
        if answer is None:
            LOG.warning('the snapext agent on host %s is older than RPC '
                        '2.4: snapshot %s stays on that host only',
                        instance.host, record['id'])
            return None
        durable = answer['durable']
        if durable:
            LOG.info('snapshot %s of %s is durable: bundle image %s, %d '
                     'bytes in %s s', record['id'], instance.uuid,
                     durable['image_id'], durable['bytes'],
                     durable.get('seconds'))
        return durable

    def _forget(self, context, instance, record):
        # Without its image nobody can reach the snapshot through Nova.  The
        # agent's delete leaves the volumes' states Cinder adopted already
        # (those Cinder snapshots stay, as Nova's own do when createImage
        # fails after them); a Cinder snapshot that has not adopted yet
        # fails to, and ends in error, holding nothing.
        try:
            self.agent.delete(context.to_dict(), instance.host,
                              {'snapshot_id': record['id']})
        except Exception:
            LOG.exception('snapshot %s of %s is left behind after a failed '
                          'createImage', record['id'], instance.uuid)

    @staticmethod
    def _image_meta(context, instance, bdms, volume_bdms, snapshots, name,
                    metadata):
        """The image record, shaped as Nova's snapshot_volume_backed does.

        :param snapshots: {volume id: Cinder snapshot id}
        """
        image_meta = compute_utils.initialize_instance_snapshot_metadata(
            context, instance, name, dict(metadata))
        # A bucket of properties with no image data, as in Nova.
        image_meta['size'] = 0
        for attr in ('container_format', 'disk_format'):
            image_meta.pop(attr, None)
        properties = image_meta['properties']
        for key in ('block_device_mapping', 'bdm_v2', 'root_device_name'):
            properties.pop(key, None)
        if instance.root_device_name:
            properties['root_device_name'] = instance.root_device_name
        mapping = [b.get_image_mapping() for b in bdms
                   if not b.no_device and not b.is_volume]
        for bdm in volume_bdms:
            mapping.append(block_device.snapshot_from_bdm(
                snapshots[bdm.volume_id], bdm).get_image_mapping())
        if mapping:
            properties['block_device_mapping'] = mapping
            properties['bdm_v2'] = True
        return image_meta

    def image_url(self, context, image_id):
        return self.image_api.generate_image_url(image_id, context)
