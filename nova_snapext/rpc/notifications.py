"""Glance's image.delete notifications: drop the snapshots behind an image.

A full snapshot made through createImage has a record on its compute host
that names the Glance image (``image_id``).  Deleting the image through
Glance (``openstack image delete``) would leave that record, its memory
image and its internal snapshots on the host for good, since nothing else
names them any more.  So every agent listens for Glance's ``image.delete``
notifications and deletes its own records of the deleted image.

Every host must see every notification (only the host that holds a record
can delete it), so each listens through its own pool, ``snapext-<host>``:
a pool is a queue of its own, and it takes nothing from other consumers of
Glance's notifications (a telemetry service on the default queue).
"""

import time

from oslo_config import cfg
from oslo_log import log as logging
import oslo_messaging as messaging

from nova_snapext import exception

LOG = logging.getLogger(__name__)

EVENT = 'image.delete'
DEFAULT_TOPICS = ['notifications']
# A record may be busy (a capture, revert or delete of its instance in
# flight): the deletion is retried that long, then left to the operator.
RETRY_INTERVAL = 2.0
RETRY_FOR = 120.0


def pool_name(host):
    return 'snapext-%s' % host


def deleted_image(event_type, payload):
    """The id of the image an event says was deleted, or None."""
    if event_type != EVENT or not isinstance(payload, dict):
        return None
    return payload.get('id') or None


def snapshots_of_deleted_image(image_id, records):
    """Ids of the ``records`` made for image ``image_id``: to delete.

    :param records: the snapshot records of this host
    """
    return [r['id'] for r in records if r.get('image_id') == image_id]


def snapshots_losing_bundle(image_id, records):
    """Ids of the ``records`` whose bundle needs image ``image_id``.

    The snapshot whose bundle it was, and those whose deltas sit on it,
    parents first (a chain is longer than its parent's): each is uploaded
    again, a delta on its parent's new bundle.
    """
    hit = [r for r in records
           if image_id in (r.get('durable') or {}).get('chain', ())]
    return [r['id'] for r in sorted(hit, key=lambda r: len(
        r['durable']['chain']))]


def local_records(store):
    """Every committed record of this host's store."""
    return [record for uuid in store.instances()
            for record in store.list(uuid)]


class ImageDeleteEndpoint(object):
    """The listener's endpoint: ``info`` is Glance's priority for it.

    :param store: this host's snapshot store
    :param delete: callable(snapshot id) that deletes a snapshot with the
        exclusion of the agent's own delete; may raise Conflict (busy) or
        NotFound (deleted meanwhile)
    :param redo_durable: callable(image id, [snapshot ids]) that uploads
        again the bundles a deleted bundle image took with it (returns at
        once); None where the store keeps no bundles
    """

    filter_rule = messaging.NotificationFilter(
        event_type='^%s$' % EVENT.replace('.', r'\.'))

    def __init__(self, store, delete, redo_durable=None, sleep=time.sleep,
                 clock=time.monotonic):
        self.store = store
        self.delete = delete
        self.redo_durable = redo_durable
        self._sleep = sleep
        self._clock = clock

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        image_id = deleted_image(event_type, payload)
        if image_id is None:
            return
        records = local_records(self.store)
        lost = snapshots_losing_bundle(image_id, records)
        if lost and self.redo_durable is not None:
            self.redo_durable(image_id, lost)
        doomed = snapshots_of_deleted_image(image_id, records)
        if not doomed:
            LOG.debug('image %s deleted: no snapshot of this host was made '
                      'for it', image_id)
            return
        for snapshot_id in doomed:
            if self._delete(snapshot_id):
                LOG.info('image %s was deleted: deleted snapshot %s made '
                         'for it (record, memory image, internal '
                         'snapshots)', image_id, snapshot_id)

    def _delete(self, snapshot_id):
        deadline = self._clock() + RETRY_FOR
        while True:
            try:
                self.delete(snapshot_id)
                return True
            except exception.NotFound:
                LOG.debug('snapshot %s is gone already', snapshot_id)
                return False
            except exception.Conflict as exc:
                if self._clock() >= deadline:
                    LOG.warning('snapshot %s stays although its image was '
                                'deleted: %s; delete it through '
                                'DELETE /snapext-snapshots/%s',
                                snapshot_id, exc, snapshot_id)
                    return False
                self._sleep(RETRY_INTERVAL)
            except Exception:
                LOG.exception('snapshot %s stays although its image was '
                              'deleted', snapshot_id)
                return False


def topics(conf):
    """The service's notification topics (Glance sends on the same)."""
    try:
        return list(conf.oslo_messaging_notifications.topics)
    except cfg.NoSuchOptError:
        return list(DEFAULT_TOPICS)


class ImageDeleteListener(object):
    """The notification server around :class:`ImageDeleteEndpoint`.

    :param transport: a notification transport; the service's own (its
        ``[oslo_messaging_notifications] transport_url``) when None
    """

    def __init__(self, conf, host, endpoint, transport=None):
        self.conf = conf
        self.host = host
        self.endpoint = endpoint
        self._transport = transport
        self._server = None

    def start(self):
        transport = self._transport or messaging.get_notification_transport(
            self.conf)
        exchange = self.conf.snapext.glance_control_exchange
        targets = [messaging.Target(topic=topic, exchange=exchange)
                   for topic in topics(self.conf)]
        self._server = messaging.get_notification_listener(
            transport, targets, [self.endpoint], executor='threading',
            pool=pool_name(self.host))
        self._server.start()
        LOG.info('snapext agent listening for %s: exchange %s topics %s '
                 'pool %s', EVENT, exchange,
                 ','.join(t.topic for t in targets), pool_name(self.host))
        return self

    def stop(self):
        if self._server is not None:
            self._server.stop()
            self._server.wait()
            self._server = None
