"""Glance for snapext on a compute host, through Nova's image API.

The one module that moves snapext's bytes in and out of Glance: streams a
chunk iterator into an image and an image out as chunks, one chunk in
memory at a time and no copy on disk, with the caller's context (the agent
gets it as a dict over RPC) and nova-compute's own ``[glance]`` settings.

An upload that fails, or whose result Glance describes differently from
what was sent (size, checksum), deletes its image: no image ever stays
``active`` holding part of what was meant.  A download checks the size
Glance announced, and glanceclient checks the image's checksum once the
last byte is read (:meth:`Download.finish` reads up to it).
"""

import hashlib

from nova import context as nova_context
from nova import exception as nova_exception
from nova.image import glance as nova_glance
from nova import service_auth
from oslo_log import log as logging

from nova_snapext.capture import progress
from nova_snapext import exception

LOG = logging.getLogger(__name__)

# seconds between two progress lines of one transfer
PROGRESS_EVERY = 10.0
# the configuration group of Nova's service user credentials
SERVICE_USER = 'service_user'


def service_context():
    """A context acting as Nova's own service user (``[service_user]``).

    For what snapext does in Glance that no request asked for (deleting
    the bundle of a snapshot whose image Glance notified deleted: its
    notifications carry no token).
    """
    auth = service_auth.get_service_auth_plugin(SERVICE_USER)
    if auth is None:
        raise exception.SnapextError('no [%s] credentials configured'
                                     % SERVICE_USER)
    return nova_context.RequestContext(user_auth_plugin=auth, is_admin=True,
                                       overwrite=False)


def request_context(ctxt):
    """Nova's RequestContext from the dict an RPC call carries."""
    if isinstance(ctxt, nova_context.RequestContext):
        return ctxt
    return nova_context.RequestContext.from_dict(ctxt or {})


class _Source(object):
    """A file object over chunks, for glanceclient's upload to read.

    It counts and hashes what it hands out.  Once its chunks failed it
    fails every read again: Nova's image API retries an upload on IOError
    with the same object, and a retry must never send the rest of a
    stream as if it were the whole.
    """

    def __init__(self, chunks, report):
        self._it = iter(chunks)
        self._buf = b''
        self._failed = None
        self._report = report
        self.count = 0
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha512 = hashlib.sha512()

    def read(self, size=-1):
        if self._failed is not None:
            raise exception.SnapextError('the upload source failed before: '
                                         '%s' % self._failed)
        try:
            while size < 0 or len(self._buf) < size:
                try:
                    self._buf += next(self._it)
                except StopIteration:
                    break
        except Exception as exc:
            self._failed = exc
            raise
        if size < 0:
            size = len(self._buf)
        out, self._buf = self._buf[:size], self._buf[size:]
        self.count += len(out)
        self.md5.update(out)
        self.sha512.update(out)
        self._report(self.count)
        return out

    def mismatch(self, image):
        """Why ``image`` (Glance's view) is not what was sent, or None."""
        if image.get('status') != 'active':
            return 'it is %s, not active' % image.get('status')
        if image.get('size') != self.count:
            return 'it holds %s bytes, %d were sent' % (image.get('size'),
                                                        self.count)
        if image.get('checksum') not in (None, self.md5.hexdigest()):
            return 'its checksum differs from the data sent'
        props = image.get('properties') or {}
        if props.get('os_hash_algo') == 'sha512' and (
                props.get('os_hash_value') != self.sha512.hexdigest()):
            return 'its os_hash_value differs from the data sent'
        return None


class Download(object):
    """An image's data as a file object (see :meth:`Images.download`)."""

    def __init__(self, image, chunks, report):
        self.image = image
        self._it = iter(chunks)
        self._buf = b''
        self._report = report
        self.count = 0

    def read(self, size=-1):
        while size < 0 or len(self._buf) < size:
            chunk = self._next()
            if not chunk:
                break
            self._buf += chunk
        if size < 0:
            size = len(self._buf)
        out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def _next(self):
        try:
            chunk = next(self._it)
        except StopIteration:
            return b''
        except IOError as exc:
            # glanceclient's checksum check, at the end of the data
            raise exception.ImageTransferFailed(
                'image %s: the downloaded data is not what Glance stored: '
                '%s' % (self.image['id'], exc)) from exc
        self.count += len(chunk)
        if self.count > (self.image.get('size') or 0):
            raise exception.InvalidRequest(
                'image %s sent more than the %s bytes it has'
                % (self.image['id'], self.image.get('size')))
        self._report(self.count)
        return chunk

    def finish(self):
        """Read to the end: the size and the checksum are checked there."""
        while self._next():
            pass
        self._buf = b''
        if self.count != self.image.get('size'):
            raise exception.InvalidRequest(
                'image %s: %d bytes downloaded, Glance says it has %s'
                % (self.image['id'], self.count, self.image.get('size')))
        self._report(self.count, final=True)


class Images(object):
    """Glance through Nova's image API, with the caller's context.

    :param api: a ``nova.image.glance.API`` (the default) or a fake
    """

    def __init__(self, api=None):
        self.api = api or nova_glance.API()

    context = staticmethod(request_context)
    service_context = staticmethod(service_context)

    def get(self, context, image_id):
        try:
            return self.api.get(context, image_id)
        except (nova_exception.ImageNotFound,
                nova_exception.ImageNotAuthorized):
            raise exception.NotFound('image %s not found' % image_id) \
                from None

    def find_hidden(self, context, properties):
        """Hidden images (os_hidden) whose properties hold ``properties``.

        Shared ones the caller's project has not accepted count too: a
        bundle uploaded again by the service user is shared with the
        snapshot's project (Glance lists only accepted ones by default).
        """
        return list(self.api.get_all(
            context, filters=dict(properties, os_hidden='true',
                                  member_status='all')))

    def set_properties(self, context, image_id, properties):
        """Add or change properties of an image (its data untouched)."""
        self.api.update(context, image_id, {'properties': dict(properties)},
                        purge_props=False)

    def exists(self, context, image_id):
        try:
            self.get(context, image_id)
        except exception.NotFound:
            return False
        return True

    def upload(self, context, image_id, chunks, what, notify=None):
        """Stream ``chunks`` into the queued image ``image_id``.

        :param what: names the transfer in the progress lines
        :param notify: callable(bytes sent so far)
        :returns: the image, active, once Glance holds exactly what was sent
        :raises: whatever failed; the image is deleted then
        """
        report = progress.Throttled('upload of %s into image %s'
                                    % (what, image_id), PROGRESS_EVERY,
                                    notify)
        source = _Source(chunks, report)
        try:
            # no metadata change; the data is the point
            self.api.update(context, image_id, {}, data=source,
                            purge_props=False)
            image = self.api.get(context, image_id)
            wrong = source.mismatch(image)
            if wrong:
                raise exception.ImageTransferFailed(
                    'image %s does not hold what was uploaded: %s'
                    % (image_id, wrong))
        except BaseException as exc:
            LOG.error('upload of %s into image %s failed after %d bytes '
                      '(%s); deleting the image', what, image_id,
                      source.count, exc)
            self.delete(context, image_id)
            if isinstance(exc, Exception) and not isinstance(
                    exc, exception.SnapextError):
                raise exception.ImageTransferFailed(
                    'upload of %s into image %s failed: %s: %s' % (
                        what, image_id, type(exc).__name__, exc)) from exc
            raise
        report(source.count, final=True)
        return image

    def create(self, context, meta, chunks, what, notify=None):
        """A new image of ``meta`` holding ``chunks``; see :meth:`upload`."""
        image = self.api.create(context, dict(meta))
        return self.upload(context, image['id'], chunks, what, notify)

    def download(self, context, image_id, what, notify=None):
        """The data of an active image as a file object (a Download).

        Nothing is written to disk; read it front to back, then call
        ``finish()`` before trusting it.
        """
        image = self.get(context, image_id)
        if image.get('status') != 'active':
            raise exception.Conflict('image %s is %s; only an active image '
                                     'can be read' % (image_id,
                                                      image.get('status')))
        report = progress.Throttled('download of %s from image %s'
                                    % (what, image_id), PROGRESS_EVERY,
                                    notify)
        try:
            chunks = self.api.download(context, image_id)
        except nova_exception.ImageUnacceptable as exc:
            raise exception.InvalidRequest(str(exc)) from None
        return Download(image, chunks, report)

    def delete(self, context, image_id):
        """Delete an image if it is there; never raises (logs)."""
        try:
            self.api.delete(context, image_id)
        except nova_exception.ImageNotFound:
            pass
        except Exception:
            LOG.exception('cannot delete image %s', image_id)
