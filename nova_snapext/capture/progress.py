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
