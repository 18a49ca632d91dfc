"""A bundle's ``disks/<target>.digests`` members: whole, or the changes.

A standalone bundle carries each disk state's digest file as the take
wrote it.  A delta (``--since``) carries only the digests of the clusters
that changed since the ancestor (:func:`digest.changes`), its ``base``
naming the same member of the ancestor's bundle: a whole list grows with
what the disk's file maps (48 bytes per cluster), the changes with what
the guest wrote.  An import keeps each disk's whole list as exported
(``disks/<target>.digests`` in the record's directory), so that the
changes a delta brings are applied to its base's list
(:func:`digest.applied`) and the result checked against the record's root
like any whole list.
"""

import os

from nova_snapext import bundle
from nova_snapext.capture import digest
from nova_snapext import exception


def _read(path):
    with open(path, 'rb') as f:
        return digest.decode(f.read())


def member(store, record, disk, base_record=None, base_disk=None):
    """The digests member of ``disk`` (a delta's: on ``base_disk``)."""
    name = bundle.digests_member(disk['target'])
    path = store.local_path(record, disk['digest']['location'])
    base_digest = base_disk.get('digest') if base_disk else None
    if base_digest:
        size, vsize, state = _read(path)
        base_size, base_vsize, base = _read(
            store.local_path(base_record, base_digest['location']))
        if (size, vsize) == (base_size, base_vsize):
            return bundle.bytes_member(
                name, 'digests',
                digest.encode(size, vsize, digest.changes(base, state)),
                target=disk['target'], base=name)
    # no digests of the base, or of another size: the whole list
    return bundle.file_member(name, 'digests', path, target=disk['target'])


def rebuild(listed, path, base_path):
    """Make the extracted member at ``path`` the state's whole list.

    :param listed: the member's entry in bundle.json
    :param base_path: the base snapshot's kept list of the same disk (a
        delta bundle), or None
    :raises BundleError: changes without a base list to apply them to
    """
    if not listed.get('base'):
        return
    if listed['base'] != listed['name'] or base_path is None:
        raise bundle.BundleError(
            'member %s holds changes to %r; a bundle\'s digests are whole, '
            'or (a delta) changes to its own member in the base bundle'
            % (listed['name'], listed['base']))
    if not os.path.exists(base_path):
        raise bundle.BundleError(
            'the base snapshot keeps no %s to apply the changes to (it was '
            'imported by an older snapext): import a bundle made without '
            '--since' % listed['name'])
    try:
        size, vsize, base = _read(base_path)
        delta_size, delta_vsize, delta = _read(path)
    except exception.ManifestError as exc:
        raise bundle.BundleError('member %s: %s' % (listed['name'], exc))
    if (size, vsize) != (delta_size, delta_vsize):
        raise bundle.BundleError('member %s: changes to a list of another '
                                 'cluster or disk size' % listed['name'])
    with open(path, 'wb') as f:
        f.write(digest.encode(size, vsize, digest.applied(base, delta)))
