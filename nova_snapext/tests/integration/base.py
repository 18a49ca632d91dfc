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
    """A Nova server's domain, seen through the test guest's helpers."""

    def __init__(self, conn, server):
        super().__init__(conn, server.instance_name,
                         os.path.join(INSTANCES, server.id))
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

    def _delete_volume(self, volume_id):
        try:
            self.admin.block_storage.delete_volume(volume_id, force=True)
        except Exception:
            pass

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
