"""The qemu-img calls the engine makes on disk files.

Every run fails as exception.DiskToolFailed, with qemu-img's own first line
of error or the reason it could not run at all (not installed).
"""

import os

from oslo_concurrency import processutils
from oslo_serialization import jsonutils

from nova_snapext.capture import host_errors
from nova_snapext import exception


def _run(*args):
    try:
        return processutils.execute('qemu-img', *args)[0]
    except processutils.ProcessExecutionError as exc:
        raise host_errors.from_process_error(exc) from exc
    except OSError as exc:
        # Popen's: the program itself is missing or not executable.
        raise exception.DiskToolFailed(
            'cannot run qemu-img (is it installed and on PATH?): %s'
            % (exc.strerror or exc)) from exc


def info(path):
    """qemu-img info of one file; -U because QEMU may hold it as backing."""
    return jsonutils.loads(_run('info', '-U', '--output=json', path))


def backing_file(path, data=None):
    """Absolute path of ``path``'s backing file, or None.

    :param data: ``info(path)``, when the caller has it already
    """
    data = data or info(path)
    backing = data.get('full-backing-filename') or data.get('backing-filename')
    if not backing:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(path), backing))


def chain(path):
    """``path`` and every file under it, top first."""
    files = []
    while path:
        files.append(path)
        path = backing_file(path)
    return files


def snapshot_names(path, data=None):
    """Names of the qcow2 internal snapshots in ``path``.

    :param data: ``info(path)``, when the caller has it already
    """
    data = data or info(path)
    return [s['name'] for s in data.get('snapshots', [])]


# The offline verbs below need the image's write lock: QEMU must not hold
# the file (the domain is shut off).

def snapshot_create(path, name):
    _run('snapshot', '-q', '-c', name, path)


def snapshot_apply(path, name):
    """Make ``path``'s active state the internal snapshot ``name``."""
    _run('snapshot', '-q', '-a', name, path)


def snapshot_delete(path, name):
    _run('snapshot', '-q', '-d', name, path)


def create(path, size, backing=None, backing_fmt=None):
    args = ['create', '-q', '-f', 'qcow2']
    if backing:
        args += ['-F', backing_fmt, '-b', backing]
    _run(*(args + [path, str(size)]))


def check(path):
    """Fail unless ``path`` is a consistent image (no leaks or errors)."""
    _run('check', '-q', path)


def rebase_unsafe(path, backing, backing_fmt='qcow2'):
    """Point ``path``'s header at ``backing``; no data is read or copied."""
    _run('rebase', '-q', '-u', '-F', backing_fmt, '-b', backing, path)


def commit(top, base):
    """Write ``top``'s data (and its chain's down to ``base``) into base.

    ``top`` is left as it was (-d).
    """
    _run('commit', '-q', '-d', '-b', base, top)


def write_state(src, snapshot, dest):
    """Write ``src``'s internal snapshot over all the guest data of ``dest``.

    ``dest`` is an existing qcow2 of the same virtual size: with -n it keeps
    its header (backing file, size) and its own internal snapshots; every
    guest byte reads as the state's afterwards (zeros written as zeros,
    whatever the backing file holds).  The file must not be in use.
    """
    _run('convert', '-n', '-U', '-O', 'qcow2', '-l',
         'snapshot.name=%s' % snapshot, src, dest)


def virtual_size(path):
    return info(path)['virtual-size']


def grow(path, size):
    """Grow ``path`` to ``size`` bytes (never shrinks)."""
    _run('resize', '-q', path, str(size))


def convert(src, dest, fmt='qcow2', snapshot=None):
    """A standalone copy of ``src`` (and its backing chain).

    :param snapshot: copy this internal snapshot's state instead of the
        active one.  A snapshot's clusters are never written while it
        exists (qcow2 copies on write), so it is read safely (-U) while
        QEMU runs on the file.
    """
    args = ['convert', '-U', '-O', fmt]
    if snapshot:
        args += ['-l', 'snapshot.name=%s' % snapshot]
    _run(*(args + [src, dest]))
