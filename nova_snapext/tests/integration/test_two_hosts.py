"""Two compute hosts: a server moving to another host, in a real cloud.

Host A is the AIO's own nova-compute (the machine's libvirtd); host B is
``snapext-h1`` of tools/aio/hosts.sh: a nova-compute with its own libvirtd
in network, mount and UTS namespaces of its own, on 10.254.0.11.  The
class brings B up when it is not up (and takes it down afterwards: on a
shared AIO no one else's server may land on it); it fails, never skips,
when B cannot come up.  Every move goes through the real ``openstack``
client; the proof comes from inside the guest (its counter on the serial
console of each host, its files' sha256 through its agent).
"""

import os
import subprocess
import time

import libvirt
from testtools import content

from nova_snapext.testing import guest as guest_mod
from nova_snapext.tests.integration import base

HOSTS_SH = os.path.join(guest_mod.REPO, 'tools', 'aio', 'hosts.sh')
HOST_B = 'snapext-h1'
HOST_B_URI = 'qemu+tcp://10.254.0.11/system'
# B's instances directory as the machine sees it (B sees it at Nova's
# instances_path, the same path as A's: not shared storage).
HOST_B_INSTANCES = os.path.join(base.DATA, 'hosts', HOST_B, 'instances')


def hosts_sh(*args):
    proc = subprocess.run(['bash', HOSTS_SH] + list(args),
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 and args[0] != 'status':
        raise AssertionError('tools/aio/hosts.sh %s failed (%s):\n%s'
                             % (' '.join(args), proc.returncode,
                                proc.stderr[-3000:]))
    return proc


class TwoHostsTest(base.LifecycleMixin, base.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        status = hosts_sh('status')
        if status.returncode != 0 or HOST_B not in status.stdout:
            cls.addClassCleanup(hosts_sh, 'down')
            start = time.monotonic()
            hosts_sh('up', '1')
            print('host %s up in %.1f s'
                  % (HOST_B, time.monotonic() - start))
        cls.libvirt_b = libvirt.open(HOST_B_URI)

    def boot_on_a(self, prefix):
        """A demo server on host A: B takes no new server meanwhile."""
        base.cli('compute', 'service', 'set', '--disable', HOST_B,
                 'nova-compute', user='admin', as_json=False)
        try:
            return self.boot(base.unique_name(prefix))
        finally:
            base.cli('compute', 'service', 'set', '--enable', HOST_B,
                     'nova-compute', user='admin', as_json=False)

    def live_migrate_to_b(self, server, guest):
        """``openstack server migrate --live-migration --host B``.

        Returns the guest on B, after checking that its counter went on
        where it stopped on A and that A keeps neither domain nor files.
        """
        self.assertNotEqual(
            HOST_B, self.admin.compute.get_server(server.id).compute_host)
        on_a = guest_mod.TickWatcher(guest)
        on_b = guest_mod.TickWatcher(path=os.path.join(
            HOST_B_INSTANCES, server.id, 'console.log'))
        on_a.start()
        on_b.start()
        start = time.monotonic()
        base.cli('--os-compute-api-version', '2.30', 'server', 'migrate',
                 '--live-migration', '--host', HOST_B, '--wait', server.id,
                 user='admin', as_json=False)
        took = time.monotonic() - start
        server = self.wait_settled(server.id, conn=self.admin)
        self.assertEqual(HOST_B, server.compute_host)
        moved = base.ServerGuest(self.libvirt_b, server, HOST_B_INSTANCES)
        moved.wait_for_agent(timeout=60)
        moved.wait_for_tick(after=on_a.arrivals[-1][1] + 10)
        on_a.stop()
        on_b.stop()
        (left_at, last_a), (back_at, first_b) = (on_a.arrivals[-1],
                                                 on_b.arrivals[0])
        # The counter goes on where it stopped: at most the one line the
        # two consoles split between them is not a whole TICK line.
        self.assertIn(first_b - last_a, (1, 2),
                      'the counter did not continue: A printed %d last, '
                      'B %d first' % (last_a, first_b))
        self.assertRaises(libvirt.libvirtError, self.libvirt.lookupByName,
                          server.instance_name)
        self.assertFalse(os.path.exists(guest.workdir))
        numbers = ('live block migration A->B: %.1f s, console silent '
                   '%.0f ms (last TICK %d on A, first %d on B)'
                   % (took, (back_at - left_at) * 1000, last_a, first_b))
        self.addDetail('migration', content.text_content(numbers))
        print(numbers)
        return moved

    def test_live_block_migration_keeps_counter_and_data(self):
        server, guest = self.boot_on_a('move')
        before = guest.write_file('/mnt/vda/before-move.bin', mib=4)
        moved = self.live_migrate_to_b(server, guest)
        self.assertEqual(before, moved.sha256('/mnt/vda/before-move.bin'))
        after = moved.write_file('/mnt/vda/after-move.bin')
        self.assertEqual(after, moved.sha256('/mnt/vda/after-move.bin'))

    def test_full_snapshot_left_behind_is_refused_with_its_reason(self):
        server, guest = self.boot_on_a('behind')
        s = base.Snaps(('vda',))
        self.write(guest, s, 'before-full')
        self.full_snapshot(server, guest, s)
        self.write(guest, s, 'after')
        moved = self.live_migrate_to_b(server, guest)
        self.assertKept(moved, s, 'the live migration')
        # The disk state stayed in A's file (a block migration copies no
        # internal snapshot).  A's agent still answers for the record (the
        # snapshot's image names A): unavailable.  A revert reaches B's
        # agent, which runs the server now: it rebuilds the record from the
        # snapshot's bundle in Glance and refuses; from then on B lists the
        # snapshot, unavailable with its reason.
        shown = base.cli('server', 'snapshot', 'show', s.full)
        self.assertEqual('unavailable', shown['state'])
        resp = self.api('POST', '/servers/%s/action' % server.id,
                        json_body={'snapextRevert': {'snapshot_id': s.full}})
        self.assertEqual(409, resp.status_code, resp.text)
        self.assertIn('no longer holds', resp.text)
        self.assertUnavailable(server.id, s, 'no longer holds')
        self.assertKept(moved, s, 'the refused revert')

    def test_full_snapshot_image_resumes_on_a_host_that_never_had_it(self):
        server, guest = self.boot_on_a('origin')
        host_a = self.admin.compute.get_server(server.id).compute_host
        before = guest.write_file('/mnt/vda/before.bin')
        image, ticks = self.full_snapshot_image(server, guest, 'across')
        snap = image['properties']['snapext_manifest']
        guest.write_file('/mnt/vda/after.bin')
        # B's store has never seen it: the memory image comes from the
        # snapshot's bundle in Glance.
        cache_b = os.path.join(base.DATA, 'hosts', HOST_B, 'snapext')
        self.assertFalse(os.path.exists(os.path.join(cache_b, server.id)))
        # The demo user's clone, scheduled to B as A takes no new server.
        base.cli('compute', 'service', 'set', '--disable', host_a,
                 'nova-compute', user='admin', as_json=False)
        try:
            clone = self.demo.compute.create_server(
                name=base.unique_name('across-clone'), image_id=image['id'],
                flavor_id=self.demo.compute.find_flavor(
                    base.FLAVOR, ignore_missing=False).id,
                networks='none')
            self.addCleanup(self.delete_server, clone.id)
            self.demo.compute.wait_for_server(clone, wait=300)
        finally:
            base.cli('compute', 'service', 'set', '--enable', host_a,
                     'nova-compute', user='admin', as_json=False)
        clone = self.admin.compute.get_server(clone.id)
        self.assertEqual(HOST_B, clone.compute_host)
        on_b = base.ServerGuest(self.libvirt_b, clone, HOST_B_INSTANCES)
        on_b.wait_for_agent(timeout=180)
        first = on_b.wait_for_tick(timeout=120)[0]
        self.assertTrue(ticks[0] - 1 <= first <= ticks[1] + 3,
                        'the clone on B counted from %d, the snapshot was '
                        'taken on A between ticks %d and %d'
                        % (first, ticks[0], ticks[1]))
        self.assertEqual(before, on_b.sha256('/mnt/vda/before.bin'))
        self.assertIsNone(on_b.sha256('/mnt/vda/after.bin'))
        self.assertTrue(os.path.exists(os.path.join(cache_b, server.id,
                                                    snap)))
