"""Errors raised by the capture engine.

Each carries a message meant for an operator; callers map them onto their
own failure types (HTTP faults, VolumeDriverException, ...).
"""


class SnapextError(Exception):
    """Base of every snapext error."""


class InvalidRequest(SnapextError):
    """The request cannot be carried out as asked (bad input)."""


class TooLarge(InvalidRequest):
    """What was sent is larger than this cloud accepts."""


class NotFound(SnapextError):
    """A domain or snapshot that does not exist."""


class Conflict(SnapextError):
    """Another operation holds the instance, or its state forbids this."""


class QuiesceRequired(SnapextError):
    """Quiesce policy 'required' but the guest agent could not freeze."""


class CaptureFailed(SnapextError):
    """libvirt or qemu-img failed while capturing; nothing was kept."""


class RevertFailed(SnapextError):
    """A revert could not be completed."""


class VerificationFailed(Conflict):
    """A memory image or disk state does not match its record.

    Raised before a revert or clone changes anything.

    :param disks: whether a disk state (or a clone's disk file) is damaged,
        not only the memory image
    """

    def __init__(self, message, disks=False):
        super().__init__(message)
        self.disks = disks


class ManifestError(SnapextError):
    """A snapshot record is corrupt, unknown or inconsistent."""


class BrokenRecord(ManifestError):
    """A record in the store that cannot be used: unreadable or foreign.

    Where it was found is known even when its content is not, so it can be
    listed (as broken, with ``reason``) and deleted.  The details are
    keyword arguments, kept in ``kwargs``, which oslo.messaging carries
    over RPC.

    :ivar snapshot_id: the record's name in the store
    :ivar instance_uuid: the instance whose records hold it
    :ivar reason: why it cannot be used
    """

    def __init__(self, message=None, snapshot_id=None, instance_uuid=None,
                 reason=None):
        super().__init__(message or 'snapshot record %s of instance %s is '
                         'broken: %s' % (snapshot_id, instance_uuid, reason))
        self.kwargs = {'snapshot_id': snapshot_id,
                       'instance_uuid': instance_uuid, 'reason': reason}
        self.snapshot_id = snapshot_id
        self.instance_uuid = instance_uuid
        self.reason = reason


class HostError(SnapextError):
    """The host failed under the engine: libvirt, a file, qemu-img.

    Raised instead of libvirtError, OSError or ProcessExecutionError, with
    a one-line message that names the cause (see capture/host_errors.py).
    """


class HypervisorUnavailable(HostError):
    """libvirtd cannot be reached at the configured ``libvirt_uri``."""


class StorageError(HostError):
    """A file could not be read or written (no space, no permission, ...).

    :ivar errno: the OS error number, or None
    """

    def __init__(self, message, errno=None):
        super().__init__(message)
        self.errno = errno
        self.kwargs = {'errno': errno}


class DiskToolFailed(HostError):
    """qemu-img is missing or failed."""


class ImageTransferFailed(SnapextError):
    """Glance failed or refused an upload or a download.

    The image an upload was for is deleted by then.
    """


class AgentUnavailable(SnapextError):
    """No snapext agent answered over RPC (down, unreachable, too old).

    Nothing was done by this request on the agent's side, or the agent's
    watchdog undoes it (a freeze is thawed within its timeout).
    """


class AgentLost(AgentUnavailable):
    """The agent stopped answering in the middle of a long call.

    Its call monitor heartbeat stopped: the agent died or its host is cut
    off.  What the call did is unknown until the agent is back; its next
    start recovers the instance (see Engine.recover).
    """


class AgentError(SnapextError):
    """The agent failed with an error that is not a snapext error."""
