"""SnapextLibvirtDriver: Nova's libvirt driver with complete snapshots.

``nova image-create`` on an image-backed server reaches :meth:`snapshot`;
when full snapshots apply it captures memory, CPU state, the root disk and
every attached volume at one instant through the capture engine, then
uploads the root disk to Glance as Nova does, so the image stays an ordinary
bootable image, with properties that point at the snapshot record.  Booting
from such an image resumes the captured memory (:meth:`spawn`).
Everything else is the stock driver.
"""

import os

from nova.compute import power_state
from nova.compute import task_states
import nova.conf
from nova import context as nova_context
from nova import exception as nova_exception
from nova import objects
from nova import utils as nova_utils
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import guest as libvirt_guest
from oslo_log import log as logging
from oslo_utils import excutils
from oslo_utils import fileutils

from nova_snapext.capture import domain_xml
from nova_snapext.capture import engine as engine_mod
from nova_snapext import conf as snapext_conf
from nova_snapext import exception
from nova_snapext.rpc import agent
from nova_snapext import task_states as snapext_task_states
from nova_snapext.virt import policy
from nova_snapext.virt import resume

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF
snapext_conf.register_opts(CONF)


class SnapextLibvirtDriver(libvirt_driver.LibvirtDriver):

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self._snapext_engine = None
        self._snapext_agent = None
        # instance uuid -> snapshot id, between spawn() and _create_guest()
        self._snapext_resume = {}
        # instance uuid -> snapshot id resumed paused, to thaw once running
        self._snapext_thaw = {}

    @property
    def snapext(self):
        """The capture engine, on the driver's own libvirt connection."""
        if self._snapext_engine is None:
            self._snapext_engine = engine_mod.Engine(
                CONF, conn=self._host.get_connection())
        return self._snapext_engine

    # -- service lifecycle -------------------------------------------------

    def init_host(self, host):
        super().init_host(host)
        snapext_task_states.clear_stale(nova_context.get_admin_context(),
                                        CONF.host)
        self.snapext.recover()
        self._snapext_agent = agent.AgentService(CONF, self.snapext,
                                                 CONF.host)
        self._snapext_agent.start()

    def cleanup_host(self, host):
        if self._snapext_agent is not None:
            self._snapext_agent.stop()
            self._snapext_agent = None
        super().cleanup_host(host)

    # -- snapshot ----------------------------------------------------------

    def snapshot(self, context, instance, image_id, update_task_state):
        snapshot_image = self._image_api.get(context, image_id)
        if not policy.full_snapshot_requested(
                snapshot_image.get('properties', {}),
                instance.system_metadata,
                CONF.snapext.full_snapshot_default):
            return super().snapshot(context, instance, image_id,
                                    update_task_state)
        try:
            guest = self._host.get_guest(instance)
        except nova_exception.InstanceNotFound:
            raise nova_exception.InstanceNotRunning(instance_id=instance.uuid)
        try:
            roles = self._disk_roles(context, instance, guest)
            self.snapext.check_capturable(instance.uuid)
        except exception.InvalidRequest as exc:
            LOG.warning('full snapshot not possible (%s); taking a stock '
                        'snapshot', exc, instance=instance)
            return super().snapshot(context, instance, image_id,
                                    update_task_state)
        running = guest.get_power_state(self._host) == power_state.RUNNING
        image_props = instance.image_meta.properties
        quiesce_policy = policy.quiesce_policy({
            'os_require_quiesce': image_props.get('os_require_quiesce',
                                                  False)})
        if quiesce_policy == 'required' and not image_props.get(
                'hw_qemu_guest_agent', False):
            raise nova_exception.QemuGuestAgentNotEnabled()

        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        LOG.info('Beginning snapext %s snapshot',
                 'full' if running else 'disk-only', instance=instance)
        try:
            record = self.snapext.take(
                instance.uuid, memory=running,
                quiesce_policy=quiesce_policy if running else 'off',
                disk_roles=roles,
                extra={'image_id': image_id,
                       'nova': {'flavor': instance.flavor.name,
                                'image_ref': instance.image_ref,
                                'project_id': instance.project_id}})
        except exception.QuiesceRequired as exc:
            raise nova_exception.InstanceQuiesceFailed(
                instance_id=instance.uuid, reason=str(exc))
        try:
            self._upload_root(context, instance, image_id, snapshot_image,
                              record, update_task_state)
        except Exception:
            with excutils.save_and_reraise_exception():
                LOG.exception('upload of snapext snapshot %s failed; '
                              'removing it', record['id'], instance=instance)
                self.snapext.delete(record['id'])
        LOG.info('snapext snapshot %s uploaded as image %s', record['id'],
                 image_id, instance=instance)

    def _disk_roles(self, context, instance, guest):
        disks = domain_xml.writable_disks(guest.get_xml_desc())
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        volumes = [(b.device_name, b.volume_id) for b in bdms
                   if b.is_volume and b.device_name]
        return policy.disk_roles(disks[0].target, volumes)

    def _upload_root(self, context, instance, image_id, snapshot_image,
                     record, update_task_state):
        image_format = CONF.libvirt.snapshot_image_format or 'qcow2'
        metadata = self._create_snapshot_metadata(
            instance.image_meta, instance, image_format,
            snapshot_image['name'])
        metadata['properties'].update(policy.image_properties(
            record, CONF.host, self.snapext.store.name))
        root = next(d for d in record['disks'] if d['role'] == 'root')
        update_task_state(task_state=task_states.IMAGE_UPLOADING,
                          expected_state=task_states.IMAGE_PENDING_UPLOAD)
        fileutils.ensure_tree(CONF.libvirt.snapshots_directory)
        # The root's state is an internal snapshot that nothing writes: it
        # is converted while the guest runs on, with no block copy.
        with nova_utils.tempdir(dir=CONF.libvirt.snapshots_directory) as tmp:
            out_path = os.path.join(tmp, record['id'])
            self.snapext.export_disk(record['id'], root['target'], out_path,
                                     image_format)
            with open(out_path, 'rb') as image_file:
                self._image_api.update(context, image_id, metadata,
                                       image_file)

    # -- fast clone ----------------------------------------------------------

    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        snapshot_id = policy.resumable_snapshot(instance.system_metadata)
        if snapshot_id and power_on:
            self._snapext_resume[instance.uuid] = snapshot_id
        try:
            return super().spawn(
                context, instance, image_meta, injected_files,
                admin_password, allocations, network_info=network_info,
                block_device_info=block_device_info, power_on=power_on,
                accel_info=accel_info)
        finally:
            self._snapext_resume.pop(instance.uuid, None)

    def _create_guest(self, context, xml, instance, power_on=True,
                      pause=False, post_xml_callback=None):
        snapshot_id = self._snapext_resume.pop(instance.uuid, None)
        if snapshot_id and (power_on or pause):
            guest = self._resume_snapshot(context, xml, instance, snapshot_id,
                                          pause, post_xml_callback)
            if guest is not None:
                return guest
        return super()._create_guest(context, xml, instance,
                                     power_on=power_on, pause=pause,
                                     post_xml_callback=post_xml_callback)

    def _resume_snapshot(self, context, nova_xml, instance, snapshot_id,
                         pause, post_xml_callback):
        """Start the instance from the snapshot's memory, or return None.

        None means "boot cold": the snapshot is not on this host, or the
        new instance's shape differs from the snapshot's.
        """
        try:
            record = self.snapext.store.get(snapshot_id)
            policy.check_volume_sources(
                record, resume.volume_sources(context, instance))
            memory_file = self.snapext.store.local_path(
                record, record['memory']['location'])
            saved_xml = self._host.get_connection().saveImageGetXMLDesc(
                memory_file, 0)
            sources = resume.disk_sources(saved_xml, nova_xml)
        except Exception as exc:
            LOG.warning('cannot resume snapshot %s (%s); booting cold',
                        snapshot_id, exc, instance=instance)
            return None
        source_dir = os.path.join(CONF.instances_path,
                                  record['instance_uuid'])
        target_dir = os.path.join(CONF.instances_path, instance.uuid)
        LOG.info('resuming snapext snapshot %s instead of booting',
                 snapshot_id, instance=instance)
        dom = self.snapext.clone(
            snapshot_id, instance.name, instance.uuid, sources,
            path_moves={source_dir: target_dir},
            xml_edit=resume.adopt(nova_xml), paused=pause,
            before_start=post_xml_callback)
        if pause:
            self._snapext_thaw[instance.uuid] = snapshot_id
        return libvirt_guest.Guest(dom)

    def _create_guest_with_network(self, context, xml, instance,
                                   network_info, block_device_info,
                                   power_on=True, vifs_already_plugged=False,
                                   post_xml_callback=None,
                                   external_events=None,
                                   cleanup_instance_dir=False,
                                   cleanup_instance_disks=False):
        guest = super()._create_guest_with_network(
            context, xml, instance, network_info, block_device_info,
            power_on=power_on, vifs_already_plugged=vifs_already_plugged,
            post_xml_callback=post_xml_callback,
            external_events=external_events,
            cleanup_instance_dir=cleanup_instance_dir,
            cleanup_instance_disks=cleanup_instance_disks)
        snapshot_id = self._snapext_thaw.pop(instance.uuid, None)
        if snapshot_id:
            # Resumed paused while Neutron plugged the ports; Nova has
            # resumed it now, so its agent can thaw the filesystems that
            # were frozen in the memory image.
            self.snapext.thaw_clone(snapshot_id, guest._domain)
        return guest
