from xml.etree import ElementTree as ET

import testtools

from nova_snapext.capture import domain_xml
from nova_snapext import exception
from nova_snapext.tests.unit import fakes
from nova_snapext.virt import policy
from nova_snapext.virt import resume


class FullSnapshotRequestedTest(testtools.TestCase):

    def test_request_wins_over_image_and_default(self):
        self.assertFalse(policy.full_snapshot_requested(
            {'snapext_full': 'false'}, {'image_snapext_full': 'true'}, True))
        self.assertTrue(policy.full_snapshot_requested(
            {'snapext_full': 'yes'}, {}, False))

    def test_image_wins_over_default(self):
        self.assertTrue(policy.full_snapshot_requested(
            {}, {'image_snapext_full': 'True'}, False))

    def test_default_and_unreadable_values(self):
        self.assertTrue(policy.full_snapshot_requested({}, {}, True))
        self.assertFalse(policy.full_snapshot_requested(
            {'snapext_full': 'maybe'}, {}, False))


class PolicyTest(testtools.TestCase):

    def test_quiesce_follows_nova(self):
        self.assertEqual('required', policy.quiesce_policy(
            {'os_require_quiesce': True}))
        self.assertEqual('preferred', policy.quiesce_policy({}))

    def test_disk_roles(self):
        self.assertEqual(
            {'vda': {'role': 'root'},
             'vdb': {'role': 'volume', 'volume_id': 'v1'}},
            policy.disk_roles('vda', [('/dev/vdb', 'v1')]))

    def test_image_properties(self):
        record = fakes.record('s2', 's1')
        record['disks'].append({'target': 'vdb', 'role': 'volume',
                                'volume_id': 'v1', 'path': '/v',
                                'format': 'qcow2', 'virtual_size': 1,
                                'snapshot': 'snapext-s2', 'backing': None})
        props = policy.image_properties(record, 'cmp1', 'file')
        self.assertEqual({'snapext_manifest': 's2', 'snapext_kind': 'full',
                          'snapext_host': 'cmp1', 'snapext_parent': 's1',
                          'snapext_quiesce': 'frozen',
                          'snapext_memory': 'file://cmp1/s2/memory.save',
                          'snapext_volumes': 'vdb=v1'}, props)
        self.assertTrue(all(isinstance(v, str) for v in props.values()))
        # What an image that outlives its record drops (the driver adds
        # the bundle's link when the store keeps bundles).
        self.assertEqual(set(policy.RECORD_PROPERTIES),
                         set(props) | {policy.BUNDLE_PROPERTY})

    def test_resumable_snapshot(self):
        self.assertEqual('s1', policy.resumable_snapshot(
            {'image_snapext_kind': 'full', 'image_snapext_manifest': 's1'}))
        self.assertIsNone(policy.resumable_snapshot(
            {'image_snapext_kind': 'disks', 'image_snapext_manifest': 's1'}))
        self.assertIsNone(policy.resumable_snapshot({}))


NOVA_XML = """<domain type='qemu'>
  <name>instance-00000002</name>
  <uuid>6f1c7c1e-0000-4000-8000-000000000002</uuid>
  <metadata><nova>new</nova></metadata>
  <memory>262144</memory>
  <vcpu>1</vcpu>
  <sysinfo type='smbios'><system>
    <entry name='uuid'>6f1c7c1e-0000-4000-8000-000000000002</entry>
  </system></sysinfo>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/inst/2/disk'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='fa:16:3e:00:00:02'/>
      <source bridge='br-new'/>
      <target dev='tap2'/>
    </interface>
    <serial type='pty'><log file='/inst/2/console.log'/></serial>
  </devices>
</domain>"""


def _saved():
    return (NOVA_XML.replace('00000002', '00000001')
            .replace('/inst/2/', '/inst/1/').replace('<nova>new', '<nova>old')
            .replace('fa:16:3e:00:00:02', 'fa:16:3e:00:00:01')
            .replace('br-new', 'br-old').replace('tap2', 'tap1'))


class NovaContextTest(testtools.TestCase):

    def test_portable_image_properties_only(self):
        context = policy.nova_context(
            {'name': 'small', 'memory_mb': 256, 'vcpus': 1, 'root_gb': 1},
            {'image_hw_qemu_guest_agent': 'yes', 'image_kernel_id': 'k',
             'image_os_command_line': 'console=ttyS0',
             'image_os_hash_value': 'abc', 'image_os_glance_importing': 'x',
             'image_snapext_manifest': 's0', 'image_min_ram': '0',
             'owner_user_name': 'demo'}, 'img-1', 'p1')
        wanted = {
            'flavor': 'small',
            'flavor_spec': {'memory_mb': 256, 'vcpus': 1, 'root_gb': 1},
            'image_ref': 'img-1', 'project_id': 'p1',
            'image_properties': {'hw_qemu_guest_agent': 'yes',
                                 'kernel_id': 'k',
                                 'os_command_line': 'console=ttyS0'}}
        self.assertEqual(wanted, context)


class ResumeTest(testtools.TestCase):

    def test_disk_sources_come_from_nova(self):
        self.assertEqual({'vda': '/inst/2/disk'},
                         resume.disk_sources(_saved(), NOVA_XML))

    def test_the_source_directory_is_the_saved_root_disks(self):
        # an imported snapshot's instance ran in another cloud's directory
        record = {'id': 's1', 'instance_uuid': 'u1',
                  'disks': [{'target': 'vda', 'role': 'root'}]}
        self.assertEqual('/inst/1', resume.source_directory(
            _saved(), record, '/here'))
        record['disks'][0]['role'] = 'volume'
        self.assertRaises(exception.InvalidRequest, resume.source_directory,
                          _saved(), record, '/here')

    def test_a_volume_root_resumes_from_this_hosts_directory(self):
        # the root's path is the volume's share, not the instance's
        record = {'id': 's1', 'instance_uuid': 'u1',
                  'disks': [{'target': 'vda', 'role': 'root',
                             'volume_id': 'v1'}]}
        self.assertEqual('/here/u1', resume.source_directory(
            _saved(), record, '/here'))

    def test_other_flavor_boots_cold(self):
        other = NOVA_XML.replace('<vcpu>1</vcpu>', '<vcpu>2</vcpu>')
        self.assertRaises(exception.InvalidRequest, resume.disk_sources,
                          _saved(), other)

    def test_other_disks_boot_cold(self):
        other = NOVA_XML.replace("dev='vda'", "dev='vdb'")
        self.assertRaises(exception.InvalidRequest, resume.disk_sources,
                          _saved(), other)

    def test_adopt_takes_novas_identity_and_resources(self):
        root = ET.fromstring(resume.adopt(NOVA_XML)(_saved()))
        self.assertEqual('new', root.findtext('metadata/nova'))
        self.assertEqual('6f1c7c1e-0000-4000-8000-000000000002',
                         root.findtext("sysinfo/system/entry[@name='uuid']"))
        iface = root.find('devices/interface')
        self.assertEqual('fa:16:3e:00:00:02', iface.find('mac').get('address'))
        self.assertEqual('br-new', iface.find('source').get('bridge'))
        self.assertEqual('/inst/2/console.log',
                         root.find('devices/serial/log').get('file'))
        # the device ABI (models, buses) stays the saved one
        self.assertEqual('bridge', iface.get('type'))

    def test_adopt_takes_novas_kernel_and_initrd(self):
        nova_xml = NOVA_XML.replace(
            '<vcpu>1</vcpu>',
            '<vcpu>1</vcpu><os><type>hvm</type>'
            '<kernel>/inst/2/kernel</kernel>'
            '<initrd>/inst/2/ramdisk</initrd>'
            '<cmdline>console=ttyS0</cmdline></os>')
        # the engine gives the clone Nova's disks before the callback
        saved = domain_xml.with_disk_sources(_saved_from(nova_xml),
                                             {'vda': '/inst/2/disk'})
        xml = resume.adopt(nova_xml, '/inst/1')(saved)
        root = ET.fromstring(xml)
        self.assertEqual('/inst/2/kernel', root.findtext('os/kernel'))
        self.assertEqual('/inst/2/ramdisk', root.findtext('os/initrd'))
        self.assertEqual([], resume.foreign_paths(xml, '/inst/1'))

    def test_adopt_refuses_a_clone_that_keeps_source_files(self):
        saved = _saved().replace(
            '</devices>',
            "<filesystem><source dir='/inst/1/share'/></filesystem>"
            "</devices>")
        edit = resume.adopt(NOVA_XML, '/inst/1/')
        self.assertRaises(exception.InvalidRequest, edit, saved)

    def test_adopt_refuses_a_snapshot_booted_with_a_kernel_nova_lacks(self):
        saved = _saved().replace(
            '<vcpu>1</vcpu>',
            '<vcpu>1</vcpu><os><kernel>/inst/1/kernel</kernel></os>')
        self.assertRaises(exception.InvalidRequest,
                          resume.adopt(NOVA_XML, '/inst/1'), saved)

    def test_foreign_paths_reads_text_and_attributes(self):
        xml = ("<domain><os><kernel>/inst/1/kernel</kernel></os>"
               "<devices><disk><source file='/inst/1/disk'/></disk>"
               "<disk><source file='/inst/10/disk'/></disk></devices>"
               "</domain>")
        self.assertEqual(['/inst/1/kernel', '/inst/1/disk'],
                         resume.foreign_paths(xml, '/inst/1'))


def _saved_from(nova_xml):
    return (nova_xml.replace('00000002', '00000001')
            .replace('/inst/2/', '/inst/1/').replace('<nova>new', '<nova>old')
            .replace('fa:16:3e:00:00:02', 'fa:16:3e:00:00:01')
            .replace('br-new', 'br-old').replace('tap2', 'tap1'))


class VolumeSourcesTest(testtools.TestCase):
    """Memory resumes only on volumes made from the snapshot's own state."""

    record = {'id': 'snap-1', 'disks': [
        {'target': 'vda', 'role': 'root', 'volume_id': 'vol-root',
         'cinder_snapshot_id': 'cs-root'},
        {'target': 'vdb', 'role': 'volume', 'volume_id': 'vol-data',
         'cinder_snapshot_id': 'cs-data'},
        {'target': 'vdc', 'role': 'disk', 'volume_id': None,
         'cinder_snapshot_id': None}]}

    def test_volumes_from_exactly_those_snapshots_resume(self):
        policy.check_volume_sources(self.record, {'vda': 'cs-root',
                                                  'vdb': 'cs-data'})

    def test_any_other_volume_boots_cold(self):
        for sources, words in [
                ({'vda': 'cs-root'}, 'vdb was created from no snapshot'),
                ({'vda': 'cs-root', 'vdb': None}, 'from no snapshot'),
                ({'vda': 'cs-other', 'vdb': 'cs-data'},
                 'from snapshot cs-other, not from Cinder snapshot cs-root'),
                ({}, 'vda was created from no snapshot')]:
            e = self.assertRaises(exception.InvalidRequest,
                                  policy.check_volume_sources, self.record,
                                  sources)
            self.assertIn(words, str(e))

    def test_a_volume_cinder_never_adopted_boots_cold(self):
        # the old 0-byte images: a volume with no Cinder snapshot at all
        record = {'id': 'snap-2', 'disks': [
            {'target': 'vda', 'role': 'root', 'volume_id': 'vol-root',
             'cinder_snapshot_id': None}]}
        e = self.assertRaises(exception.InvalidRequest,
                              policy.check_volume_sources, record,
                              {'vda': None})
        self.assertIn('has no Cinder snapshot', str(e))

    def test_image_backed_root_needs_no_volume(self):
        record = {'id': 'snap-3', 'disks': [
            {'target': 'vda', 'role': 'root', 'volume_id': None}]}
        policy.check_volume_sources(record, {})
