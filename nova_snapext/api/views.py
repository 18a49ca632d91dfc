"""Response bodies built from snapshot records.

Host paths and the domain XML stay out: they are the compute host's
business, as Nova keeps hypervisor details from API users.
"""

from nova_snapext import manifest as manifest_mod

_DISK_FIELDS = ('target', 'role', 'volume_id', 'cinder_snapshot_id',
                'format', 'virtual_size', 'bytes')


def snapshot(record):
    memory = record['memory']
    return {'snapshot': {
        'id': record['id'],
        'server_id': record['instance_uuid'],
        'parent_id': record['parent_id'],
        'created_at': record['created_at'],
        'kind': record['kind'],
        'quiesce': dict(record['quiesce']),
        'memory': {'bytes': memory['bytes']} if memory else None,
        'disks': [{k: d.get(k) for k in _DISK_FIELDS}
                  for d in record['disks']],
        'image_id': record.get('image_id'),
    }}


def tree(server_id, records, current_id):
    return {'server_id': server_id,
            'current': current_id,
            'snapshots': manifest_mod.tree(records, current_id)}
