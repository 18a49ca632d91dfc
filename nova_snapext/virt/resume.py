"""Fitting a snapshot's saved domain to the instance Nova wants to boot.

A fast clone resumes the snapshot's memory under the XML the snapshot was
saved with (the device ABI must not change), with the new instance's
identity, disks, metadata, console files and interface addresses taken from
the XML Nova generated for it.  Pure functions over XML strings.
"""

import os
from xml.etree import ElementTree as ET

from nova import block_device
from nova import objects

from nova_snapext.capture import domain_xml
from nova_snapext import exception
from nova_snapext.virt import policy


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


def source_directory(saved_xml, record, instances_path):
    """The instance directory the snapshot's domain ran from.

    Where its image-backed root disk was at capture, read from the memory
    image's own XML: for a snapshot imported from another host or cloud,
    whose instances directory may be elsewhere, as for one taken here.  A
    volume-backed root lives on its volume's share, not in the instance
    directory, which is then this host's ``instances_path``/<uuid> (such
    snapshots are not imported: they always come from this cloud).
    """
    roots = {d['target']: d for d in record['disks'] if d['role'] == 'root'}
    if any(d.get('volume_id') for d in roots.values()):
        return os.path.join(instances_path, record['instance_uuid'])
    for disk in domain_xml.writable_disks(saved_xml):
        if disk.target in roots:
            return os.path.dirname(disk.path)
    raise exception.InvalidRequest('snapshot %s has no root disk to resume '
                                   'from' % record['id'])


# Per device kind, the children that name host-side resources of one
# instance (ports, sockets, log files): a clone takes Nova's, in order.
_HOST_SIDE = {
    'interface': ('mac', 'source', 'target'),
    'channel': ('source',),
    'serial': ('source', 'log'),
    'console': ('source', 'log'),
}


# Files under <os> the domain reads from the host: Nova fetched the new
# instance's own copies (kernel, ramdisk) into its directory.
_OS_FILES = ('kernel', 'initrd', 'dtb', 'loader', 'nvram')


def _adopt_os_files(root, nova):
    saved_os, nova_os = root.find('os'), nova.find('os')
    for tag in _OS_FILES:
        old = saved_os.find(tag) if saved_os is not None else None
        new = nova_os.find(tag) if nova_os is not None else None
        if old is None:
            continue
        if new is None:
            raise exception.InvalidRequest(
                'the snapshot was booted with a %s, the new instance has '
                'none' % tag)
        old.text = new.text
        old.attrib.clear()
        old.attrib.update(new.attrib)


def foreign_paths(xml, directory):
    """Paths in a domain XML, in attributes or text, under ``directory``."""
    prefix = directory.rstrip('/') + '/'
    found = []
    for element in ET.fromstring(xml).iter():
        values = list(element.attrib.values()) + [element.text or '']
        found.extend(v.strip() for v in values
                     if v.strip().startswith(prefix))
    return found


def adopt(nova_xml, source_dir=None):
    """An xml_edit callback giving a clone Nova's metadata and resources.

    Nova's <metadata> and SMBIOS <sysinfo> name the new instance; the
    device children in _HOST_SIDE name its ports, sockets and logs; the
    files under <os> (kernel, initrd, ...) are the new instance's own.

    :param source_dir: the source instance's directory: the clone must not
        name any file in it, so that deleting the source server cannot
        break the clone
    :raises InvalidRequest: (from the callback) the clone would still use
        one of the source's files; the caller boots cold
    """
    nova = ET.fromstring(nova_xml)

    def edit(xml):
        root = ET.fromstring(xml)
        _adopt_os_files(root, nova)
        for tag in ('metadata', 'sysinfo'):
            old, new = root.find(tag), nova.find(tag)
            if old is not None:
                root.remove(old)
            if new is not None:
                root.append(new)
        for kind, children in _HOST_SIDE.items():
            ours = root.findall('./devices/' + kind)
            theirs = nova.findall('./devices/' + kind)
            for device, wanted in zip(ours, theirs):
                for tag in children:
                    old_el, new_el = device.find(tag), wanted.find(tag)
                    if old_el is not None:
                        device.remove(old_el)
                    if new_el is not None:
                        device.append(new_el)
        xml = ET.tostring(root, encoding='unicode')
        if source_dir:
            left = foreign_paths(xml, source_dir)
            if left:
                raise exception.InvalidRequest(
                    'the clone would still use the source instance\'s %s'
                    % ', '.join(sorted(set(left))))
        return xml

    return edit


def check_volumes(context, instance, record):
    """Refuse (InvalidRequest) unless the volumes hold the record's state.

    A record without volumes (an image-backed server's) needs no look at
    the block device mappings.
    """
    if any(d.get('volume_id') for d in record.get('disks') or ()):
        policy.check_volume_sources(record, volume_sources(context,
                                                           instance))


def volume_sources(context, instance):
    """{target: Cinder snapshot id} of the instance's volumes (from BDMs).

    A volume Nova created from an image's snapshot mapping keeps that
    snapshot id in its block device mapping; others map to None.
    """
    bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
        context, instance.uuid)
    return {block_device.strip_dev(b.device_name): b.snapshot_id
            for b in bdms if b.is_volume and b.device_name}
