"""Deleting a snapshot by merging it into the files that depend on it."""

import os
import time

from oslo_log import log as logging

from nova_snapext.capture import chain
from nova_snapext.capture import domain_xml
from nova_snapext.capture import qemu_img
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod

LOG = logging.getLogger(__name__)


class MergeOps(object):
    """Engine operations that remove snapshots, keeping their children."""

    def delete(self, snapshot_id):
        """Delete a snapshot; its children stay revertable.

        Its state files are merged into the files that depend on them (block
        pull or commit where the running domain uses them, qemu-img rebase
        where not), then removed, and its children are re-parented.
        """
        record = self.store.get(snapshot_id)
        with self._lock(record['instance_uuid']):
            self._delete(record)

    @staticmethod
    def _live_chains(dom, disks, backing):
        """{target: [active, its backing, ...]} of a running domain."""
        if dom is None or not dom.isActive():
            return {}
        chains = {}
        for disk in disks:
            files = [disk.path]
            while backing.get(files[-1]):
                files.append(backing[files[-1]])
            chains[disk.target] = files
        return chains

    def _delete(self, record):
        instance_uuid = record['instance_uuid']
        manifests = self.store.list(instance_uuid)
        try:
            dom = self._lookup(instance_uuid)
            disks = domain_xml.writable_disks(dom.XMLDesc(0))
        except exception.NotFound:
            dom, disks = None, []
        known = {d['path'] for m in manifests for d in m['disks']}
        known.update(d.path for d in disks)
        backing = {p: qemu_img.backing_file(p) for p in sorted(known)
                   if os.path.exists(p)}
        live_chains = self._live_chains(dom, disks, backing)
        states = {d['target']: d['path'] for d in record['disks']}
        steps = chain.plan_delete(states, backing, live_chains)
        self._report('delete-planned', snapshot=record['id'],
                     steps=len(steps))
        relocated = {}
        for step in steps:
            if isinstance(step, chain.RebaseOffline):
                self._report('rebase', path=step.path)
                qemu_img.rebase(step.path, step.new_backing)
            elif isinstance(step, chain.PullLive):
                self._report('block-pull', disk=step.target)
                dom.blockRebase(step.target, step.base, 0, 0)
                self._wait_block_job(dom, step.target,
                                     dropped=states[step.target])
            elif isinstance(step, chain.CommitLive):
                self._report('block-commit', disk=step.target, top=step.top)
                dom.blockCommit(step.target, step.base, step.top, 0, 0)
                self._wait_block_job(dom, step.target, dropped=step.top)
            elif isinstance(step, chain.Relocate):
                relocated[step.old_path] = step.new_path
        self._update_records(manifests, record, relocated)
        for step in steps:
            if isinstance(step, chain.Unlink) and os.path.exists(step.path):
                os.unlink(step.path)
        self.store.delete(record['id'])
        self._report('deleted', snapshot=record['id'])

    def _update_records(self, manifests, deleted, relocated):
        new_parent = dict(manifest_mod.reparent_on_delete(manifests,
                                                          deleted['id']))
        for m in manifests:
            if m['id'] == deleted['id']:
                continue
            changed = False
            if m['id'] in new_parent:
                m['parent_id'] = new_parent[m['id']]
                changed = True
            for disk in m['disks']:
                path = relocated.get(disk['path'], disk['path'])
                backing = qemu_img.backing_file(path)
                if (path, backing) != (disk['path'], disk['backing']):
                    disk['path'], disk['backing'] = path, backing
                    changed = True
            if changed:
                self.store.update(m)

    def _wait_block_job(self, dom, target, dropped):
        """Wait for a pull or commit; check ``dropped`` left the chain.

        A finished job and a failed one both simply vanish from
        blockJobInfo, so success is judged by the chain itself.
        """
        deadline = time.monotonic() + self.conf.snapext.block_job_timeout
        while True:
            info = dom.blockJobInfo(target, 0)
            if not info:
                break
            if time.monotonic() > deadline:
                dom.blockJobAbort(target, 0)
                raise exception.SnapextError(
                    'block job on %s did not finish within %d s'
                    % (target, self.conf.snapext.block_job_timeout))
            self._report('block-job', disk=target, cur=info.get('cur'),
                         end=info.get('end'))
            time.sleep(0.2)
        active = {d.target: d.path for d in
                  domain_xml.writable_disks(dom.XMLDesc(0))}[target]
        if dropped in qemu_img.chain(active):
            raise exception.SnapextError(
                'block job on %s of %s failed: %s is still in its chain'
                % (target, dom.name(), dropped))
