"""Killing a capturing process midway, and checking what recovery left."""

import os
import subprocess
import sys
import time

from nova_snapext.capture import domain_xml
from nova_snapext.capture import qemu_img


class KillMixin(object):
    """For GuestTestCase subclasses."""

    def capture_and_kill(self, kill_when):
        """Start a capture in another process; SIGKILL it at kill_when()."""
        child = subprocess.Popen(
            [sys.executable, '-m',
             'nova_snapext.tests.functional.capture_child',
             self.conf.snapext.file_store_path, self.conf.snapext.lock_path,
             self.guest.name],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.addCleanup(child.kill)
        for line in child.stdout:
            if line.strip() == 'frozen':
                break
        kill_when()
        child.kill()
        child.wait()

    def wait_for_overlays(self):
        deadline = time.monotonic() + 30
        while not self.overlay_files():
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.002)

    def assertRecovered(self, recover):
        """Run ``recover``; the guest runs thawed with no orphan overlay."""
        done = recover()
        self.assertEqual([], self.staging_dirs())
        self.assertEqual('thawed', self.guest.freeze_status())
        self.assertRunningAndThawed()
        in_use = {os.path.basename(p)
                  for d in domain_xml.writable_disks(self.guest.dom.XMLDesc(0))
                  for p in qemu_img.chain(d.path)}
        self.assertEqual([], [f for f in self.overlay_files()
                              if f not in in_use])
        # the guest writes on, and a new snapshot works
        self.guest.write_file('/mnt/vdb/after-recovery.bin')
        self.engine.take(self.guest.name)
        return done
