"""Figures 9 and 10: export bundles of full snapshots, bytes and times.

Figure 9 measures an incremental chain: a full snapshot, N MiB written by
the guest, a second full snapshot, and the second one's export with
``--since`` the first.  The goal (issue 11) is about the disks: their
members may hold at most 1.1 x N + 1 MiB.  A full snapshot's memory image
is in every bundle whole (a memory image has no delta), so it is reported
on its own row and in the whole bundle, never in the goal's row.

Figure 10 times what moving the 256 MiB guest costs: a standalone export
of a full snapshot to a file and its import into an empty store (another
host's), each done as ``snapext export`` / ``snapext import`` do it, in
this process so that Python's start-up is not counted.
"""

import os
import shutil
import time

from bench import scenarios

MIB = 1 << 20
GOAL = 'goal: 1.1 x N + 1 MiB'
FULL = 'snapext full (memory + 3 disks), %d MiB RAM'


def _export(r, snapshot_id, path, since=None):
    """(seconds, index): the bundle written and fsync'd like the CLI's."""
    started = time.monotonic()
    with open(path, 'wb') as f:
        index = r.engine.export(snapshot_id, f, since)
        f.flush()
        os.fsync(f.fileno())
    return time.monotonic() - started, index


def _take(r, guest):
    return r.engine.take(guest.name, memory=True, quiesce_policy='required')


def _member_bytes(index, *kinds):
    return sum(m['bytes'] for m in index['members'] if m['kind'] in kinds)


def _write(guest, mib, path='/mnt/vda/export.bin'):
    """``mib`` MiB of incompressible data, from a 16 MiB file in RAM."""
    whole, rest = divmod(mib, 16)
    guest.check_sh('[ -f /run/rand16 ] || dd if=/dev/urandom of=/run/rand16 '
                   'bs=1M count=16 2>/dev/null', timeout=300)
    guest.check_sh('(for i in $(seq %d); do cat /run/rand16; done; '
                   'dd if=/run/rand16 bs=1M count=%d 2>/dev/null) > %s && '
                   'sync' % (whole, rest, path), timeout=600)


def incremental_exports(r, samples, reps, guest, writes_mib):
    """Figure 9: bytes of an incremental export after N MiB written.

    After each N the guest is reverted to a full snapshot taken first and
    the two measured snapshots are deleted, so every N starts from the
    same disks and the store does not fill up with memory images.
    """
    reset = _take(r, guest)['id']
    for _ in range(reps):
        for n in writes_mib:
            variant = 'snapext, N = %d MiB' % n
            goal = '%s, N = %d MiB' % (GOAL, n)
            first = _take(r, guest)
            _write(guest, n)
            second = _take(r, guest)
            path = r.path('delta.bundle')
            seconds, index = _export(r, second['id'], path,
                                     since=first['id'])
            measure = 'disk members (qcow2 deltas + digests)'
            samples.add(9, measure, goal, 1.1 * n + 1, scenarios.MIB)
            samples.add(9, measure, variant, _member_bytes(
                index, 'disk', 'digests') / MIB, scenarios.MIB, goal)
            samples.add(9, 'of which per-cluster digests', variant,
                        _member_bytes(index, 'digests') / MIB,
                        scenarios.MIB)
            samples.add(9, 'memory image member (whole in every bundle)',
                        variant, _member_bytes(index, 'memory') / MIB,
                        scenarios.MIB)
            samples.add(9, 'whole bundle file', variant,
                        os.path.getsize(path) / MIB, scenarios.MIB)
            samples.add(9, 'incremental export to a file', variant, seconds,
                        scenarios.S)
            os.unlink(path)
            r.engine.revert(reset)
            guest.wait_for_agent()
            r.engine.delete(second['id'])
            r.engine.delete(first['id'])


def export_import(r, samples, reps, guest):
    """Figure 10: a full snapshot exported to a file, imported elsewhere."""
    record = _take(r, guest)
    variant = FULL % guest.memory_mib
    for rep in range(reps):
        path = r.path('full.bundle')
        seconds, index = _export(r, record['id'], path)
        samples.add(10, 'full export to a file (fsync)', variant, seconds,
                    scenarios.S)
        samples.add(10, 'full bundle file', variant,
                    os.path.getsize(path) / MIB, scenarios.MIB)
        samples.add(10, 'of which the memory image', variant,
                    _member_bytes(index, 'memory') / MIB, scenarios.MIB)
        store = 'elsewhere-%d' % rep
        elsewhere = r.empty_store_engine(store)
        started = time.monotonic()
        with open(path, 'rb') as f:
            elsewhere.import_bundle(f)
        samples.add(10, 'import into an empty store', variant,
                    time.monotonic() - started, scenarios.S)
        os.unlink(path)
        shutil.rmtree(r.path(store))
        shutil.rmtree(r.path(store + '-locks'), ignore_errors=True)
