"""Killing a capturing process midway, and checking what recovery left."""

import os
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

    def revert_child(self, snapshot_id, pause_at=None):
        """A revert in another process; it stops for good at ``pause_at``."""
        args = [sys.executable, '-m',
                'nova_snapext.tests.functional.revert_child',
                self.conf.snapext.file_store_path,
                self.conf.snapext.lock_path, snapshot_id]
        env = dict(os.environ, SNAPEXT_REVERT_KEEPS_MEMORY=(
            '1' if self.conf.snapext.revert_keeps_memory else '0'))
        child = subprocess.Popen(args + ([pause_at] if pause_at else []),
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
        self.addCleanup(child.kill)
        return child

    def revert_and_kill(self, snapshot_id, kill_when=None, pause_at=None):
        """Start a revert in another process; SIGKILL it midway.

        At ``kill_when()`` returning (it watches the domain), or once the
        child reports ``pause_at`` and stops there.  Returns the stages the
        child reported.
        """
        child = self.revert_child(snapshot_id, pause_at)
        stages = []
        if pause_at:
            for line in child.stdout:
                stages.append(line.strip())
                if stages[-1] == pause_at:
                    break
            else:
                self.fail('the revert ended before %s: %s\n%s'
                          % (pause_at, stages, child.stderr.read()))
        else:
            kill_when()
        child.kill()
        child.wait()
        return stages

    def wait_for_domain(self, predicate, timeout=60):
        """Poll the domain's state every 2 ms until ``predicate(state)``."""
        deadline = time.monotonic() + timeout
        while not predicate(self.guest.dom.state()[0]):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.002)

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
