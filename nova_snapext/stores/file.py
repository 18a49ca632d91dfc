"""The ``file`` store: a directory on the compute host.

Layout::

    <root>/<instance uuid>/<snapshot id>/manifest.json
    <root>/<instance uuid>/<snapshot id>/memory.save
    <root>/<instance uuid>/.<snapshot id>.staging/     (a capture under way)
    <root>/<instance uuid>/HEAD       (the snapshot the disks continue from)

A snapshot directory exists only once its manifest is complete: the staging
directory is renamed into place after the manifest is written and synced.
"""

import glob
import os
import shutil

from oslo_log import log as logging
from oslo_utils import uuidutils

from nova_snapext import exception
from nova_snapext import manifest as manifest_mod
from nova_snapext.stores import base

LOG = logging.getLogger(__name__)

MANIFEST = 'manifest.json'
HEAD = 'HEAD'


def _write_synced(path, text):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore(base.SnapshotStore):
    name = 'file'

    def __init__(self, conf):
        self.root = conf.snapext.file_store_path

    def _record_dir(self, instance_uuid, snapshot_id):
        return os.path.join(self.root, instance_uuid, snapshot_id)

    def _staging_dir(self, instance_uuid, snapshot_id):
        return os.path.join(self.root, instance_uuid,
                            '.%s.staging' % snapshot_id)

    def stage(self, instance_uuid, snapshot_id):
        path = self._staging_dir(instance_uuid, snapshot_id)
        os.makedirs(path)
        return path

    def commit(self, manifest):
        staging = self._staging_dir(manifest['instance_uuid'], manifest['id'])
        _write_synced(os.path.join(staging, MANIFEST),
                      manifest_mod.dumps(manifest))
        final = self._record_dir(manifest['instance_uuid'], manifest['id'])
        os.rename(staging, final)
        _fsync_dir(os.path.dirname(final))

    def abort(self, instance_uuid, snapshot_id):
        shutil.rmtree(self._staging_dir(instance_uuid, snapshot_id),
                      ignore_errors=True)

    def instances(self):
        if not os.path.isdir(self.root):
            return []
        # The default lock directory lives inside the store root too.
        return sorted(name for name in os.listdir(self.root)
                      if uuidutils.is_uuid_like(name))

    def staged(self, instance_uuid):
        pattern = os.path.join(glob.escape(self.root),
                               glob.escape(instance_uuid), '.*.staging')
        return sorted(os.path.basename(p)[1:-len('.staging')]
                      for p in glob.glob(pattern))

    def update(self, manifest):
        path = os.path.join(
            self._record_dir(manifest['instance_uuid'], manifest['id']),
            MANIFEST)
        if not os.path.exists(path):
            raise exception.NotFound('snapshot %s not found' % manifest['id'])
        _write_synced(path, manifest_mod.dumps(manifest))

    def _read(self, path):
        with open(path) as f:
            return manifest_mod.loads(f.read(), source=path)

    def get(self, snapshot_id):
        if not snapshot_id or os.sep in snapshot_id or \
                snapshot_id.startswith('.'):
            raise exception.NotFound('snapshot %s not found' % snapshot_id)
        found = glob.glob(os.path.join(glob.escape(self.root), '*',
                                       glob.escape(snapshot_id), MANIFEST))
        if not found:
            raise exception.NotFound('snapshot %s not found' % snapshot_id)
        return self._read(found[0])

    def list(self, instance_uuid):
        pattern = os.path.join(glob.escape(self.root),
                               glob.escape(instance_uuid), '*', MANIFEST)
        records = []
        for path in sorted(glob.glob(pattern)):
            try:
                records.append(self._read(path))
            except exception.ManifestError as exc:
                # One bad record must not hide the others.
                LOG.error('ignoring snapshot record %s: %s', path, exc)
        return records

    def delete(self, snapshot_id):
        m = self.get(snapshot_id)
        shutil.rmtree(self._record_dir(m['instance_uuid'], snapshot_id))

    def head(self, instance_uuid):
        try:
            with open(os.path.join(self.root, instance_uuid, HEAD)) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def set_head(self, instance_uuid, snapshot_id):
        directory = os.path.join(self.root, instance_uuid)
        os.makedirs(directory, exist_ok=True)
        _write_synced(os.path.join(directory, HEAD), snapshot_id or '')

    def forget(self, instance_uuid):
        directory = os.path.join(self.root, instance_uuid)
        count = len(glob.glob(os.path.join(glob.escape(directory), '*',
                                           MANIFEST)))
        shutil.rmtree(directory, ignore_errors=True)
        return count

    def local_path(self, manifest, location):
        return os.path.join(
            self._record_dir(manifest['instance_uuid'], manifest['id']),
            location)
