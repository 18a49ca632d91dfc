"""The integration tier's harness: a real cloud, the real clients.

The cloud is tools/aio (Keystone, Glance, Placement, Nova with the snapext
driver and filter, the Neutron API, Cinder with the snapext backend); these
tests fail, never skip, when it is not up.  Users are the AIO's: ``demo``
(member) and ``demo-reader`` (reader) in project demo, ``alt`` (member) in
project alt, ``admin``.  What a user types goes through the real
``openstack`` command of the AIO's venv; long flows use openstacksdk in
this process.  Proof comes from inside the guest (its TICK counter on the
serial console and files through its agent), never from file names on the
host.
"""

import hashlib
import json
import os
import subprocess
import time
import uuid

import libvirt
import openstack
import testtools

from nova_snapext.testing import guest as guest_mod

AIO = os.environ.get('SNAPEXT_AIO_DIR', '/opt/snapext-aio')
DATA = os.environ.get('SNAPEXT_AIO_DATA', '/var/lib/snapext-aio')
BIN = os.path.join(AIO, 'openstack', 'bin')
INSTANCES = os.path.join(DATA, 'nova', 'instances')
# the compute host's snapext store (the glance store's cache)
STORE = os.path.join(DATA, 'snapext')
AUTH_URL = 'http://127.0.0.1:5000/v3'
PASSWORD = 'snapext-aio'
USERS = {'admin': ('admin', 'admin'), 'demo': ('demo', PASSWORD),
         'demo-reader': ('demo', PASSWORD), 'alt': ('alt', PASSWORD)}
IMAGE = 'snapext-guest'
FLAVOR = 'snapext.256'
VERSION_HEADER = {'OpenStack-API-Version': 'instance-snapshot 1.0'}


def env(user):
    project, password = USERS[user]
    e = dict(os.environ)
    e.update(OS_AUTH_URL=AUTH_URL, OS_IDENTITY_API_VERSION='3',
             OS_USERNAME=user, OS_PASSWORD=password,
             OS_PROJECT_NAME=project, OS_USER_DOMAIN_NAME='Default',
             OS_PROJECT_DOMAIN_NAME='Default', OS_REGION_NAME='RegionOne',
             OS_AUTH_TYPE='password')
    e['PATH'] = BIN + ':' + e.get('PATH', '')
    return e


def connect(user):
    project, password = USERS[user]
    return openstack.connect(
        auth_url=AUTH_URL, username=user, password=password,
        project_name=project, user_domain_name='Default',
        project_domain_name='Default', region_name='RegionOne')


def require_aio():
    """Raise (never skip) when the AIO does not answer."""
    try:
        connect('admin').compute.get('/', raise_exc=True)
    except Exception as exc:
        raise AssertionError(
            'the AIO cloud is not up (%s: %s): run tools/aio/aio.sh up'
            % (type(exc).__name__, exc))


def cached(server_id, snapshot_id, name='manifest.json'):
    """A file of a snapshot's entry in the compute host's store."""
    return os.path.join(STORE, server_id, snapshot_id, name)


def cached_record(server_id, snapshot_id):
    with open(cached(server_id, snapshot_id)) as f:
        return json.load(f)


def unique_name(prefix):
    """A name for a test's server, image or volume, unique per run."""
    return 'snapext-it-%s-%s' % (prefix, uuid.uuid4().hex[:6])


class CliError(Exception):
    def __init__(self, argv, proc):
        super().__init__('%s -> %s\n%s' % (' '.join(argv), proc.returncode,
                                           proc.stderr))
        self.returncode = proc.returncode
        self.stderr = proc.stderr


def cli(*args, user='demo', as_json=True, command='openstack', check=True):
    """Run the real ``openstack`` (or ``nova``) command as ``user``."""
    argv = [os.path.join(BIN, command)] + list(args)
    if as_json:
        argv += ['-f', 'json']
    proc = subprocess.run(argv, env=env(user), capture_output=True,
                          text=True, timeout=900)
    if check and proc.returncode != 0:
        raise CliError(argv, proc)
    if as_json and proc.returncode == 0:
        return json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc


class ServerGuest(guest_mod.Guest):
    """A Nova server's domain, seen through the test guest's helpers.

    ``conn`` and ``instances``: the libvirtd and the instances directory
    (as the machine sees it) of the compute host the server is on.
    """

    def __init__(self, conn, server, instances=INSTANCES):
        super().__init__(conn, server.instance_name,
                         os.path.join(instances, server.id))
        self.uuid = server.id
        self.refresh()

    def destroy(self):
        raise AssertionError('servers are deleted through Nova')

    def resumed_tick(self, offset, timeout=60):
        """The first counter a restored QEMU printed, or None.

        Nova's serial log is ``append='off'``: a new QEMU (revert) starts
        the file anew, so a shorter file means its first TICK is the new
        one; otherwise the counter drops back in the appended output.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.console_size() < offset:
                ticks = self.ticks()
                if ticks:
                    return ticks[0][0]
            else:
                found = super().resumed_tick(offset, timeout=0.5)
                if found is not None:
                    return found
            time.sleep(0.2)
        return None


class TestCase(testtools.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        require_aio()
        cls.admin = connect('admin')
        cls.demo = connect('demo')
        cls.libvirt = libvirt.open('qemu:///system')
        libvirt.registerErrorHandler(lambda *a: None, None)

    def setUp(self):
        super().setUp()
        self.useFixture_timeout = None

    # -- servers --------------------------------------------------------

    def boot(self, name, image=IMAGE, conn=None, wait_guest=True):
        conn = conn or self.demo
        server = conn.compute.create_server(
            name=name, image_id=conn.image.find_image(image,
                                                      ignore_missing=False).id,
            flavor_id=conn.compute.find_flavor(FLAVOR,
                                               ignore_missing=False).id,
            networks='none')
        self.addCleanup(self.delete_server, server.id)
        server = conn.compute.wait_for_server(server, wait=300)
        guest = self.guest(server.id)
        if wait_guest:
            guest.wait_for_agent(timeout=180)
            guest.wait_for_tick(timeout=120)
        return server, guest

    def delete_server(self, server_id):
        try:
            self.admin.compute.delete_server(server_id)
            self.admin.compute.wait_for_delete(
                self.admin.compute.get_server(server_id), wait=180)
        except openstack.exceptions.NotFoundException:
            pass

    def guest(self, server_id):
        return ServerGuest(self.libvirt,
                           self.admin.compute.get_server(server_id))

    def wait_settled(self, server_id, conn=None, timeout=300):
        conn = conn or self.demo
        deadline = time.monotonic() + timeout
        while True:
            server = conn.compute.get_server(server_id)
            if server.status == 'ERROR':
                self.fail('server %s went to ERROR: %s'
                          % (server_id, server.fault))
            if server.task_state is None and server.status in (
                    'ACTIVE', 'SHUTOFF'):
                return server
            if time.monotonic() > deadline:
                self.fail('server %s still %s/%s' % (
                    server_id, server.status, server.task_state))
            time.sleep(1)

    # -- the snapext API, raw ---------------------------------------------

    def api(self, method, path, conn=None, json_body=None, headers=None):
        conn = conn or self.demo
        hdrs = dict(VERSION_HEADER)
        hdrs.update(headers or {})
        kwargs = {'headers': hdrs, 'raise_exc': False}
        if json_body is not None:
            kwargs['json'] = json_body
        return conn.compute.request(path, method, **kwargs)

    def full_snapshot_image(self, server, guest, prefix='full'):
        """``openstack server image create`` of a running server.

        :returns: (the image, (tick before, tick after) the capture)
        """
        low = guest.last_tick()[0]
        image = cli('server', 'image', 'create', '--name',
                    unique_name(prefix), '--wait', server.id)
        high = guest.last_tick()[0]
        self.addCleanup(self.admin.image.delete_image, image['id'],
                        ignore_missing=True)
        self.assertEqual('full', image['properties']['snapext_kind'])
        return image, (low, high)

    def revert_to(self, server_id, snapshot_id, ticks, kept=None, gone=()):
        """Revert through the CLI; the guest resumed inside the capture.

        :param ticks: (tick before, tick after) the capture
        :param kept: {path in the guest: sha256} it must hold again
        :param gone: paths written after the snapshot, absent again
        :returns: the reverted server's guest
        """
        offset = self.guest(server_id).console_size()
        cli('server', 'snapshot', 'revert', '--wait', server_id, snapshot_id,
            as_json=False)
        guest = self.guest(server_id)
        resumed = guest.resumed_tick(offset)
        self.assertIsNotNone(resumed, 'no TICK after the revert to %s'
                             % snapshot_id)
        low, high = ticks
        self.assertTrue(low - 1 <= resumed <= high + 3,
                        'counter resumed at %d, the snapshot was taken '
                        'between ticks %d and %d' % (resumed, low, high))
        guest.wait_for_agent()
        for path, sha256 in (kept or {}).items():
            self.assertEqual(sha256, guest.sha256(path), path)
        for path in gone:
            self.assertIsNone(guest.sha256(path), path)
        return guest

    def wait_image(self, image_id, timeout=300):
        image = self.demo.image.get_image(image_id)
        return self.demo.image.wait_for_status(image, 'active',
                                               failures=['killed', 'deleted'],
                                               wait=timeout)


class VolumeMixin(object):
    """snapext volumes for a base.TestCase: create, attach, raw blocks."""

    def wait_volume(self, volume_id, status, timeout=300):
        deadline = time.monotonic() + timeout
        while True:
            volume = self.admin.block_storage.get_volume(volume_id)
            if volume.status == status:
                return volume
            if volume.status.startswith('error') or (
                    time.monotonic() > deadline):
                self.fail('volume %s is %s, not %s'
                          % (volume_id, volume.status, status))
            time.sleep(1)

    def volume(self, name):
        # Blank: Cinder's NFS driver writes a volume made from an image as
        # raw even with nfs_qcow2_volumes, and snapext's internal
        # snapshots need qcow2 (the driver refuses raw volumes).  So the
        # guest writes raw blocks, no filesystem.
        volume = self.demo.block_storage.create_volume(
            name=name, size=1, volume_type='snapext')
        self.addCleanup(self._delete_volume, volume.id)
        return volume

    def boot_from_volume(self, name):
        """A server whose root is a snapext volume made from the image."""
        image = self.demo.image.find_image(IMAGE, ignore_missing=False)
        root = self.demo.block_storage.create_volume(
            name=unique_name('root'), size=1, volume_type='snapext',
            image_id=image.id)
        self.addCleanup(self._delete_volume, root.id)
        self.wait_volume(root.id, 'available')
        server = cli('server', 'create', '--volume', root.id,
                     '--flavor', FLAVOR, '--nic', 'none', '--wait', name)
        self.addCleanup(self.delete_server, server['id'])
        return self.demo.compute.get_server(server['id'])

    def _delete_volume(self, volume_id):
        """With the servers it is attached to, and its Cinder snapshots.

        Cleanups run last-in first-out, so a volume created after its
        server is cleaned up first: its servers go first here.
        """
        bs = self.admin.block_storage
        try:
            volume = bs.get_volume(volume_id)
        except openstack.exceptions.NotFoundException:
            return
        for attachment in volume.attachments or []:
            self.delete_server(attachment['server_id'])
        try:
            volume = bs.wait_for_status(volume, 'available',
                                        failures=['error'], wait=120)
            bs.delete_volume(volume, cascade=True)
        except openstack.exceptions.SDKException as exc:
            # Never hides a test's own failure; says what is left over.
            print('volume %s left over: %s' % (volume_id, exc))

    def attach(self, server, volume, device):
        self.demo.compute.create_volume_attachment(server,
                                                   volume_id=volume.id)
        self.wait_volume(volume.id, 'in-use')
        guest = self.guest(server.id)
        deadline = time.monotonic() + 60
        while guest.sh('test -b /dev/%s' % device)[0] != 0:
            self.assertLess(time.monotonic(), deadline,
                            '/dev/%s did not appear' % device)
            time.sleep(0.5)

    @classmethod
    def write_blocks(cls, guest, device, seek_mib=0):
        """1 MiB of random data at ``seek_mib``; return its sha256."""
        guest.check_sh('dd if=/dev/urandom of=/dev/%s bs=1M count=1 seek=%d '
                       '2>/dev/null && sync' % (device, seek_mib))
        return cls.read_blocks(guest, device, seek_mib)

    @staticmethod
    def read_blocks(guest, device, skip_mib=0):
        return guest.check_sh(
            'dd if=/dev/%s bs=1M count=1 skip=%d 2>/dev/null | sha256sum'
            % (device, skip_mib)).split()[0]


# Where the guest writes around the snapshots: a file on the root's ext4
# (vda), 1 MiB of raw blocks at a fixed offset on a volume (no filesystem:
# see VolumeMixin.volume).
BLOCK_OFFSETS_MIB = {'before-full': 0, 'before-disks': 2, 'after': 4}
ZEROS_SHA256 = hashlib.sha256(b'\0' * (1 << 20)).hexdigest()


class Snaps(object):
    """A server's two snapshots and what its guest wrote around them."""

    def __init__(self, targets):
        self.targets = targets
        self.written = {}       # name -> {target: sha256}
        self.full = None        # the full snapshot's id
        self.full_image = None
        self.full_ticks = None  # (low, high) bounds of the capture tick
        self.disks = None       # the disks-only snapshot's id

    def ids(self):
        return [i for i in (self.full, self.disks) if i]


class LifecycleMixin(object):
    """Snapshots through the real API and proofs from inside the guest.

    For a base.TestCase (with VolumeMixin when a target is a volume).
    """

    @staticmethod
    def _file(target, name):
        return '/mnt/%s/%s.bin' % (target, name)

    def write(self, guest, s, name):
        s.written[name] = {}
        for target in s.targets:
            if target == 'vda':
                digest = guest.write_file(self._file(target, name))
            else:
                digest = self.write_blocks(guest, target,
                                           BLOCK_OFFSETS_MIB[name])
            s.written[name][target] = digest

    def read(self, guest, target, name, prefix=None):
        if target == 'vda':
            return guest.sha256(self._file(prefix or target, name))
        return self.read_blocks(guest, target, BLOCK_OFFSETS_MIB[name])

    def full_snapshot(self, server, guest, s):
        """``openstack server image create``: a full snapshot."""
        low = guest.last_tick()[0]
        image = cli('server', 'image', 'create', '--name',
                    unique_name('full'), '--wait', server.id)
        self.addCleanup(self.admin.image.delete_image, image['id'],
                        ignore_missing=True)
        s.full_ticks = (low, guest.last_tick()[0])
        self.assertEqual('full', image['properties']['snapext_kind'])
        s.full = image['properties']['snapext_manifest']
        s.full_image = image['id']

    def disks_snapshot(self, server, s):
        """``openstack server image create`` of the stopped server."""
        self.stop(server)
        image = cli('server', 'image', 'create', '--name',
                    unique_name('disks'), '--wait', server.id)
        self.addCleanup(self.admin.image.delete_image, image['id'],
                        ignore_missing=True)
        self.assertEqual('disks', image['properties']['snapext_kind'])
        s.disks = image['properties']['snapext_manifest']
        return self.start(server)

    def take_snapshots(self, server, guest, targets=('vda',)):
        """Full, then disks-only; files written before, between, after."""
        s = Snaps(targets)
        self.write(guest, s, 'before-full')
        self.full_snapshot(server, guest, s)
        self.write(guest, s, 'before-disks')
        guest = self.disks_snapshot(server, s)
        self.write(guest, s, 'after')
        return s, guest

    def stop(self, server):
        cli('server', 'stop', server.id, as_json=False)
        self.wait_status(server.id, 'SHUTOFF')

    def start(self, server):
        cli('server', 'start', server.id, as_json=False)
        return self.running_guest(server.id)

    def running_guest(self, server_id, status='ACTIVE'):
        """Once Nova says ``status`` and the guest's agent answers."""
        self.wait_status(server_id, status)
        guest = self.guest(server_id)
        guest.wait_for_agent(timeout=180)
        return guest

    def wait_status(self, server_id, status, timeout=300):
        deadline = time.monotonic() + timeout
        while True:
            server = self.admin.compute.get_server(server_id)
            if server.status == 'ERROR':
                self.fail('server %s went to ERROR: %s'
                          % (server_id, server.fault))
            if server.status == status and server.task_state is None:
                return server
            if time.monotonic() > deadline:
                self.fail('server %s still %s/%s, not %s' % (
                    server_id, server.status, server.task_state, status))
            time.sleep(1)

    # -- proofs ----------------------------------------------------------

    def assertKept(self, guest, s, action, names=None, prefix=None):
        """Every file written so far is there with its sha256."""
        for name in names or s.written:
            for target, digest in s.written[name].items():
                self.assertEqual(
                    digest, self.read(guest, target, name, prefix),
                    '%s lost %s on %s' % (action, name, prefix or target))

    def assertAbsent(self, guest, s, names, action):
        for name in names:
            for target in s.targets:
                found = self.read(guest, target, name)
                expected = None if target == 'vda' else ZEROS_SHA256
                self.assertEqual(expected, found, '%s left %s on %s'
                                 % (action, name, target))

    def tree(self, server_id):
        return self.api('GET', '/servers/%s/snapext-snapshots'
                        % server_id).json()

    def states(self, server_id):
        """{snapshot id: (state, reason)} of the server's tree."""
        found = {}
        nodes = list(self.tree(server_id)['snapshots'])
        while nodes:
            node = nodes.pop()
            found[node['id']] = (node['state'], node.get('reason'))
            nodes.extend(node.get('children', []))
        return found

    def assertAvailable(self, server_id, s):
        states = self.states(server_id)
        for snapshot_id in s.ids():
            self.assertEqual('available', states[snapshot_id][0],
                             states[snapshot_id][1])

    def assertUnavailable(self, server_id, s, *reason_words):
        """Each snapshot says why; revert answers 409 through the CLI."""
        states = self.states(server_id)
        for snapshot_id in s.ids():
            state, reason = states[snapshot_id]
            self.assertEqual('unavailable', state)
            self.assertTrue(any(w in (reason or '') for w in reason_words),
                            'reason %r names none of %s'
                            % (reason, reason_words))
            err = cli('server', 'snapshot', 'revert', server_id,
                      snapshot_id, check=False, as_json=False)
            self.assertEqual(1, err.returncode)
            self.assertIn('409', err.stderr)

    def assertRevertable(self, server_id, s):
        """Both snapshots revert through the CLI, proven in the guest."""
        # After a reboot the counter starts again from 0: let it pass the
        # snapshot's, so that the restored counter drops back visibly.
        self.guest(server_id).wait_for_tick(after=s.full_ticks[1] + 10,
                                            timeout=180)
        guest = self.revert_to(server_id, s.full, s.full_ticks)
        self.assertKept(guest, s, 'the full revert', ['before-full'])
        self.assertAbsent(guest, s, ['before-disks', 'after'],
                          'the full revert')
        self.assertEqual('thawed', guest.freeze_status())

        cli('server', 'snapshot', 'revert', '--wait', server_id, s.disks,
            as_json=False)
        guest = self.running_guest(server_id)
        self.assertKept(guest, s, 'the disks-only revert',
                        ['before-full', 'before-disks'])
        self.assertAbsent(guest, s, ['after'], 'the disks-only revert')
        return guest
