"""Response bodies built from snapshot records.

Host paths and the domain XML stay out: they are the compute host's
business, as Nova keeps hypervisor details from API users.
"""

from nova_snapext import manifest as manifest_mod

_DISK_FIELDS = ('target', 'role', 'volume_id', 'cinder_snapshot_id',
                'format', 'virtual_size')


def reasons(nodes):
    """{snapshot id: unavailable reason or None} of a host's tree."""
    found = {}
    for node in nodes:
        found[node['id']] = node.get('reason')
        found.update(reasons(node['children']))
    return found


def snapshot(record, unavailable, verification=False):
    """The GET body; ``verification`` adds the last check (1.1).

    The check itself reads every byte of the snapshot: a GET reports the
    last one (verify, revert, clone) rather than hashing gigabytes.
    """
    memory = record['memory']
    state, reason = manifest_mod.state_of(record['id'], unavailable)
    body = {
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
        'state': state,
        'reason': reason,
    }
    if verification:
        # file names stay on the host: the detail names them
        kept = record.get('verification')
        body['verification'] = kept and {
            k: kept.get(k) for k in ('result', 'checked_at', 'of',
                                     'artifacts')}
    return {'snapshot': body}


def broken_snapshot(exc):
    """The body of a record that cannot be used (an exception.BrokenRecord).

    Only where it lies is known: its content is not to be trusted.
    """
    return {'snapshot': {
        'id': exc.snapshot_id,
        'server_id': exc.instance_uuid,
        'parent_id': None,
        'created_at': None,
        'kind': None,
        'quiesce': None,
        'memory': None,
        'disks': [],
        'image_id': None,
        'state': manifest_mod.STATE_BROKEN,
        'reason': exc.reason,
    }}


def tree(server_id, records, current_id, unavailable, broken=()):
    """The tree of ``records``, each node with its state and reason.

    :param unavailable: as the host reported it ({id: reason or None}), or
        None when it did not answer
    :param broken: the store's broken records of the server, nodes in
        state ``broken`` with their reason
    """
    return {'server_id': server_id,
            'current': current_id,
            'snapshots': manifest_mod.tree(records, current_id,
                                           unavailable, broken)}
