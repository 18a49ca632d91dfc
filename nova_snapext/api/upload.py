"""A bundle as the body of ``POST /snapext-snapshots/import`` (1.3).

nova-api's ``sizelimit`` filter (``[oslo_middleware]
max_request_body_size``, 112 KiB by default) runs before authentication
in the compute pipelines, and a bundle is hundreds of MiB.  Raising that
limit would raise it for every compute request, unauthenticated ones
included.  Instead the ``snapext_upload`` filter, placed just before
``sizelimit``, takes the body stream of this one request (``POST
.../snapext-snapshots/import`` with ``Content-Type:
application/octet-stream``) aside, unread, and hands the rest of the
pipeline an empty body; the snapext filter, after ``authtoken`` and
``keystonecontext``, reads it through :class:`Body`, bounded by
``[snapext] max_bundle_upload_bytes``.  So nova-api reads no byte of an
upload before the caller is authenticated and authorized, and every other
request keeps Nova's limit.

With no ``snapext_upload`` filter in the pipeline, ``sizelimit`` answers
a bundle with 413 as before, and the JSON import (a bundle already in
Glance) still works.
"""

import io
import re

from oslo_log import log as logging
import webob

from nova_snapext.api import faults
from nova_snapext import exception

LOG = logging.getLogger(__name__)
# Nova's ProjectMapper accepts hex (and dashes) as a project id in a path.
PROJECT = r'^(?:/(?P<project_id>[0-9a-f-]+))?'
IMPORT_PATH = re.compile(PROJECT + r'/snapext-snapshots/import/?$')
CONTENT_TYPE = 'application/octet-stream'
# Where the stream waits for the snapext filter (a WSGI server's and
# middleware's key, never a client's: headers become HTTP_*).
ENVIRON_KEY = 'snapext.upload'
# What one read takes from the client: the most nova-api holds at once.
CHUNK = 1 << 20


def is_upload(req):
    """Whether ``req`` is an import whose body is the bundle."""
    return (req.method == 'POST' and req.content_type == CONTENT_TYPE and
            IMPORT_PATH.match(req.path_info) is not None)


class Stream(object):
    """A request's unread body, as the WSGI server gave it."""

    def __init__(self, environ):
        req = webob.Request(environ)
        self.input = environ['wsgi.input']
        self.length = req.content_length
        # A body without a Content-Length is readable to its end only when
        # the server de-chunks it and says so (PEP 3333 leaves reading past
        # the end undefined otherwise).
        self.chunked = (self.length is None and
                        'chunked' in req.headers.get('Transfer-Encoding',
                                                     '').lower() and
                        bool(environ.get('wsgi.input_terminated')))


class UploadAside(object):
    """The ``snapext_upload`` filter: put before ``sizelimit``."""

    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        if is_upload(webob.Request(environ)):
            environ[ENVIRON_KEY] = Stream(environ)
            environ['wsgi.input'] = io.BytesIO()
            environ['CONTENT_LENGTH'] = '0'
        return self.application(environ, start_response)


def aside_filter_factory(global_conf, **local_conf):
    """The paste.filter_factory entry point ``egg:snapext#snapext_upload``."""
    return UploadAside


class Body(object):
    """The uploaded bundle, read once, chunk by chunk, within ``limit``.

    :param stream: the request's :class:`Stream`
    :param limit: the most bytes accepted
    """

    def __init__(self, stream, limit):
        self.stream = stream
        self.limit = limit
        self.count = 0

    @classmethod
    def of(cls, req, limit):
        """The body ``snapext_upload`` took aside; checked, still unread.

        :raises exception.TooLarge: (413) when its Content-Length is over
            ``limit``
        :raises exception.InvalidRequest: (400) when it is empty
        :raises faults.Fault: 411 when it has neither a Content-Length nor
            a chunked encoding this server de-chunks, 500 when no
            ``snapext_upload`` filter took it aside
        """
        stream = req.environ.get(ENVIRON_KEY)
        if stream is None:
            # Not the caller's doing: the operator's pipeline lacks it.
            LOG.error('snapext: an import with a bundle body reached the '
                      'snapext filter, but no snapext_upload filter took '
                      'its body aside: add it before sizelimit in '
                      'api-paste.ini')
            raise faults.Fault(500, 'This cloud is not set up to take a '
                                    'bundle as the request body (no '
                                    'snapext_upload filter in nova-api\'s '
                                    'api-paste.ini); upload the bundle to '
                                    'Glance and import it from the image.')
        if stream.length is None and not stream.chunked:
            raise faults.Fault(411, 'Send the bundle with a Content-Length '
                                    'or with Transfer-Encoding: chunked.')
        if stream.length is not None and stream.length > limit:
            raise _too_large(limit)
        if stream.length == 0:
            raise _empty()
        return cls(stream, limit)

    def chunks(self):
        """Yield the body; end with an error if it is not all there.

        :raises exception.TooLarge: past ``limit`` (a chunked body)
        :raises exception.InvalidRequest: when the client stops sending
            before the announced end, or the connection breaks
        """
        length = self.stream.length
        while length is None or self.count < length:
            size = CHUNK if length is None else min(CHUNK,
                                                    length - self.count)
            try:
                chunk = self.stream.input.read(size)
            except Exception as exc:
                # The server's own error of a broken connection or a bad
                # chunk (gunicorn's NoMoreData, ChunkMissingTerminator).
                raise exception.InvalidRequest(
                    'The upload broke off after %d bytes: %s: %s'
                    % (self.count, type(exc).__name__, exc)) from exc
            if not chunk:
                break
            self.count += len(chunk)
            if self.count > self.limit:
                raise _too_large(self.limit)
            yield chunk
        if length is not None and self.count < length:
            raise exception.InvalidRequest(
                'The upload ended after %d of the %d bytes its '
                'Content-Length announced.' % (self.count, length))
        if self.count == 0:
            raise _empty()


def _empty():
    return exception.InvalidRequest('The request body is empty; send the '
                                    'bundle as the body.')


def _too_large(limit):
    return exception.TooLarge(
        'The bundle is larger than the %d bytes this cloud accepts in a '
        'request ([snapext] max_bundle_upload_bytes); upload it to Glance '
        'and import it from the image.' % limit)
