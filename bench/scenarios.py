"""The measurements of issue 5, one function per guest set-up.

Every function takes the Rig, the Samples and the number of repetitions
and adds its samples; baseline and snapext repetitions alternate, so that
load from other work on the machine hits both alike.
"""

import os
import time
import uuid
from xml.etree import ElementTree as ET

from bench import baseline
from bench import rig as rig_mod
from nova_snapext.testing import guest as guest_mod

MS, S, MIB, MBPS, S_GIB = 'ms', 's', 'MiB', 'MB/s', 's/GiB'
BASE = 'baseline: Nova live snapshot (root)'
SX_DISKS = 'snapext disks-only (3 disks)'
SX_ROOT = 'snapext disks-only (root only)'
SX_FULL = 'snapext full (memory + 3 disks)'
IDLE = 'no snapshot (idle guest)'
TICK_MS = 100
_seq = iter(range(10 ** 6))


def _ms(since):
    return round((time.monotonic() - since) * 1000, 1)


def _first_arrival_after(watcher, moment, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        later = [t for t, _ in watcher.arrivals if t > moment]
        if later:
            return later[0]
        time.sleep(0.02)
    return None


def _observed(r, guest, op):
    """Run ``op()``; add the guest-visible pause of its live part.

    ``op`` returns a dict with ``fixed_ms``: the live part is from the
    request until then (the baseline's qemu-img convert that follows runs
    next to the guest, not in its way).
    """
    watcher = guest_mod.TickWatcher(guest)
    watcher.start()
    # Start on a seen tick, so that a pause beginning right at the request
    # is measured from the tick before it, whole.
    _first_arrival_after(watcher, 0)
    started = time.monotonic()
    result = op()
    fixed_at = started + result['fixed_ms'] / 1000.0
    after = _first_arrival_after(watcher, fixed_at) or time.monotonic()
    watcher.stop()
    gap = watcher.largest_gap_ms(until=after)
    result['tick_pause_ms'] = None if gap is None else max(gap - TICK_MS, 0)
    result['event_pause_ms'] = r.events.paused_ms(guest.name, started,
                                                  fixed_at + 0.5)
    return result


def _snapext(r, guest, memory, targets=None, export=True):
    """One snapext take (quiesce required, like the baseline's).

    The point in time is fixed when the engine reports 'captured': disks
    captured and filesystems thawed; what follows (hashing the memory
    image, writing the record) does not touch the guest.  The Glance image
    is then converted from the root's internal snapshot, which nothing
    writes, so no mirror of the live disk is needed.
    """
    started = time.monotonic()
    record = r.engine.take(guest.name, memory=memory, targets=targets,
                           quiesce_policy='required')
    result = {'fixed_ms': round((r.captured_at - started) * 1000, 1),
              'take_ms': _ms(started),
              'frozen_ms': record['quiesce']['frozen_ms'],
              'record': record}
    if export:
        out = r.path('glance-%d.qcow2' % next(_seq))
        root = record['disks'][0]
        rig_mod.convert_compressed(root['path'], out,
                                   snapshot=root['snapshot'])
        result['image_ms'] = _ms(started)
        os.unlink(out)
    return result


def _nova(r, guest):
    out = r.path('glance-%d.qcow2' % next(_seq))
    result = baseline.live_snapshot(r.conn, guest.name, out)
    os.unlink(out)
    return result


def _idle(r, guest, seconds=1.5):
    def op():
        time.sleep(seconds)
        return {'fixed_ms': seconds * 1000}
    return _observed(r, guest, op)


def _add_snapshot(samples, variant, res, versus):
    """Figures 1-3 from one snapshot (2 only for the idle reference)."""
    samples.add(2, 'largest tick gap - 100 ms', variant,
                res['tick_pause_ms'], MS, versus)
    samples.add(2, 'libvirt suspended -> resumed', variant,
                res['event_pause_ms'], MS, versus)
    if variant == IDLE:
        return
    samples.add(1, 'point in time fixed, guest unaffected', variant,
                res['fixed_ms'] / 1e3, S, versus)
    if 'image_ms' in res:
        samples.add(1, 'standalone root image for Glance', variant,
                    res['image_ms'] / 1e3, S, versus)
    if 'record' in res:
        # What the guest waits for inside the fixed time; with memory,
        # libvirt keeps the guest paused while it switches the disks.
        samples.add(1, 'of which the libvirt snapshot call', variant,
                    res['record']['timings_ms']['snapshot_call'] / 1e3, S)
    if res.get('frozen_ms') is not None:
        samples.add(3, 'fsfreeze window', variant, res['frozen_ms'], MS,
                    versus)


def _per_gib(seconds, nbytes, floor=16 << 20):
    # below some MiB the fixed costs (opening files, L2 tables) dominate
    return seconds / (nbytes / 2 ** 30) if nbytes >= floor else None


def _add_digest(samples, variant, record):
    """Figure 8: what the disk digests cost a take, off the guest's path."""
    digests = [d['digest'] for d in record['disks'] if d.get('digest')]
    hashed = sum(d['hashed_bytes'] for d in digests)
    seconds = record['timings_ms'].get('digest', 0) / 1e3
    samples.add(8, 'digest time at take (guest running)', variant, seconds,
                S)
    samples.add(8, 'bytes hashed at take', variant, hashed / 2 ** 20, MIB)
    samples.add(8, 'digest cost per GiB hashed', variant,
                _per_gib(seconds, hashed), S_GIB)


def _add_verify(samples, variant, report):
    """Figure 8: what verifying costs a revert before it destroys."""
    samples.add(8, 'verify before revert (memory + disks)', variant,
                report['seconds'], S)
    samples.add(8, 'bytes read by verify', variant,
                report['bytes_read'] / 2 ** 20, MIB)
    samples.add(8, 'verify cost per GiB read', variant,
                _per_gib(report['seconds'], report['bytes_read']), S_GIB)


def _add_size(samples, variant, res, versus, size_label):
    """Figure 4: the same two times, labelled with the root's size."""
    label = '%s, root %s' % (variant, size_label)
    base = '%s, root %s' % (versus, size_label) if versus else None
    samples.add(4, 'point in time fixed', label, res['fixed_ms'] / 1e3, S,
                base)
    if 'image_ms' in res:
        samples.add(4, 'standalone root image', label,
                    res['image_ms'] / 1e3, S, base)


def snapshot_costs(r, samples, reps, root_mib, size_label, main,
                   memory_mib=256):
    """Figures 1-3 and 6 (``main``) and 4 on one guest.

    Returns the guest, still running, for the figures that follow.
    """
    guest = r.guest('root%d' % root_mib, root_mib=root_mib,
                    memory_mib=memory_mib)
    guest.fill_page_cache(guest.memory_mib // 2)
    variants = [
        (BASE, lambda: _nova(r, guest), None),
        (SX_DISKS, lambda: _snapext(r, guest, memory=False), BASE),
        (SX_FULL, lambda: _snapext(r, guest, memory=True), BASE),
    ]
    if main:
        variants.insert(2, (SX_ROOT, lambda: _snapext(
            r, guest, memory=False, targets=['vda'], export=False), BASE))
        variants.append((IDLE, lambda: _idle(r, guest), None))
    for _ in range(reps):
        for variant, op, versus in variants:
            res = _observed(r, guest, op)
            if variant != IDLE:
                _add_size(samples, variant, res, versus, size_label)
            if main:
                _add_snapshot(samples, variant, res, versus)
            if main and variant == SX_FULL:
                _add_memory(samples, res['record'], guest.memory_mib)
            if main and 'record' in res:
                _add_digest(samples, variant, res['record'])
    return guest


def _add_memory(samples, record, memory_mib):
    variant = 'snapext memory save, %d MiB RAM' % memory_mib
    seconds = record['timings_ms']['snapshot_call'] / 1e3
    samples.add(6, 'memory image written', variant,
                record['memory']['bytes'] / 2 ** 20, MIB)
    samples.add(6, 'save throughput (image bytes / snapshot call)', variant,
                record['memory']['bytes'] / seconds / 1e6, MBPS,
                'host: dd oflag=direct, same filesystem')
    samples.add(6, 'snapshot call (memory + disks)', variant, seconds, S)


def memory_save(r, samples, reps, memory_mib):
    """Figure 6 for a guest of ``memory_mib``: full snapshots."""
    guest = r.guest('ram%d' % memory_mib, memory_mib=memory_mib)
    guest.fill_page_cache(min(memory_mib // 2, 200))
    for _ in range(reps):
        res = _snapext(r, guest, memory=True, export=False)
        _add_memory(samples, res['record'], memory_mib)
    r.forget(guest.name)


def host_write_rate(r, samples, reps, mib=512):
    for _ in range(reps):
        samples.add(6, 'save throughput (image bytes / snapshot call)',
                    'host: dd oflag=direct, same filesystem',
                    r.host_write_rate(mib), MBPS)


def incremental(r, samples, reps, guest, writes_mib):
    """Figure 5 (and 4 against used data): two snapshots N MiB apart.

    The guest writes N MiB of incompressible data to its root between two
    disk-only snapshots; what the second one costs is what each disk file
    grew by since the first (qcow2 keeps the clusters written since, the
    older ones are shared).  The baseline runs just before the second
    snapshot, when the root's active layer holds those N MiB as a Nova
    instance's overlay holds its writes: it mirrors them and writes the
    whole root again (delta plus compressed image).  After each N the
    guest is reverted to a full snapshot taken first: without discard,
    deleted files stay allocated, and the data the baseline converts would
    grow with every repetition instead of being 200 MiB + N.
    """
    measure = 'bytes of the second snapshot'
    guest.check_sh('dd if=/dev/urandom of=/run/rand16 bs=1M count=16 '
                   '2>/dev/null')
    reset = _snapext(r, guest, memory=True, export=False)['record']['id']
    for _ in range(reps):
        for n in writes_mib:
            base = 'baseline, root, N = %d MiB' % n
            used = '1 GiB, %d MiB used' % (200 + n)
            first = _snapext(r, guest, memory=False, export=False)
            sizes = {d['target']: rig_mod.allocated_bytes(d['path'])
                     for d in first['record']['disks']}
            guest.check_sh('for i in $(seq %d); do cat /run/rand16; done '
                           '> /mnt/vda/inc.bin && sync' % (n // 16),
                           timeout=600)
            res = _nova(r, guest)
            samples.add(5, measure, base,
                        (res['delta_bytes'] + res['image_bytes']) / 2 ** 20,
                        MIB)
            _add_size(samples, 'baseline', res, None, used)
            second = _snapext(r, guest, memory=False, export=False)
            _add_digest(samples, 'snapext second snapshot, N = %d MiB' % n,
                        second['record'])
            for disk in second['record']['disks']:
                grown = (rig_mod.allocated_bytes(disk['path']) -
                         sizes[disk['target']])
                samples.add(5, measure, 'snapext, %s, N = %d MiB'
                            % (disk['target'], n), grown / 2 ** 20, MIB,
                            base)
            _add_size(samples, 'snapext disks-only (3 disks)', second,
                      'baseline', used)
            r.engine.revert(reset)
            guest.wait_for_agent()


def _wait_first_tick(watcher, after, timeout=60, below=None):
    """Arrival time of the first tick after ``after``.

    With ``below``, only a counter value below it counts: a reverted guest
    counts on from its past.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t, n in list(watcher.arrivals):
            if t > after and (below is None or n < below):
                return t
        time.sleep(0.01)
    raise TimeoutError('no tick from %s' % watcher.path)


def _no_agent_socket(xml):
    # The saved XML names the source's agent socket; libvirt makes a new
    # one for the clone when it has no path.
    root = ET.fromstring(xml)
    for source in root.findall('./devices/channel/source'):
        source.attrib.pop('path', None)
    return ET.tostring(root, encoding='unicode')


def _clone(r, record, source):
    """Clone a full snapshot into a new running domain; time to first tick.

    The new domain's disks are standalone copies of the snapshot's disk
    states, as Nova creates them from the snapshot image.
    """
    name = '%sclone-%s' % (rig_mod.DOMAIN_PREFIX, uuid.uuid4().hex[:6])
    workdir = r.path(name)
    os.makedirs(workdir)
    clone = guest_mod.Guest(r.conn, name, workdir)
    open(clone.console, 'w').close()
    watcher = guest_mod.TickWatcher(clone)
    watcher.start()
    r.track(name)
    started = time.monotonic()
    sources = {}
    for disk in record['disks']:
        sources[disk['target']] = os.path.join(workdir, '%s.qcow2'
                                               % disk['target'])
        r.engine.export_disk(record['id'], disk['target'],
                             sources[disk['target']])
    r.engine.clone(record['id'], name, str(uuid.uuid4()), sources,
                   path_moves={source.workdir: workdir},
                   xml_edit=_no_agent_socket)
    returned = time.monotonic()
    first = _wait_first_tick(watcher, started)
    watcher.stop()
    r.forget(name)
    return (first - started, returned - started)


def revert_and_clone(r, samples, reps, guest):
    """Figure 7: revert and clone of a full snapshot, and a cold boot."""
    record = _snapext(r, guest, memory=True, export=False)['record']
    cold = 'cold boot of the same guest'
    for _ in range(reps):
        guest.wait_for_tick(after=guest.last_tick()[0] + 3)
        watcher = guest_mod.TickWatcher(guest)
        watcher.start()
        # the same checks the revert runs first, timed on their own
        _add_verify(samples, 'snapext full (memory + 3 disks)',
                    r.engine.verify(record['id']))
        now = guest.last_tick()[0]
        started = time.monotonic()
        r.engine.revert(record['id'])
        returned = time.monotonic()
        first = _wait_first_tick(watcher, started, below=now)
        watcher.stop()
        samples.add(7, 'request to counter continuing', 'snapext revert',
                    first - started, S, cold)
        samples.add(7, 'request to call returned (thawed)', 'snapext revert',
                    returned - started, S, cold)
        to_tick, to_return = _clone(r, record, guest)
        samples.add(7, 'request to counter continuing',
                    'snapext clone to running', to_tick, S, cold)
        samples.add(7, 'request to call returned (thawed)',
                    'snapext clone to running', to_return, S, cold)
    boot = r.guest('cold', boot=False)
    for _ in range(reps):
        open(boot.console, 'a').close()
        watcher = guest_mod.TickWatcher(boot)
        watcher.start()
        started = time.monotonic()
        boot.boot()
        returned = time.monotonic()
        first = _wait_first_tick(watcher, started)
        watcher.stop()
        boot.dom.destroy()
        samples.add(7, 'request to counter continuing', cold,
                    first - started, S)
        samples.add(7, 'request to call returned (thawed)', cold,
                    returned - started, S)
    r.forget(boot.name)
