"""``python -m bench``: run every figure of issue 5 in one run."""

import argparse
import datetime
import os
import platform
import sys
import time

from bench import bundles
from bench import report
from bench import rig as rig_mod
from bench import scenarios
from bench import stats

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')

NOTES = [
    'Guest: the project test guest (TCG, 1 vCPU); root vda is a qcow2 '
    'overlay on a raw _base image holding 200 MiB of files that compress '
    'about 2:1 (Nova qcow2 image backend layout); vdb and vdc are 64 MiB '
    'qcow2; half the RAM holds page cache, not zero pages.',
    'Baseline: Nova 34.0.0 _live_snapshot step by step (delta on the '
    "root's backing file, transient domain, shallow blockRebase COPY "
    'REUSE_EXT, 0.5 s polls until the mirror is ready, fsFreeze, abort '
    'without pivot, redefine, fsThaw, qemu-img convert -t none -c); always '
    'quiesced, as Nova does for images with the guest agent.',
    'snapext: Engine.take with quiesce required. "Point in time fixed" is '
    "the engine's captured step (disk states and memory taken, guest "
    "thawed); the Glance image is the same qemu-img convert -c, from the "
    "root's internal snapshot, so no mirror of the live disk is made.",
    'Pause: largest gap between host arrival times of the 100 ms ticks '
    'from request to fixed point, minus 100 ms; libvirt: longest SUSPENDED '
    'to RESUMED lifecycle event interval (0 = never paused).',
    'Figure 5 writes N MiB of random data to /mnt/vda between two '
    'disk-only snapshots; snapext rows are how much each disk file grew '
    'from the first to the second snapshot, the baseline row the delta '
    'plus the compressed image it writes at the same point.',
    'Figure 7: the first tick printed by the resumed or booted guest; '
    '"call returned" includes thawing the restored guest through its '
    'agent (revert, clone) or the agent answering (cold boot).',
    'Figure 8: sha256 per qcow2 cluster of each disk state, computed by '
    'take after the guest resumed and thawed; a snapshot with a parent '
    'rehashes only the clusters it does not share with it.  Verify reads '
    'the memory image and every cluster the disk states map, as revert '
    'does before it destroys the running guest (its time is part of '
    "figure 7's revert).",
    'Figure 9: full snapshots (memory + 3 disks) before and after the '
    'guest writes N MiB of random data to /mnt/vda; the second one '
    'exported with --since the first.  The goal 1.1 x N + 1 MiB is for '
    'the disk members (each disk\'s qcow2 delta and its per-cluster '
    'digests); the memory image is whole in every bundle of a full '
    'snapshot and is reported on its own row and in the whole bundle '
    'file (all members and tar headers), never in the goal.',
    'Figure 10: the main guest\'s full snapshot exported standalone to a '
    'file (engine.export then fsync, as snapext export does, in the '
    'bench process) and imported into a new, empty store (verify '
    'included), as snapext import does.',
]


def _version(number):
    return '%d.%d.%d' % (number // 1000000, number // 1000 % 1000,
                         number % 1000)


def _cpu_model():
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    return platform.processor() or 'unknown'


def _load():
    return '%.2f' % os.getloadavg()[0]


def machine(r, reps):
    return {'cpu': _cpu_model(), 'cores': os.cpu_count(),
            'virt': 'KVM' if os.environ.get('SNAPEXT_VIRT_TYPE') == 'kvm'
            else 'TCG (no KVM)',
            'libvirt': _version(r.conn.getLibVersion()),
            'qemu': _version(r.conn.getVersion()),
            'load_before': _load(), 'reps': reps,
            'date': datetime.datetime.now().isoformat(timespec='seconds')}


def build_parser():
    p = argparse.ArgumentParser(prog='python -m bench', description=__doc__)
    p.add_argument('--reps', type=int, default=5,
                   help='repetitions per figure (default 5)')
    p.add_argument('--root-sizes', type=int, nargs='+', default=[1024, 4096],
                   metavar='MIB', help='root disk sizes; the first one is '
                   'the main guest (default 1024 4096)')
    p.add_argument('--memory-sizes', type=int, nargs='+',
                   default=[256, 1024], metavar='MIB',
                   help='guest RAM for figure 6; the first one is the main '
                   'guest (default 256 1024)')
    p.add_argument('--writes', type=int, nargs='+', default=[16, 64, 256],
                   metavar='MIB', help='N for figure 5, multiples of 16 '
                   '(default 16 64 256)')
    p.add_argument('--export-writes', type=int, nargs='+',
                   default=[1, 16, 64], metavar='MIB',
                   help='N for figure 9 (default 1 16 64)')
    p.add_argument('--output', default=RESULTS,
                   help='results directory (default bench/results)')
    p.add_argument('--quick', action='store_true',
                   help='smoke run: 1 repetition, N = 16 only, output to '
                   '<output>/raw/quick (not committed)')
    p.add_argument('--keep', action='store_true',
                   help='keep the scratch directory under %s'
                   % rig_mod.SCRATCH)
    return p


def _size_label(mib):
    return '%d GiB' % (mib // 1024) if mib % 1024 == 0 else '%d MiB' % mib


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        args.reps, args.writes, args.export_writes = 1, [16], [16]
        args.output = os.path.join(args.output, 'raw', 'quick')
    started = time.monotonic()
    samples = stats.Samples()
    r = rig_mod.Rig(keep=args.keep)
    info = machine(r, args.reps)

    def step(text):
        print('[%5.0f s] %s' % (time.monotonic() - started, text),
              flush=True)

    try:
        step('host write rate of %s' % rig_mod.SCRATCH)
        scenarios.host_write_rate(r, samples, args.reps)
        main_root = args.root_sizes[0]
        step('figures 1-3, 6: root %s' % _size_label(main_root))
        guest = scenarios.snapshot_costs(
            r, samples, args.reps, main_root, _size_label(main_root),
            main=True, memory_mib=args.memory_sizes[0])
        step('figure 5: incremental bytes, N = %s MiB' % args.writes)
        scenarios.incremental(r, samples, args.reps, guest, args.writes)
        step('figure 7: revert, clone, cold boot')
        scenarios.revert_and_clone(r, samples, args.reps, guest)
        step('figure 9: incremental export bytes, N = %s MiB'
             % args.export_writes)
        bundles.incremental_exports(r, samples, args.reps, guest,
                                    args.export_writes)
        step('figure 10: full export and import')
        bundles.export_import(r, samples, args.reps, guest)
        r.forget(guest.name)
        for root in args.root_sizes[1:]:
            step('figure 4: root %s' % _size_label(root))
            g = scenarios.snapshot_costs(r, samples, args.reps, root,
                                         _size_label(root), main=False)
            r.forget(g.name)
        for memory in args.memory_sizes[1:]:
            step('figure 6: %d MiB RAM' % memory)
            scenarios.memory_save(r, samples, args.reps, memory)
    finally:
        r.close()
    info['load_after'] = _load()
    info['wall_s'] = time.monotonic() - started
    report.write(args.output, samples, info, NOTES)
    step('results in %s' % args.output)
    print('\n'.join(report.markdown_table(samples.summaries())))
    return 0


if __name__ == '__main__':
    sys.exit(main())
