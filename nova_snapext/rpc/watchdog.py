"""The agent's watchdog: a guest frozen by ``freeze`` is always thawed.

A freeze spans several requests (freeze, capture, thaw) from a caller that
may die or lose its broker in between.  Each frozen guest gets a deadline;
when neither thaw nor capture arrives before it, the watchdog thaws the
guest itself.  A capture suspends the deadline (the guest must stay frozen
while its disks switch) and re-arms it afterwards, so a caller that dies
after capturing still leaves a thawed guest.
"""

import itertools
import os
import threading
import time

from oslo_log import log as logging

LOG = logging.getLogger(__name__)


class Frozen(object):
    """One guest frozen by an agent ``freeze`` request."""

    def __init__(self, uuid, name, op_id, timeout_s):
        self.uuid = uuid
        self.name = name
        self.op_id = op_id
        self.timeout_s = timeout_s
        self.frozen_at = time.monotonic()
        self.snapshots = []  # manifests captured inside this window
        self.busy = False
        self.token = None
        self.timer = None

    def elapsed_ms(self):
        return round((time.monotonic() - self.frozen_at) * 1000, 1)


class Watchdog(object):
    """Deadlines of frozen guests.

    :param expire: callable(Frozen) run (in a timer thread) when a guest's
        deadline passes; it must thaw the guest
    :param marker_dir: where a file per frozen guest outlives this process,
        so that the next agent thaws what a killed one left frozen
    """

    def __init__(self, expire, marker_dir=None):
        self._expire = expire
        self._lock = threading.Lock()
        self._frozen = {}
        self._tokens = itertools.count()
        self._marker_dir = marker_dir

    def _marker(self, uuid):
        return os.path.join(self._marker_dir, '%s.frozen' % uuid)

    def _mark(self, uuid):
        if self._marker_dir:
            os.makedirs(self._marker_dir, exist_ok=True)
            with open(self._marker(uuid), 'w'):
                pass

    def _unmark(self, uuid):
        if self._marker_dir:
            try:
                os.unlink(self._marker(uuid))
            except FileNotFoundError:
                pass

    def leftovers(self):
        """UUIDs a previous agent froze and never thawed."""
        if not self._marker_dir or not os.path.isdir(self._marker_dir):
            return []
        with self._lock:
            return sorted(name[:-len('.frozen')]
                          for name in os.listdir(self._marker_dir)
                          if name.endswith('.frozen')
                          and name[:-len('.frozen')] not in self._frozen)

    def forget(self, uuid):
        """A leftover has been thawed."""
        self._unmark(uuid)

    def frozen(self):
        with self._lock:
            return sorted(self._frozen)

    def get(self, uuid):
        with self._lock:
            return self._frozen.get(uuid)

    def arm(self, state):
        """Start watching a newly frozen guest."""
        with self._lock:
            self._mark(state.uuid)
            self._frozen[state.uuid] = state
            self._start(state)

    def _start(self, state):
        state.busy = False
        state.token = next(self._tokens)
        state.timer = threading.Timer(state.timeout_s, self._fire,
                                      (state.uuid, state.token))
        state.timer.daemon = True
        state.timer.start()

    def suspend(self, uuid):
        """Hold the deadline while a capture runs; the state or None."""
        with self._lock:
            state = self._frozen.get(uuid)
            if state is not None:
                state.timer.cancel()
                state.busy = True
            return state

    def rearm(self, uuid):
        """A fresh full timeout from now, after a capture."""
        with self._lock:
            state = self._frozen.get(uuid)
            if state is not None:
                self._start(state)

    def release(self, uuid):
        """Stop watching (the caller thaws); the state or None."""
        with self._lock:
            state = self._frozen.pop(uuid, None)
            if state is not None:
                state.timer.cancel()
                self._unmark(uuid)
            return state

    def release_all(self):
        with self._lock:
            states = list(self._frozen.values())
            self._frozen.clear()
        for state in states:
            state.timer.cancel()
            self._unmark(state.uuid)
        return states

    def _fire(self, uuid, token):
        with self._lock:
            state = self._frozen.get(uuid)
            # A stale timer (re-armed since, or suspended by a capture in
            # progress) must not thaw.
            if state is None or state.token != token or state.busy:
                return
            del self._frozen[uuid]
        LOG.warning('%s: no thaw or capture within %.1f s of freeze %s; '
                    'the watchdog thaws it', state.name, state.timeout_s,
                    state.op_id)
        try:
            self._expire(state)
        except Exception:
            # The marker stays: the next agent retries the thaw.
            LOG.exception('watchdog could not thaw %s', state.name)
        else:
            self._unmark(uuid)
