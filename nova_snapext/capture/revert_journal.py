"""The journal of a revert in flight: one small file per instance.

It is written (synced, then renamed into place) before each step of a
revert that cannot be taken back, so that a revert found dead (the
process killed, the host or libvirtd restarted) can be finished or rolled
back by ``recover()``: the file names the snapshot, the phase reached (see
:mod:`revert_plan`), the undo state's name, the pending save of the
pre-revert guest and how the guest ran.  It lives next to the instance's
records when the store is a local directory, else under ``lock_path``;
the pending save goes beside it (the size of the guest's RAM, for the
time of the revert).
"""

import json
import os

from oslo_utils import timeutils

from nova_snapext.capture import durable

NAME = '.revert.json'


def directory(conf, store, instance_uuid):
    root = getattr(store, 'root', None) or conf.snapext.lock_path
    return os.path.join(root, instance_uuid)


def path(conf, store, instance_uuid):
    return os.path.join(directory(conf, store, instance_uuid), NAME)


def new(conf, store, record, token, files, sizes, was_active, was_paused):
    """A journal for reverting to ``record`` (not written yet).

    :param files: {target: file} each disk runs on once reverted (see
        :func:`revert_plan.revert_files`); each keeps the undo state
    """
    instance_uuid = record['instance_uuid']
    return {
        'snapshot_id': record['id'],
        'instance_uuid': instance_uuid,
        'phase': None,
        'undo': token,
        'files': files,
        'paths': [files[d['target']] for d in record['disks']],
        'sizes': sizes,
        'was_active': was_active,
        'was_paused': was_paused,
        'save': os.path.join(directory(conf, store, instance_uuid),
                             '.revert-%s.save' % token.rsplit('-', 1)[-1]),
        'started_at': timeutils.utcnow().isoformat() + 'Z',
    }


def files(journal, record):
    """The journal's {target: file}.

    A journal written before it named them (an older snapext) reverted to
    a snapshot's own files.
    """
    return journal.get('files') or {d['target']: d['path']
                                    for d in record['disks']}


def write(conf, store, journal, phase):
    """Record that ``phase`` is about to start; durable on return."""
    journal['phase'] = phase
    target = path(conf, store, journal['instance_uuid'])
    os.makedirs(os.path.dirname(target), exist_ok=True)
    durable.write_json(target, journal)


def read(conf, store, instance_uuid):
    """The instance's journal, or None."""
    try:
        with open(path(conf, store, instance_uuid)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def remove(conf, store, journal):
    """Forget the revert: its pending save, then its journal.

    A journal write cut short by a crash leaves its temporary file too.
    """
    target = path(conf, store, journal['instance_uuid'])
    for name in (journal['save'], target + '.tmp', target):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
