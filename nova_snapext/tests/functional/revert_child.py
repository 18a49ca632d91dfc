"""A revert in a separate process, for the tests that kill it midway.

Usage: python -m nova_snapext.tests.functional.revert_child STORE LOCKS
SNAPSHOT [PAUSE_AT]
Prints each progress stage on its own line as it happens; at the stage
PAUSE_AT it stops for good, for the test to kill it there.
"""

import sys

from nova_snapext.tests.functional import capture_child


def main(store, locks, snapshot_id, pause_at=None):
    capture_child.child_engine(store, locks, pause_at).revert(snapshot_id)


if __name__ == '__main__':
    main(*sys.argv[1:5])
