"""Fast clone in the driver's spawn: what a damaged snapshot leads to."""

from unittest import mock

import fixtures
from nova import exception as nova_exception
import testtools

from nova_snapext import exception
from nova_snapext.tests.unit import fakes
from nova_snapext.virt import driver as snapext_driver


class ResumeVerificationTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.driver = snapext_driver.SnapextLibvirtDriver.__new__(
            snapext_driver.SnapextLibvirtDriver)
        self.engine = mock.Mock()
        self.engine.resumable.return_value = fakes.record('s1')
        self.driver._snapext_engine = self.engine
        self.driver._snapext_thaw = {}
        self.driver._host = mock.Mock()
        for name in ('check_volumes', 'disk_sources', 'source_directory',
                     'adopt'):
            self.useFixture(fixtures.MockPatch(
                'nova_snapext.virt.resume.%s' % name))
        self.instance = mock.Mock(uuid='u2', image_ref='img-1')
        self.instance.name = 'instance-2'

    def resume(self):
        return self.driver._resume_snapshot(None, '<domain/>', self.instance,
                                            's1', False, None)

    def test_damaged_disks_fail_the_build(self):
        self.engine.clone.side_effect = exception.VerificationFailed(
            'snapshot s1 is damaged: disk vda copy (/x/disk): differs',
            disks=True)
        e = self.assertRaises(nova_exception.ImageUnacceptable, self.resume)
        self.assertIn('disk vda copy (/x/disk): differs', str(e))

    def test_damaged_memory_boots_cold(self):
        self.engine.clone.side_effect = exception.VerificationFailed(
            'snapshot s1 is damaged: memory image (/m): differs')
        self.assertIsNone(self.resume())
