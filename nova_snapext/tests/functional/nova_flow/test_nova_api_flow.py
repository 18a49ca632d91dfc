"""createImage through a whole in-process Nova, with snapext plugged in.

Nova's own functional harness (``nova.tests.functional.libvirt.base``
from the installed wheel) runs nova-api with the snapext paste filter in
its pipeline (loaded through the ``egg:snapext#snapext`` entry point, as
``etc/api-paste.ini.snippet`` tells operators), the conductor, the
scheduler, Placement and nova-compute with
``compute_driver = snapext.SnapextLibvirtDriver`` on fakelibvirt, and
Nova's Glance, Cinder and Neutron fixtures.  The snapext agent is the real
one the driver starts in ``init_host()``; it and nova-api's agent client
talk over oslo.messaging's in-memory bus.

What this proves: the wiring.  ``POST /servers/{id}/action createImage``
goes API -> compute manager -> ``SnapextLibvirtDriver.snapshot()`` ->
Glance for an image-backed server, and API -> snapext filter -> agent RPC
-> Glance for a volume-backed one; the resulting images carry the snapext
properties; Nova's task-state contract holds; the stock path still works.
What it does not prove: the capture itself.  fakelibvirt has no disks,
no memory and no qemu-img, so the engine's ``take()``, ``export_disk()``
and ``check_capturable()`` are replaced by fakes that commit a valid record
and write a small file.  The real capture through the same driver is proven
on a real guest in ``test_nova_driver`` and ``test_nova_spawn``.
"""

import configparser
import importlib.metadata
import os
import shutil
import threading
import warnings

import eventlet
import fixtures
from nova.compute import api as compute_api
from nova.compute import task_states
from nova import context as nova_context
from nova.tests import fixtures as nova_fixtures
from nova.tests.functional.libvirt import base
from oslo_utils import uuidutils
from sqlalchemy import exc as sa_exc

import nova.conf
from nova_snapext.api import volumes as snapext_volumes
from nova_snapext import conf as snapext_conf
from nova_snapext import manifest
from nova_snapext.tests.unit import fakes
from nova_snapext.virt import driver as snapext_driver

CONF = nova.conf.CONF
snapext_conf.register_opts(CONF)

SNAPEXT_PROPS = ('snapext_manifest', 'snapext_kind', 'snapext_host',
                 'snapext_quiesce', 'snapext_memory')


def _nova_api_paste():
    """The api-paste.ini the nova wheel installs under <prefix>/etc/nova."""
    for path in importlib.metadata.files('nova') or ():
        if str(path).endswith('etc/nova/api-paste.ini'):
            return str(path.locate())
    raise RuntimeError('the nova distribution ships no api-paste.ini')


def write_api_paste(dest_dir):
    """Nova's api-paste.ini with the snapext filter after keystonecontext.

    The change etc/api-paste.ini.snippet asks of operators, applied to the
    file of the installed Nova rather than to a copy kept here, so that a
    Nova whose pipelines change is tested as it ships.
    """
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(_nova_api_paste())
    for section in ('composite:openstack_compute_api_v21',
                    'composite:openstack_compute_api_v21_legacy_v2_'
                    'compatible'):
        stages = parser[section]['keystone'].split()
        stages.insert(stages.index('keystonecontext') + 1, 'snapext')
        parser[section]['keystone'] = ' '.join(stages)
    parser['filter:snapext'] = {'use': 'egg:snapext#snapext'}
    path = os.path.join(dest_dir, 'api-paste.ini')
    with open(path, 'w') as f:
        parser.write(f)
    return path


class FakeCapture(object):
    """Stands for the engine's capture and export, which need real disks.

    Everything around them is real: the engine object the driver and the
    agent build, its store (records are committed and read back), its
    domain lookup on the driver's (fake) libvirt connection.  The agent's
    RPC client in nova-api is not replaced either: faking the engine
    below the agent lets the volume-backed path cross the real RPC
    contract too.
    """

    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.takes = []
        self.exports = []

    def take(self, engine, domain, memory=True, quiesce_policy=None,
             disk_roles=None, extra=None, **options):
        dom = engine.domain(domain)
        uuid = dom.UUIDString()
        snapshot_id = uuidutils.generate_uuid()
        self.takes.append({'instance_uuid': uuid, 'memory': memory,
                           'quiesce_policy': quiesce_policy,
                           'disk_roles': disk_roles, 'extra': extra})
        disks = []
        for target, role in sorted((disk_roles or {}).items()):
            path = os.path.join(self.state_dir,
                                '%s-%s' % (snapshot_id, target))
            with open(path, 'wb') as f:
                f.write(b'state of %s at %s' % (target.encode(),
                                                snapshot_id.encode()))
            disks.append({'target': target, 'role': role['role'],
                          'volume_id': role.get('volume_id'),
                          'cinder_snapshot_id': None, 'path': path,
                          'snapshot': 'snapext-' + snapshot_id,
                          'format': 'qcow2', 'virtual_size': 1 << 30,
                          'backing': None})
        record = fakes.record(
            snapshot_id, instance_uuid=uuid, domain=dom.name(),
            kind=manifest.KIND_FULL if memory else manifest.KIND_DISKS,
            quiesce={'policy': quiesce_policy or 'preferred',
                     'outcome': manifest.QUIESCE_FROZEN, 'frozen_ms': 1.0},
            disks=disks, **(extra or {}))
        if not memory:
            record['memory'] = None
        engine.store.stage(uuid, snapshot_id)
        engine.store.commit(record)
        return record

    def export_disk(self, engine, snapshot_id, target, dest, fmt='qcow2'):
        record = engine.store.get(snapshot_id)
        disk = next(d for d in record['disks'] if d['target'] == target)
        self.exports.append((snapshot_id, target, fmt))
        shutil.copyfile(disk['path'], dest)


class SnapextNovaTestBase(base.ServersTestBase):
    """Nova in-process, the snapext driver and filter, a fake capture."""

    # 2.45: createImage answers {"image_id": ...}, which the filter must
    # reproduce for the volume-backed servers it serves itself.
    microversion = '2.45'
    # Real casts, as in a cloud: createImage answers before the compute
    # host snapshots, and the test waits for the snapshot to end.
    CAST_AS_CALL = False

    def setUp(self):
        super().setUp()
        # Nova's harness makes warnings errors; SQLAlchemy 2.1 deprecates
        # the noload() Nova's lazy loads of instance attributes use (a stop
        # loads the flavor for its notification).  Not ours to fix.
        warnings.filterwarnings('ignore', message='The noload',
                                category=sa_exc.SADeprecationWarning)
        work = self.useFixture(fixtures.TempDir()).path
        self.flags(file_store_path=os.path.join(work, 'store'),
                   lock_path=os.path.join(work, 'locks'),
                   full_snapshot_default=True, group='snapext')
        self.flags(snapshots_directory=os.path.join(work, 'snapshots'),
                   group='libvirt')
        os.makedirs(os.path.join(work, 'state'))
        self.capture = FakeCapture(os.path.join(work, 'state'))
        self.useFixture(fixtures.MonkeyPatch(
            'nova_snapext.capture.engine.Engine.take',
            lambda engine, *a, **kw: self.capture.take(engine, *a, **kw)))
        # fakelibvirt's disks are not files QEMU runs on
        self.useFixture(fixtures.MonkeyPatch(
            'nova_snapext.capture.engine.Engine.check_capturable',
            lambda engine, *a, **kw: None))
        self.useFixture(fixtures.MonkeyPatch(
            'nova_snapext.capture.engine.Engine.export_disk',
            lambda engine, *a, **kw: self.capture.export_disk(engine, *a,
                                                              **kw)))
        # Glance's fixture drops uploaded data; keep it, to see that the
        # image holds the exported root disk.
        self.uploaded = {}
        glance_update = self.glance.update

        def update(context, image_id, metadata, data=None, **kwargs):
            if data is not None:
                self.uploaded[image_id] = data.read()
            return glance_update(context, image_id, metadata, **kwargs)

        self.glance.update = update
        self.ctxt = nova_context.get_admin_context()
        self.flags(compute_driver='snapext.SnapextLibvirtDriver')
        self.start_compute()
        self.driver = self.computes['compute1'].driver
        # Loaded by Nova's load_compute_driver through the nova.virt shim.
        self.assertIsInstance(self.driver,
                              snapext_driver.SnapextLibvirtDriver)

    def _setup_services(self):
        # Before OSAPIFixture loads nova-api's paste pipeline.
        paste_dir = self.useFixture(fixtures.TempDir()).path
        self.flags(api_paste_config=write_api_paste(paste_dir),
                   group='wsgi')
        super()._setup_services()

    def _create_image(self, server, metadata=None):
        """POST createImage; the image id from Nova's 2.45 response."""
        body = {'createImage': {'name': 'snap-of-%s' % server['name']}}
        if metadata is not None:
            body['createImage']['metadata'] = metadata
        resp = self.api.api_post('/servers/%s/action' % server['id'], body,
                                 check_response_status=[202])
        self.assertEqual('compute 2.45',
                         resp.headers.get('OpenStack-API-Version'))
        self.assertEqual(['image_id'], list(resp.body))
        return resp.body['image_id']

    def _image(self, image_id):
        return self.glance.show(self.ctxt, image_id)

    def _assert_snapext_image(self, image, server_id):
        props = image['properties']
        for key in SNAPEXT_PROPS:
            self.assertIn(key, props)
        self.assertEqual('full', props['snapext_kind'])
        self.assertEqual('compute1', props['snapext_host'])
        record = self.driver.snapext.store.get(props['snapext_manifest'])
        self.assertEqual(server_id, record['instance_uuid'])
        self.assertEqual(image['id'], record['image_id'])
        return record

    def _spy_task_states(self):
        """The update_task_state calls of the driver, as keyword dicts."""
        seen = []
        snapshot = self.driver.snapshot

        def spying_snapshot(context, instance, image_id, update_task_state):
            # Forwarded as called: the manager's default expected_state
            # (IMAGE_SNAPSHOT) applies when the driver leaves it out.
            def spy(**kwargs):
                seen.append(kwargs)
                return update_task_state(**kwargs)
            return snapshot(context, instance, image_id, spy)

        self.useFixture(fixtures.MockPatchObject(
            self.driver, 'snapshot', side_effect=spying_snapshot))
        return seen

    def _wait_for_snapshot(self, server):
        """Wait for Nova's snapshot to end; the server as it is then.

        The compute manager runs the snapshot in a task of its own, after
        createImage has answered.
        """
        try:
            self.notifier.wait_for_versioned_notifications(
                'instance.snapshot.end')
        except AssertionError:
            # wrap_exception() reports what failed only as a notification.
            errors = [n['payload']['nova_object.data']
                      for n in self.notifier.versioned_notifications
                      if n['event_type'] == 'compute.exception']
            self.fail('the snapshot failed: %s' % errors)
        return self.api.get_server(server['id'])

    def _assert_back_to_active(self, server):
        self.assertEqual('ACTIVE', server['status'])
        self.assertIsNone(server['OS-EXT-STS:task_state'])


class SnapextCreateImageTest(SnapextNovaTestBase):

    def test_image_backed_full_snapshot(self):
        server = self._create_server(networks='none')
        task_states_seen = self._spy_task_states()

        image_id = self._create_image(server)
        server = self._wait_for_snapshot(server)

        self._assert_back_to_active(server)
        image = self._image(image_id)
        record = self._assert_snapext_image(image, server['id'])
        self.assertEqual('active', image['status'])
        # The driver took it (memory + root), not the filter: an
        # image-backed createImage passes through the filter to Nova.
        self.assertEqual(1, len(self.capture.takes))
        take = self.capture.takes[0]
        self.assertTrue(take['memory'])
        self.assertEqual({'vda': {'role': 'root'}}, take['disk_roles'])
        self.assertEqual(image_id, take['extra']['image_id'])
        # The image holds the exported root disk, as Nova's stock snapshot
        # holds it, so it stays an ordinary bootable image.
        self.assertEqual([(record['id'], 'vda', 'qcow2')],
                         self.capture.exports)
        self.assertEqual(b'state of vda at ' + record['id'].encode(),
                         self.uploaded[image_id])
        self.assertEqual('qcow2', image['disk_format'])
        # Nova's task-state contract, as the manager checks it.
        self.assertEqual(
            [{'task_state': task_states.IMAGE_PENDING_UPLOAD},
             {'task_state': task_states.IMAGE_UPLOADING,
              'expected_state': task_states.IMAGE_PENDING_UPLOAD}],
            task_states_seen)

    def test_image_backed_stock_snapshot_when_asked(self):
        # Nova's live snapshot copies the disk with a libvirt block job
        # and qemu-img, which fakelibvirt cannot run; everything around it
        # is Nova's stock code.
        live_snapshot = self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.driver.LibvirtDriver._live_snapshot')).mock
        server = self._create_server(networks='none')
        task_states_seen = self._spy_task_states()

        image_id = self._create_image(server, {'snapext_full': 'false'})
        server = self._wait_for_snapshot(server)

        self._assert_back_to_active(server)
        image = self._image(image_id)
        self.assertEqual('active', image['status'])
        self.assertEqual([], [k for k in image['properties']
                              if k.startswith('snapext_') and
                              k != 'snapext_full'])
        self.assertEqual([], self.capture.takes)
        self.assertEqual([], self.capture.exports)
        # Nova's own driver code took it (its direct snapshot is not
        # implemented for the local disk, so it fell back to the live
        # snapshot) and uploaded it.
        live_snapshot.assert_called_once()
        self.assertIn(image_id, self.uploaded)
        self.assertEqual(
            [{'task_state': task_states.IMAGE_PENDING_UPLOAD},
             {'task_state': task_states.IMAGE_UPLOADING,
              'expected_state': task_states.IMAGE_PENDING_UPLOAD},
             {'task_state': task_states.IMAGE_PENDING_UPLOAD,
              'expected_state': task_states.IMAGE_UPLOADING},
             {'task_state': task_states.IMAGE_UPLOADING,
              'expected_state': task_states.IMAGE_PENDING_UPLOAD}],
            task_states_seen)

    def _nfs_volumes(self):
        """Present the boot volume as snapext volumes are: NFS qcow2 files.

        The Cinder fixture's default connection is a libvirt "network"
        disk, which snapext does not capture; snapext's Cinder backend
        (cinder_snapext, an NFS driver) hands out files, which Nova's NFS
        volume driver attaches as file disks.  Only the mount is faked.
        """
        volume_id = nova_fixtures.CinderFixture.IMAGE_BACKED_VOL
        connections = dict(nova_fixtures.CinderFixture.VOLUME_CONNECTION_INFO)
        connections[volume_id] = {
            'driver_volume_type': 'nfs',
            'data': {'export': '192.0.2.10:/srv/snapext',
                     'name': 'volume-%s' % volume_id, 'format': 'qcow2'}}
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.cinder.CinderFixture.VOLUME_CONNECTION_INFO',
            connections))
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.volume.mount.mount'))
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.volume.mount.umount'))
        return volume_id

    def _create_volume_backed_server(self):
        volume_id = self._nfs_volumes()
        server = self._build_server(networks='none')
        server.pop('imageRef')
        server['block_device_mapping_v2'] = [{
            'boot_index': 0, 'source_type': 'volume',
            'destination_type': 'volume',
            'uuid': volume_id}]
        server = self.api.post_server({'server': server})
        return self._wait_for_state_change(server, 'ACTIVE')

    def _spy_nova_volume_snapshot(self):
        """Servers Nova's own createImage of a volume-backed server ran on."""
        calls = []
        snapshot_volume_backed = compute_api.API.snapshot_volume_backed

        def spy(api, context, instance, *args, **kwargs):
            calls.append(instance.uuid)
            return snapshot_volume_backed(api, context, instance, *args,
                                          **kwargs)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.compute.api.API.snapshot_volume_backed', spy))
        return calls

    def _adopting_snapshots(self):
        """Cinder snapshots createImage asks for, with their metadata.

        nova-api asks Cinder (through cinderclient, which Nova's Cinder
        fixture does not cover) for snapshots carrying ``snapext_adopt``;
        here they go to the fixture as Nova's own snapshot requests do.
        """
        made = []
        fixture = self.cinder

        def create(api, context, volume_id, name, description, metadata):
            snapshot = fixture.fake_create_snapshot_force(
                context, volume_id, name, description)
            snapshot['metadata'] = dict(metadata)
            made.append(snapshot)
            return snapshot

        self.useFixture(fixtures.MonkeyPatch(
            'nova_snapext.api.volumes.VolumeAPI.create_snapshot_adopting',
            create))
        return made

    def test_volume_backed_full_snapshot_through_the_filter(self):
        cinder_snapshots = self._adopting_snapshots()
        server = self._create_volume_backed_server()
        driver_snapshot = self.useFixture(fixtures.MockPatchObject(
            self.driver, 'snapshot')).mock
        nova_volume_snapshot = self._spy_nova_volume_snapshot()

        image_id = self._create_image(server)

        # The filter answered: Nova's createImage never ran, and the agent
        # on the server's host took the snapshot over RPC.
        self.assertEqual([], nova_volume_snapshot)
        driver_snapshot.assert_not_called()
        self.assertEqual(1, len(self.capture.takes))
        take = self.capture.takes[0]
        self.assertTrue(take['memory'])
        self.assertEqual(
            {'vda': {'role': 'root', 'volume_id':
                     nova_fixtures.CinderFixture.IMAGE_BACKED_VOL}},
            take['disk_roles'])
        image = self._image(image_id)
        record = self._assert_snapext_image(image, server['id'])
        self.assertEqual(nova_fixtures.CinderFixture.IMAGE_BACKED_VOL,
                         record['disks'][0]['volume_id'])
        # A bucket of properties without data, as Nova makes it for a
        # volume-backed server.
        self.assertEqual(0, image['size'])
        self.assertEqual('/dev/vda',
                         image['properties']['root_device_name'])
        self.assertNotIn(image_id, self.uploaded)
        # Nova's shape for a volume-backed image: the volume as a Cinder
        # snapshot in the block device mapping; that snapshot adopts the
        # state the capture left in the volume (the memory's instant).
        [snapshot] = cinder_snapshots
        self.assertEqual(
            {snapext_volumes.ADOPT: record['id'],
             snapext_volumes.HOST: 'compute1'}, snapshot['metadata'])
        self.assertEqual(nova_fixtures.CinderFixture.IMAGE_BACKED_VOL,
                         snapshot['volume_id'])
        self.assertTrue(image['properties']['bdm_v2'])
        self.assertEqual(
            [{'source_type': 'snapshot', 'destination_type': 'volume',
              'snapshot_id': snapshot['id'], 'boot_index': 0,
              'device_name': '/dev/vda'}],
            [{k: m.get(k) for k in ('source_type', 'destination_type',
                                    'snapshot_id', 'boot_index',
                                    'device_name')}
             for m in image['properties']['block_device_mapping']])
        # The action is in the server's history, as Nova records it.
        actions = self.api.get_instance_actions(server['id'])
        self.assertIn('createImage', [a['action'] for a in actions])
        self._assert_back_to_active(self.api.get_server(server['id']))

    def _spy_resume_decision(self):
        """(volume sources, refusal or None) of each resume decision."""
        decisions = []
        check = snapext_driver.policy.check_volume_sources

        def spy(record, sources):
            try:
                check(record, sources)
            except Exception as exc:
                decisions.append((sources, str(exc)))
                raise
            decisions.append((sources, None))

        self.useFixture(fixtures.MonkeyPatch(
            'nova_snapext.virt.policy.check_volume_sources', spy))
        return decisions

    def _boot_from(self, image_id):
        server = self._build_server(image_uuid=image_id, networks='none')
        server = self.api.post_server({'server': server})
        return self._wait_for_state_change(server, 'ACTIVE')

    def test_booting_the_volume_backed_image_resumes_only_its_volumes(self):
        cinder_snapshots = self._adopting_snapshots()
        server = self._create_volume_backed_server()
        image_id = self._create_image(server)
        [snapshot] = cinder_snapshots
        record_id = self._image(image_id)['properties']['snapext_manifest']
        decisions = self._spy_resume_decision()

        # Before Cinder adopted the volume's state, no volume can hold it:
        # the new server boots cold.
        self._boot_from(image_id)
        [(sources, refusal)] = decisions
        self.assertEqual({'vda': snapshot['id']}, sources)
        self.assertIn('has no Cinder snapshot', refusal)

        # What cinder_snapext's adopt records: the Cinder snapshot owns the
        # volume's state.  A server whose vda was created from exactly that
        # snapshot may resume the memory.
        store = self.driver.snapext.store
        record = store.get(record_id)
        record['disks'][0]['cinder_snapshot_id'] = snapshot['id']
        store.update(record)
        self._boot_from(image_id)
        self.assertEqual(({'vda': snapshot['id']}, None), decisions[1])

        # Another snapshot of the volume (the record names a different
        # one): cold.
        record['disks'][0]['cinder_snapshot_id'] = 'another-snapshot'
        store.update(record)
        self._boot_from(image_id)
        self.assertIn('not from Cinder snapshot another-snapshot',
                      decisions[2][1])

    def test_volume_backed_stock_snapshot_when_asked(self):
        # Nova's volume snapshot names the Cinder snapshot after the
        # volume's description, which Cinder always returns and the
        # fixture leaves out.
        fake_get = self.cinder.fake_get

        def get(context, volume_id, microversion=None):
            volume = fake_get(context, volume_id, microversion)
            volume.setdefault('display_description', '')
            return volume

        self.useFixture(fixtures.MockPatch(
            'nova.volume.cinder.API.get', side_effect=get, autospec=False))
        server = self._create_volume_backed_server()
        nova_volume_snapshot = self._spy_nova_volume_snapshot()

        image_id = self._create_image(server, {'snapext_full': 'false'})

        # The filter let it through to Nova, which snapshotted the volume
        # in Cinder as it always does.
        self.assertEqual([server['id']], nova_volume_snapshot)
        self.assertEqual([], self.capture.takes)
        image = self._image(image_id)
        self.assertEqual([], [k for k in image['properties']
                              if k.startswith('snapext_') and
                              k != 'snapext_full'])
        bdms = image['properties']['block_device_mapping']
        self.assertEqual(['snapshot'], [b['source_type'] for b in bdms])
        self._assert_back_to_active(self.api.get_server(server['id']))


class SnapextTaskStateTest(SnapextNovaTestBase):
    """snapext's revert and Nova's stop refuse each other (409)."""

    def setUp(self):
        super().setUp()
        self.server = self._create_server(networks='none')
        engine = self.driver.snapext
        self.record = self.capture.take(engine, self.server['id'],
                                        disk_roles={'vda': {'role': 'root'}})
        self.reverting = threading.Event()
        self.release = threading.Event()
        self.reverts = []

        def revert(engine, snapshot_id, context=None):
            self.reverts.append(snapshot_id)
            self.reverting.set()
            self.release.wait(30)

        self.useFixture(fixtures.MonkeyPatch(
            'nova_snapext.capture.engine.Engine.revert', revert))

    def _task_state(self):
        return self.api.get_server(self.server['id'])[
            'OS-EXT-STS:task_state']

    def _revert(self, status):
        return self.api.api_post(
            '/servers/%s/action' % self.server['id'],
            {'snapextRevert': {'snapshot_id': self.record['id']}},
            check_response_status=[status])

    def test_stop_during_a_revert_is_409(self):
        reverting = eventlet.spawn(self._revert, 202)
        self.assertTrue(self.reverting.wait(30))
        self.assertEqual('snapext_reverting', self._task_state())

        resp = self.api.api_post('/servers/%s/action' % self.server['id'],
                                 {'os-stop': None},
                                 check_response_status=[409])
        self.assertIn('snapext_reverting', resp.body['conflictingRequest'][
            'message'])
        # nor does another snapext action start
        resp = self._revert(409)
        self.assertIn('snapext_reverting', str(resp.body))

        self.release.set()
        reverting.wait()
        self.assertEqual([self.record['id']], self.reverts)
        self.assertIsNone(self._task_state())
        self.assertEqual('ACTIVE',
                         self.api.get_server(self.server['id'])['status'])
        # and once it is done, the stop runs
        self.api.post_server_action(self.server['id'], {'os-stop': None})
        self._wait_for_state_change(self.server, 'SHUTOFF')

    def test_revert_during_a_stop_is_409(self):
        stopping = threading.Event()
        stop_release = threading.Event()
        power_off = self.driver.power_off

        def slow_power_off(*args, **kwargs):
            stopping.set()
            stop_release.wait(30)
            return power_off(*args, **kwargs)

        self.useFixture(fixtures.MonkeyPatch(
            'nova_snapext.virt.driver.SnapextLibvirtDriver.power_off',
            lambda drv, *a, **kw: slow_power_off(*a, **kw)))
        self.api.post_server_action(self.server['id'], {'os-stop': None})
        self.assertTrue(stopping.wait(30))
        self.assertEqual('powering-off', self._task_state())

        resp = self._revert(409)
        self.assertIn('powering-off', str(resp.body))
        self.assertEqual([], self.reverts)

        stop_release.set()
        self._wait_for_state_change(self.server, 'SHUTOFF')
        self.assertIsNone(self._task_state())
