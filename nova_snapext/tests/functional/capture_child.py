"""A capture in a separate process, for the tests that kill it midway.

Usage: python -m nova_snapext.tests.functional.capture_child STORE LOCKS DOM
Prints each progress stage on its own line as it happens.
"""

import os
import sys
import time

from oslo_config import cfg

from nova_snapext.capture import engine
from nova_snapext import conf as snapext_conf


def child_engine(store, locks, pause_at=None):
    """An engine that prints each stage, and stops for good at ``pause_at``.

    Stopping there lets the test kill the process exactly between two
    steps.
    """
    conf = cfg.ConfigOpts()
    snapext_conf.register_opts(conf)
    conf([], project='snapext')
    conf.set_override('file_store_path', store, 'snapext')
    conf.set_override('lock_path', locks, 'snapext')
    # The test's own engine settings that matter to the child.
    if os.environ.get('SNAPEXT_REVERT_KEEPS_MEMORY') == '0':
        conf.set_override('revert_keeps_memory', False, 'snapext')

    def progress(stage, **kw):
        print(stage, flush=True)
        if stage == pause_at:
            time.sleep(3600)

    return engine.Engine(conf, progress=progress)


def main(store, locks, domain):
    child_engine(store, locks).take(domain, quiesce_policy='required')


if __name__ == '__main__':
    main(*sys.argv[1:4])
