"""The few qemu-img calls the engine makes on files QEMU does not hold."""

import os

from oslo_concurrency import processutils
from oslo_serialization import jsonutils


def _run(*args):
    return processutils.execute('qemu-img', *args)[0]


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


def create_overlay(path, backing, backing_fmt='qcow2'):
    _run('create', '-q', '-f', 'qcow2', '-F', backing_fmt, '-b', backing,
         path)


def rebase(path, new_backing, backing_fmt='qcow2'):
    """Safe rebase: copies what ``path`` read from its old backing."""
    if new_backing:
        _run('rebase', '-q', '-f', 'qcow2', '-F', backing_fmt,
             '-b', new_backing, path)
    else:
        _run('rebase', '-q', '-f', 'qcow2', '-b', '', path)


def convert(src, dest, fmt='qcow2'):
    """A standalone copy of ``src`` and its whole backing chain."""
    _run('convert', '-U', '-O', fmt, src, dest)
