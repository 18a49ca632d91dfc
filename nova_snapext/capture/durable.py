"""Small files that must be whole after a crash: journals."""

import json
import os


def write_json(path, data):
    """Write ``data`` to ``path``: complete and on disk when this returns.

    Written to a temporary file, synced, renamed into place, and the
    directory synced, so a crash leaves the old content or the new one.
    """
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(path) or '.', os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
