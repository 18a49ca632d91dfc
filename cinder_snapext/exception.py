"""Errors of the snapext Cinder backend.

Each is a VolumeDriverException: the volume manager turns that into an
'error' status; anything else would leave its records in 'creating'.
"""

from cinder import exception


class GroupSnapshotFailed(exception.VolumeDriverException):
    message = 'Consistent group snapshot %(group_snapshot)s failed: %(reason)s'


class OnlineSnapshotFailed(exception.VolumeDriverException):
    message = 'Snapshot %(snapshot)s of attached volume %(volume)s failed: ' \
              '%(reason)s'


class GroupSnapshotDeleteFailed(exception.VolumeDriverException):
    message = 'Deleting group snapshot %(group_snapshot)s failed: %(reason)s'


class SnapshotDeleteFailed(exception.VolumeDriverException):
    message = 'Deleting snapshot %(snapshot)s of attached volume ' \
              '%(volume)s failed: %(reason)s'


class AdoptFailed(exception.VolumeDriverException):
    message = 'Snapshot %(snapshot)s cannot adopt the internal snapshot ' \
              '%(name)s: %(reason)s'
