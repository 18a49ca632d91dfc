"""An import whose body is the bundle (instance-snapshot 1.3).

The ``snapext_upload`` filter in front of oslo.middleware's real
``sizelimit``, a stand-in for authentication, and the snapext filter
staging the body in a (fake) Glance.
"""

import hashlib
import io

from oslo_middleware import sizelimit
import webob
import webob.dec

from nova_snapext.api import bundles
from nova_snapext.api import upload
from nova_snapext import exception
from nova_snapext.tests.unit.api import fakes
from nova_snapext.tests.unit.api import test_bundles

HEADER = test_bundles.HEADER
V13 = 'instance-snapshot 1.3'
PATH = '/snapext-snapshots/import'


class Input(object):
    """A WSGI server's input: records reads; may break off or fail."""

    def __init__(self, data, fail_after=None, error=None):
        self.data = io.BytesIO(data)
        self.fail_after = fail_after
        self.error = error
        self.reads = []

    def read(self, size=-1):
        self.reads.append(size)
        if self.fail_after is None:
            return self.data.read(size)
        left = self.fail_after - self.data.tell()
        if left <= 0:
            if self.error:
                raise self.error
            return b''
        return self.data.read(min(size, left))


class ImageAPI(test_bundles.ImageAPI):
    """Glance as an upload sees it: the data is read to its end."""

    def __init__(self):
        super().__init__()
        self.received = {}

    def update(self, context, image_id, image_meta, data=None,
               purge_props=False):
        if data is None:
            return super().update(context, image_id, image_meta, data,
                                  purge_props)
        got = b''
        while True:
            chunk = data.read(65536)
            if not chunk:
                break
            got += chunk
        self.received[image_id] = got
        self.images[image_id].update(
            status='active', size=len(got),
            checksum=hashlib.md5(got, usedforsecurity=False).hexdigest())
        return self.images[image_id]


class Authenticate(object):
    """Stands for authtoken + keystonecontext: the context, or a 401."""

    def __init__(self, application, context):
        self.application = application
        self.context = context

    @webob.dec.wsgify
    def __call__(self, req):
        if req.headers.get('X-Auth-Token') != 'good':
            return webob.Response(status=401)
        req.environ['nova.context'] = self.context
        return req.get_response(self.application)


class UploadTestCase(test_bundles.BundlesTestCase):

    def setUp(self):
        super().setUp()
        self.images = ImageAPI()
        self.app.bundles.image_api = self.images
        self.flags.config(max_bundle_upload_bytes=1000, group='snapext')
        # As in api-paste.ini: snapext_upload sizelimit ... auth snapext
        self.pipeline = upload.UploadAside(sizelimit.RequestBodySizeLimiter(
            Authenticate(self.app, self.member)))

    def post(self, data=b'', query='?name=booted', path=PATH,
             content_type=upload.CONTENT_TYPE, version=V13, length=True,
             chunked=False, token='good', stream=None):
        req = webob.Request.blank(path + query, method='POST')
        stream = stream or Input(data)
        req.environ['wsgi.input'] = stream
        req.environ['wsgi.input_terminated'] = True
        if length:
            req.environ['CONTENT_LENGTH'] = str(len(data))
        if chunked:
            req.headers['Transfer-Encoding'] = 'chunked'
        req.content_type = content_type
        req.headers[HEADER] = version
        req.headers['X-Auth-Token'] = token
        return req.get_response(self.pipeline)

    def staged(self):
        """Every image that ever held an upload, and what is left."""
        return list(self.images.received), list(self.images.images)


class AsideTest(UploadTestCase):

    def test_the_body_passes_sizelimit_and_is_staged_then_deleted(self):
        data = b'b' * 900
        self.flags.config(max_request_body_size=100,
                          group='oslo_middleware')
        resp = self.post(data, '?name=booted&server_id=%s'
                         % self.server.uuid)
        self.assertEqual(201, resp.status_int, resp.text)
        self.assertEqual(V13, resp.headers[HEADER])
        self.assertEqual({'snapshot_id': 'imported-1',
                          'image_id': 'bootable-1'}, resp.json_body)
        (staged,), left = self.staged()
        self.assertEqual(data, self.images.received[staged])
        self.assertEqual([], left)
        self.assertEqual(('import_bundle', 'compute1',
                          {'image_id': staged, 'name': 'booted'}),
                         self.agent.calls[-1])

    def test_the_staging_image_is_hidden_private_and_named(self):
        seen = []
        self.agent.import_bundle = lambda ctxt, host, spec: seen.append(
            dict(self.images.images[spec['image_id']])) or {
                'snapshot_id': 's', 'image_id': 'i'}
        self.assertEqual(201, self.post(b'x' * 10).status_int)
        image = seen[0]
        self.assertEqual((True, 'private', 'raw', 'bare', 'active'),
                         (image['os_hidden'], image['visibility'],
                          image['disk_format'], image['container_format'],
                          image['status']))
        self.assertEqual(bundles.STAGING_PREFIX + self.member.request_id,
                         image['name'])
        self.assertEqual(fakes.PROJECT, image['owner'])

    def test_no_byte_is_read_before_authentication(self):
        stream = Input(b'x' * 500)
        resp = self.post(b'x' * 500, token='bad', stream=stream)
        self.assertEqual(401, resp.status_int)
        self.assertEqual([], stream.reads)
        self.assertEqual(([], []), self.staged())

    def test_other_requests_keep_the_size_limit(self):
        self.flags.config(max_request_body_size=100,
                          group='oslo_middleware')
        big = b'{"import": "%s"}' % (b'x' * 200)
        for path, content_type in [
                (PATH, 'application/json'),
                ('/servers', upload.CONTENT_TYPE),
                ('/snapext-snapshots/import/more', upload.CONTENT_TYPE)]:
            resp = self.post(big, '', path=path, content_type=content_type)
            self.assertEqual(413, resp.status_int, path)
        self.assertEqual([], self.nova.requests)
        # GET of the route is left alone as well (a 405 from the filter).
        req = webob.Request.blank(PATH, method='GET')
        req.headers[HEADER] = V13
        req.headers['X-Auth-Token'] = 'good'
        self.assertEqual(405, req.get_response(self.pipeline).status_int)

    def test_a_chunked_body(self):
        data = b'c' * 700
        resp = self.post(data, length=False, chunked=True)
        self.assertEqual(201, resp.status_int, resp.text)
        (staged,), left = self.staged()
        self.assertEqual(data, self.images.received[staged])
        self.assertEqual([], left)


class RefusalTest(UploadTestCase):

    def assertNothingLeft(self):
        self.assertEqual([], list(self.images.images))
        self.assertEqual([], [c for c in self.agent.calls
                              if c[0] == 'import_bundle'])

    def test_too_large_by_its_length_is_413_unread(self):
        stream = Input(b'x' * 1001)
        resp = self.post(b'x' * 1001, stream=stream)
        self.assertFault(resp, 413, 'overLimit', 'max_bundle_upload')
        self.assertEqual([], stream.reads)
        self.assertEqual(([], []), self.staged())

    def test_too_large_chunked_is_413_and_no_image_stays(self):
        resp = self.post(b'x' * 3000, length=False, chunked=True)
        self.assertFault(resp, 413, 'overLimit', '1000 bytes')
        self.assertNothingLeft()

    def test_a_truncated_body_is_400_and_no_image_stays(self):
        stream = Input(b'x' * 600, fail_after=300)
        resp = self.post(b'x' * 600, stream=stream)
        self.assertFault(resp, 400, 'badRequest',
                         'ended after 300 of the 600 bytes')
        self.assertNothingLeft()

    def test_a_broken_connection_is_400_and_no_image_stays(self):
        stream = Input(b'x' * 600, fail_after=100,
                       error=IOError('client went away'))
        resp = self.post(b'x' * 600, length=False, chunked=True,
                         stream=stream)
        self.assertFault(resp, 400, 'badRequest', 'client went away')
        self.assertNothingLeft()

    def test_a_bundle_the_agent_refuses_is_its_400_without_the_image(self):
        self.agent.error = exception.InvalidRequest(
            'member memory.img does not match its sha256')
        resp = self.post(b'x' * 10)
        self.assertFault(resp, 400, 'badRequest', 'sha256')
        self.assertEqual([], list(self.images.images))

    def test_a_failing_import_deletes_the_staging_image(self):
        self.agent.error = RuntimeError('rpc broke')
        resp = self.post(b'x' * 10)
        self.assertEqual(500, resp.status_int)
        self.assertEqual([], list(self.images.images))

    def test_length_and_emptiness(self):
        resp = self.post(b'x' * 10, length=False)
        self.assertFault(resp, 411, 'computeFault', 'Content-Length')
        resp = self.post(b'')
        self.assertFault(resp, 400, 'badRequest', 'empty')
        resp = self.post(b'', length=False, chunked=True)
        self.assertFault(resp, 400, 'badRequest', 'empty')
        self.assertNothingLeft()

    def test_query_version_and_policy_come_before_the_body(self):
        stream = Input(b'x' * 10)
        for query, code in [('', 400), ('?name=n&name=m', 400),
                            ('?name=n&image_id=x', 400),
                            ('?name=n&server_id=nope', 400),
                            ('?name=n&host=compute1', 403)]:
            resp = self.post(b'x' * 10, query, stream=stream)
            self.assertEqual(code, resp.status_int, query)
        resp = self.post(b'x' * 10, version='instance-snapshot 1.2',
                         stream=stream)
        self.assertFault(resp, 404, 'itemNotFound', '1.3')
        self.pipeline.application.application.context = self.context(
            fakes.PROJECT, 'reader')
        resp = self.post(b'x' * 10, stream=stream)
        self.assertFault(resp, 403, 'forbidden')
        self.assertEqual([], stream.reads)
        self.assertNothingLeft()

    def test_uploads_turned_off(self):
        self.flags.config(max_bundle_upload_bytes=0, group='snapext')
        resp = self.post(b'x')
        self.assertFault(resp, 413, 'overLimit', 'upload it to Glance')

    def test_without_the_aside_filter_the_operator_is_told(self):
        self.pipeline = sizelimit.RequestBodySizeLimiter(
            Authenticate(self.app, self.member))
        resp = self.post(b'x' * 10)
        self.assertFault(resp, 500, 'computeFault', 'snapext_upload')
        self.assertNothingLeft()
