"""Fitting a snapshot's saved domain to the instance Nova wants to boot.

A fast clone resumes the snapshot's memory under the XML the snapshot was
saved with (the device ABI must not change), with the new instance's
identity, disks, metadata, console files and interface addresses taken from
the XML Nova generated for it.  Pure functions over XML strings.
"""

from xml.etree import ElementTree as ET

from nova_snapext.capture import domain_xml
from nova_snapext import exception


def _sizes(root):
    return (root.findtext('memory'), root.findtext('vcpu'))


def disk_sources(saved_xml, nova_xml):
    """{target: Nova's file} when the two domains have the same shape.

    :raises InvalidRequest: a different flavor or disk layout; the caller
        boots cold instead
    """
    saved, nova = ET.fromstring(saved_xml), ET.fromstring(nova_xml)
    if _sizes(saved) != _sizes(nova):
        raise exception.InvalidRequest(
            'the snapshot was taken with memory/vcpus %s, the new instance '
            'has %s' % (_sizes(saved), _sizes(nova)))
    saved_targets = {d.target for d in domain_xml.writable_disks(saved_xml)}
    sources = {d.target: d.path for d in domain_xml.writable_disks(nova_xml)}
    if saved_targets != set(sources):
        raise exception.InvalidRequest(
            'the snapshot has disks %s, the new instance %s'
            % (sorted(saved_targets), sorted(sources)))
    return sources


def adopt(nova_xml):
    """An xml_edit callback giving a clone Nova's metadata and NICs."""
    nova = ET.fromstring(nova_xml)

    def edit(xml):
        root = ET.fromstring(xml)
        old = root.find('metadata')
        if old is not None:
            root.remove(old)
        new = nova.find('metadata')
        if new is not None:
            root.insert(2, new)
        ours = root.findall('./devices/interface')
        theirs = nova.findall('./devices/interface')
        for iface, wanted in zip(ours, theirs):
            for tag in ('mac', 'source', 'target'):
                old_el, new_el = iface.find(tag), wanted.find(tag)
                if old_el is not None:
                    iface.remove(old_el)
                if new_el is not None:
                    iface.append(new_el)
        return ET.tostring(root, encoding='unicode')

    return edit
