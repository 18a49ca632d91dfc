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

revert = {
    'type': 'object',
    'properties': {
        'snapextRevert': {
            'type': 'object',
            'properties': {
                # A store key: no path separator, no hidden name.
                'snapshot_id': {'type': 'string', 'minLength': 1,
                                'maxLength': 255,
                                'pattern': r'^[^/.][^/]*$'},
            },
            'required': ['snapshot_id'],
            'additionalProperties': False,
        },
    },
    'required': ['snapextRevert'],
    'additionalProperties': False,
}

create_image = server_schemas.create_image


def parse_json(req):
    """The body as JSON; 400 with Nova's wording when it is not JSON."""
    try:
        return jsonutils.loads(req.body)
    except ValueError:
        raise faults.Fault(400, 'Malformed request body')


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
