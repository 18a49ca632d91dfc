"""What Nova's operations mean for a server's snapshots, and the hooks.

The rules are pure (nova_snapext.virt.lifecycle); the driver hooks are
tested here with Nova's libvirt driver methods replaced, since moves to
another host (cold and live migration, evacuation) cannot run on one
machine: these tests are what proves them.
"""

from unittest import mock

import fixtures
from nova.compute import task_states
from nova.compute import vm_states
from nova import objects
from nova.virt.libvirt import driver as libvirt_driver
import testtools

from nova_snapext.tests.unit import test_virt_policy
from nova_snapext.virt import driver as snapext_driver
from nova_snapext.virt import lifecycle

HERE = 'compute-1'
THERE = 'compute-2'


def cleanup(task_state, vm_state=vm_states.ACTIVE, deleted=False,
            host=HERE, destroy_disks=True):
    return lifecycle.on_cleanup(task_state, vm_state, deleted, host, HERE,
                                destroy_disks)


class OnCleanupTest(testtools.TestCase):

    def test_delete_forgets(self):
        for args in [(task_states.DELETING,),
                     (None, vm_states.DELETED),
                     (None, vm_states.ACTIVE, True),
                     # a server deleted while it was shelved or moving
                     (task_states.DELETING, vm_states.SHELVED_OFFLOADED),
                     (task_states.DELETING, vm_states.RESIZED)]:
            self.assertEqual((lifecycle.FORGET, None), cleanup(*args), args)

    def test_delete_of_an_evacuated_server_forgets_too(self):
        self.assertEqual((lifecycle.FORGET, None),
                         cleanup(task_states.DELETING, host=THERE))

    def test_disks_kept_nothing_changes(self):
        # hard reboot, power on, host boot: destroy(destroy_disks=False)
        for task in (task_states.REBOOTING_HARD, task_states.POWERING_ON,
                     task_states.REBOOTING, None):
            self.assertEqual((None, None),
                             cleanup(task, destroy_disks=False), task)

    def test_shelve_offload_marks(self):
        action, reason = cleanup(task_states.SHELVING_OFFLOADING,
                                 vm_states.SHELVED)
        self.assertEqual(lifecycle.MARK, action)
        self.assertIn('shelve-offloaded', reason)
        self.assertIn(HERE, reason)

    def test_failed_unshelve_cleanup_marks(self):
        action, reason = cleanup(task_states.SPAWNING,
                                 vm_states.SHELVED_OFFLOADED)
        self.assertEqual(lifecycle.MARK, action)
        self.assertIn('shelve-offloaded', reason)

    def test_rebuild_marks(self):
        for task in lifecycle.REBUILD_TASKS:
            action, reason = cleanup(task)
            self.assertEqual(lifecycle.MARK, action)
            self.assertIn('rebuilt', reason)

    def test_evacuated_source_marks(self):
        # the source host, back up, cleans up what was evacuated away
        action, reason = cleanup(None, host=THERE)
        self.assertEqual(lifecycle.MARK, action)
        self.assertIn('evacuated to host %s' % THERE, reason)
        self.assertIn('stay on host %s' % HERE, reason)

    def test_moves_decide_in_their_own_hooks(self):
        # revert-resize on the destination, a live migration rolled back at
        # the destination (instance.host is the source there)
        for task in (task_states.RESIZE_REVERTING, task_states.MIGRATING):
            self.assertEqual((None, None), cleanup(task, host=THERE), task)
            self.assertEqual((None, None), cleanup(task), task)

    def test_other_disk_removal_marks(self):
        action, reason = cleanup(task_states.SPAWNING, vm_states.BUILDING)
        self.assertEqual(lifecycle.MARK, action)
        self.assertIn('disks were removed', reason)


def flavor(name='small', memory_mb=256, root_gb=1):
    return {'name': name, 'memory_mb': memory_mb, 'vcpus': 1,
            'root_gb': root_gb, 'ephemeral_gb': 0, 'swap': 0}


class MigrationReasonTest(testtools.TestCase):

    def test_same_host_same_shape_keeps(self):
        self.assertIsNone(lifecycle.migration_reason(
            HERE, HERE, flavor(), flavor(name='renamed')))

    def test_same_host_resize_marks(self):
        reason = lifecycle.migration_reason(HERE, HERE, flavor(),
                                            flavor('big', root_gb=2))
        self.assertIn('resized from flavor small to big', reason)

    def test_other_host_marks(self):
        reason = lifecycle.migration_reason(HERE, THERE, flavor(), flavor())
        self.assertIn('migrated to host %s' % THERE, reason)
        self.assertIn('stay on host %s' % HERE, reason)

    def test_in_progress(self):
        self.assertTrue(lifecycle.in_progress('x').startswith(
            lifecycle.IN_PROGRESS_PREFIX))

    def test_arrival(self):
        self.assertEqual((None, None), lifecycle.on_arrival(False, THERE,
                                                            HERE))
        self.assertEqual((None, None), lifecycle.on_arrival(True, HERE,
                                                            HERE))
        action, reason = lifecycle.on_arrival(True, THERE, HERE)
        self.assertEqual(lifecycle.MARK, action)
        self.assertIn('moved from host %s to host %s' % (THERE, HERE),
                      reason)


class HookTest(testtools.TestCase):
    """The driver's hooks around Nova's own methods (replaced here)."""

    def setUp(self):
        super().setUp()
        objects.register_all()
        self.driver = snapext_driver.SnapextLibvirtDriver.__new__(
            snapext_driver.SnapextLibvirtDriver)
        self.engine = mock.Mock()
        self.engine.store.list.return_value = []
        self.driver._snapext_engine = self.engine
        self.driver._snapext_resume = {}
        self.driver._snapext_thaw = {}
        snapext_driver.CONF.set_override('host', HERE)
        self.addCleanup(snapext_driver.CONF.clear_override, 'host')
        self.instance = mock.Mock(
            uuid='u1', task_state=None, vm_state=vm_states.ACTIVE,
            host=HERE, deleted=False, flavor=flavor(),
            old_flavor=None, new_flavor=None)
        self.instance.obj_attr_is_set.return_value = True

    def patch_super(self, name, **kw):
        patcher = mock.patch.object(libvirt_driver.LibvirtDriver, name, **kw)
        self.addCleanup(patcher.stop)
        return patcher.start()

    def test_delete_forgets(self):
        self.patch_super('cleanup')
        self.instance.task_state = task_states.DELETING
        self.driver.cleanup(None, self.instance, None)
        self.engine.forget_instance.assert_called_once_with('u1',
                                                            context=None)
        self.engine.mark.assert_not_called()

    def test_hard_reboot_cleanup_changes_nothing(self):
        self.patch_super('cleanup')
        self.instance.task_state = task_states.REBOOTING_HARD
        self.driver.cleanup(None, self.instance, None, destroy_disks=False)
        self.engine.forget_instance.assert_not_called()
        self.engine.mark.assert_not_called()

    def test_a_failing_engine_never_fails_novas_delete(self):
        self.patch_super('cleanup', return_value='nova')
        self.engine.forget_instance.side_effect = RuntimeError('boom')
        self.instance.task_state = task_states.DELETING
        self.assertEqual('nova', self.driver.cleanup(None, self.instance,
                                                     None))

    def test_failed_nova_cleanup_forgets_nothing(self):
        self.patch_super('cleanup', side_effect=RuntimeError('disk busy'))
        self.instance.task_state = task_states.DELETING
        self.assertRaises(RuntimeError, self.driver.cleanup, None,
                          self.instance, None)
        self.engine.forget_instance.assert_not_called()

    def test_resize_marks_in_progress_then_confirm_marks(self):
        self.patch_super('migrate_disk_and_power_off', return_value='[]')
        self.patch_super('confirm_migration')
        self.driver.get_host_ip_addr = lambda: '10.0.0.1'
        self.assertEqual('[]', self.driver.migrate_disk_and_power_off(
            None, self.instance, '10.0.0.1', flavor('big', root_gb=2), None))
        reason = self.engine.mark.call_args[0][1]
        self.assertTrue(reason.startswith(lifecycle.IN_PROGRESS_PREFIX))
        self.instance.old_flavor = flavor()
        self.instance.new_flavor = flavor('big', root_gb=2)
        migration = mock.Mock(source_compute=HERE, dest_compute=HERE)
        self.driver.confirm_migration(None, migration, self.instance, None)
        self.engine.unmark.assert_called_once_with(
            'u1', reason_prefix=lifecycle.IN_PROGRESS_PREFIX)
        self.assertIn('resized from flavor small to big',
                      self.engine.mark.call_args[0][1])

    def test_failed_resize_lifts_the_mark(self):
        self.patch_super('migrate_disk_and_power_off',
                         side_effect=RuntimeError('no space'))
        self.driver.get_host_ip_addr = lambda: '10.0.0.1'
        self.assertRaises(RuntimeError,
                          self.driver.migrate_disk_and_power_off,
                          None, self.instance, '10.0.0.2', flavor(), None)
        self.engine.unmark.assert_called_once_with(
            'u1', reason_prefix=lifecycle.IN_PROGRESS_PREFIX)

    def test_revert_resize_lifts_the_mark(self):
        self.patch_super('finish_revert_migration')
        self.driver.finish_revert_migration(None, self.instance, None,
                                            mock.Mock())
        self.engine.unmark.assert_called_once_with(
            'u1', reason_prefix=lifecycle.IN_PROGRESS_PREFIX)
        self.engine.mark.assert_not_called()

    def test_cold_migration_confirm_marks_left_behind(self):
        self.patch_super('confirm_migration')
        migration = mock.Mock(source_compute=HERE, dest_compute=THERE)
        self.driver.confirm_migration(None, migration, self.instance, None)
        self.assertIn('migrated to host %s' % THERE,
                      self.engine.mark.call_args[0][1])

    def test_live_migration_marks_left_behind_on_the_source(self):
        self.patch_super('live_migration')
        self.patch_super('post_live_migration')
        self.driver.live_migration(None, self.instance, THERE, None, None)
        self.assertTrue(self.engine.mark.call_args[0][1].startswith(
            lifecycle.IN_PROGRESS_PREFIX))
        data = objects.LibvirtLiveMigrateData(
            migration=objects.Migration(dest_compute=THERE))
        self.driver.post_live_migration(None, self.instance, {},
                                        migrate_data=data)
        self.engine.unmark.assert_called_once_with(
            'u1', reason_prefix=lifecycle.IN_PROGRESS_PREFIX)
        self.assertIn('live-migrated to host %s' % THERE,
                      self.engine.mark.call_args[0][1])

    def test_live_migration_rollback_lifts_the_mark(self):
        self.patch_super('rollback_live_migration_at_source')
        self.driver.rollback_live_migration_at_source(None, self.instance,
                                                      None)
        self.engine.unmark.assert_called_once_with(
            'u1', reason_prefix=lifecycle.IN_PROGRESS_PREFIX)

    def test_arrival_with_a_shared_store_marks(self):
        self.patch_super('post_live_migration_at_destination')
        self.instance.host = THERE  # still the source, as Nova calls it
        self.driver.post_live_migration_at_destination(None, self.instance,
                                                       None)
        self.engine.mark.assert_not_called()  # nothing known here
        self.engine.store.list.return_value = [{'id': 's1'}]
        self.driver.post_live_migration_at_destination(None, self.instance,
                                                       None)
        self.assertIn('moved from host %s to host %s' % (THERE, HERE),
                      self.engine.mark.call_args[0][1])

    def test_evacuate_rebuild_on_the_destination_marks(self):
        self.patch_super('spawn')
        self.engine.store.list.return_value = [{'id': 's1'}]
        self.instance.task_state = task_states.REBUILD_SPAWNING
        self.instance.system_metadata = {}
        self.driver.spawn(None, self.instance, None, [], None, {})
        self.assertIn('rebuilt on host %s' % HERE,
                      self.engine.mark.call_args[0][1])

    def test_plain_spawn_marks_nothing(self):
        self.patch_super('spawn')
        self.engine.store.list.return_value = [{'id': 's1'}]
        self.instance.task_state = task_states.SPAWNING
        self.instance.system_metadata = {}
        self.driver.spawn(None, self.instance, None, [], None, {})
        self.engine.mark.assert_not_called()

    def test_a_restore_that_fails_during_spawn_boots_cold(self):
        create = self.patch_super('_create_guest', return_value='cold')
        saved = test_virt_policy._saved()
        self.driver._host = mock.Mock()
        self.driver._host.get_connection().saveImageGetXMLDesc.return_value = (
            saved)
        self.engine.resumable.return_value = {
            'id': 's1', 'instance_uuid': 'u0', 'memory': {'location': 'm'},
            'disks': [{'target': 'vda', 'role': 'root'}]}
        # an image-backed root: no volume to check
        self.useFixture(fixtures.MockPatch(
            'nova_snapext.virt.resume.volume_sources', return_value={}))
        self.engine.clone.side_effect = RuntimeError('restore failed')
        self.driver._snapext_resume['u1'] = 's1'
        self.assertEqual('cold', self.driver._create_guest(
            None, test_virt_policy.NOVA_XML, self.instance))
        self.engine.clone.assert_called_once()
        create.assert_called_once_with(
            None, test_virt_policy.NOVA_XML, self.instance, power_on=True,
            pause=False, post_xml_callback=None)
