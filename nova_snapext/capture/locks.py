"""One snapshot operation per instance at a time, across processes."""

import contextlib
import errno
import fcntl
import os

from nova_snapext import exception


@contextlib.contextmanager
def instance_lock(lock_dir, instance_uuid):
    """Hold the instance's lock or raise Conflict at once.

    A second operation is refused rather than queued: a revert queued behind
    a capture would act on a tree its caller has not seen.
    """
    os.makedirs(lock_dir, exist_ok=True)
    fd = os.open(os.path.join(lock_dir, '%s.lock' % instance_uuid),
                 os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise exception.Conflict(
                'another snapshot operation is running on instance %s'
                % instance_uuid)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def record_lock(lock_dir, snapshot_id):
    """Hold one record's bookkeeping lock, waiting for it.

    For writes of a record's own fields that change nothing on the disks
    (its digests, computed after a thaw): they wait for each other, and
    never take the instance's lock, so a snapshot operation that arrives
    meanwhile is never refused for their sake.
    """
    os.makedirs(lock_dir, exist_ok=True)
    fd = os.open(os.path.join(lock_dir, '%s.record.lock' % snapshot_id),
                 os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
