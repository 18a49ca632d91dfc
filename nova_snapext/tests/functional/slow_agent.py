"""``snapext-agent`` with chosen engine steps made slow, for the RPC tests.

A slow but alive agent (its call monitor heartbeats) and an agent killed in
the middle of a long call need a call that lasts long enough to act on,
whatever the speed of this host.  SNAPEXT_TEST_SLOW names the steps:
``module:Class.method=seconds[,...]``; each sleeps that long, then runs.
Everything else is the real agent: ``python -m
nova_snapext.tests.functional.slow_agent --config-file ...``.
"""

import functools
import importlib
import os
import sys
import time

from nova_snapext.cmd import agent


def _slow(spec):
    for item in filter(None, spec.split(',')):
        where, seconds = item.split('=')
        module_name, attr = where.split(':')
        owner_name, method_name = attr.split('.')
        owner = getattr(importlib.import_module(module_name), owner_name)
        original = getattr(owner, method_name)

        def slow(*args, _original=original, _seconds=float(seconds),
                 **kwargs):
            time.sleep(_seconds)
            return _original(*args, **kwargs)

        setattr(owner, method_name, functools.wraps(original)(slow))


if __name__ == '__main__':
    _slow(os.environ.get('SNAPEXT_TEST_SLOW', ''))
    sys.exit(agent.main())
