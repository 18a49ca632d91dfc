"""The project's tiny real guest: build, boot, talk to, and tear down.

The guest (tools/guest/) is a Debian cloud kernel with an initramfs that
runs qemu-guest-agent and a ticker printing ``TICK <n> <monotonic_ms>``
every 100 ms to the serial console.  The functional tests and the demo use
this module to prove things from inside the guest: the counter's value, the
files on its disks, its agent's freeze state.
"""

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid as uuid_mod
from xml.sax import saxutils

import libvirt
import libvirt_qemu

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BUILD_SCRIPT = os.path.join(REPO, 'tools', 'guest', 'build.sh')
GUEST_DIR = os.environ.get('SNAPEXT_GUEST_DIR', '/var/cache/snapext/guest')
TICK_RE = re.compile(rb'^TICK (\d+) (\d+)\r?$', re.M)
DISKS = ('vda', 'vdb', 'vdc')

DOMAIN_XML = """<domain type='{virt_type}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
{disks}
    <serial type='file'>
      <source path='{console}' append='on'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <source mode='bind'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <memballoon model='none'/>
  </devices>
</domain>
"""

DISK_XML = """    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{path}'/>
      <target dev='{dev}' bus='virtio'/>
    </disk>"""


def complete_lines(data):
    """``data`` up to its last newline.

    QEMU may be writing a line while it is read: a torn "TICK 59 123" of
    "TICK 59 12345" would look like a tick of its own.
    """
    return data[:data.rfind(b'\n') + 1]


def build_image():
    """Build (or reuse the cached) kernel and initramfs; return the dir."""
    subprocess.run(['bash', BUILD_SCRIPT, GUEST_DIR], check=True,
                   stdout=subprocess.DEVNULL)
    return GUEST_DIR


def virt_type():
    """The libvirt domain type for the guest: TCG unless asked for KVM.

    /dev/kvm on these machines is a nested module that cannot run a stock
    kernel (see the README).
    """
    return os.environ.get('SNAPEXT_VIRT_TYPE', 'qemu')


def make_disk(path, size_mib=64):
    raw = path + '.raw'
    with open(raw, 'wb') as f:
        f.truncate(size_mib << 20)
    subprocess.run(['mkfs.ext4', '-q', '-F', raw], check=True)
    subprocess.run(['qemu-img', 'convert', '-q', '-O', 'qcow2', raw, path],
                   check=True)
    os.unlink(raw)


class Guest(object):
    """One booted test guest, defined persistently like Nova's instances."""

    def __init__(self, conn, name, workdir, disks=DISKS, memory_mib=256,
                 disk_sizes=None, uuid=None):
        self.conn = conn
        self.name = name
        self.uuid = uuid or str(uuid_mod.uuid4())
        self.workdir = workdir
        self.disk_targets = disks
        self.memory_mib = memory_mib
        # {target: MiB}; the benchmarks need roots far larger than the 64 MiB
        # the tests use.
        self.disk_sizes = disk_sizes or {}
        self.console = os.path.join(workdir, 'console.log')
        self.dom = None

    # -- lifecycle -----------------------------------------------------

    def define(self):
        image = build_image()
        os.makedirs(self.workdir, exist_ok=True)
        disks = []
        for dev in self.disk_targets:
            path = os.path.join(self.workdir, '%s.qcow2' % dev)
            self.make_disk(path, dev)
            disks.append(DISK_XML.format(path=saxutils.escape(path), dev=dev))
        xml = DOMAIN_XML.format(
            virt_type=virt_type(), name=self.name, uuid=self.uuid,
            memory_mib=self.memory_mib,
            kernel=os.path.join(image, 'vmlinuz'),
            initrd=os.path.join(image, 'initrd.img'),
            disks='\n'.join(disks),
            console=saxutils.escape(self.console))
        self.dom = self.conn.defineXML(xml)
        return self

    def make_disk(self, path, dev):
        """Create the file behind ``dev``; subclasses may lay it out."""
        make_disk(path, self.disk_sizes.get(dev, 64))

    def boot(self, timeout=120):
        """Start the domain and wait until its agent answers."""
        started = time.monotonic()
        self.dom.create()
        self.wait_for_agent(timeout)
        self.wait_for_tick(timeout=timeout)
        return time.monotonic() - started

    def destroy(self):
        try:
            dom = self.conn.lookupByName(self.name)
        except libvirt.libvirtError as exc:
            # Only a domain that is not there is done with: any other error
            # (a closed connection) would leave its QEMU running.
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            dom = None
        if dom is not None:
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def refresh(self):
        """Re-lookup after a revert re-created the QEMU process."""
        self.dom = self.conn.lookupByName(self.name)
        return self.dom

    # -- agent -----------------------------------------------------------

    def agent(self, command, arguments=None, timeout=10):
        request = {'execute': command}
        if arguments is not None:
            request['arguments'] = arguments
        reply = libvirt_qemu.qemuAgentCommand(
            self.refresh(), json.dumps(request), timeout, 0)
        return json.loads(reply).get('return')

    def wait_for_agent(self, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.agent('guest-ping', timeout=2)
            except libvirt.libvirtError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def sh(self, script, timeout=60):
        """Run a shell script inside the guest; return (rc, stdout)."""
        pid = self.agent('guest-exec', {
            'path': '/bin/sh', 'arg': ['-c', script],
            'capture-output': True})['pid']
        deadline = time.monotonic() + timeout
        while True:
            status = self.agent('guest-exec-status', {'pid': pid})
            if status.get('exited'):
                out = base64.b64decode(status.get('out-data', ''))
                return status.get('exitcode'), out.decode()
            if time.monotonic() > deadline:
                raise TimeoutError('guest command did not finish: %s'
                                   % script)
            time.sleep(0.1)

    def check_sh(self, script, timeout=60):
        rc, out = self.sh(script, timeout)
        if rc != 0:
            raise RuntimeError('guest command failed (%s): %s\n%s'
                               % (rc, script, out))
        return out

    def freeze_status(self):
        return self.agent('guest-fsfreeze-status')

    def stop_agent(self, seconds):
        """Stop qemu-ga inside the guest; its init restarts it later."""
        try:
            self.sh('echo %d > /run/snapext-ga-off; kill $(pidof qemu-ga)'
                    % seconds, timeout=5)
        except libvirt.libvirtError:
            pass  # the agent may die before it answers
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.agent('guest-ping', timeout=1)
            except libvirt.libvirtError:
                return
            time.sleep(0.3)
        raise RuntimeError('the guest agent did not stop')

    # -- disks and the counter ---------------------------------------------

    def write_file(self, path, mib=1):
        """Write ``mib`` MiB of random data; return the guest's sha256."""
        return self.check_sh(
            'dd if=/dev/urandom of=%s bs=1M count=%d 2>/dev/null && '
            'sync && sha256sum %s' % (path, mib, path)).split()[0]

    def sha256(self, path):
        rc, out = self.sh('sha256sum %s' % path)
        return out.split()[0] if rc == 0 else None

    def ticks(self):
        """All (counter, monotonic_ms) pairs printed so far, in order."""
        with open(self.console, 'rb') as f:
            return [(int(n), int(ms))
                    for n, ms in TICK_RE.findall(complete_lines(f.read()))]

    def last_tick(self):
        ticks = self.ticks()
        return ticks[-1] if ticks else None

    def wait_for_tick(self, after=-1, timeout=60):
        """Wait until the guest prints a counter value above ``after``."""
        deadline = time.monotonic() + timeout
        while True:
            tick = self.last_tick()
            if tick and tick[0] > after:
                return tick
            if time.monotonic() > deadline:
                raise TimeoutError('guest %s printed no TICK above %s'
                                   % (self.name, after))
            time.sleep(0.1)

    def console_size(self):
        return os.path.getsize(self.console)

    def resumed_tick(self, offset, timeout=60):
        """The first counter value printed by a reverted guest, or None.

        ``offset`` is the console size taken before the revert.  The old
        QEMU may print a few more ticks before it is destroyed and the
        restored one appends after, so the revert shows as the counter
        dropping back below its predecessor.
        """
        with open(self.console, 'rb') as f:
            head = TICK_RE.findall(complete_lines(f.read(offset)))
        previous = [int(head[-1][0])] if head else []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ticks = previous + [n for n, _ in self.ticks_since(offset)]
            for before, after in zip(ticks, ticks[1:]):
                if after < before:
                    return after
            time.sleep(0.1)
        return None

    def ticks_since(self, offset):
        """Ticks printed after byte ``offset`` of the console log."""
        with open(self.console, 'rb') as f:
            f.seek(offset)
            return [(int(n), int(ms))
                    for n, ms in TICK_RE.findall(complete_lines(f.read()))]


class TickWatcher(threading.Thread):
    """Timestamps each TICK as the host sees it arrive on the console.

    The guest's own clock stops while QEMU is paused (TCG), so a pause shows
    only on the host side: as the largest gap between two arrivals.  With
    ``path``, the console file of a QEMU that has not started yet (a live
    migration's destination): it is read from its start once it appears.
    """

    def __init__(self, guest=None, interval=0.005, path=None):
        super().__init__(daemon=True)
        self.path = path or guest.console
        self.interval = interval
        self.arrivals = []
        self._done = threading.Event()
        self._offset = (os.path.getsize(self.path)
                        if os.path.exists(self.path) else 0)

    def run(self):
        pending = b''
        while not os.path.exists(self.path):
            if self._done.wait(self.interval):
                return
        with open(self.path, 'rb') as f:
            f.seek(self._offset)
            while not self._done.is_set():
                chunk = f.read()
                now = time.monotonic()
                if chunk:
                    pending += chunk
                    lines = pending.split(b'\n')
                    pending = lines.pop()
                    for line in lines:
                        m = TICK_RE.match(line)
                        if m:
                            self.arrivals.append((now, int(m.group(1))))
                else:
                    time.sleep(self.interval)

    def stop(self):
        self._done.set()
        self.join()

    def largest_gap_ms(self, since=None, until=None):
        times = [t for t, _ in self.arrivals
                 if (since is None or t >= since)
                 and (until is None or t <= until)]
        gaps = [b - a for a, b in zip(times, times[1:])]
        return round(max(gaps) * 1000, 1) if gaps else None
