"""nova-api serves every snapext endpoint with no access to the store.

In the AIO, nova-api runs in a mount namespace of its own where the
compute host's store directory is an empty tmpfs (tools/aio/without-
store.sh), as on a controller that shares no filesystem with the compute
hosts: the tree, a record, revert and delete come over RPC from the agent.
This proves that namespace is really there (seen through
/proc/<pid>/root, the processes' own view of the filesystem) while the
host's store holds the records, and drives every endpoint through the
real ``openstack`` client, the revert proven from inside the guest.
"""

import configparser
import os

import openstack

from nova_snapext.tests.integration import base

NOVA_CPU_CONF = os.path.join(base.AIO, 'etc', 'nova', 'nova-cpu.conf')
NOVA_API_PID = os.path.join(base.AIO, 'run', 'nova-api.pid')


def compute_store():
    """The compute host's store directory, from its configuration."""
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(NOVA_CPU_CONF)
    return conf.get('snapext', 'file_store_path')


def nova_api_pids():
    """The gunicorn master of nova-api and its workers."""
    with open(NOVA_API_PID) as f:
        master = int(f.read().strip())
    pids = [master]
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == master:
            pids.append(int(entry))
    return pids


class ApiWithoutStoreTest(base.TestCase):

    def assertNovaApiSeesNoStore(self, store):
        pids = nova_api_pids()
        self.assertGreater(len(pids), 1, 'nova-api has no workers: %s'
                           % pids)
        for pid in pids:
            seen = '/proc/%d/root%s' % (pid, store)
            self.assertEqual([], os.listdir(seen),
                             'nova-api process %d sees the store' % pid)
            with open('/proc/%d/mountinfo' % pid) as f:
                mounts = [line.split() for line in f]
            self.assertIn(('tmpfs', 'ro'), [
                (m[m.index('-') + 1], m[5].split(',')[0]) for m in mounts
                if m[4] == store],
                'no read-only tmpfs over %s for process %d' % (store, pid))

    def test_every_endpoint_over_rpc_with_no_store_in_nova_api(self):
        store = compute_store()
        server, guest = self.boot(base.unique_name('nostore'))
        before = guest.write_file('/mnt/vda/before.bin')
        tick_before = guest.last_tick()[0]
        image = base.cli('server', 'image', 'create', '--name',
                         base.unique_name('named'), '--wait', server.id)
        self.addCleanup(self.admin.image.delete_image, image['id'],
                        ignore_missing=True)
        named = image['properties']['snapext_manifest']
        tick_after = guest.last_tick()[0]
        guest.write_file('/mnt/vda/after.bin')

        # A second snapshot that no image names: its image stops naming it
        # (as one the snapext CLI or a Cinder group snapshot took).
        image2 = base.cli('server', 'image', 'create', '--name',
                          base.unique_name('unnamed'), '--wait', server.id)
        self.addCleanup(self.admin.image.delete_image, image2['id'],
                        ignore_missing=True)
        unnamed = image2['properties']['snapext_manifest']
        base.cli('image', 'unset', '--property', 'snapext_manifest',
                 image2['id'], as_json=False)
        self.assertNotIn('snapext_manifest', base.cli(
            'image', 'show', image2['id'])['properties'])

        # The host's store holds both records; nova-api sees nothing there.
        for snap_id in (named, unnamed):
            self.assertTrue(os.path.exists(os.path.join(
                store, server.id, snap_id, 'manifest.json')))
        self.assertNovaApiSeesNoStore(store)

        # The tree, over RPC from the server's host.
        rows = base.cli('server', 'snapshot', 'list', server.id)
        self.assertEqual([(named, None, 'available'),
                          (unnamed, named, 'available')],
                         [(r['ID'], r['Parent'], r['State']) for r in rows])
        self.assertEqual([unnamed], [r['ID'] for r in rows if r['Current']])

        # A record, found through its image, and one no image names.
        shown = base.cli('server', 'snapshot', 'show', named)
        self.assertEqual((server.id, 'full', 'available', image['id']),
                         (shown['server_id'], shown['kind'], shown['state'],
                          shown['image_id']))
        shown = base.cli('server', 'snapshot', 'show', unnamed)
        self.assertEqual((server.id, named, 'available'),
                         (shown['server_id'], shown['parent_id'],
                          shown['state']))
        err = base.cli('server', 'snapshot', 'show', 'no-such-snapshot',
                       check=False, as_json=False)
        self.assertEqual(1, err.returncode)
        self.assertIn('404', err.stderr)
        self.assertNotIn('Traceback', err.stderr)

        # Revert, proven from inside the guest: memory and disk as at the
        # first snapshot.
        guest.wait_for_tick(after=tick_after + 5, timeout=120)
        self.revert_to(server.id, named, (tick_before, tick_after),
                       kept={'/mnt/vda/before.bin': before},
                       gone=['/mnt/vda/after.bin'])

        # Delete the snapshot no image names, then the named one (which
        # takes its image along).
        base.cli('server', 'snapshot', 'delete', '--wait', unnamed,
                 as_json=False)
        base.cli('server', 'snapshot', 'delete', '--wait', named,
                 as_json=False)
        self.assertEqual([], base.cli('server', 'snapshot', 'list',
                                      server.id))
        self.assertRaises(openstack.exceptions.NotFoundException,
                          self.demo.image.get_image, image['id'])
        self.assertFalse(os.path.exists(os.path.join(store, server.id,
                                                     named)))
        # still without the store, and the guest runs on
        self.assertNovaApiSeesNoStore(store)
        self.assertEqual(before, guest.sha256('/mnt/vda/before.bin'))
