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
