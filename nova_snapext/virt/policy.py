"""What a Nova snapshot request asks of snapext: pure decisions.

Inputs are plain dicts (image properties, instance system metadata), so the
rules are unit-tested without Nova.
"""

from oslo_utils import strutils

from nova_snapext import exception

SYSMETA_PREFIX = 'image_'


def _flag(value):
    return strutils.bool_from_string(value, default=None)


def full_snapshot_requested(snapshot_props, instance_sysmeta, default):
    """Whether ``nova image-create`` should take a full snapshot.

    Most specific wins: the request (``--metadata snapext_full=...``, which
    lands on the new image), then the instance's image, then the option.
    """
    for value in (snapshot_props.get('snapext_full'),
                  instance_sysmeta.get(SYSMETA_PREFIX + 'snapext_full')):
        flag = _flag(value)
        if flag is not None:
            return flag
    return default


def quiesce_policy(image_props):
    """Nova's quiesce rules mapped onto the engine's policies.

    ``os_require_quiesce`` makes a failed freeze fatal, as in Nova; any
    other image is frozen when its agent answers.
    """
    if _flag(image_props.get('os_require_quiesce')):
        return 'required'
    return 'preferred'


def disk_roles(root_target, volume_bdms):
    """{target: role} for the engine from the root disk and volume BDMs.

    :param volume_bdms: [(device name such as /dev/vdb, volume id)]
    """
    roles = {root_target: {'role': 'root'}}
    for device_name, volume_id in volume_bdms:
        target = device_name.rsplit('/', 1)[-1]
        roles[target] = {'role': 'volume', 'volume_id': volume_id}
    return roles


# Every property image_properties() may set: together they point an image
# at its record, and they are dropped when the record goes but the image
# stays (snapext_full, a request, is not among them).
RECORD_PROPERTIES = ('snapext_manifest', 'snapext_kind', 'snapext_host',
                     'snapext_quiesce', 'snapext_parent', 'snapext_memory',
                     'snapext_volumes', 'snapext_bundle')

# The image property naming the snapshot's bundle image (glance store).
BUNDLE_PROPERTY = 'snapext_bundle'


def image_properties(record, host, store_name):
    """Properties that point a Glance image at its snapshot record."""
    props = {
        'snapext_manifest': record['id'],
        'snapext_kind': record['kind'],
        'snapext_host': host,
        'snapext_quiesce': record['quiesce']['outcome'],
    }
    if record['parent_id']:
        props['snapext_parent'] = record['parent_id']
    if record['memory']:
        props['snapext_memory'] = '%s://%s/%s/%s' % (
            store_name, host, record['id'], record['memory']['location'])
    volumes = [d for d in record['disks'] if d['role'] == 'volume']
    if volumes:
        props['snapext_volumes'] = ','.join(
            '%s=%s' % (d['target'], d['volume_id']) for d in volumes)
    return props


# The image properties a snapshot keeps in its Nova context, for the
# images later made from it (an imported bundle's bootable image): how the
# guest boots and what it needs (hw_*, os_* such as os_command_line, the
# kernel and ramdisk), never Glance's own (hashes, os_hidden, os_glance_*)
# nor snapext's (they point at one record).
PORTABLE_PREFIXES = ('hw_', 'os_', 'img_')
PORTABLE_NAMES = ('kernel_id', 'ramdisk_id', 'architecture',
                  'hypervisor_type', 'vm_mode')
GLANCE_OWN = ('os_hash_algo', 'os_hash_value', 'os_hidden')
GIB = 1 << 30


def _portable(name):
    return ((name in PORTABLE_NAMES or name.startswith(PORTABLE_PREFIXES))
            and name not in GLANCE_OWN and not name.startswith('os_glance'))


def nova_context(flavor, instance_sysmeta, image_ref, project_id):
    """What a record keeps of Nova's view of the instance (nova.json).

    :param flavor: {'name', 'memory_mb', 'vcpus', 'root_gb',
        'ephemeral_gb', 'swap'}
    :param instance_sysmeta: the instance's system metadata, whose
        ``image_*`` keys are its image's properties
    """
    props = {key[len(SYSMETA_PREFIX):]: value
             for key, value in instance_sysmeta.items()
             if key.startswith(SYSMETA_PREFIX) and
             _portable(key[len(SYSMETA_PREFIX):])}
    return {'flavor': flavor['name'],
            'flavor_spec': {k: v for k, v in flavor.items() if k != 'name'},
            'image_ref': image_ref, 'project_id': project_id,
            'image_properties': props}


def bootable_image(record, name, host, store_name):
    """Glance metadata of the image that boots a server from ``record``.

    The image holds the root disk's state (qcow2, standalone); booting it
    resumes the record's memory (the fast clone).  Its properties: the
    portable ones the record kept, and those pointing at the record; its
    minimums: the flavor's memory and root disk the record kept.

    :raises InvalidRequest: the record has no root disk, or volumes (whose
        state no image carries)
    :returns: (the root disk, the image's metadata)
    """
    roots = [d for d in record['disks'] if d['role'] == 'root']
    others = [d['target'] for d in record['disks'] if d['role'] != 'root']
    if len(roots) != 1 or others:
        raise exception.InvalidRequest(
            'snapshot %s holds disks %s: only a snapshot of a root disk '
            'alone (an image-backed server without volumes) becomes a '
            'bootable image' % (record['id'], ', '.join(
                '%s (%s)' % (d['target'], d['role'])
                for d in record['disks'])))
    nova = record.get('nova') or {}
    spec = nova.get('flavor_spec') or {}
    props = {k: v for k, v in (nova.get('image_properties') or {}).items()
             if _portable(k)}
    props.update(image_properties(record, host, store_name))
    root = roots[0]
    return root, {
        'name': name, 'disk_format': 'qcow2', 'container_format': 'bare',
        'min_ram': int(spec.get('memory_mb') or 0),
        'min_disk': max(-(-root['virtual_size'] // GIB),
                        int(spec.get('root_gb') or 0)),
        'properties': props}


def bundle_image(instance_sysmeta):
    """The bundle image of the snapshot an instance boots from, or None."""
    return instance_sysmeta.get(SYSMETA_PREFIX + BUNDLE_PROPERTY) or None


def resumable_snapshot(instance_sysmeta):
    """The snapshot id a new instance may resume, from its image, or None."""
    if instance_sysmeta.get(SYSMETA_PREFIX + 'snapext_kind') != 'full':
        return None
    return instance_sysmeta.get(SYSMETA_PREFIX + 'snapext_manifest')


def check_volume_sources(record, volume_sources):
    """Refuse to resume unless each volume holds the snapshot's state.

    The memory of a full snapshot may only resume on disks that hold the
    state of the same instant.  A volume's state reaches a new server only
    through the Cinder snapshot that owns it: each of the record's volume
    disks must have one (``cinder_snapshot_id``, set when Cinder adopted
    it), and the new server's volume on that device must have been created
    from exactly that snapshot.

    :param volume_sources: {target: the Cinder snapshot id the new
        instance's volume there was created from, or None}
    :raises InvalidRequest: the first mismatch; the caller boots cold
    """
    for disk in record['disks']:
        if not disk.get('volume_id'):
            continue
        wanted = disk.get('cinder_snapshot_id')
        if not wanted:
            raise exception.InvalidRequest(
                'volume %s (%s) of snapshot %s has no Cinder snapshot, so '
                'no new volume holds its state' % (
                    disk['volume_id'], disk['target'], record['id']))
        got = volume_sources.get(disk['target'])
        if got != wanted:
            raise exception.InvalidRequest(
                'the new instance\'s %s was created from %s, not from '
                'Cinder snapshot %s of volume %s' % (
                    disk['target'],
                    'snapshot %s' % got if got else 'no snapshot',
                    wanted, disk['volume_id']))
