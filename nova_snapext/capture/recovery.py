"""Cleaning up after captures interrupted by a crash."""

import os
import time

import libvirt
from oslo_log import log as logging

from nova_snapext.capture import chain
from nova_snapext.capture import domain_xml
from nova_snapext.capture import qemu_img
from nova_snapext.capture import quiesce
from nova_snapext import exception

LOG = logging.getLogger(__name__)


class RecoveryOps(object):
    """Engine operations run at service start."""

    def recover(self):
        """Clean up what captures interrupted by a crash left behind.

        Run at service start (Nova's init_host): a guest the dead process
        froze is thawed, a guest libvirt left paused by a snapshot is
        resumed, staged records are dropped, and overlay files that no disk
        chain and no snapshot record uses are removed.  Instances another
        live process is working on are left alone.
        """
        done = {'thawed': [], 'resumed': [], 'aborted': [], 'removed': [],
                'failed': []}
        # Only instances this store knows: a capture stages its record
        # before libvirt creates any overlay.
        for instance_uuid in self.store.instances():
            try:
                dom = self.conn.lookupByUUIDString(instance_uuid)
            except libvirt.libvirtError:
                continue
            try:
                with self._lock(instance_uuid):
                    self._recover_domain(dom, done)
            except exception.Conflict:
                LOG.info('%s is busy; not recovering it', dom.name())
            except Exception:
                LOG.exception('recovering %s failed', dom.name())
                done['failed'].append(dom.name())
        self._report('recovered', **{k: len(v) for k, v in done.items()})
        return done

    def _recover_domain(self, dom, done):
        instance_uuid = dom.UUIDString()
        staged = self.store.staged(instance_uuid)
        if staged:
            self._wait_for_libvirt_job(dom)
        if staged and dom.isActive():
            state, reason = dom.state()
            if (state == libvirt.VIR_DOMAIN_PAUSED and
                    reason == libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT):
                dom.resume()
                done['resumed'].append(dom.name())
            # A capture was under way, so the freeze, if any, was ours.
            quiesce.thaw_when_ready(
                dom, self.conf.snapext.thaw_after_restore_timeout)
            done['thawed'].append(dom.name())
        for snapshot_id in staged:
            self.store.abort(instance_uuid, snapshot_id)
            done['aborted'].append(snapshot_id)
        disks = domain_xml.writable_disks(dom.XMLDesc(0))
        # Everything reachable from a live disk or a snapshot's state file.
        pending = [d.path for d in disks] + [
            d['path'] for m in self.store.list(instance_uuid)
            for d in m['disks']]
        used = set()
        while pending:
            path = pending.pop()
            if path and path not in used and os.path.exists(path):
                used.add(path)
                pending.append(qemu_img.backing_file(path))
        for path in chain.orphan_overlays(
                [d.path for d in disks], used, os.listdir):
            LOG.warning('removing orphan overlay %s of %s', path, dom.name())
            os.unlink(path)
            done['removed'].append(path)

    def _wait_for_libvirt_job(self, dom):
        """Wait while libvirtd still runs a job on ``dom``.

        libvirtd finishes a snapshot even when the process that asked for it
        died; cleaning up the domain's files meanwhile would pull overlays
        from under it.
        """
        deadline = time.monotonic() + self.conf.snapext.block_job_timeout
        while (dom.isActive() and
               dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE):
            if time.monotonic() > deadline:
                raise exception.Conflict(
                    'libvirt still runs a job on %s after %d s'
                    % (dom.name(), self.conf.snapext.block_job_timeout))
            time.sleep(0.1)
