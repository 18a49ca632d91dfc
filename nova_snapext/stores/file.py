"""The ``file`` store: a directory on the compute host.

Layout::

    <root>/<instance uuid>/<snapshot id>/manifest.json
    <root>/<instance uuid>/<snapshot id>/memory.save
    <root>/<instance uuid>/.<snapshot id>.staging/     (a capture under way)
    <root>/<instance uuid>/HEAD       (the snapshot the disks continue from)

A snapshot directory exists only once its manifest is complete: the staging
directory is renamed into place after the manifest is written and synced.

A record directory whose manifest cannot be used (unreadable, not JSON, not
the schema, or a record of another snapshot or instance than where it
lies) is *broken*: :meth:`FileStore.list` leaves it out, :meth:`broken`
lists it with the reason, :meth:`get` raises BrokenRecord and
:meth:`delete_broken` removes it.  Its location, not its content, says
whose it is.
"""

import glob
import os
import shutil

from oslo_log import log as logging
from oslo_utils import uuidutils

from nova_snapext.capture import host_errors
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


@host_errors.translated
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
        try:
            # an instance directory stage() made for nothing (a refused
            # import) goes too; one with records or a HEAD stays
            os.rmdir(os.path.join(self.root, instance_uuid))
        except OSError:
            pass

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
        """The validated record at ``path``; BrokenRecord if unusable."""
        record_dir = os.path.dirname(path)
        snapshot_id = os.path.basename(record_dir)
        instance_uuid = os.path.basename(os.path.dirname(record_dir))

        def broken(reason):
            return exception.BrokenRecord(snapshot_id=snapshot_id,
                                          instance_uuid=instance_uuid,
                                          reason=reason)
        try:
            with open(path, 'rb') as f:
                text = f.read().decode('utf-8')
            record = manifest_mod.loads(text, source=MANIFEST)
        except OSError as exc:
            raise broken('cannot read %s: %s' % (
                MANIFEST, exc.strerror or exc)) from exc
        except UnicodeDecodeError as exc:
            raise broken('%s is not UTF-8 text: %s' % (MANIFEST, exc)) \
                from exc
        except exception.ManifestError as exc:
            raise broken(str(exc)) from exc
        # A record copied or moved into another's place must not be taken
        # for it: a delete would act on the other snapshot's files.
        if record['id'] != snapshot_id:
            raise broken('it is the record of snapshot %s' % record['id'])
        if record['instance_uuid'] != instance_uuid:
            raise broken('it is a record of instance %s'
                         % record['instance_uuid'])
        return record

    def _found(self, snapshot_id):
        if not snapshot_id or os.sep in snapshot_id or \
                snapshot_id.startswith('.'):
            return []
        return sorted(glob.glob(os.path.join(
            glob.escape(self.root), '*', glob.escape(snapshot_id),
            MANIFEST)))

    def get(self, snapshot_id):
        """The record; BrokenRecord if the only one found is unusable.

        A foreign copy elsewhere does not hide the record in its place.
        """
        first_broken = None
        for path in self._found(snapshot_id):
            try:
                return self._read(path)
            except exception.BrokenRecord as exc:
                first_broken = first_broken or exc
        if first_broken is not None:
            raise first_broken
        raise exception.NotFound('snapshot %s not found' % snapshot_id)

    def _scan(self, instance_uuid):
        """([valid records], [BrokenRecord]) of one instance's directory."""
        pattern = os.path.join(glob.escape(self.root),
                               glob.escape(instance_uuid), '*', MANIFEST)
        records, broken = [], []
        for path in sorted(glob.glob(pattern)):
            try:
                records.append(self._read(path))
            except exception.BrokenRecord as exc:
                broken.append(exc)
        return records, broken

    def list(self, instance_uuid):
        records, broken = self._scan(instance_uuid)
        for exc in broken:
            # One bad record must not hide the others; broken() lists it.
            LOG.error('%s', exc)
        return records

    def broken(self, instance_uuid):
        return [{'id': exc.snapshot_id, 'instance_uuid': exc.instance_uuid,
                 'reason': exc.reason}
                for exc in self._scan(instance_uuid)[1]]

    def delete(self, snapshot_id, context=None):
        m = self.get(snapshot_id)
        shutil.rmtree(self._record_dir(m['instance_uuid'], snapshot_id))

    def delete_broken(self, instance_uuid, snapshot_id, context=None):
        path = os.path.join(self._record_dir(instance_uuid, snapshot_id),
                            MANIFEST)
        if not os.path.exists(path):
            raise exception.NotFound('snapshot %s not found' % snapshot_id)
        try:
            self._read(path)
        except exception.BrokenRecord:
            shutil.rmtree(os.path.dirname(path))
            return
        raise exception.Conflict('snapshot record %s is not broken; delete '
                                 'the snapshot instead' % snapshot_id)

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

    def forget(self, instance_uuid, context=None):
        directory = os.path.join(self.root, instance_uuid)
        count = len(glob.glob(os.path.join(glob.escape(directory), '*',
                                           MANIFEST)))
        shutil.rmtree(directory, ignore_errors=True)
        return count

    def local_path(self, manifest, location):
        return os.path.join(
            self._record_dir(manifest['instance_uuid'], manifest['id']),
            location)
