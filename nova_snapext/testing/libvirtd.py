"""Restarting the libvirtd that tools/setup-host.sh started, by its PID.

libvirtd is shared by everything on the host; its guests survive a restart
(their QEMU processes keep running and libvirtd reconnects to them), but
every open connection breaks, so callers reconnect afterwards.
"""

import os
import signal
import subprocess
import time

import libvirt

PIDFILE = '/run/libvirtd.pid'
LOG = '/var/log/snapext-libvirtd.log'


def pid():
    with open(PIDFILE) as f:
        value = int(f.read().strip())
    with open('/proc/%d/comm' % value) as f:
        if f.read().strip() != 'libvirtd':
            raise RuntimeError('%s names PID %d, which is not libvirtd'
                               % (PIDFILE, value))
    return value


def restart(uri, timeout=60):
    """SIGTERM libvirtd, start it again as setup-host.sh does; seconds taken.

    Returns once a new connection to ``uri`` answers.
    """
    started = time.monotonic()
    old = pid()
    os.kill(old, signal.SIGTERM)
    deadline = started + timeout
    while os.path.exists('/proc/%d' % old):
        if time.monotonic() > deadline:
            raise RuntimeError('libvirtd %d did not stop' % old)
        time.sleep(0.05)
    if os.path.isdir('/run/systemd/system'):
        subprocess.check_call(['systemctl', 'start', 'libvirtd'])
    else:
        with open(LOG, 'ab') as log:
            # Under tini, as setup-host.sh: it reaps QEMU processes at once.
            subprocess.Popen(['tini', '-s', '--', 'libvirtd'],
                             stdin=subprocess.DEVNULL, stdout=log,
                             stderr=log, start_new_session=True, cwd='/')
    while True:
        try:
            libvirt.open(uri).close()
            return time.monotonic() - started
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
