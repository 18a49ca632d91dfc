"""The ``instance-snapshot`` microversion, and the compute one we honour.

The snapext endpoints are versioned by their own service type in the
standard header (``OpenStack-API-Version: instance-snapshot 1.0``) so that
they evolve without claiming compute microversions, which belong to Nova.
"""

import microversion_parse
from nova.api.openstack import wsgi as nova_wsgi
from nova import exception as nova_exception

from nova_snapext.api import faults

SERVICE_TYPE = 'instance-snapshot'
HEADER = nova_wsgi.API_VERSION_REQUEST_HEADER

# Version history (append; never edit a released line):
#
# * 1.0 - GET /servers/{id}/snapext-snapshots, GET and DELETE
#         /snapext-snapshots/{id}, the snapextRevert server action.
# * 1.1 - GET /snapext-snapshots/{id} has ``verification``: the last check
#         of the snapshot's memory image and disk states (by a revert, a
#         clone or ``snapext verify``) and when, or null.
# * 1.2 - Bundles: the snapextExport server action (202, the bundle
#         streams into a new Glance image of the caller) and
#         POST /snapext-snapshots/import (201, a snapshot and a bootable
#         image from a bundle in a Glance image).
# * 1.3 - POST /snapext-snapshots/import takes the bundle itself as the
#         body (Content-Type: application/octet-stream; name, server_id,
#         host in the query string); nova-api stages it in a hidden Glance
#         image of the caller, deleted once the import is done.
VERSIONS = ['1.0', '1.1', '1.2', '1.3']
MIN_VERSION = VERSIONS[0]
MAX_VERSION = VERSIONS[-1]


def from_request(req):
    """The version a request asks for (the minimum when it names none).

    :raises faults.Fault: 400 for a malformed version, 406 for one this
        API does not serve.
    """
    try:
        return microversion_parse.extract_version(
            req.headers, SERVICE_TYPE, VERSIONS)
    except ValueError:
        raise faults.Fault(406, 'Version %s is not supported by the %s API; '
                                'this cloud serves %s to %s.'
                           % (microversion_parse.get_version(
                               req.headers, SERVICE_TYPE),
                              SERVICE_TYPE, MIN_VERSION, MAX_VERSION))
    except TypeError as exc:
        raise faults.Fault(400, 'Invalid %s version: %s'
                           % (SERVICE_TYPE, exc))


def at_least(version, wanted):
    """Whether the request's ``version`` serves what ``wanted`` added."""
    return version >= microversion_parse.parse_version_string(wanted)


def stamp(resp, version):
    """Echo the version served; caches must key on the header either way."""
    if version is not None:
        resp.headers[HEADER] = '%s %s' % (SERVICE_TYPE, version)
    resp.headers.add('Vary', HEADER)
    return resp


def compute_request(req):
    """Nova's request, with its compute microversion parsed, or None.

    None means Nova itself would reject the header; the caller then lets
    Nova answer, so the error is exactly Nova's.
    """
    nova_req = nova_wsgi.Request(req.environ)
    try:
        nova_req.set_api_version_request()
    except (nova_exception.InvalidAPIVersionString,
            nova_exception.InvalidGlobalAPIVersion):
        return None
    return nova_req


def stamp_compute(resp, nova_req):
    """The compute version headers Nova's own Resource adds to responses."""
    version = nova_req.api_version_request
    if not version.is_null():
        resp.headers[nova_wsgi.API_VERSION_REQUEST_HEADER] = (
            'compute ' + version.get_string())
        resp.headers[nova_wsgi.LEGACY_API_VERSION_REQUEST_HEADER] = (
            version.get_string())
        resp.headers.add('Vary', nova_wsgi.API_VERSION_REQUEST_HEADER)
        resp.headers.add('Vary', nova_wsgi.LEGACY_API_VERSION_REQUEST_HEADER)
    return resp
