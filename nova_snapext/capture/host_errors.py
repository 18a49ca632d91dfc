"""Failures of the host under the engine, turned into snapext errors.

libvirt, the file system and qemu-img fail with their own exception types
(``libvirtError``, ``OSError``, ``ProcessExecutionError``).  Every caller of
the engine (the CLI, the agent, the Nova driver, nova-api) handles snapext
errors, so each of those becomes one here, once, with a one-line message
naming the cause: :func:`guest.connect` for the libvirt connection,
:mod:`qemu_img` for its runs, and :func:`translated` on the classes that
the callers call (the engine, the file store).  Inside the engine the
original exceptions still flow, so its own handling (a capture that drops
its states, a revert that undoes itself) is unchanged.
"""

import errno as errno_mod
import functools
import inspect

import libvirt
from oslo_concurrency import processutils

from nova_snapext import exception


def first_line(text):
    text = str(text).strip()
    return text.splitlines()[0] if text else ''


def from_os_error(exc, doing=None):
    """A StorageError for an OSError, naming the file and the cause."""
    cause = exc.strerror or first_line(exc) or type(exc).__name__
    where = exc.filename
    message = '%s%s%s' % (doing + ': ' if doing else '', cause,
                          ': %s' % where if where else '')
    if exc.errno == errno_mod.ENOSPC:
        message += ' (the file system is full)'
    return exception.StorageError(message, errno=exc.errno)


def from_libvirt_error(exc):
    return exception.HostError('libvirt: %s' % first_line(exc))


def from_process_error(exc):
    return exception.DiskToolFailed('%s failed (exit %s): %s' % (
        exc.cmd, exc.exit_code, first_line(exc.stderr or exc.stdout)))


def convert(exc):
    """The snapext error for ``exc``, or None when it is not a host one."""
    if isinstance(exc, exception.SnapextError):
        return None
    if isinstance(exc, libvirt.libvirtError):
        return from_libvirt_error(exc)
    if isinstance(exc, processutils.ProcessExecutionError):
        return from_process_error(exc)
    if isinstance(exc, OSError):
        return from_os_error(exc)
    return None


def _wrap(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            converted = convert(exc)
            if converted is None:
                raise
            # The original stays the cause, for a traceback in a debug log.
            raise converted from exc
    return wrapper


def translated(cls):
    """Class decorator: public methods raise snapext errors only.

    Properties and private methods are left alone, so the class's own code
    still sees the original exceptions it handles.
    """
    for name, member in list(vars(cls).items()):
        if name.startswith('_') or not inspect.isfunction(member):
            continue
        setattr(cls, name, _wrap(member))
    return cls


def translated_all(cls):
    """:func:`translated` on ``cls`` and on the public methods it inherits.

    For a class assembled from mixins (the engine).
    """
    for klass in reversed(cls.__mro__[1:-1]):
        for name, member in vars(klass).items():
            if (name.startswith('_') or not inspect.isfunction(member) or
                    name in vars(cls)):
                continue
            setattr(cls, name, _wrap(member))
    return translated(cls)
