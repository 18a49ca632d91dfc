"""Consistent Cinder group snapshots of snapext volumes on a running guest."""

import time

from nova_snapext.tests.integration import base

VOLUME_API = ['--os-volume-api-version', '3.14']


def _field(shown, name):
    """OSC's volume group commands print "ID", "Status": title case."""
    for key in (name, name.title(), name.upper()):
        if key in shown:
            return shown[key]
    raise KeyError(name)


class GroupSnapshotTest(base.VolumeMixin, base.TestCase):

    def wait_cli(self, kind, ident, status='available', timeout=300):
        deadline = time.monotonic() + timeout
        while True:
            shown = base.cli(*VOLUME_API, 'volume', *kind.split(), 'show',
                             ident)
            current = _field(shown, 'status')
            if current == status:
                return shown
            if 'error' in current or time.monotonic() > deadline:
                self.fail('%s %s is %s' % (kind, ident, current))
            time.sleep(2)

    def _delete_groups(self, server_id):
        """Server first (detaches), then group snapshots, then groups."""
        self.delete_server(server_id)
        bs = self.admin.block_storage
        mine = [g for g in bs.groups(all_projects=True)
                if g.name and g.name.startswith('snapext-it-')]
        for gsnap in bs.group_snapshots(all_projects=True):
            if gsnap.group_id in {g.id for g in mine}:
                bs.delete_group_snapshot(gsnap)
        deadline = time.monotonic() + 120
        while any(gs.group_id in {g.id for g in mine}
                  for gs in bs.group_snapshots(all_projects=True)):
            if time.monotonic() > deadline:
                return
            time.sleep(1)
        for group in mine:
            try:
                bs.delete_group(group, delete_volumes=True)
            except Exception:
                pass

    def test_consistent_group_snapshot_and_group_from_it(self):
        server, guest = self.boot(base.unique_name('group'))
        self.addCleanup(self._delete_groups, server.id)
        vol_b = self.volume(base.unique_name('b'))
        vol_c = self.volume(base.unique_name('c'))
        for vol in (vol_b, vol_c):
            self.wait_volume(vol.id, 'available')
        self.attach(server, vol_b, 'vdb')
        self.attach(server, vol_c, 'vdc')
        sha_b = self.write_blocks(guest, 'vdb')
        sha_c = self.write_blocks(guest, 'vdc')

        # What an operator types: a group of the consistent group type.
        group = base.cli(*VOLUME_API, 'volume', 'group', 'create',
                         '--volume-group-type', 'snapext-consistent',
                         '--volume-type', 'snapext', '--name',
                         base.unique_name('g'))
        self.wait_cli('group', _field(group, 'id'))
        base.cli(*VOLUME_API, 'volume', 'group', 'add', 'volume',
                 _field(group, 'id'), vol_b.id, vol_c.id, as_json=False)
        records_before = self.api(
            'GET', '/servers/%s/snapext-snapshots' % server.id).json()
        gsnap = base.cli(*VOLUME_API, 'volume', 'group', 'snapshot',
                         'create', '--name', base.unique_name('gs'),
                         _field(group, 'id'))
        self.wait_cli('group snapshot', _field(gsnap, 'id'))
        self.assertEqual('thawed', guest.freeze_status())

        # One capture of both volumes, taken frozen.
        tree = self.api('GET', '/servers/%s/snapext-snapshots'
                        % server.id).json()
        new = [s['id'] for s in tree['snapshots']
               if s['id'] not in {r['id'] for r in
                                  records_before['snapshots']}]
        self.assertEqual(1, len(new), tree)
        record = self.api('GET', '/snapext-snapshots/%s'
                          % new[0]).json()['snapshot']
        self.assertEqual('disks', record['kind'])
        self.assertEqual('frozen', record['quiesce']['outcome'])
        self.assertEqual({vol_b.id, vol_c.id},
                         {d['volume_id'] for d in record['disks']
                          if d['volume_id']})

        # The guest moves on; a group made from the snapshot holds the
        # files as they were at the snapshot.
        changed_b = self.write_blocks(guest, 'vdb')
        self.assertNotEqual(sha_b, changed_b)
        # OSC 10.5's "volume group create --group-snapshot" sends
        # "source_group_id": null, which Cinder rejects (400): the cinder
        # command it is.
        name2 = base.unique_name('g2')
        base.cli('--os-volume-api-version', '3.14', 'group-create-from-src',
                 '--group-snapshot', _field(gsnap, 'id'), '--name', name2,
                 command='cinder', as_json=False)
        group2_id = next(g.id for g in self.demo.block_storage.groups()
                         if g.name == name2)
        self.wait_cli('group', group2_id)
        vols2 = [v for v in self.admin.block_storage.volumes(
            details=True, all_projects=True) if v.group_id == group2_id]
        self.assertEqual(2, len(vols2))
        for vol in vols2:
            self.addCleanup(self._delete_volume, vol.id)
        by_source = {v.snapshot_id: v for v in vols2}
        snaps = {s.volume_id: s.id for s in self.admin.block_storage.snapshots(
            details=True, all_projects=True)
            if s.group_snapshot_id == _field(gsnap, 'id')}
        restored_b = by_source[snaps[vol_b.id]]
        # Workaround: Cinder 29's create_group_from_src leaves its volumes'
        # shared_targets at the column default (True) and service_uuid
        # NULL (create_volume sets both), so Nova's attach fails in
        # os-brick's guard_connection ('NoneType' object has no attribute
        # 'replace').  A clone goes through create_volume and attaches.
        clone = self.demo.block_storage.create_volume(
            name=base.unique_name('clone'), size=1,
            source_volume_id=restored_b.id)
        self.addCleanup(self._delete_volume, clone.id)
        self.wait_volume(clone.id, 'available')
        self.attach(server, clone, 'vdd')
        self.assertEqual(sha_b, self.read_blocks(guest, 'vdd'))
        self.assertEqual(changed_b, self.read_blocks(guest, 'vdb'))
        self.assertEqual(sha_c, self.read_blocks(guest, 'vdc'))
