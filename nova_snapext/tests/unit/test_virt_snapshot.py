"""The driver's upload of a full snapshot: durable first, in Nova's phase."""

from unittest import mock

import fixtures
from nova.compute import task_states
from nova import objects
import testtools

from nova_snapext.tests.unit import fakes
from nova_snapext.virt import driver as snapext_driver
from nova_snapext.virt import policy


class UploadTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        objects.register_all()
        self.driver = snapext_driver.SnapextLibvirtDriver.__new__(
            snapext_driver.SnapextLibvirtDriver)
        self.calls = []
        self.engine = mock.Mock()
        self.engine.store.name = 'glance'
        self.engine.make_durable.side_effect = (
            lambda *a, **kw: self.calls.append('durable') or {
                'image_id': 'bundle-1'})
        self.engine.export_disk.side_effect = (
            lambda snapshot_id, target, path, fmt: open(path, 'wb').close())
        self.driver._snapext_engine = self.engine
        self.driver._image_api = mock.Mock()
        self.driver._image_api.update.side_effect = (
            lambda *a, **kw: self.calls.append('image'))
        self.driver._create_snapshot_metadata = mock.Mock(
            return_value={'properties': {}})
        tmp = self.useFixture(fixtures.TempDir()).path
        snapext_driver.CONF.set_override('snapshots_directory', tmp,
                                         'libvirt')
        self.addCleanup(snapext_driver.CONF.clear_override,
                        'snapshots_directory', 'libvirt')
        self.record = fakes.record('s1')

    def update_task_state(self, task_state, expected_state=None):
        self.calls.append(task_state)

    def upload(self):
        self.driver._upload_root('ctx', mock.Mock(), 'img-1',
                                 {'name': 'snap'}, self.record,
                                 self.update_task_state)

    def test_durable_inside_image_uploading_before_novas_image(self):
        self.upload()
        self.assertEqual([task_states.IMAGE_UPLOADING, 'durable', 'image'],
                         self.calls)
        self.engine.make_durable.assert_called_once_with('s1', 'ctx')
        metadata = self.driver._image_api.update.call_args[0][2]
        self.assertEqual('bundle-1',
                         metadata['properties'][policy.BUNDLE_PROPERTY])

    def test_a_failed_upload_never_uploads_novas_image(self):
        self.engine.make_durable.side_effect = IOError('glance went away')
        self.assertRaises(IOError, self.upload)
        self.assertEqual([task_states.IMAGE_UPLOADING], self.calls)
        self.driver._image_api.update.assert_not_called()

    def test_a_store_that_keeps_no_bundles_links_none(self):
        self.engine.make_durable.side_effect = None
        self.engine.make_durable.return_value = None
        self.upload()
        metadata = self.driver._image_api.update.call_args[0][2]
        self.assertNotIn(policy.BUNDLE_PROPERTY, metadata['properties'])
