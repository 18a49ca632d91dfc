from xml.etree import ElementTree as ET

import testtools

from nova_snapext.capture import domain_xml
from nova_snapext import exception
from nova_snapext.tests.unit import fakes


class DomainXmlTest(testtools.TestCase):

    def test_writable_disks_skip_cdrom(self):
        disks = domain_xml.writable_disks(fakes.DOMAIN_XML)
        self.assertEqual([('vda', '/srv/i/disk', 'qcow2'),
                          ('vdb', '/srv/v/volume-1', 'qcow2')],
                         [(d.target, d.path, d.fmt) for d in disks])
        self.assertEqual(['hdc'],
                         domain_xml.excluded_targets(fakes.DOMAIN_XML))

    def test_network_disk_is_refused_clearly(self):
        xml = fakes.DOMAIN_XML.replace(
            "<disk type='file' device='disk'>\n      <driver name='qemu' "
            "type='qcow2'/>\n      <source file='/srv/v/volume-1'/>",
            "<disk type='network' device='disk'>\n      <driver "
            "name='qemu' type='raw'/>\n      <source protocol='rbd' "
            "name='v/1'/>")
        e = self.assertRaises(exception.InvalidRequest,
                              domain_xml.writable_disks, xml)
        self.assertIn("disk vdb is of type 'network'", str(e))

    def test_garbage_xml(self):
        self.assertRaises(exception.InvalidRequest,
                          domain_xml.writable_disks, '<domain')

    def test_identity(self):
        self.assertEqual(('instance-00000001',
                          '6f1c7c1e-0000-4000-8000-000000000001'),
                         domain_xml.domain_identity(fakes.DOMAIN_XML))

    def test_memory_snapshot_xml_leaves_every_disk_alone(self):
        root = ET.fromstring(domain_xml.memory_snapshot_xml(
            'snapext-memory', '/m/mem', ['vda', 'vdb', 'hdc']))
        self.assertEqual('snapext-memory', root.findtext('name'))
        self.assertEqual({'snapshot': 'external', 'file': '/m/mem'},
                         root.find('memory').attrib)
        self.assertEqual([('vda', 'no'), ('vdb', 'no'), ('hdc', 'no')],
                         [(d.get('name'), d.get('snapshot'))
                          for d in root.findall('disks/disk')])

    def test_console_appended(self):
        xml = ("<domain><devices><serial type='pty'>"
               "<log file='/i/console.log' append='off'/></serial>"
               "<serial type='file'><source path='/i/s.log' append='off'/>"
               "</serial><disk><source file='/i/disk'/></disk>"
               "</devices></domain>")
        root = ET.fromstring(domain_xml.with_console_appended(xml))
        self.assertEqual('on', root.find('.//log').get('append'))
        self.assertEqual('on', root.find(".//serial[@type='file']/source")
                         .get('append'))
        self.assertIsNone(root.find('.//disk/source').get('append'))

    def test_with_disk_sources(self):
        xml = domain_xml.with_disk_sources(
            fakes.DOMAIN_XML, {'vda': '/new/a', 'vdb': '/new/b'})
        disks = domain_xml.writable_disks(xml)
        self.assertEqual(['/new/a', '/new/b'], [d.path for d in disks])
        root = ET.fromstring(xml)
        self.assertEqual([], root.findall('.//backingStore'))
        # the read-only config drive is untouched
        self.assertEqual(['hdc'], domain_xml.excluded_targets(xml))
        self.assertIn('/srv/i/disk.config', xml)

    def test_with_disk_sources_unknown_target(self):
        e = self.assertRaises(exception.InvalidRequest,
                              domain_xml.with_disk_sources,
                              fakes.DOMAIN_XML, {'vdz': '/x'})
        self.assertIn('no disk vdz', str(e))


class CloneXmlTest(testtools.TestCase):

    def test_with_identity(self):
        xml = fakes.DOMAIN_XML.replace(
            '</uuid>', "</uuid><sysinfo type='smbios'><system><entry "
            "name='uuid'>6f1c7c1e-0000-4000-8000-000000000001</entry>"
            "</system></sysinfo>")
        root = ET.fromstring(domain_xml.with_identity(xml, 'clone', 'u2'))
        self.assertEqual(('clone', 'u2'), (root.findtext('name'),
                                           root.findtext('uuid')))
        self.assertEqual('u2', root.findtext(
            "sysinfo/system/entry[@name='uuid']"))

    def test_with_paths_moved(self):
        xml = domain_xml.with_paths_moved(fakes.DOMAIN_XML,
                                          {'/srv/i/': '/srv/clone/'})
        sources = [s.get('file') for s in
                   ET.fromstring(xml).findall('devices/disk/source')]
        self.assertEqual(['/srv/clone/disk', '/srv/v/volume-1',
                          '/srv/clone/disk.config'], sources)
