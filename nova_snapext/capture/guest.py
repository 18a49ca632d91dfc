"""One libvirt domain and every libvirt verb the engine uses on it.

The engine's operations (take, restore, delete, recovery) speak to a
:class:`Guest` rather than to a virDomain, so that each libvirt flag and
quirk is written down once, here, in the spirit of Nova's
``nova/virt/libvirt/guest.py``.
"""

import contextlib
import json

import libvirt
import libvirt_qemu
from oslo_log import log as logging

from nova_snapext.capture import domain_xml
from nova_snapext.capture import host_errors
from nova_snapext import exception

LOG = logging.getLogger(__name__)


def connect(uri):
    """The libvirt connection at ``uri``; HypervisorUnavailable if none.

    Every other libvirt failure reaches the engine's callers as a snapext
    error through host_errors.translated.
    """
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise exception.HypervisorUnavailable(
            'cannot connect to libvirt at %s: %s'
            % (uri, host_errors.first_line(exc))) from None


class Guest(object):
    """A thin wrapper over one virDomain."""

    def __init__(self, dom):
        self.dom = dom

    @property
    def name(self):
        return self.dom.name()

    @property
    def uuid(self):
        return self.dom.UUIDString()

    def is_active(self):
        return bool(self.dom.isActive())

    def state(self):
        return self.dom.state()

    def is_paused(self):
        return self.dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED

    def xml(self, secure=False):
        return self.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE if secure
                                else 0)

    def disks(self):
        """The writable disks (domain_xml.Disk) of the running definition."""
        return domain_xml.writable_disks(self.xml())

    # -- QMP passthrough --

    def qmp(self, command, **arguments):
        """One QMP command; its ``return`` value.

        NOTE: libvirt marks a domain that received a monitor command as
        tainted ``custom-monitor``.  libvirt 9.0 has no API for qcow2
        internal snapshots of selected disks of a running domain (its own
        internal snapshots use ``savevm`` on every disk, with the guest
        paused for the whole memory save, and refuse NO_METADATA), so
        the one QMP command used here is ``transaction`` of
        ``blockdev-snapshot-internal-sync`` and its delete counterpart,
        which change no state libvirt tracks: the disks keep their files,
        formats and chains.
        """
        cmd = {'execute': command}
        if arguments:
            cmd['arguments'] = arguments
        try:
            reply = libvirt_qemu.qemuMonitorCommand(self.dom, json.dumps(cmd),
                                                    0)
        except libvirt.libvirtError as exc:
            raise exception.SnapextError(
                'QMP %s on %s failed: %s' % (command, self.name, exc))
        data = json.loads(reply)
        if 'error' in data:
            raise exception.SnapextError(
                'QMP %s on %s failed: %s' % (command, self.name,
                                             data['error'].get('desc')))
        return data.get('return')

    def format_nodes(self, paths):
        """{target: QEMU node name of the disk's active qcow2 layer}.

        :param paths: {target: the disk's active file}

        NOTE: with -blockdev (libvirt >= 7) QEMU has no drive names; the
        active layer of a disk is the writable qcow2 node whose file is the
        disk's source.  Backing layers are read-only nodes of other files.
        """
        by_file = {}
        for node in self.qmp('query-named-block-nodes'):
            if node.get('drv') == 'qcow2' and not node.get('ro'):
                by_file[node.get('file')] = node['node-name']
        nodes = {}
        for target, path in paths.items():
            if path not in by_file:
                raise exception.SnapextError(
                    'QEMU of %s has no writable qcow2 node for %s (%s)'
                    % (self.name, target, path))
            nodes[target] = by_file[path]
        return nodes

    def internal_snapshots(self, paths):
        """{file: internal snapshot names} of the active files ``paths``.

        NOTE: QEMU has these files open for writing; its view of their
        snapshot tables is the current one, which ``qemu-img -U`` may read
        half-written.  A file this QEMU does not write is left out.
        """
        held = {}
        for node in self.qmp('query-named-block-nodes'):
            if (node.get('drv') == 'qcow2' and not node.get('ro') and
                    node.get('file') in paths):
                held[node['file']] = {
                    s['name'] for s in
                    node.get('image', {}).get('snapshots', [])}
        return held

    def snapshot_internal(self, nodes, name):
        """Internal snapshot ``name`` of every node, at one instant.

        QEMU drains all I/O of the nodes for a ``transaction`` and either
        creates every snapshot or none.
        """
        self.qmp('transaction', actions=[
            {'type': 'blockdev-snapshot-internal-sync',
             'data': {'device': node, 'name': name}}
            for node in nodes.values()])

    def delete_internal(self, node, name):
        self.qmp('blockdev-snapshot-delete-internal-sync', device=node,
                 name=name)

    # -- run state --

    @contextlib.contextmanager
    def suspended(self):
        """The vCPUs stopped for the block; resumed unless they were already.

        A guest the user paused stays paused.
        """
        if self.is_paused():
            yield
            return
        self.dom.suspend()
        try:
            yield
        finally:
            self.dom.resume()

    def save_memory(self, path):
        """Write memory and device state of the paused guest to ``path``.

        The file is a libvirt save image (header, domain XML, QEMU's
        migration stream), restorable with :meth:`Host.restore`.

        NOTE: this is libvirt's memory-only external snapshot: memory
        ``external``, every disk ``no``.  Without LIVE, libvirt saves with
        the vCPUs stopped and leaves the domain running afterwards (virDomain
        Save would stop it).  NO_METADATA: the manifest is the record, and
        libvirt snapshot metadata would block Nova's undefine.
        """
        snap = domain_xml.memory_snapshot_xml(
            'snapext-memory', path, [d.target for d in self.disks()] +
            domain_xml.excluded_targets(self.xml()))
        self.dom.snapshotCreateXML(
            snap, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)

    def destroy(self):
        if self.is_active():
            self.dom.destroy()

    def create(self):
        self.dom.create()

    def job_active(self):
        return (self.is_active() and
                self.dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE)


class Host(object):
    """The libvirt connection's verbs that are not about one domain."""

    def __init__(self, conn):
        self.conn = conn

    def saved_xml(self, memory_file):
        return self.conn.saveImageGetXMLDesc(
            memory_file, libvirt.VIR_DOMAIN_SAVE_IMAGE_XML_SECURE)

    def restore(self, memory_file, xml=None, paused=False):
        """Start a domain from a save image, with ``xml`` if given.

        NOTE: libvirt only accepts an ``xml`` ABI-compatible with the one
        in the image, and one with the same UUID: a clone's new UUID needs a
        copy of the image with a new header (save_image.copy_with_xml).
        """
        self.conn.restoreFlags(memory_file, xml,
                               libvirt.VIR_DOMAIN_SAVE_PAUSED if paused
                               else libvirt.VIR_DOMAIN_SAVE_RUNNING)
