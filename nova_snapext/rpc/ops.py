"""Recent agent operations, for ``status(op_id)``."""

import collections
import threading
import time

from oslo_utils import uuidutils

KEEP = 256


class Operation(object):

    def __init__(self, method, instances, op_id=None):
        self.op_id = op_id or uuidutils.generate_uuid()
        self.method = method
        self.instances = list(instances)
        self.state = 'running'
        self.stage = 'started'
        self.error = None
        self.started = time.monotonic()
        self.ended = None

    def as_dict(self):
        end = self.ended or time.monotonic()
        return {'op_id': self.op_id, 'method': self.method,
                'instances': self.instances, 'state': self.state,
                'stage': self.stage, 'error': self.error,
                'elapsed_ms': round((end - self.started) * 1000, 1)}


class OperationLog(object):
    """The last ``KEEP`` operations; older ones answer state 'unknown'."""

    def __init__(self):
        self._lock = threading.Lock()
        self._ops = collections.OrderedDict()

    def start(self, method, instances, op_id=None):
        op = Operation(method, instances, op_id)
        with self._lock:
            self._ops[op.op_id] = op
            while len(self._ops) > KEEP:
                self._ops.popitem(last=False)
        return op

    def finish(self, op, error=None):
        op.ended = time.monotonic()
        op.state = 'error' if error else 'done'
        op.stage = op.state
        op.error = str(error) if error else None

    def status(self, op_id):
        with self._lock:
            op = self._ops.get(op_id)
        if op is None:
            return {'op_id': op_id, 'state': 'unknown'}
        return op.as_dict()
