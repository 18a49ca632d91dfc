"""openstack server snapshot list | show | revert | delete."""

import sys
import time

from cliff import columns
from osc_lib.command import command
from osc_lib import exceptions
from osc_lib import utils

_LIST_COLUMNS = ('ID', 'Kind', 'Created At', 'Parent', 'Current', 'State',
                 'Reason')
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
