"""Freezing and thawing guest filesystems through qemu-guest-agent.

libvirt 9.0 refuses VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE together with a
memory snapshot, so the engine freezes through the agent itself around the
snapshot call and always thaws in a ``finally``.
"""

import contextlib
import time

import libvirt
from oslo_log import log as logging

from nova_snapext import exception
from nova_snapext import manifest

LOG = logging.getLogger(__name__)

POLICIES = ('required', 'preferred', 'off')


class Outcome(object):
    """What the quiesce step did, for the manifest."""

    def __init__(self, policy):
        self.policy = policy
        self.outcome = manifest.QUIESCE_NOT_REQUESTED
        self.frozen_ms = None

    def as_dict(self):
        return {'policy': self.policy, 'outcome': self.outcome,
                'frozen_ms': self.frozen_ms}


def _thaw(dom):
    try:
        dom.fsThaw()
        return True
    except libvirt.libvirtError as exc:
        LOG.warning('thawing %s failed: %s', dom.name(), exc)
        return False


@contextlib.contextmanager
def frozen(dom, policy):
    """Keep ``dom``'s filesystems frozen for the body, as ``policy`` says.

    Yields an :class:`Outcome` whose ``frozen_ms`` is set on exit: the time
    from the freeze request to the completed thaw, i.e. how long guest
    writes could have been blocked.
    """
    if policy not in POLICIES:
        raise exception.InvalidRequest(
            'quiesce policy must be one of %s, not %r'
            % (', '.join(POLICIES), policy))
    outcome = Outcome(policy)
    if policy == 'off':
        yield outcome
        return
    started = time.monotonic()
    try:
        count = dom.fsFreeze()
    except libvirt.libvirtError as exc:
        # A freeze that timed out may still complete inside the guest.
        _thaw(dom)
        if policy == 'required':
            raise exception.QuiesceRequired(
                'quiesce is required but the guest agent of %s could not '
                'freeze its filesystems: %s' % (dom.name(), exc))
        LOG.warning('%s: guest agent unavailable (%s); capturing '
                    'crash-consistent', dom.name(), exc)
        outcome.outcome = manifest.QUIESCE_AGENT_UNAVAILABLE
    if outcome.outcome == manifest.QUIESCE_AGENT_UNAVAILABLE:
        yield outcome
        return
    LOG.info('%s: froze %d filesystem(s)', dom.name(), count)
    outcome.outcome = manifest.QUIESCE_FROZEN
    try:
        yield outcome
    finally:
        thawed = _thaw(dom)
        outcome.frozen_ms = round((time.monotonic() - started) * 1000, 1)
        if thawed:
            LOG.info('%s: thawed after %.1f ms', dom.name(),
                     outcome.frozen_ms)


def freeze(dom):
    """Freeze ``dom``'s filesystems and leave them frozen.

    For windows that span several requests (the RPC agent's freeze, then a
    capture, then a thaw); whoever calls this owns the thaw.
    :returns: the number of filesystems frozen
    :raises QuiesceRequired: the agent could not freeze (nothing is frozen)
    """
    try:
        return dom.fsFreeze()
    except libvirt.libvirtError as exc:
        _thaw(dom)
        raise exception.QuiesceRequired(
            'the guest agent of %s could not freeze its filesystems: %s'
            % (dom.name(), exc))


def thaw(dom):
    """Thaw ``dom``'s filesystems; False (logged) when the agent failed."""
    return _thaw(dom)


def thaw_when_ready(dom, timeout):
    """Thaw ``dom``, retrying until its agent and libvirt let us.

    After a restore the agent inside has to reconnect to the new QEMU;
    after a crash libvirt may still be finishing the dead caller's snapshot
    job.  Either way the thaw has to wait, for at most ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            dom.fsThaw()
            return
        except libvirt.libvirtError as exc:
            if time.monotonic() > deadline:
                raise exception.SnapextError(
                    'the guest agent of %s did not thaw the guest within '
                    '%d s: %s' % (dom.name(), timeout, exc))
            time.sleep(0.2)
