"""What the snapext endpoints do, once the filter has routed a request.

Reads (the tree, a record) come from the snapshot store, which is the
index of snapshots.  Mutations (revert, delete, a volume-backed capture) go
over RPC to the snapext agent on the instance's host.  A snapshot belongs
to its instance: every request resolves the instance through Nova's
compute API, which hides other projects' instances from non-admins, so
someone else's snapshot is a 404 exactly like one that does not exist.
"""

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
from nova_snapext.api import policies
from nova_snapext.api import schemas
from nova_snapext.api import views
from nova_snapext import exception
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


class Controller(object):

    def __init__(self, conf, store, compute_api, image_api, agent):
        self.conf = conf
        self.store = store
        self.compute_api = compute_api
        self.image_api = image_api
        self.agent = agent

    # -- lookups -----------------------------------------------------------

    def _instance(self, context, server_id):
        try:
            return self.compute_api.get(context, server_id)
        except nova_exception.InstanceNotFound as exc:
            raise faults.Fault(404, exc.format_message())

    def _snapshot(self, context, snapshot_id):
        """The record and its instance; 404 for anyone who may not see it."""
        not_found = faults.Fault(
            404, 'Snapshot %s could not be found.' % snapshot_id)
        try:
            record = self.store.get(snapshot_id)
            instance = self.compute_api.get(context, record['instance_uuid'])
        except (exception.NotFound, nova_exception.InstanceNotFound):
            raise not_found
        return record, instance

    def _host_view(self, context, instance):
        """(current id, {snapshot id: unavailable reason or None}).

        Only the host can tell whether a disk still holds a snapshot's
        state, so this asks the agent; when it cannot answer, the records
        are still served, with no current position and reasons None (the
        view says their state is unknown).
        """
        if not instance.host:
            return None, {}
        try:
            host_tree = self.agent.tree(context.to_dict(), instance.host,
                                        instance.uuid)
        except Exception as exc:
            if faults.snapext_class(exc) is None:
                raise
            LOG.warning('snapshot states of %s unknown: %s',
                        instance.uuid, exc)
            return None, None
        return host_tree['current'], views.reasons(host_tree['snapshots'])

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
        if not instance.host:
            raise faults.Fault(409, 'Instance %s is not on a compute host.'
                               % instance.uuid)

    @staticmethod
    def _record_action(context, instance, action):
        # The server's action list (os-instance-actions) shows who did it.
        objects.InstanceAction.action_start(context, instance.uuid, action,
                                            want_result=False)

    # -- endpoints -----------------------------------------------------------

    def tree(self, context, server_id):
        instance = self._instance(context, server_id)
        policies.authorize(context, policies.INDEX, instance)
        records = self.store.list(instance.uuid)
        current, reasons = self._host_view(context, instance)
        return views.tree(instance.uuid, records, current, reasons)

    def show(self, context, snapshot_id):
        record, instance = self._snapshot(context, snapshot_id)
        policies.authorize(context, policies.SHOW, instance)
        _, reasons = self._host_view(context, instance)
        return views.snapshot(record, reasons)

    def delete(self, context, snapshot_id):
        record, instance = self._snapshot(context, snapshot_id)
        policies.authorize(context, policies.DELETE, instance)
        self._check_state(context, instance, DELETE_ACTION, DELETABLE)
        self._record_action(context, instance, DELETE_ACTION)
        self.agent.delete(context.to_dict(), instance.host,
                          {'snapshot_id': snapshot_id})

    def revert(self, context, server_id, body):
        schemas.validate(schemas.revert, body)
        snapshot_id = body[REVERT_ACTION]['snapshot_id']
        instance = self._instance(context, server_id)
        policies.authorize(context, policies.REVERT, instance)
        try:
            record = self.store.get(snapshot_id)
        except exception.NotFound:
            record = None
        if record is None or record['instance_uuid'] != instance.uuid:
            raise faults.Fault(404, 'Snapshot %s of server %s could not be '
                                    'found.' % (snapshot_id, server_id))
        self._check_state(context, instance, REVERT_ACTION, REVERTABLE)
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
        volume_bdms = [b for b in bdms if b.is_volume and not b.no_device]
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
        try:
            record = self.agent.capture(context.to_dict(), instance.host,
                                        spec)['manifest']
        except exception.InvalidRequest as exc:
            if explicit:
                raise
            # Volumes snapext cannot capture (rbd, iSCSI): the agent refused
            # before touching anything, and Nova's stock path serves them,
            # as the driver falls back for image-backed servers.
            LOG.info('full snapshot of %s not possible (%s); Nova takes a '
                     'stock snapshot', instance.uuid, exc)
            return None
        self._record_action(context, instance,
                            instance_actions.CREATE_IMAGE)
        try:
            image_meta = self._image_meta(context, instance, bdms,
                                          volume_bdms, record, name,
                                          metadata)
            image_meta['properties'].update(virt_policy.image_properties(
                record, instance.host, self.store.name))
            image_meta['id'] = image_id
            self.image_api.create(context, image_meta)
        except Exception:
            with excutils.save_and_reraise_exception():
                self._forget(context, instance, record)
        return image_id

    def _forget(self, context, instance, record):
        # Without its image nobody can reach the snapshot through Nova.
        try:
            self.agent.delete(context.to_dict(), instance.host,
                              {'snapshot_id': record['id']})
        except Exception:
            LOG.exception('snapshot %s of %s is left behind after a failed '
                          'createImage', record['id'], instance.uuid)

    @staticmethod
    def _image_meta(context, instance, bdms, volume_bdms, record, name,
                    metadata):
        """The image record, shaped as Nova's snapshot_volume_backed does."""
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
        cinder_snapshots = {d.get('volume_id'): d.get('cinder_snapshot_id')
                            for d in record['disks'] if d.get('volume_id')}
        for bdm in volume_bdms:
            # A volume is bootable from the image only through a Cinder
            # snapshot record; the manifest keeps every volume regardless.
            snapshot_id = cinder_snapshots.get(bdm.volume_id)
            if snapshot_id:
                mapping.append(block_device.snapshot_from_bdm(
                    snapshot_id, bdm).get_image_mapping())
        if mapping:
            properties['block_device_mapping'] = mapping
            properties['bdm_v2'] = True
        return image_meta

    def image_url(self, context, image_id):
        return self.image_api.generate_image_url(image_id, context)
