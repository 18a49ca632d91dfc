"""The ``snapext`` operator command against the real guest."""

import json

from nova_snapext.tests.functional import base


class CliTest(base.GuestTestCase):
    disks = ('vda', 'vdb')

    def test_take_list_revert_delete(self):
        g = self.guest
        before = g.write_file('/mnt/vdb/before.bin')
        rc, out, _ = self.run_cli('take', g.name, '--quiesce', 'required')
        self.assertEqual(0, rc)
        first = json.loads(out)
        self.assertEqual('full', first['kind'])
        self.assertEqual('frozen', first['quiesce']['outcome'])
        g.write_file('/mnt/vdb/after.bin')
        rc, out, _ = self.run_cli('take', g.name, '--disk-only')
        second = json.loads(out)
        self.assertEqual(first['id'], second['parent_id'])

        rc, out, _ = self.run_cli('list', g.name)
        tree = json.loads(out)
        self.assertEqual(second['id'], tree['current'])
        self.assertEqual([second['id']], [
            n['id'] for n in tree['snapshots'][0]['children']])

        rc, out, _ = self.run_cli('revert', first['id'])
        self.assertEqual((0, 'reverted to %s\n' % first['id']), (rc, out))
        self.assertEqual(before, g.sha256('/mnt/vdb/before.bin'))
        self.assertIsNone(g.sha256('/mnt/vdb/after.bin'))

        rc, out, _ = self.run_cli('delete', second['id'])
        self.assertEqual(0, rc)
        rc, out, err = self.run_cli('show', second['id'])
        self.assertEqual(1, rc)
        self.assertIn('snapext: error: snapshot %s not found' % second['id'],
                      err)
        rc, out, err = self.run_cli('take', 'snapext-no-such-domain')
        self.assertEqual(1, rc)
        self.assertIn('domain snapext-no-such-domain not found', err)
