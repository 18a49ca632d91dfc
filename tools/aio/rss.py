"""Resident memory of the AIO's services (and MariaDB, RabbitMQ).

    rss.py RUN_DIR                     print the total now, per service
    rss.py RUN_DIR --peak FILE [SECS]  sample until SIGTERM; write the peak

A service is its process group (gunicorn workers, privsep daemons), found
from RUN_DIR/<name>.pid; QEMU guests are not counted.
"""

import glob
import os
import signal
import sys
import time


def _procs():
    for stat in glob.glob('/proc/[0-9]*/stat'):
        try:
            with open(stat) as f:
                data = f.read()
            with open(stat.replace('stat', 'statm')) as f:
                rss = int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
        except (OSError, ValueError, IndexError):
            continue
        comm = data[data.index('(') + 1:data.rindex(')')]
        fields = data[data.rindex(')') + 2:].split()
        yield int(stat.split('/')[2]), comm, int(fields[2]), rss


def sample(run_dir):
    groups = {}
    for path in glob.glob(os.path.join(run_dir, '*.pid')):
        try:
            with open(path) as f:
                groups[int(f.read().strip())] = os.path.basename(path)[:-4]
        except (OSError, ValueError):
            pass
    totals = {}
    for _pid, comm, pgrp, rss in _procs():
        name = groups.get(pgrp)
        if name is None and comm in ('mysqld', 'mariadbd'):
            name = 'mariadb'
        if name is None and comm == 'beam.smp':
            name = 'rabbitmq'
        if name is not None:
            totals[name] = totals.get(name, 0) + rss
    return totals


def main(argv):
    run_dir = argv[1]
    if len(argv) == 2:
        totals = sample(run_dir)
        for name, rss in sorted(totals.items()):
            print('%-18s %7.1f MiB' % (name, rss / 2 ** 20))
        print('%-18s %7.1f MiB' % ('total', sum(totals.values()) / 2 ** 20))
        return
    out = argv[3]
    interval = float(argv[4]) if len(argv) > 4 else 2.0
    peak = {'total': 0}
    done = []
    signal.signal(signal.SIGTERM, lambda *a: done.append(1))
    while not done:
        totals = sample(run_dir)
        total = sum(totals.values())
        if total > peak['total']:
            peak = dict(totals, total=total)
        with open(out, 'w') as f:
            for name, rss in sorted(peak.items()):
                f.write('%-18s %7.1f MiB\n' % (name, rss / 2 ** 20))
        time.sleep(interval)


if __name__ == '__main__':
    main(sys.argv)
