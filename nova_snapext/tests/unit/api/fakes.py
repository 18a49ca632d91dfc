"""Fakes of what the API filter talks to: Nova's compute, host and image
APIs and the snapext agent client.  The agent's store (on its host) is a
real file store."""

import copy
import itertools

from nova import exception as nova_exception
from nova import objects
from oslo_utils import uuidutils

from nova_snapext import exception
from nova_snapext import manifest
from nova_snapext.tests.unit import fakes

PROJECT = '6f1c7c1e0000400080000000000000aa'
OTHER_PROJECT = '6f1c7c1e0000400080000000000000bb'


def instance(uuid=None, project_id=PROJECT, host='compute1', **kw):
    fields = dict(uuid=uuid or uuidutils.generate_uuid(),
                  project_id=project_id, user_id='u-' + project_id[-2:],
                  host=host, vm_state='active', task_state=None,
                  locked=False, system_metadata={}, image_ref='',
                  root_device_name='/dev/vda')
    fields.update(kw)
    return objects.Instance(**fields)


def bdms(instance_uuid, volume_backed=True, volumes=('vol-data',)):
    items = []
    if volume_backed:
        items.append(dict(source_type='volume', destination_type='volume',
                          volume_id='vol-root', boot_index=0,
                          device_name='/dev/vda'))
    else:
        items.append(dict(source_type='image', destination_type='local',
                          image_id=uuidutils.generate_uuid(), boot_index=0,
                          device_name='/dev/vda'))
    for i, volume_id in enumerate(volumes):
        items.append(dict(source_type='volume', destination_type='volume',
                          volume_id=volume_id, boot_index=None,
                          device_name='/dev/vd%s' % 'bcdefg'[i]))
    return objects.BlockDeviceMappingList(objects=[
        objects.BlockDeviceMapping(instance_uuid=instance_uuid,
                                   no_device=False, disk_bus='virtio',
                                   device_type='disk',
                                   delete_on_termination=False,
                                   volume_size=1, **item)
        for item in items])


class ComputeAPI(object):
    """nova.compute.api.API.get, hiding other projects as Nova's DB does."""

    def __init__(self):
        self.instances = {}

    def add(self, inst):
        self.instances[inst.uuid] = inst
        return inst

    def get(self, context, instance_id, expected_attrs=None,
            cell_down_support=False):
        inst = self.instances.get(instance_id)
        if inst is None or (not context.is_admin and
                            inst.project_id != context.project_id):
            raise nova_exception.InstanceNotFound(instance_id=instance_id)
        return inst


class ImageAPI(object):

    def __init__(self):
        self.images = {}
        self.fail = None
        self.fail_delete = None
        self.updates = []

    def create(self, context, image_meta, data=None):
        if self.fail:
            raise self.fail
        self.images[image_meta['id']] = copy.deepcopy(image_meta)
        return image_meta

    def delete(self, context, image_id):
        if self.fail_delete:
            raise self.fail_delete
        if self.images.pop(image_id, None) is None:
            raise nova_exception.ImageNotFound(image_id=image_id)
        return True

    def update(self, context, image_id, image_meta, data=None,
               purge_props=False):
        """Only what snapext sends: remove_props, as glanceclient does."""
        self.updates.append((image_id, copy.deepcopy(image_meta),
                             purge_props))
        properties = self.images[image_id].setdefault('properties', {})
        for key in image_meta.get('remove_props', ()):
            properties.pop(key, None)
        return self.images[image_id]

    def get_all(self, context, filters=None):
        """Images whose properties match ``filters``, as Glance v2 does."""
        return [copy.deepcopy(image) for image in self.images.values()
                if all((image.get('properties') or {}).get(k) == v
                       for k, v in (filters or {}).items())]

    def generate_image_url(self, image_id, context):
        return 'http://glance.example/images/%s' % image_id


class HostAPI(object):
    """nova.compute.api.HostAPI, as far as the services it lists."""

    def __init__(self, hosts=('compute1',)):
        self.services = [objects.Service(host=host, binary='nova-compute',
                                         disabled=False) for host in hosts]
        self.down = set()
        self.servicegroup_api = self

    def service_get_all(self, context, filters=None, set_zones=False,
                        all_cells=False, cell_down_support=False):
        return [s for s in self.services
                if all(s[k] == v for k, v in (filters or {}).items())]

    def service_is_up(self, service):
        return service.host not in self.down


class Agent(object):
    """The agent client: commits records to the store as the agent does.

    The store is that of ``host``; the agents of other hosts have none.
    """

    def __init__(self, store, host='compute1'):
        self.store = store
        self.host = host
        self.calls = []
        # raised by capture, revert, delete and tree
        self.error = None
        # hosts whose agent does not answer
        self.down = set()
        self.current_id = None
        # {snapshot id: reason} the host reports
        self.unavailable = {}
        # called(method, spec) inside capture, revert and delete
        self.during = None
        # make_durable's answer (None: the store keeps no bundles)
        self.durable = None
        self._ids = ('snap-%d' % i for i in itertools.count(1))

    def _enter(self, method, ctxt, host, arg):
        assert isinstance(ctxt, dict), 'the context goes over RPC as a dict'
        self.calls.append((method, host, arg))
        if host in self.down:
            raise exception.AgentUnavailable(
                'no snapext agent on host %s answered %s' % (host, method))
        if self.error and method != 'get':
            raise self.error

    def capture(self, ctxt, host, spec):
        self._enter('capture', ctxt, host, spec)
        if self.during is not None:
            self.during('capture', spec)
        snapshot_id = next(self._ids)
        uuid = spec['instance']
        # As the engine: an internal snapshot per disk, none of them
        # Cinder's yet (Cinder adopts them later).
        disks = [{'target': target, 'role': role['role'],
                  'volume_id': role['volume_id'],
                  'cinder_snapshot_id': None,
                  'path': '/srv/%s/%s' % (snapshot_id, target),
                  'format': 'qcow2', 'virtual_size': 1 << 30,
                  'snapshot': 'snapext-' + snapshot_id,
                  'backing': None}
                 for target, role in sorted(spec['disk_roles'].items())]
        record = fakes.record(snapshot_id, parent_id=self.current_id,
                              instance_uuid=uuid, disks=disks,
                              **spec['extra'])
        self.store.stage(uuid, snapshot_id)
        self.store.commit(record)
        self.current_id = snapshot_id
        return {'manifest': record, 'timings_ms': {'total': 1.0}}

    def revert(self, ctxt, host, spec):
        self._enter('revert', ctxt, host, spec)
        if self.during is not None:
            self.during('revert', spec)
        self.current_id = spec['snapshot_id']

    def delete(self, ctxt, host, spec):
        self._enter('delete', ctxt, host, spec)
        if self.during is not None:
            self.during('delete', spec)
        try:
            self.store.delete(spec['snapshot_id'])
        except exception.BrokenRecord as exc:
            self.store.delete_broken(exc.instance_uuid, exc.snapshot_id)

    def tree(self, ctxt, host, instance_uuid):
        self._enter('tree', ctxt, host, instance_uuid)
        records, broken = self._records(host, instance_uuid)
        return {'instance_uuid': instance_uuid, 'current': self.current_id,
                'snapshots': manifest.tree(
                    records, self.current_id, self.unavailable, broken),
                'records': records, 'broken': broken}

    def _records(self, host, instance_uuid):
        if host != self.host:
            return [], []
        return (self.store.list(instance_uuid),
                self.store.broken(instance_uuid))

    def make_durable(self, ctxt, host, spec):
        self._enter('make_durable', ctxt, host, spec)
        if self.during is not None:
            self.during('make_durable', spec)
        return {'snapshot_id': spec['snapshot_id'], 'durable': self.durable}

    def get(self, ctxt, host, snapshot_id, timeout=None):
        self._enter('get', ctxt, host, snapshot_id)
        if host != self.host:
            raise exception.NotFound('snapshot %s not found' % snapshot_id)
        record = self.store.get(snapshot_id)
        return {'manifest': record,
                'reason': self.unavailable.get(snapshot_id)}


class VolumeAPI(object):
    """nova.volume.cinder.API, as far as createImage uses it."""

    def __init__(self):
        self.snapshots = {}
        self.calls = []
        self.limits = {'totalSnapshotsUsed': 0, 'maxTotalSnapshots': -1}
        self.fail_on = None
        self._ids = ('csnap-%d' % i for i in itertools.count(1))

    def get(self, context, volume_id):
        return {'id': volume_id, 'display_description': 'about ' + volume_id}

    def get_absolute_limits(self, context):
        return dict(self.limits)

    def create_snapshot_adopting(self, context, volume_id, name, description,
                                 metadata):
        self.calls.append(('create', volume_id, name, description, metadata))
        if volume_id == self.fail_on:
            raise nova_exception.OverQuota(overs='snapshots')
        snapshot = {'id': next(self._ids), 'volume_id': volume_id,
                    'status': 'creating', 'metadata': dict(metadata)}
        self.snapshots[snapshot['id']] = snapshot
        return snapshot


class TaskStateDB(object):
    """Instance.save as Nova's database does it, for task_state only.

    ``states`` is the database's task_state per instance; a save with
    ``expected_task_state`` fails as Nova's does when it differs.
    """

    def __init__(self):
        self.states = {}
        self.saves = []

    def save(self, instance, expected_task_state=None):
        actual = self.states.get(instance.uuid)
        if expected_task_state is not None and (
                actual not in expected_task_state):
            raise nova_exception.UnexpectedTaskStateError(
                instance_uuid=instance.uuid, expected=expected_task_state,
                actual=actual)
        self.states[instance.uuid] = instance.task_state
        self.saves.append((instance.uuid, instance.task_state,
                           expected_task_state))


class Conflict_Remote(Exception):
    """What oslo.messaging makes of a remote Conflict, unconverted."""


def conflict(uuid):
    return exception.Conflict('another snapshot operation holds instance '
                              '%s' % uuid)
