"""The capture engine: take, revert, clone and delete complete snapshots.

``Engine`` is the one entry point; each kind of operation lives in its own
module (take, restore, merge, recovery).  They drive libvirt and qemu-img;
the decisions (XML, chain plans, the record) come from the pure modules
next to them.
"""

import os

import libvirt
from oslo_log import log as logging
from oslo_utils import uuidutils

from nova_snapext.capture import chain
from nova_snapext.capture import domain_xml
from nova_snapext.capture import locks
from nova_snapext.capture import merge
from nova_snapext.capture import progress
from nova_snapext.capture import qemu_img
from nova_snapext.capture import recovery
from nova_snapext.capture import restore
from nova_snapext.capture import take
from nova_snapext import exception
from nova_snapext import manifest as manifest_mod
from nova_snapext import stores

LOG = logging.getLogger(__name__)


class Engine(take.TakeOps, restore.RestoreOps, merge.MergeOps,
             recovery.RecoveryOps):
    """Snapshot operations on libvirt domains.

    :param conf: an oslo.config ConfigOpts with the [snapext] options
    :param store: a SnapshotStore; the configured plugin when omitted
    :param progress: callable(stage, **details) told about each step; every
        step is logged either way
    """

    def __init__(self, conf, store=None, conn=None, progress=None):
        self.conf = conf
        self.store = store or stores.load(conf.snapext.store, conf)
        self._conn = conn
        self._progress = progress
        # libvirt prints every error to stderr by default; the engine turns
        # them into exceptions with messages, so printing is just noise.
        libvirt.registerErrorHandler(lambda ctx, err: None, None)

    @property
    def conn(self):
        if self._conn is None:
            self._conn = libvirt.open(self.conf.snapext.libvirt_uri)
        return self._conn

    def _report(self, stage, **details):
        progress.log_progress(stage, **details)
        if self._progress:
            self._progress(stage, **details)

    def domain(self, ident):
        """The libvirt domain named by uuid or name; NotFound if none."""
        return self._lookup(ident)

    def _lookup(self, ident):
        try:
            if uuidutils.is_uuid_like(ident):
                return self.conn.lookupByUUIDString(ident)
            return self.conn.lookupByName(ident)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise exception.NotFound('domain %s not found' % ident)
            raise

    def _lock(self, instance_uuid):
        return locks.instance_lock(self.conf.snapext.lock_path, instance_uuid)

    def _remove_unused(self, dom, paths, what):
        """Unlink those of ``paths`` that the domain's disks do not use.

        A failed operation may or may not have switched the domain to its
        new files; the ones it runs on must stay.
        """
        try:
            in_use = {d.path for d in
                      domain_xml.writable_disks(dom.XMLDesc(0))}
        except libvirt.libvirtError:
            LOG.exception('cannot tell which files %s uses; keeping %s',
                          dom.name(), what)
            return
        for path in paths:
            if path not in in_use and os.path.exists(path):
                LOG.info('removing %s %s', what, path)
                os.unlink(path)

    # -- queries ---------------------------------------------------------

    def list(self, domain):
        return self.store.list(self._lookup(domain).UUIDString())

    def current(self, domain):
        """Id of the snapshot the running disks descend from, or None."""
        dom = self._lookup(domain)
        return self._current(dom.UUIDString(), dom.XMLDesc(0))

    def _current(self, instance_uuid, xml):
        backing = {d.target: qemu_img.backing_file(d.path)
                   for d in domain_xml.writable_disks(xml)}
        return chain.current_snapshot(self.store.list(instance_uuid), backing)

    def tree(self, domain):
        dom = self._lookup(domain)
        instance_uuid = dom.UUIDString()
        manifests = self.store.list(instance_uuid)
        current = self._current(instance_uuid, dom.XMLDesc(0))
        return {'instance_uuid': instance_uuid, 'current': current,
                'snapshots': manifest_mod.tree(manifests, current)}
