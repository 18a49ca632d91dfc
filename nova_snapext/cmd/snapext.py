"""The ``snapext`` operator command: take, list, verify, revert, delete."""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid

import libvirt
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import uuidutils

from nova_snapext.capture import engine as engine_mod
from nova_snapext.capture import guest as capture_guest
from nova_snapext import conf as snapext_conf
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod

LOG = logging.getLogger(__name__)


def _engine(conf, progress=None):
    return engine_mod.Engine(conf, progress=progress)


def cmd_take(conf, args):
    record = _engine(conf).take(args.domain, memory=not args.disk_only,
                                quiesce_policy=args.quiesce)
    print(json.dumps({k: record[k] for k in
                      ('id', 'parent_id', 'kind', 'quiesce', 'timings_ms')},
                     indent=2))


def cmd_list(conf, args):
    print(json.dumps(_engine(conf).tree(args.domain), indent=2))


def cmd_show(conf, args):
    try:
        record = _engine(conf).store.get(args.snapshot)
    except exception.BrokenRecord as exc:
        # It exists, and cannot be used: say so as the list does.
        record = {'id': exc.snapshot_id, 'instance_uuid': exc.instance_uuid,
                  'state': manifest_mod.STATE_BROKEN, 'reason': exc.reason}
    print(json.dumps(record, indent=2))


def cmd_revert(conf, args):
    _engine(conf).revert(args.snapshot)
    print('reverted to %s' % args.snapshot)


def cmd_verify(conf, args):
    """Check the memory image and every disk state; 1 on a mismatch."""
    report = _engine(conf).verify(args.snapshot)
    print(json.dumps(report, indent=2))
    if report['result'] == 'failed':
        return _fail('snapshot %s is damaged: %s'
                     % (args.snapshot, report['detail']))
    if report['result'] == 'incomplete':
        print('snapext: warning: snapshot %s verified in part: %s'
              % (args.snapshot, report['detail']), file=sys.stderr)
    return 0


def cmd_export(conf, args):
    """Write a snapshot's bundle to FILE (``-``: stdout), atomically."""
    engine = _engine(conf)
    if args.file == '-':
        index = engine.export(args.snapshot, sys.stdout.buffer, args.since)
    else:
        part = args.file + '.part'
        try:
            with open(part, 'wb') as f:
                index = engine.export(args.snapshot, f, args.since)
                f.flush()
                os.fsync(f.fileno())
            os.rename(part, args.file)
        except BaseException:
            if os.path.exists(part):
                os.unlink(part)
            raise
    print(json.dumps({'snapshot': index['snapshot_id'],
                      'since': index['since'],
                      'members': {m['name']: m['bytes']
                                  for m in index['members']}},
                     indent=2), file=sys.stderr if args.file == '-'
          else sys.stdout)


def cmd_import(conf, args):
    """Verify a bundle (FILE, ``-``: stdin) and add its snapshot."""
    engine = _engine(conf)
    if args.file == '-':
        record = engine.import_bundle(sys.stdin.buffer)
    else:
        with open(args.file, 'rb') as f:
            record = engine.import_bundle(f)
    print(json.dumps({'snapshot': record['id'],
                      'instance_uuid': record['instance_uuid'],
                      'since': record['imported']['since'],
                      'disks': {d['target']: d['path']
                                for d in record['disks']}}, indent=2))


def cmd_delete(conf, args):
    engine = _engine(conf)
    if args.broken_in:
        # A broken copy can share its id with a good record elsewhere.
        ident = args.broken_in
        instance_uuid = (ident if uuidutils.is_uuid_like(ident)
                         else engine.domain(ident).UUIDString())
        result = engine.delete_broken(instance_uuid, args.snapshot)
    else:
        result = engine.delete(args.snapshot)
    print('deleted %s%s' % (args.snapshot,
                            ' (a broken record)' if result['broken'] else ''))
    for state in result['kept']:
        print('kept internal snapshot %s: the broken record cannot tell '
              'whether Cinder owns it' % state)


def cmd_demo(conf, args):
    """Boot the real guest, snapshot, change it, revert, prove it inside."""
    from nova_snapext.testing import guest as guest_mod

    workdir = tempfile.mkdtemp(prefix='snapext-demo.', dir=args.workdir)
    conf.set_override('file_store_path', os.path.join(workdir, 'store'),
                      'snapext')
    conf.set_override('lock_path', os.path.join(workdir, 'locks'), 'snapext')
    conn = capture_guest.connect(conf.snapext.libvirt_uri)
    # The boot polls the guest agent until it answers; libvirt would print
    # every "not connected yet" to stderr.
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    guest = guest_mod.Guest(conn, 'snapext-demo-%s' % uuid.uuid4().hex[:6],
                            os.path.join(workdir, 'guest'),
                            memory_mib=args.memory_mib)
    clone = guest_mod.Guest(conn, guest.name + '-clone',
                            os.path.join(workdir, 'clone'))
    say = print
    try:
        say('== building the guest image and booting %s (TCG)' % guest.name)
        guest.define()
        boot_s = guest.boot()
        say('   guest agent answered after %.1f s' % boot_s)
        before = guest.write_file('/mnt/vdb/before.bin', mib=4)
        say('   wrote /mnt/vdb/before.bin, sha256 %s' % before[:16])

        say('== full snapshot: memory + CPU state + vda, vdb, vdc, quiesced')
        seen = {}

        def watch(stage, **kw):
            if stage == 'frozen':
                seen['freeze_status'] = guest.freeze_status()
                seen['frozen_at'] = time.monotonic()
            elif stage == 'captured':
                seen['tick'] = guest.last_tick()[0]
                seen['captured_at'] = time.monotonic()

        watcher = guest_mod.TickWatcher(guest)
        watcher.start()
        engine = _engine(conf, progress=watch)
        requested = time.monotonic()
        record = engine.take(guest.name, quiesce_policy='preferred')
        guest.wait_for_tick(after=seen['tick'] + 5)
        watcher.stop()
        say('   snapshot %s' % record['id'])
        say('   agent status during capture: %s; after: %s'
            % (seen.get('freeze_status'), guest.freeze_status()))
        say('   frozen window %s ms; request to guest resumed %.0f ms; '
            'largest tick gap %s ms (ticks every 100 ms)'
            % (record['quiesce']['frozen_ms'],
               (seen['captured_at'] - requested) * 1000,
               watcher.largest_gap_ms(since=requested)))
        say('   memory image %.1f MiB; counter at snapshot: %d'
            % (record['memory']['bytes'] / 2 ** 20, seen['tick']))

        say('== changing the guest')
        guest.wait_for_tick(after=seen['tick'] + 30)
        after = guest.write_file('/mnt/vdb/after.bin', mib=4)
        guest.check_sh('echo changed >> /mnt/vdb/before.bin; sync')
        say('   counter now %d; wrote /mnt/vdb/after.bin; changed '
            'before.bin' % guest.last_tick()[0])

        say("== hard reboot, as Nova's reboot --hard and stop/start do it")
        guest.dom.destroy()
        guest.dom.create()
        guest.wait_for_agent()
        kept = guest.sha256('/mnt/vdb/after.bin') == after
        say('   the disks are the same files; after.bin %s'
            % ('kept' if kept else 'LOST'))
        # The rebooted guest counts from 0: let it pass the snapshot's tick
        # so that the revert shows as the counter dropping back.
        guest.wait_for_tick(after=seen['tick'] + 10)

        say('== revert to %s' % record['id'])
        offset = guest.console_size()
        started = time.monotonic()
        engine.revert(record['id'])
        reverted_s = time.monotonic() - started
        resumed = guest.resumed_tick(offset)
        say('   revert took %.1f s' % reverted_s)
        say('== proof from inside the guest')
        say('   counter resumed at %s (snapshot at %d)'
            % (resumed, seen['tick']))
        say('   after.bin present: %s' % (
            guest.sha256('/mnt/vdb/after.bin') is not None))
        now = guest.sha256('/mnt/vdb/before.bin')
        say('   before.bin sha256 %s (%s)' % (
            now[:16], 'unchanged' if now == before else 'DIFFERENT'))
        ok = (kept and resumed is not None
              and abs(resumed - seen['tick'] - 1) <= 2
              and now == before
              and guest.sha256('/mnt/vdb/after.bin') is None)

        say("== fast clone: a new domain resumes the snapshot's memory")
        os.makedirs(clone.workdir)
        sources = {}
        for target in guest.disk_targets:
            sources[target] = os.path.join(clone.workdir, target + '.qcow2')
            engine.export_disk(record['id'], target, sources[target])
        started = time.monotonic()
        clone.dom = engine.clone(record['id'], clone.name,
                                 str(uuid.uuid4()), sources,
                                 path_moves={guest.workdir: clone.workdir})
        clone_s = time.monotonic() - started
        first = clone.wait_for_tick() and clone.ticks()[0][0]
        cloned = clone.sha256('/mnt/vdb/before.bin')
        say('   %s running after %.1f s (cold boot: %.1f s); its counter '
            'started at %d; before.bin %s' % (
                clone.name, clone_s, boot_s, first,
                'matches' if cloned == before else 'DIFFERS'))
        ok = ok and abs(first - seen['tick'] - 1) <= 2 and cloned == before
        say('   snapshot tree: %s' % json.dumps(engine.tree(guest.name)))
        say('== demo %s' % ('PASSED' if ok else 'FAILED'))
        return 0 if ok else 1
    finally:
        if not args.keep:
            clone.destroy()
            guest.destroy()
            shutil.rmtree(workdir, ignore_errors=True)


def build_parser():
    parser = argparse.ArgumentParser(prog='snapext', description=__doc__)
    parser.add_argument('--config-file', action='append', default=[])
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('take', help='snapshot a domain')
    p.add_argument('domain', help='libvirt domain name or UUID')
    p.add_argument('--disk-only', action='store_true')
    p.add_argument('--quiesce', choices=('required', 'preferred', 'off'))
    p.set_defaults(func=cmd_take)

    p = sub.add_parser('list', help="a domain's snapshot tree")
    p.add_argument('domain')
    p.set_defaults(func=cmd_list)

    for name, func, text in (('show', cmd_show, 'print a snapshot record'),
                             ('revert', cmd_revert, 'revert to a snapshot'),
                             ('verify', cmd_verify,
                              'check a snapshot\'s memory image and disk '
                              'states against their digests'),
                             ('delete', cmd_delete, 'delete a snapshot')):
        p = sub.add_parser(name, help=text)
        p.add_argument('snapshot')
        p.set_defaults(func=func)
    p.add_argument('--broken-in', metavar='DOMAIN',
                   help='delete the broken record SNAPSHOT among the '
                        'records of DOMAIN (name or UUID), e.g. a copy of '
                        'another instance\'s record')

    p = sub.add_parser('export', help="write a snapshot's bundle (memory, "
                       'disks, record) to a file')
    p.add_argument('snapshot')
    p.add_argument('file', help='the bundle to write; - for stdout')
    p.add_argument('--since', metavar='ANCESTOR',
                   help='disks hold only what changed since this ancestor '
                        '(import its bundle first)')
    p.set_defaults(func=cmd_export)

    p = sub.add_parser('import', help='verify a bundle and add its snapshot '
                       'to the store')
    p.add_argument('file', help='the bundle to read; - for stdin')
    p.set_defaults(func=cmd_import)

    p = sub.add_parser('demo', help='snapshot and revert the real test guest')
    p.add_argument('--workdir', default='/var/tmp')
    p.add_argument('--memory-mib', type=int, default=256)
    p.add_argument('--keep', action='store_true',
                   help='leave the demo guest and its files behind')
    p.set_defaults(func=cmd_demo)
    return parser


def _fail(message):
    print('snapext: error: %s' % message, file=sys.stderr)
    return 1


def main(argv=None):
    args = build_parser().parse_args(argv)
    conf = cfg.ConfigOpts()
    snapext_conf.register_opts(conf)
    logging.register_options(conf)
    # stdout carries the command's answer (JSON); progress goes to stderr.
    conf.set_default('use_stderr', True)
    try:
        conf([], project='snapext', default_config_files=args.config_file)
    except cfg.Error as exc:
        return _fail('configuration: %s' % exc)
    logging.setup(conf, 'snapext')
    try:
        return args.func(conf, args) or 0
    except exception.SnapextError as exc:
        return _fail(exc)
    except Exception as exc:
        # The engine maps every host failure to a snapext error; this is a
        # bug, whose traceback goes to the log at debug level only.
        LOG.debug('unexpected error', exc_info=True)
        return _fail('unexpected %s: %s ([DEFAULT] debug = true logs the '
                     'traceback)' % (type(exc).__name__, exc))


if __name__ == '__main__':
    sys.exit(main())
