"""openstack server snapshot list | show | revert | delete | export |
import."""

import os
import sys
import time

from cliff import columns
from osc_lib.command import command
from osc_lib import exceptions
from osc_lib import utils

from nova_snapext import bundle

_LIST_COLUMNS = ('ID', 'Kind', 'Created At', 'Parent', 'Current', 'State',
                 'Reason')
_EXPORT_FIELDS = ('snapshot_id', 'since', 'file', 'bytes', 'members',
                  'image_id')
_IMPORT_FIELDS = ('snapshot_id', 'image_id')
# Glance's image states after which an export's image never becomes active.
_IMAGE_FAILED = ('killed', 'deleted', 'pending_delete', 'deactivated')
_SHOW_FIELDS = ('id', 'server_id', 'parent_id', 'created_at', 'kind',
                'state', 'reason', 'quiesce', 'memory', 'disks', 'image_id',
                'verification')


def _find_server(app, name_or_id):
    server = app.client_manager.compute.find_server(name_or_id,
                                                    ignore_missing=False)
    return server.id


def _flatten(nodes, parent=None):
    for node in nodes:
        # The reason says why a snapshot is unavailable or its record
        # broken.
        yield (node['id'], node['kind'], node['created_at'], parent,
               node['current'], node.get('state'), node.get('reason'))
        yield from _flatten(node['children'], node['id'])


class QuiesceColumn(columns.FormattableColumn):
    """``frozen (548.1 ms)`` in a table; the dict in JSON and YAML."""

    def human_readable(self):
        quiesce = self._value or {}
        text = quiesce.get('outcome', '')
        if quiesce.get('frozen_ms') is not None:
            text += ' (%s ms)' % quiesce['frozen_ms']
        return text

    def machine_readable(self):
        return self._value


class DisksColumn(columns.FormattableColumn):
    """One line per disk in a table; the list in JSON and YAML."""

    def human_readable(self):
        return '\n'.join(
            '%s %s %s%s' % (d['target'], d['role'], d.get('format') or '',
                            ' volume %s' % d['volume_id']
                            if d.get('volume_id') else '')
            for d in self._value or [])

    def machine_readable(self):
        return self._value


class MemoryColumn(columns.FormattableColumn):
    """The memory image's size in bytes (empty for a disks-only one)."""

    def human_readable(self):
        return '' if not self._value else str(self._value['bytes'])

    def machine_readable(self):
        return self._value


class VerificationColumn(columns.FormattableColumn):
    """``ok at 2026-…`` in a table; the dict in JSON and YAML."""

    def human_readable(self):
        checked = self._value
        if not checked:
            return 'never checked'
        return '%s at %s' % (checked.get('result'), checked.get('checked_at'))

    def machine_readable(self):
        return self._value


class _Waiter(object):
    """One progress line on stderr, rewritten in place."""

    def __init__(self, what, stream=None, interval=1.0, timeout=600):
        self.what = what
        self.stream = stream or sys.stderr
        self.interval = interval
        self.timeout = timeout
        self.started = time.monotonic()

    def line(self, state):
        self.stream.write('\r%s: %s (%.0f s)' % (
            self.what, state, time.monotonic() - self.started))
        self.stream.flush()

    def until(self, poll):
        """Call ``poll()`` -> (done, state) until done; raise on timeout."""
        while True:
            done, state = poll()
            self.line(state)
            if done:
                self.stream.write('\n')
                return state
            if time.monotonic() - self.started > self.timeout:
                self.stream.write('\n')
                raise exceptions.CommandError(
                    '%s: still %s after %d s' % (self.what, state,
                                                 self.timeout))
            time.sleep(self.interval)


def _server_settled(compute, server_id):
    def poll():
        server = compute.get_server(server_id)
        task = server.task_state
        if server.status == 'ERROR':
            raise exceptions.CommandError('server %s is in ERROR'
                                          % server_id)
        return task is None, '%s%s' % (server.status,
                                       '/' + task if task else '')
    return poll


class ListSnapshot(command.Lister):
    """List the snapshot tree of a server (parents before children)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('server', metavar='<server>',
                            help='Server (name or ID)')
        return parser

    def take_action(self, parsed_args):
        server_id = _find_server(self.app, parsed_args.server)
        tree = self.app.client_manager.instance_snapshot.tree(server_id)
        return _LIST_COLUMNS, list(_flatten(tree['snapshots']))


class ShowSnapshot(command.ShowOne):
    """Show one snapshot's record."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('snapshot', metavar='<snapshot>',
                            help='Snapshot ID')
        return parser

    def take_action(self, parsed_args):
        snap = self.app.client_manager.instance_snapshot.show(
            parsed_args.snapshot)
        formatters = {'quiesce': QuiesceColumn, 'disks': DisksColumn,
                      'memory': MemoryColumn,
                      'verification': VerificationColumn}
        return _SHOW_FIELDS, utils.get_dict_properties(
            snap, _SHOW_FIELDS, formatters=formatters)


class RevertSnapshot(command.Command):
    """Revert a server to one of its snapshots, memory included."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('server', metavar='<server>',
                            help='Server (name or ID)')
        parser.add_argument('snapshot', metavar='<snapshot>',
                            help='Snapshot ID')
        parser.add_argument('--wait', action='store_true',
                            help='Wait until the server runs from the '
                                 'snapshot, with a progress line')
        return parser

    def take_action(self, parsed_args):
        compute = self.app.client_manager.compute
        server_id = _find_server(self.app, parsed_args.server)
        client = self.app.client_manager.instance_snapshot
        waiter = _Waiter('revert %s to %s' % (server_id,
                                              parsed_args.snapshot))
        if parsed_args.wait:
            waiter.line('reverting')
        client.revert(server_id, parsed_args.snapshot)
        if parsed_args.wait:
            waiter.until(_server_settled(compute, server_id))


class DeleteSnapshot(command.Command):
    """Delete snapshots; their children are kept (merged)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('snapshots', metavar='<snapshot>', nargs='+',
                            help='Snapshot ID(s)')
        parser.add_argument('--wait', action='store_true',
                            help='Wait until each snapshot is gone, with a '
                                 'progress line')
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.instance_snapshot
        failed = []
        for snapshot_id in parsed_args.snapshots:
            try:
                waiter = _Waiter('delete %s' % snapshot_id)
                if parsed_args.wait:
                    waiter.line('deleting')
                client.delete(snapshot_id)
                if parsed_args.wait:
                    waiter.until(self._gone(client, snapshot_id))
            except exceptions.ClientException as exc:
                failed.append('%s: %s' % (snapshot_id, exc))
        if failed:
            raise exceptions.CommandError(
                'Failed to delete %d of %d snapshots:\n%s'
                % (len(failed), len(parsed_args.snapshots),
                   '\n'.join(failed)))

    @staticmethod
    def _gone(client, snapshot_id):
        def poll():
            try:
                client.show(snapshot_id)
            except exceptions.NotFound:
                return True, 'deleted'
            return False, 'deleting'
        return poll


def _image_active(client, image_id, what):
    def poll():
        status = client.get_image(image_id)['status']
        if status in _IMAGE_FAILED:
            raise exceptions.CommandError(
                '%s failed: its image %s is %s (the compute host\'s log '
                'says why)' % (what, image_id, status))
        return status == 'active', status
    return poll


def _download_bundle(client, image_id, path):
    """The image's bundle in ``path``, atomically, once verified: index."""
    part = path + '.part'
    try:
        with open(part, 'wb') as f:
            client.download_image(image_id, f)
            f.flush()
            os.fsync(f.fileno())
        with open(part, 'rb') as f:
            index = _verified(f, 'the downloaded bundle')
        os.rename(part, path)
    except BaseException:
        if os.path.exists(part):
            os.unlink(part)
        raise
    return index


def _verified(fileobj, what):
    try:
        return bundle.verify(fileobj)
    except bundle.BundleError as exc:
        raise exceptions.CommandError('%s is not a valid bundle: %s'
                                      % (what, exc))


def _delete_image(client, image_id):
    """Delete a temporary image; a failure is a warning, not an error."""
    try:
        client.delete_image(image_id)
    except exceptions.ClientException as exc:
        sys.stderr.write('warning: image %s was not deleted: %s\n'
                         % (image_id, exc))


class ExportSnapshot(command.ShowOne):
    """Export a snapshot with its metadata to a bundle file."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('snapshot', metavar='<snapshot>',
                            help='Snapshot ID')
        parser.add_argument('file', metavar='<file>',
                            help='The bundle file to write (replaced once '
                                 'the whole bundle is downloaded and '
                                 'verified)')
        parser.add_argument('--since', metavar='<ancestor>',
                            help='Export only what changed since this '
                                 'ancestor (whose bundle the importing '
                                 'cloud must have imported first)')
        parser.add_argument('--keep-image', action='store_true',
                            help='Keep the Glance image the bundle is '
                                 'written to (deleted by default)')
        parser.add_argument('--timeout', type=int, default=3600,
                            metavar='<seconds>',
                            help='How long to wait for the export '
                                 '(default 3600)')
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.instance_snapshot
        snapshot_id = parsed_args.snapshot
        server_id = client.show(snapshot_id)['server_id']
        image_id = client.export(server_id, snapshot_id, parsed_args.since)
        what = 'export of %s' % snapshot_id
        try:
            _Waiter(what, timeout=parsed_args.timeout).until(
                _image_active(client, image_id, what))
            index = _download_bundle(client, image_id, parsed_args.file)
        finally:
            if not parsed_args.keep_image:
                _delete_image(client, image_id)
        members = {m['name']: m['bytes'] for m in index['members']}
        return _EXPORT_FIELDS, (
            index['snapshot_id'], index['since'], parsed_args.file,
            os.path.getsize(parsed_args.file), members,
            image_id if parsed_args.keep_image else None)


class ImportSnapshot(command.ShowOne):
    """Import a bundle: a snapshot and a bootable image of it."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('file', metavar='<file>', nargs='?',
                            help='The bundle file (verified here, then '
                                 'sent to nova-api as the request body, '
                                 'which stages it in a hidden image it '
                                 'deletes; instance-snapshot 1.3)')
        parser.add_argument('--image', metavar='<image>',
                            help='A Glance image holding the bundle '
                                 '(name or ID), instead of a file')
        parser.add_argument('--name', metavar='<name>', required=True,
                            help='Name of the bootable image to make')
        parser.add_argument('--server', metavar='<server>',
                            help='Import on this server\'s host (name or '
                                 'ID), e.g. to revert it to the imported '
                                 'snapshot')
        return parser

    def take_action(self, parsed_args):
        if bool(parsed_args.file) == bool(parsed_args.image):
            raise exceptions.CommandError(
                'give a bundle <file> or --image <image>, one of them')
        client = self.app.client_manager.instance_snapshot
        server_id = (_find_server(self.app, parsed_args.server)
                     if parsed_args.server else None)
        if parsed_args.file:
            result = self._upload(client, parsed_args.file,
                                  parsed_args.name, server_id)
        else:
            image_id = self.app.client_manager.image.find_image(
                parsed_args.image, ignore_missing=False).id
            result = client.import_bundle(image_id, parsed_args.name,
                                          server_id)
        return _IMPORT_FIELDS, (result['snapshot_id'], result['image_id'])

    @staticmethod
    def _upload(client, path, name, server_id):
        # Verified here first: a damaged file is refused before a byte of
        # it travels.
        with open(path, 'rb') as f:
            _verified(f, path)
        sys.stderr.write('uploading %s (%d bytes)\n'
                         % (path, os.path.getsize(path)))
        with open(path, 'rb') as f:
            return client.import_upload(f, name, server_id)
