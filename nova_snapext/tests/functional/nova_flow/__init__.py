"""Tests that run a whole Nova in-process with Nova's functional harness.

Nova's harness expects eventlet's monkey patching to be in place before
oslo.db and the rest of Nova are imported, as nova/tests/functional does
it: oslo.db keeps each transaction in a threading.local, and if that is
the unpatched one, every green thread (the API, the compute manager's
tasks) shares one transaction, and a task's writes vanish when another
thread rolls back.  Test discovery imports this package before the test
modules beside it (sorted by name), so patching here comes first.
"""

from nova import monkey_patch
monkey_patch.patch()
