"""Reading libvirt domain XML and building snapshot XML.

Pure functions over strings: no libvirt connection is needed, so all of this
is unit-tested directly.
"""

import dataclasses
from xml.etree import ElementTree as ET

from nova_snapext import exception


@dataclasses.dataclass(frozen=True)
class Disk:
    """One writable disk of a domain, as the snapshot sees it."""

    target: str
    path: str
    fmt: str


def _parse(xml):
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise exception.InvalidRequest('invalid domain XML: %s' % exc)


def _is_snapshottable(disk_el):
    # Read-only and shareable disks (config drives, cluster disks) cannot take
    # a private overlay; libvirt itself refuses them, so they stay out.
    return (disk_el.get('device', 'disk') == 'disk'
            and disk_el.find('readonly') is None
            and disk_el.find('shareable') is None)


def writable_disks(domain_xml):
    """Return the disks an instance snapshot must cover, in XML order."""
    root = _parse(domain_xml)
    disks = []
    for disk_el in root.findall('./devices/disk'):
        if not _is_snapshottable(disk_el):
            continue
        target = disk_el.find('target').get('dev')
        if disk_el.get('type') != 'file':
            raise exception.InvalidRequest(
                'disk %s is of type %r; snapext snapshots file-backed disks '
                'only' % (target, disk_el.get('type')))
        source = disk_el.find('source')
        if source is None or not source.get('file'):
            raise exception.InvalidRequest(
                'disk %s has no source file' % target)
        driver = disk_el.find('driver')
        fmt = driver.get('type', 'raw') if driver is not None else 'raw'
        disks.append(Disk(target, source.get('file'), fmt))
    return disks


def excluded_targets(domain_xml):
    """Targets of the disks that snapshots leave alone (cdrom, read-only)."""
    root = _parse(domain_xml)
    return [d.find('target').get('dev')
            for d in root.findall('./devices/disk')
            if not _is_snapshottable(d)]


def domain_identity(domain_xml):
    root = _parse(domain_xml)
    return root.findtext('name'), root.findtext('uuid')


def memory_snapshot_xml(name, memory_file, disk_targets):
    """Build the <domainsnapshot> that saves memory and no disk.

    :param memory_file: where libvirt writes memory and device state
    :param disk_targets: every disk of the domain: libvirt must leave them
        all alone (the disks are captured as qcow2 internal snapshots)
    """
    snap = ET.Element('domainsnapshot')
    ET.SubElement(snap, 'name').text = name
    ET.SubElement(snap, 'memory', snapshot='external', file=memory_file)
    disks_el = ET.SubElement(snap, 'disks')
    for target in disk_targets:
        ET.SubElement(disks_el, 'disk', name=target, snapshot='no')
    return ET.tostring(snap, encoding='unicode')


def with_console_appended(domain_xml):
    """Domain XML whose console and serial logs append instead of truncate.

    Nova writes ``append='off'``: a restore would wipe the console log the
    server had before it.
    """
    root = _parse(domain_xml)
    for element in root.iter():
        if element.tag == 'log' or (element.tag == 'source' and
                                    element.get('append') is not None):
            element.set('append', 'on')
    return ET.tostring(root, encoding='unicode')


def with_disk_sources(domain_xml, sources):
    """Return domain XML whose disks point at other qcow2 files.

    A clone resumes a memory image on its own disks.

    :param sources: {target: path}; every target must exist in the XML
    """
    root = _parse(domain_xml)
    seen = set()
    for disk_el in root.findall('./devices/disk'):
        target = disk_el.find('target').get('dev')
        if target not in sources:
            continue
        seen.add(target)
        disk_el.set('type', 'file')
        source = disk_el.find('source')
        source.attrib.clear()
        source.set('file', sources[target])
        driver = disk_el.find('driver')
        if driver is None:
            driver = ET.SubElement(disk_el, 'driver', name='qemu')
        driver.set('type', 'qcow2')
        # libvirt re-reads the chain from the qcow2 headers; a stale
        # <backingStore> would describe the source's chain.
        for backing in disk_el.findall('backingStore'):
            disk_el.remove(backing)
    missing = set(sources) - seen
    if missing:
        raise exception.InvalidRequest(
            'domain has no disk %s' % ', '.join(sorted(missing)))
    return ET.tostring(root, encoding='unicode')


def with_identity(domain_xml, name, uuid):
    """Domain XML renamed for a new domain (a clone)."""
    root = _parse(domain_xml)
    root.find('name').text = name
    root.find('uuid').text = uuid
    # libvirt insists that an SMBIOS system uuid matches <uuid>.
    for entry in root.findall("./sysinfo/system/entry[@name='uuid']"):
        entry.text = uuid
    return ET.tostring(root, encoding='unicode')


def with_paths_moved(domain_xml, moves):
    """Replace path prefixes in every file/path/dir attribute.

    A clone must not write into its source's files: console logs, serial
    files, agent sockets named after the source.

    :param moves: {old prefix: new prefix}
    """
    root = _parse(domain_xml)
    for element in root.iter():
        for attr in ('file', 'path', 'dir'):
            value = element.get(attr)
            if not value:
                continue
            for old, new in moves.items():
                if value.startswith(old):
                    element.set(attr, new + value[len(old):])
                    break
    return ET.tostring(root, encoding='unicode')
