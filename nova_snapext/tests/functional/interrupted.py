"""Killing a capturing process midway, and checking what recovery left."""

import subprocess
import sys
import time


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

    def wait_for_internal_states(self):
        """Until QEMU has created the capture's internal snapshots."""
        deadline = time.monotonic() + 30
        while not any(self.internal_states().values()):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.002)

    def assertRecovered(self, recover):
        """Run ``recover``; the guest runs thawed, no unrecorded state."""
        files = self.disk_files()
        done = recover()
        self.assertEqual([], self.staging_dirs())
        self.assertEqual('thawed', self.guest.freeze_status())
        self.assertRunningAndThawed()
        recorded = {d['snapshot'] for m in self.engine.list(self.guest.name)
                    for d in m['disks']}
        for names in self.internal_states().values():
            self.assertEqual([], [n for n in names if n not in recorded])
        # recovery never removes a file
        self.assertEqual(files, self.disk_files())
        # the guest writes on, and a new snapshot works
        self.guest.write_file('/mnt/vdb/after-recovery.bin')
        self.engine.take(self.guest.name)
        return done
