"""Errors raised by the capture engine.

Each carries a message meant for an operator; callers map them onto their
own failure types (HTTP faults, VolumeDriverException, ...).
"""


class SnapextError(Exception):
    """Base of every snapext error."""


class InvalidRequest(SnapextError):
    """The request cannot be carried out as asked (bad input)."""


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


class ManifestError(SnapextError):
    """A snapshot record is corrupt, unknown or inconsistent."""


class AgentUnavailable(SnapextError):
    """No snapext agent answered over RPC (down, unreachable, too old).

    Nothing was done by this request on the agent's side, or the agent's
    watchdog undoes it (a freeze is thawed within its timeout).
    """


class AgentError(SnapextError):
    """The agent failed with an error that is not a snapext error."""
