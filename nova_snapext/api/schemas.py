"""JSON schemas of the request bodies, and their validation.

Bodies are checked by Nova's own validator class: the same JSON-schema
draft, format checkers and error wording as every compute request, and for
createImage the very schema Nova applies, so a body Nova would reject is
left for Nova to reject.  The class is private to Nova but has kept its
interface since the v2.1 API began (2014).
"""

from nova.api.openstack.compute.schemas import servers as server_schemas
from nova.api.validation import validators
from nova import exception as nova_exception
from oslo_serialization import jsonutils

from nova_snapext.api import faults

# createImage metadata key that asks for (or declines) a full snapshot.
SNAPEXT_FULL = 'snapext_full'

# A store key: no path separator, no hidden name.
_snapshot_id = {'type': 'string', 'minLength': 1, 'maxLength': 255,
                'pattern': r'^[^/.][^/]*$'}
# Glance's limit on an image name.
_image_name = {'type': 'string', 'minLength': 1, 'maxLength': 255}


def _action(name, properties, required):
    """A body holding one object, ``name``, of exactly ``properties``."""
    return {
        'type': 'object',
        'properties': {
            name: {
                'type': 'object',
                'properties': properties,
                'required': required,
                'additionalProperties': False,
            },
        },
        'required': [name],
        'additionalProperties': False,
    }


revert = _action('snapextRevert', {'snapshot_id': _snapshot_id},
                 ['snapshot_id'])

# instance-snapshot 1.2
export = _action('snapextExport',
                 {'snapshot_id': _snapshot_id,
                  # an ancestor exported before: only what changed since
                  'since': _snapshot_id,
                  # of the Glance image the bundle is written to
                  'name': _image_name},
                 ['snapshot_id'])

# What an import makes and where, whatever brings the bundle.
_import_target = {
    # of the bootable image the import makes
    'name': _image_name,
    # import on this server's host
    'server_id': {'type': 'string', 'format': 'uuid'},
    # admin only: import on this compute host
    'host': {'type': 'string', 'minLength': 1, 'maxLength': 255},
}

import_bundle = _action('import',
                        dict(_import_target,
                             image_id={'type': 'string', 'format': 'uuid'}),
                        ['image_id', 'name'])

# instance-snapshot 1.3: the query string of an import whose body is the
# bundle
import_upload = {
    'type': 'object',
    'properties': _import_target,
    'required': ['name'],
    'additionalProperties': False,
}

create_image = server_schemas.create_image


def parse_json(req):
    """The body as JSON; 400 with Nova's wording when it is not JSON."""
    try:
        return jsonutils.loads(req.body)
    except ValueError:
        raise faults.Fault(400, 'Malformed request body')


def query(req):
    """The query string as a dict; 400 when a parameter is repeated."""
    params = {}
    for key, value in req.GET.items():
        if key in params:
            raise faults.Fault(400, "Query parameter '%s' is given more "
                                    "than once." % key)
        params[key] = value
    return params


def validate(schema, body):
    """Return ``body``, or raise a 400 Fault naming what is wrong."""
    try:
        validators._SchemaValidator(schema).validate(body)
    except nova_exception.ValidationError as exc:
        raise faults.Fault(400, exc.format_message())
    return body


def is_valid(schema, body):
    try:
        validate(schema, body)
    except faults.Fault:
        return False
    return True
