"""Errors as Nova-style fault bodies.

The body is rendered by Nova's own ``Fault`` so a client parses a snapext
error exactly like a compute one, ``{"itemNotFound": {"code": 404,
"message": "..."}}``, with the same names for every status (Nova has no
name for 406 and says ``computeFault``; so do we).  A response never
carries a traceback: 5xx messages are fixed sentences and the detail goes
to the nova-api log.
"""

from nova.api.openstack import wsgi as nova_wsgi
from nova import exception as nova_exception
from oslo_log import log as logging
import webob.exc

from nova_snapext import exception

LOG = logging.getLogger(__name__)

# Most specific first: QuiesceRequired is not a Conflict subclass but Nova
# answers a failed quiesce with 409, and so do we.
_STATUS = [
    (exception.TooLarge, 413),
    (exception.InvalidRequest, 400),
    (exception.NotFound, 404),
    (exception.Conflict, 409),
    (exception.QuiesceRequired, 409),
    # A record that cannot be used: its state, not the request, is wrong.
    (exception.BrokenRecord, 409),
    (exception.AgentUnavailable, 503),
]

_SERVER_ERROR = {
    503: 'No snapext agent answered on the server\'s host; try again '
         'later.',
    500: 'The snapshot operation failed; the cloud operator can find the '
         'cause in the nova-api log.',
}

# 5xx answers by cause, most specific first: what a user may know (the
# host cannot do it now) without the host's paths and messages.
_SERVER_ERROR_BY_CLASS = [
    (exception.AgentLost,
     'The snapext agent on the server\'s host stopped answering during '
     'the operation; its outcome is known once the agent is back.'),
    (exception.HypervisorUnavailable,
     'The server\'s compute host cannot reach its hypervisor; try again '
     'later.'),
    (exception.StorageError,
     'The server\'s compute host could not write or read the snapshot '
     '(for example its storage is full); the cloud operator can find the '
     'cause in the nova-api and compute logs.'),
    (exception.DiskToolFailed,
     'A disk tool failed on the server\'s compute host; the cloud '
     'operator can find the cause in the nova-api and compute logs.'),
]

# oslo.messaging rebuilds a remote exception as "<Class>_Remote"; the RPC
# client turns it back into the plain class, but a raw one must map too.
_REMOTE_SUFFIX = '_Remote'


class Fault(Exception):
    """An HTTP error the filter answers with; raise it anywhere inside."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def snapext_class(exc):
    """The nova_snapext.exception class ``exc`` stands for, or None."""
    for klass in type(exc).__mro__:
        name = klass.__name__
        if name.endswith(_REMOTE_SUFFIX):
            name = name[:-len(_REMOTE_SUFFIX)]
        found = getattr(exception, name, None)
        if isinstance(found, type) and issubclass(found,
                                                  exception.SnapextError):
            return found
    return None


def _snapext_status(klass):
    for base, code in _STATUS:
        if issubclass(klass, base):
            return code
    return 500


def from_exception(exc):
    """A Fault for any exception raised while serving a request."""
    if isinstance(exc, Fault):
        return exc
    klass = snapext_class(exc)
    if klass is not None:
        code = _snapext_status(klass)
        message = str(exc.args[0]) if exc.args else klass.__name__
    elif isinstance(exc, nova_exception.NovaException):
        code = getattr(exc, 'code', 500)
        message = exc.format_message()
    else:
        code, message = 500, str(exc)
    if code >= 500:
        # The traceback of the exception being handled, for the operator:
        # the response only carries a fixed sentence.
        LOG.error('snapext request failed: %s: %s',
                  type(exc).__name__, message, exc_info=exc)
        message = _server_message(klass, code)
    return Fault(code, message)


def _server_message(klass, code):
    for base, message in _SERVER_ERROR_BY_CLASS:
        if klass is not None and issubclass(klass, base):
            return message
    return _SERVER_ERROR.get(code, _SERVER_ERROR[500])


def render(req, fault):
    """The webob response of ``fault``, rendered by Nova's Fault."""
    http_exc = webob.exc.status_map[fault.code](explanation=fault.message)
    return req.get_response(nova_wsgi.Fault(http_exc))
