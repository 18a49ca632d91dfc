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
from nova_snapext import glance
from nova_snapext.rpc import agent
from nova_snapext import task_states as snapext_task_states
from nova_snapext.virt import lifecycle
from nova_snapext.virt import policy
from nova_snapext.virt import resume

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF
snapext_conf.register_opts(CONF)


def _project_of(instance_uuid):
    """The project of a server of this cloud, or None if there is none."""
    try:
        return objects.Instance.get_by_uuid(
            nova_context.get_admin_context(), instance_uuid).project_id
    except nova_exception.InstanceNotFound:
        return None


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
        self._snapext_agent = agent.AgentService(
            CONF, self.snapext, CONF.host,
            images=glance.Images(self._image_api),
            project_of=_project_of)
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
                       'nova': policy.nova_context(
                           {k: instance.flavor[k] for k in (
                               'name', 'memory_mb', 'vcpus', 'root_gb',
                               'ephemeral_gb', 'swap')},
                           instance.system_metadata, instance.image_ref,
                           instance.project_id)})
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
                # Nova deletes the image (delete_image_on_error).  The
                # image may be gone already, deleted during the upload, and
                # the agent then deleted the record on Glance's word.
                try:
                    self.snapext.delete(record['id'], context=context)
                except exception.NotFound:
                    LOG.info('snapext snapshot %s is gone already',
                             record['id'], instance=instance)
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
        # The snapshot is durable (its bundle in the store, for the glance
        # store) before Nova's image turns active and the server's task
        # state clears; the guest runs on meanwhile.
        durable = self.snapext.make_durable(record['id'], context)
        if durable:
            metadata['properties'][policy.BUNDLE_PROPERTY] = (
                durable['image_id'])
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

    # -- Nova's lifecycle: what follows the server, what stays behind -------

    def _snapext_note(self, instance, action, reason=None, context=None):
        """Forget or mark an instance's snapshots; never fails Nova's call.

        Availability is also derived from the disks themselves, so a mark
        that could not be written still cannot let a revert use disks that
        lost their snapshots.
        """
        if action is None:
            return
        try:
            if action == lifecycle.FORGET:
                LOG.info('server deleted: removing its snapext snapshots',
                         instance=instance)
                self.snapext.forget_instance(instance.uuid, context=context)
            else:
                LOG.info('snapext snapshots marked unavailable: %s', reason,
                         instance=instance)
                self.snapext.mark(instance.uuid, reason)
        except Exception:
            LOG.exception('could not %s the snapext snapshots (%s)', action,
                          reason, instance=instance)

    def _snapext_unmark(self, instance, prefix):
        try:
            self.snapext.unmark(instance.uuid, reason_prefix=prefix)
        except Exception:
            LOG.exception('could not lift the marks %r on the snapext '
                          'snapshots', prefix, instance=instance)

    def cleanup(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, migrate_data=None, destroy_vifs=True,
                destroy_secrets=True):
        result = super().cleanup(
            context, instance, network_info,
            block_device_info=block_device_info, destroy_disks=destroy_disks,
            migrate_data=migrate_data, destroy_vifs=destroy_vifs,
            destroy_secrets=destroy_secrets)
        deleted = instance.obj_attr_is_set('deleted') and instance.deleted
        self._snapext_note(instance, *lifecycle.on_cleanup(
            instance.task_state, instance.vm_state, deleted, instance.host,
            CONF.host, destroy_disks), context=context)
        return result

    def migrate_disk_and_power_off(self, context, instance, dest, flavor,
                                   network_info, block_device_info=None,
                                   timeout=0, retry_interval=0):
        # Until the move is confirmed or reverted, no revert may run on
        # either copy of the disks.
        self._snapext_note(instance, lifecycle.MARK, lifecycle.in_progress(
            'resize or migration from %s to %s'
            % (self.get_host_ip_addr(), dest)))
        try:
            return super().migrate_disk_and_power_off(
                context, instance, dest, flavor, network_info,
                block_device_info=block_device_info, timeout=timeout,
                retry_interval=retry_interval)
        except Exception:
            with excutils.save_and_reraise_exception():
                self._snapext_unmark(instance, lifecycle.IN_PROGRESS_PREFIX)

    def finish_revert_migration(self, context, instance, network_info,
                                migration, block_device_info=None,
                                power_on=True, share_info=None):
        # The source's disks, snapshots inside, are back in place.
        super().finish_revert_migration(
            context, instance, network_info, migration,
            block_device_info=block_device_info, power_on=power_on,
            share_info=share_info)
        self._snapext_unmark(instance, lifecycle.IN_PROGRESS_PREFIX)

    def confirm_migration(self, context, migration, instance, network_info):
        super().confirm_migration(context, migration, instance, network_info)
        self._snapext_unmark(instance, lifecycle.IN_PROGRESS_PREFIX)
        old = instance.old_flavor or instance.flavor
        new = instance.new_flavor or instance.flavor
        reason = lifecycle.migration_reason(
            migration.source_compute, migration.dest_compute, old, new)
        if reason:
            self._snapext_note(instance, lifecycle.MARK, reason)

    def live_migration(self, context, instance, dest, post_method,
                       recover_method, block_migration=False,
                       migrate_data=None):
        # Nova copies only the current data (block migration) or shares
        # the disks (the memory images stay in this host's store): no
        # snapshot can follow, and none may be taken or reverted meanwhile.
        self._snapext_note(instance, lifecycle.MARK, lifecycle.in_progress(
            'live migration to %s' % dest))
        return super().live_migration(
            context, instance, dest, post_method, recover_method,
            block_migration=block_migration, migrate_data=migrate_data)

    def rollback_live_migration_at_source(self, context, instance,
                                          migrate_data):
        super().rollback_live_migration_at_source(context, instance,
                                                  migrate_data)
        self._snapext_unmark(instance, lifecycle.IN_PROGRESS_PREFIX)

    def post_live_migration(self, context, instance, block_device_info,
                            migrate_data=None):
        super().post_live_migration(context, instance, block_device_info,
                                    migrate_data=migrate_data)
        dest = None
        if migrate_data is not None and migrate_data.obj_attr_is_set(
                'migration'):
            dest = migrate_data.migration.dest_compute
        self._snapext_unmark(instance, lifecycle.IN_PROGRESS_PREFIX)
        self._snapext_note(instance, lifecycle.MARK,
                           lifecycle.live_migration_reason(CONF.host, dest))

    def post_live_migration_at_destination(self, context, instance,
                                           network_info,
                                           block_migration=False,
                                           block_device_info=None):
        super().post_live_migration_at_destination(
            context, instance, network_info, block_migration=block_migration,
            block_device_info=block_device_info)
        # instance.host still names the source here.
        self._snapext_arrived(instance, instance.host)

    def _snapext_arrived(self, instance, source_host):
        """Mark the records of a server that moved here, if any.

        Only a store shared between hosts has them; the server's disks on
        this host hold no snapshot.
        """
        try:
            known = bool(self.snapext.store.list(instance.uuid))
        except Exception:
            LOG.exception('cannot read the snapext records',
                          instance=instance)
            return
        self._snapext_note(instance, *lifecycle.on_arrival(
            known, source_host, CONF.host))

    # -- fast clone ----------------------------------------------------------

    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        if instance.task_state in lifecycle.REBUILD_TASKS:
            # A rebuild marked its records when it destroyed the old disks;
            # an evacuation rebuilds here what another host had: only a
            # store shared between hosts has records of it.
            self._snapext_arrived(instance, None)
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
        bundle_image = policy.bundle_image(instance.system_metadata)
        try:
            # fetched into this host's cache first when it is not there
            record = self.snapext.resumable(snapshot_id, context,
                                            bundle_image)
            resume.check_volumes(context, instance, record)
            memory_file = self.snapext.store.local_path(
                record, record['memory']['location'])
            saved_xml = self._host.get_connection().saveImageGetXMLDesc(
                memory_file, 0)
            sources = resume.disk_sources(saved_xml, nova_xml)
            source_dir = resume.source_directory(saved_xml, record,
                                                 CONF.instances_path)
        except Exception as exc:
            LOG.warning('cannot resume snapshot %s (%s); booting cold',
                        snapshot_id, exc, instance=instance)
            return None
        target_dir = os.path.join(CONF.instances_path, instance.uuid)
        LOG.info('resuming snapext snapshot %s instead of booting',
                 snapshot_id, instance=instance)
        try:
            dom = self.snapext.clone(
                snapshot_id, instance.name, instance.uuid, sources,
                path_moves={source_dir: target_dir},
                xml_edit=resume.adopt(nova_xml, source_dir), paused=pause,
                before_start=post_xml_callback, context=context,
                bundle_image=bundle_image)
        except exception.VerificationFailed as exc:
            if exc.disks:
                # The disks Nova made from the image do not hold the
                # snapshot's state: a cold boot would run on them too.
                raise nova_exception.ImageUnacceptable(
                    image_id=instance.image_ref, reason=str(exc))
            LOG.error('not resuming snapshot %s: %s; booting cold',
                      snapshot_id, exc, instance=instance)
            return None
        except Exception as exc:
            # The clone removed what it defined; Nova boots as it would.
            LOG.warning('resuming snapshot %s failed (%s); booting cold',
                        snapshot_id, exc, instance=instance)
            return None
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
