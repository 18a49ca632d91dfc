"""Uploads and downloads through Nova's image API (a fake of it)."""

import errno
import hashlib
from unittest import mock

import fixtures
import testtools

from nova_snapext import exception
from nova_snapext import glance
from nova_snapext.tests.unit import fake_images

MIB = 1 << 20


def _chunks(data, size=100000):
    return (data[i:i + size] for i in range(0, len(data), size))


class UploadTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.api = fake_images.FakeImageAPI()
        self.images = glance.Images(self.api)
        self.data = bytes(range(256)) * (3 * MIB // 256)
        self.image_id = self.images.api.create(None, {'name': 'b'})['id']

    def test_chunks_arrive_whole_and_checked(self):
        seen = []
        image = self.images.upload(None, self.image_id, _chunks(self.data),
                                   'test data', seen.append)
        self.assertEqual('active', image['status'])
        self.assertEqual(self.data, self.api.data[self.image_id])
        self.assertEqual(len(self.data), seen[-1])

    def test_a_failing_source_deletes_the_image(self):
        def broken():
            yield self.data[:MIB]
            raise exception.Conflict('snapshot deleted meanwhile')
        self.assertRaises(exception.Conflict, self.images.upload, None,
                          self.image_id, broken(), 'test data')
        self.assertEqual([self.image_id], self.api.deleted)

    def test_a_source_that_failed_fails_again(self):
        # Nova's image API retries an upload on IOError with the same file
        # object: the retry must not send the rest as if it were the whole.
        def broken():
            yield b'x' * 10
            raise IOError(errno.EIO, 'disk read error')
        source = glance._Source(broken(), lambda done: None)
        self.assertRaises(IOError, source.read, 100)
        self.assertRaises(exception.SnapextError, source.read, 100)

    def test_glance_holding_other_data_deletes_the_image(self):
        real_store = self.api._store

        def truncating(image_id, data):
            real_store(image_id, data[:-1])
        self.api._store = truncating
        exc = self.assertRaises(exception.ImageTransferFailed,
                                self.images.upload,
                                None, self.image_id, _chunks(self.data),
                                'test data')
        self.assertIn('does not hold what was uploaded', str(exc))
        self.assertEqual([self.image_id], self.api.deleted)

    def test_glance_failing_deletes_the_image(self):
        self.api.fail_upload = IOError(errno.EPIPE, 'connection reset')
        self.assertRaises(exception.ImageTransferFailed, self.images.upload,
                          None, self.image_id, _chunks(self.data),
                          'test data')
        self.assertEqual([self.image_id], self.api.deleted)

    def test_create_uploads_into_a_new_image(self):
        image = self.images.create(None, {'name': 'n', 'min_ram': 256},
                                   _chunks(self.data), 'test data')
        self.assertEqual('n', image['name'])
        self.assertEqual(self.data, self.api.data[image['id']])

    def test_a_missing_image_is_not_found(self):
        self.assertRaises(exception.NotFound, self.images.get, None, 'nope')


class DownloadTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.api = fake_images.FakeImageAPI()
        self.images = glance.Images(self.api)
        self.data = b'0123456789' * 50000
        self.image_id = self.api.add(self.data)

    def test_read_in_pieces_then_finished(self):
        download = self.images.download(None, self.image_id, 'test data')
        got = download.read(1000) + download.read(300000)
        self.assertEqual(self.data[:301000], got)
        download.finish()
        self.assertEqual(len(self.data), download.count)

    def test_a_queued_image_is_refused(self):
        image_id = self.api.add(b'', status='queued')
        self.assertRaises(exception.Conflict, self.images.download, None,
                          image_id, 'test data')

    def test_a_checksum_failure_is_a_clear_error(self):
        def corrupt(context, image_id):
            yield self.data
            raise IOError(errno.EPIPE, 'Corrupt image download. Hash was x')
        self.api.download = corrupt
        download = self.images.download(None, self.image_id, 'test data')
        exc = self.assertRaises(exception.ImageTransferFailed,
                                download.finish)
        self.assertIn('not what Glance stored', str(exc))

    def test_short_or_long_data_is_refused(self):
        for data in (self.data[:-1], self.data + b'!'):
            self.api.download = lambda c, i, data=data: iter([data])
            download = self.images.download(None, self.image_id, 'test')
            self.assertRaises(exception.InvalidRequest, download.finish)

    def test_memory_holds_one_chunk(self):
        download = self.images.download(None, self.image_id, 'test data')
        h = hashlib.sha256()
        while True:
            block = download.read(4096)
            if not block:
                break
            self.assertLessEqual(len(download._buf),
                                 fake_images.CHUNK)
            h.update(block)
        self.assertEqual(hashlib.sha256(self.data).hexdigest(),
                         h.hexdigest())


class FindAndServiceTest(testtools.TestCase):

    def test_find_hidden_filters_on_properties(self):
        api = fake_images.FakeImageAPI()
        images = glance.Images(api)
        wanted = api.add(b'x', properties={'snapext_bundle_of': 's1'},
                         os_hidden=True)
        api.add(b'y', properties={'snapext_bundle_of': 's2'}, os_hidden=True)
        api.add(b'z', properties={'snapext_bundle_of': 's1'})
        self.assertEqual([wanted], [i['id'] for i in images.find_hidden(
            None, {'snapext_bundle_of': 's1'})])

    def test_find_hidden_lists_shared_images_not_yet_accepted(self):
        api = mock.Mock()
        api.get_all.return_value = []
        glance.Images(api).find_hidden('ctx', {'snapext_bundle_of': 's1'})
        api.get_all.assert_called_once_with('ctx', filters={
            'snapext_bundle_of': 's1', 'os_hidden': 'true',
            'member_status': 'all'})

    def test_no_service_user_is_a_clear_error(self):
        self.useFixture(fixtures.MockPatch(
            'nova.service_auth.get_service_auth_plugin', return_value=None))
        e = self.assertRaises(exception.SnapextError, glance.service_context)
        self.assertIn('[service_user]', str(e))

    def test_service_context_acts_as_the_service_user(self):
        auth = object()
        self.useFixture(fixtures.MockPatch(
            'nova.service_auth.get_service_auth_plugin', return_value=auth))
        context = glance.service_context()
        self.assertIs(auth, context.get_auth_plugin())
        self.assertTrue(context.is_admin)
