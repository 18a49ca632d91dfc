"""Progress reports and timings shared by the engine's operations."""

import contextlib
import time

from oslo_log import log as logging

LOG = logging.getLogger(__name__)


def log_progress(stage, **details):
    LOG.info('snapext %s %s', stage,
             ' '.join('%s=%s' % kv for kv in sorted(details.items())))


def elapsed_ms(since):
    return round((time.monotonic() - since) * 1000, 1)


@contextlib.contextmanager
def timed(timings, key):
    """Record the body's duration in ms as ``timings[key]``."""
    started = time.monotonic()
    try:
        yield
    finally:
        timings[key] = elapsed_ms(started)


class Throttled(object):
    """Log a long transfer's progress, at most once every ``every`` s.

    :param stage: what the log lines are about ("upload image ...")
    :param notify: callable(done bytes) told at every call, for a caller
        that shows the progress elsewhere (an operation's stage)
    """

    def __init__(self, stage, every=10.0, notify=None, clock=time.monotonic):
        self.stage = stage
        self.every = every
        self.notify = notify
        self._clock = clock
        self._started = self._last = clock()

    def __call__(self, done, final=False):
        if self.notify is not None:
            self.notify(done)
        now = self._clock()
        if final or now - self._last >= self.every:
            self._last = now
            seconds = max(now - self._started, 1e-6)
            log_progress(self.stage, bytes=done,
                         mib_per_s=round(done / seconds / (1 << 20), 1),
                         seconds=round(seconds, 1),
                         state='done' if final else 'running')
