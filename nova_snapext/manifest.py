"""The snapshot record: schema, validation and tree math.

A manifest is a JSON document; the tree of an instance's snapshots is
derived from the ``parent_id`` links and nothing stores it twice.  Every
manifest read goes through :func:`loads`, so a corrupt or foreign record is
a :class:`ManifestError` with a message, never a crash further down.
"""

import collections
import json

import jsonschema
from oslo_utils import timeutils

from nova_snapext import exception

SCHEMA_VERSION = 2

KIND_FULL = 'full'
KIND_DISKS = 'disks'

QUIESCE_FROZEN = 'frozen'
QUIESCE_NOT_REQUESTED = 'not-requested'
QUIESCE_AGENT_UNAVAILABLE = 'agent-unavailable'

_nullable_str = {'type': ['string', 'null']}
_sha256 = {'type': ['string', 'null'], 'pattern': '^[0-9a-f]{64}$'}

SCHEMA = {
    'type': 'object',
    'required': ['schema_version', 'id', 'instance_uuid', 'domain',
                 'parent_id', 'created_at', 'kind', 'quiesce', 'memory',
                 'domain_xml', 'disks'],
    'properties': {
        'schema_version': {'const': SCHEMA_VERSION},
        'id': {'type': 'string', 'minLength': 1},
        'instance_uuid': {'type': 'string', 'minLength': 1},
        'domain': {'type': 'string', 'minLength': 1},
        'parent_id': _nullable_str,
        'created_at': {'type': 'string', 'format': 'date-time'},
        'kind': {'enum': [KIND_FULL, KIND_DISKS]},
        'quiesce': {
            'type': 'object',
            'required': ['policy', 'outcome', 'frozen_ms'],
            'properties': {
                'policy': {'enum': ['required', 'preferred', 'off']},
                'outcome': {'enum': [QUIESCE_FROZEN, QUIESCE_NOT_REQUESTED,
                                     QUIESCE_AGENT_UNAVAILABLE]},
                'frozen_ms': {'type': ['number', 'null'], 'minimum': 0},
            },
        },
        'memory': {
            'type': ['object', 'null'],
            'required': ['store', 'location', 'bytes', 'sha256'],
            'properties': {
                'store': {'type': 'string'},
                'location': {'type': 'string'},
                'bytes': {'type': 'integer', 'minimum': 0},
                'sha256': _sha256,
            },
        },
        'domain_xml': {'type': 'string', 'minLength': 1},
        'disks': {
            'type': 'array',
            'minItems': 1,
            'items': {
                'type': 'object',
                'required': ['target', 'role', 'path', 'snapshot', 'format',
                             'virtual_size'],
                'properties': {
                    'target': {'type': 'string'},
                    'role': {'enum': ['root', 'volume', 'disk']},
                    'volume_id': _nullable_str,
                    'cinder_snapshot_id': _nullable_str,
                    # the disk's own file, which holds the state as the
                    # qcow2 internal snapshot ``snapshot``
                    'path': {'type': 'string'},
                    'snapshot': {'type': 'string', 'minLength': 1},
                    'format': {'const': 'qcow2'},
                    'virtual_size': {'type': 'integer', 'minimum': 0},
                    'backing': _nullable_str,
                    'sha256': _sha256,
                    # see nova_snapext.capture.digest; absent in records
                    # taken before digests, null when the digest failed
                    'digest': {
                        'type': ['object', 'null'],
                        'required': ['algorithm', 'root', 'location'],
                        'properties': {
                            'algorithm': {'type': 'string'},
                            'root': {'type': 'string',
                                     'pattern': '^[0-9a-f]{64}$'},
                            'location': {'type': 'string'},
                            'clusters': {'type': 'integer', 'minimum': 0},
                            'hashed_bytes': {'type': 'integer',
                                             'minimum': 0},
                            'seconds': {'type': 'number', 'minimum': 0},
                        },
                    },
                },
            },
        },
        # the last check of the artifacts (verify, revert, clone)
        'verification': {
            'type': 'object',
            'required': ['result', 'checked_at'],
            'properties': {
                'result': {'enum': ['ok', 'failed', 'incomplete']},
                'checked_at': {'type': 'string'},
                'seconds': {'type': 'number'},
                'detail': _nullable_str,
                'of': {'enum': ['snapshot', 'clone files']},
                # {"memory image" | "disk <target>"...: ok | mismatch |
                #  no digest}, without file names, for the API
                'artifacts': {'type': 'object',
                              'additionalProperties': {'type': 'string'}},
            },
        },
        'timings_ms': {'type': 'object',
                       'additionalProperties': {'type': 'number'}},
        'image_id': _nullable_str,
        # some of the instance's disks only (a Cinder group's volumes)
        'partial': {'type': 'boolean'},
        # set when the snapshots cannot follow the instance (it moved)
        'status': {
            'type': 'object',
            'required': ['reason', 'since'],
            'properties': {'reason': {'type': 'string'},
                           'since': {'type': 'string'}},
        },
        'nova': {'type': 'object'},
        # a snapshot that came in a bundle: its disks are files in its
        # record's directory (see nova_snapext.capture.export)
        'imported': {
            'type': 'object',
            'required': ['at', 'since'],
            'properties': {'at': {'type': 'string'},
                           'since': _nullable_str,
                           'domain': {'type': 'string'}},
        },
        # the snapshot's bundle in Glance (the glance store): one image,
        # a delta on its parent's bundle (``since``) or standalone; ``chain``
        # lists this image and every image it needs, nearest first
        'durable': {
            'type': 'object',
            'required': ['image_id', 'since', 'chain'],
            'properties': {'image_id': {'type': 'string'},
                           'since': _nullable_str,
                           'chain': {'type': 'array',
                                     'items': {'type': 'string'},
                                     'minItems': 1},
                           'bytes': {'type': 'integer'},
                           'seconds': {'type': 'number'}},
        },
        # what happened to reverts to this snapshot, oldest first
        'history': {
            'type': 'array',
            'items': {
                'type': 'object',
                'required': ['at', 'event'],
                'properties': {'at': {'type': 'string'},
                               'event': {'type': 'string'},
                               'detail': {'type': 'string'}},
            },
        },
    },
}

HISTORY_KEPT = 20

_validator = jsonschema.Draft7Validator(SCHEMA)


def validate(manifest):
    """Raise ManifestError unless ``manifest`` is a valid current record."""
    if not isinstance(manifest, dict):
        raise exception.ManifestError('a manifest must be a JSON object')
    version = manifest.get('schema_version')
    if version != SCHEMA_VERSION:
        raise exception.ManifestError(
            'manifest %s has schema_version %r; this snapext reads version '
            '%d' % (manifest.get('id', '?'), version, SCHEMA_VERSION))
    problems = sorted(_validator.iter_errors(manifest), key=str)
    if problems:
        first = problems[0]
        where = '/'.join(str(p) for p in first.absolute_path) or '(root)'
        raise exception.ManifestError(
            'manifest %s is invalid at %s: %s'
            % (manifest.get('id', '?'), where, first.message))
    targets = [d['target'] for d in manifest['disks']]
    if len(set(targets)) != len(targets):
        raise exception.ManifestError(
            'manifest %s names a disk twice' % manifest['id'])
    if (manifest['kind'] == KIND_FULL) != (manifest['memory'] is not None):
        raise exception.ManifestError(
            'manifest %s: kind %s does not match its memory artifact'
            % (manifest['id'], manifest['kind']))
    return manifest


def loads(text, source='manifest'):
    try:
        manifest = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise exception.ManifestError(
            '%s is not valid JSON: %s' % (source, exc))
    return validate(manifest)


def dumps(manifest):
    return json.dumps(validate(manifest), indent=2, sort_keys=True)


def add_history(manifest, event, detail, now=None):
    """Append an event to the record's history, keeping the latest ones."""
    if now is None:
        now = timeutils.utcnow().isoformat() + 'Z'
    history = manifest.setdefault('history', [])
    history.append({'at': now, 'event': event, 'detail': detail})
    del history[:-HISTORY_KEPT]
    return manifest


def children(manifests):
    """{parent id: [child ids, oldest first]}; roots are under None."""
    kids = collections.defaultdict(list)
    for m in sorted(manifests, key=lambda m: (m['created_at'], m['id'])):
        kids[m['parent_id']].append(m['id'])
    return dict(kids)


def ancestors(manifests, snapshot_id):
    """Ids from ``snapshot_id``'s parent up to its root."""
    by_id = {m['id']: m for m in manifests}
    chain = []
    parent = by_id[snapshot_id]['parent_id']
    while parent is not None and parent in by_id:
        if parent in chain:
            raise exception.ManifestError(
                'snapshot tree has a cycle through %s' % parent)
        chain.append(parent)
        parent = by_id[parent]['parent_id']
    return chain


STATE_AVAILABLE = 'available'
STATE_UNAVAILABLE = 'unavailable'
STATE_UNKNOWN = 'unknown'
# The record itself cannot be used (see stores.base.SnapshotStore.broken).
STATE_BROKEN = 'broken'


def state_of(snapshot_id, unavailable):
    """(state, reason) of a snapshot.

    :param unavailable: {snapshot id: why it cannot be reverted to, or
        None} as the instance's host tells it; None when nobody could ask
        the host
    """
    if unavailable is None:
        return STATE_UNKNOWN, 'the compute host did not answer'
    reason = unavailable.get(snapshot_id)
    return (STATE_UNAVAILABLE if reason else STATE_AVAILABLE), reason


def tree(manifests, current_id=None, unavailable=None, broken=()):
    """A nested, JSON-friendly view of the snapshot tree.

    :param unavailable: as for :func:`state_of`
    :param broken: [{'id', 'reason'}] of the records that cannot be used
        (the store's ``broken()``): each is a node in state ``broken`` with
        its reason, and the children that name it as parent stay under it
    """
    by_id = {m['id']: m for m in manifests}
    broken_by_id = {b['id']: b for b in broken if b['id'] not in by_id}
    kids = children(manifests)
    orphans = [m['id'] for m in manifests
               if m['parent_id'] is not None and m['parent_id'] not in by_id
               and m['parent_id'] not in broken_by_id]

    def node(snapshot_id):
        if snapshot_id in broken_by_id:
            return {'id': snapshot_id, 'kind': None, 'created_at': None,
                    'current': False, 'state': STATE_BROKEN,
                    'reason': broken_by_id[snapshot_id]['reason'],
                    'children': [node(c) for c in kids.get(snapshot_id,
                                                           [])]}
        m = by_id[snapshot_id]
        state, reason = state_of(snapshot_id, unavailable)
        return {'id': snapshot_id, 'kind': m['kind'],
                'created_at': m['created_at'],
                'current': snapshot_id == current_id,
                'state': state, 'reason': reason,
                'children': [node(c) for c in kids.get(snapshot_id, [])]}

    # Broken records come last: their place in the tree is not known.
    return [node(r) for r in
            kids.get(None, []) + orphans + sorted(broken_by_id)]


def reparent_on_delete(manifests, snapshot_id):
    """[(child id, new parent id)] that keep the tree whole after a delete."""
    by_id = {m['id']: m for m in manifests}
    new_parent = by_id[snapshot_id]['parent_id']
    return [(m['id'], new_parent) for m in manifests
            if m['parent_id'] == snapshot_id]
