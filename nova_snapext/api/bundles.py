"""The bundle endpoints (instance-snapshot 1.2): export and import.

* ``POST /servers/{id}/action {"snapextExport": {"snapshot_id", "since",
  "name"}}``: a new queued Glance image of the caller, into which the
  agent on the server's host streams the snapshot's bundle in the
  background; 202 with the image id at once.  The client waits for the
  image to become active (``killed`` if the export failed).
* ``POST /snapext-snapshots/import {"import": {"image_id", "name",
  "server_id" or "host"}}``: the agent on a compute host reads the bundle
  from a Glance image the caller can see, verifies all of it, stores the
  snapshot and makes a bootable image named ``name``; 201 with both ids
  once done (a long request: nova-api's server and any proxy in front of
  it must let it run, see tools/aio/aio.sh).
* from 1.3, ``POST /snapext-snapshots/import?name=...[&server_id=...|
  &host=...]`` with ``Content-Type: application/octet-stream`` and the
  bundle as the body (a Content-Length or chunked): nova-api streams the
  body, once the caller is authenticated and authorized, into a hidden,
  private Glance image of the caller (upload.py), imports from it as
  above, and deletes it whatever the outcome; 201 as above.

A server the caller may not see, or a snapshot that is not that server's,
is a 404, as everywhere in this API.  Which snapshots a server has is its
host's answer (the agent's tree): nova-api needs no access to the store.
"""

import random
import time

from nova.compute import api as compute_api
from nova.compute import vm_states
from nova import exception as nova_exception
from nova import objects
from oslo_log import log as logging
from oslo_utils import excutils
import webob

from nova_snapext.api import faults
from nova_snapext.api import microversion
from nova_snapext.api import policies
from nova_snapext.api import schemas
from nova_snapext.api import upload
from nova_snapext import bundle
from nova_snapext import glance
from nova_snapext import manifest

LOG = logging.getLogger(__name__)

VERSION = '1.2'
# The bundle as the body of the import.
UPLOAD_VERSION = '1.3'
STAGING_PREFIX = 'snapext-bundle-upload-'
EXPORT_ACTION = 'snapextExport'
IMPORT = 'import'

# The export reads the snapshot's states from the disks' files: they must
# be where Nova keeps them, not in the middle of a move or a rebuild.
EXPORTABLE = (vm_states.ACTIVE, vm_states.STOPPED, vm_states.PAUSED,
              vm_states.SUSPENDED)


class Bundles(object):
    """The two handlers; each takes (req, context, match) and answers."""

    def __init__(self, conf, compute, image_api, agent, host_api=None):
        self.conf = conf
        self.compute = compute
        self.image_api = image_api
        self.agent = agent
        self._host_api = host_api

    @property
    def host_api(self):
        if self._host_api is None:
            self._host_api = compute_api.HostAPI()
        return self._host_api

    # -- export ------------------------------------------------------------

    def export(self, req, context, match):
        _require_version(req, EXPORT_ACTION)
        entity = schemas.validate(
            schemas.export, req.environ['snapext.body'])[EXPORT_ACTION]
        snapshot_id, since = entity['snapshot_id'], entity.get('since')
        instance = self._instance(context, match.group('server_id'))
        policies.authorize(context, policies.EXPORT, instance)
        _check_exportable(instance)
        self._check_lineage(context, instance, snapshot_id, since)
        image = self.image_api.create(context, _bundle_image_meta(entity))
        try:
            objects.InstanceAction.action_start(
                context, instance.uuid, EXPORT_ACTION, want_result=False)
            # Returns once the agent has checked the request and started
            # the upload; the image tells how it ends.
            self.agent.export(context.to_dict(), instance.host,
                              {'snapshot_id': snapshot_id, 'since': since,
                               'image_id': image['id']})
        except Exception:
            with excutils.save_and_reraise_exception():
                self._drop_image(context, image['id'])
        resp = _json(202, {'image_id': image['id']})
        # As createImage before compute 2.45.
        resp.headers['Location'] = self.image_api.generate_image_url(
            image['id'], context)
        return resp

    def _check_lineage(self, context, instance, snapshot_id, since):
        """404 unless ``snapshot_id`` is the server's (``since`` too).

        :raises faults.Fault: 409 when its record is broken or its states
            are gone, 400 when ``since`` is not one of its ancestors
        """
        tree = self.agent.tree(context.to_dict(), instance.host,
                               instance.uuid)
        path = _path_to(tree['snapshots'], snapshot_id)
        if path is None:
            raise _not_found(snapshot_id, instance.uuid)
        node = path[-1]
        if node.get('state') in (manifest.STATE_BROKEN,
                                 manifest.STATE_UNAVAILABLE):
            raise faults.Fault(409, 'Snapshot %s cannot be exported: it is '
                                    '%s: %s' % (snapshot_id, node['state'],
                                                node.get('reason')))
        if since is None or since in [n['id'] for n in path[:-1]]:
            return
        if _path_to(tree['snapshots'], since) is None:
            raise _not_found(since, instance.uuid)
        raise faults.Fault(400, 'Snapshot %s is not an ancestor of %s: an '
                                'incremental export is since an ancestor.'
                           % (since, snapshot_id))

    def _drop_image(self, context, image_id):
        try:
            self.image_api.delete(context, image_id)
        except Exception:
            LOG.exception('image %s of a failed export is left behind',
                          image_id)

    # -- import --------------------------------------------------------------

    def import_bundle(self, req, context, match):
        if req.content_type == upload.CONTENT_TYPE:
            return self._import_upload(req, context)
        _require_version(req, 'POST /snapext-snapshots/import', VERSION)
        if req.content_type != 'application/json':
            raise faults.Fault(415, 'Send the bundle as the body '
                                    '(Content-Type: %s, %s %s), or a JSON '
                                    'body naming a Glance image that holds '
                                    'it.' % (upload.CONTENT_TYPE,
                                             microversion.SERVICE_TYPE,
                                             UPLOAD_VERSION))
        entity = schemas.validate(schemas.import_bundle,
                                  schemas.parse_json(req))[IMPORT]
        self._authorize_import(context, entity)
        self._check_bundle_image(context, entity['image_id'])
        host = self._import_host(context, entity)
        return self._import(req, context, host, entity['image_id'],
                            entity['name'])

    def _import_upload(self, req, context):
        """The body is the bundle: staged in Glance, imported, dropped.

        Everything that can be refused is checked before the first byte
        of the body is read; the staging image is a hidden, private image
        of the caller, deleted whatever the outcome.
        """
        _require_version(req, 'POST /snapext-snapshots/import with the '
                              'bundle as its body', UPLOAD_VERSION)
        entity = schemas.validate(schemas.import_upload, schemas.query(req))
        self._authorize_import(context, entity)
        host = self._import_host(context, entity)
        body = upload.Body.of(req, self.conf.snapext.max_bundle_upload_bytes)
        images = glance.Images(self.image_api)
        started = time.monotonic()
        # Images.create deletes the image when the upload fails.
        staging = images.create(context, _staging_image_meta(context),
                                body.chunks(), 'the request body')
        LOG.info('bundle upload of %d bytes staged in image %s in %.1f s',
                 body.count, staging['id'], time.monotonic() - started)
        try:
            return self._import(req, context, host, staging['id'],
                                entity['name'])
        finally:
            images.delete(context, staging['id'])

    @staticmethod
    def _authorize_import(context, entity):
        # What is imported becomes the caller's.
        policies.authorize(context, policies.IMPORT, None)
        if 'host' in entity:
            policies.authorize(context, policies.IMPORT_HOST, None)

    def _import(self, req, context, host, image_id, name):
        """The agent on ``host`` imports the bundle in ``image_id``: 201."""
        result = self.agent.import_bundle(
            context.to_dict(), host, {'image_id': image_id, 'name': name})
        resp = _json(201, {'snapshot_id': result['snapshot_id'],
                           'image_id': result['image_id']})
        resp.headers['Location'] = '%s/snapext-snapshots/%s' % (
            req.application_url, result['snapshot_id'])
        return resp

    def _check_bundle_image(self, context, image_id):
        """404 unless the caller sees the image, 409 unless it is active."""
        try:
            image = self.image_api.get(context, image_id)
        except nova_exception.ImageNotFound as exc:
            raise faults.Fault(404, exc.format_message())
        if image.get('status') != 'active':
            raise faults.Fault(409, 'Image %s is %s; a bundle is read from '
                                    'an active image.'
                               % (image_id, image.get('status')))

    def _import_host(self, context, entity):
        if 'host' in entity and 'server_id' in entity:
            raise faults.Fault(400, 'Give "server_id" or "host", not both.')
        if 'server_id' in entity:
            instance = self._instance(context, entity['server_id'])
            if not instance.host:
                raise faults.Fault(409, 'Instance %s is not on a compute '
                                        'host.' % instance.uuid)
            return instance.host
        hosts = self._compute_hosts(context, entity.get('host'))
        if not hosts:
            if 'host' in entity:
                raise faults.Fault(400, 'Host %s runs no nova-compute '
                                        'service that is up.'
                                   % entity['host'])
            raise faults.Fault(503, 'No enabled nova-compute service is up '
                                    'to import on; try again later.')
        # Imports spread over the hosts that can take them.
        return random.choice(hosts)

    def _compute_hosts(self, context, host=None):
        """The hosts whose nova-compute is up: enabled ones, or ``host``.

        An admin's ``host`` may be a disabled one, as Nova lets an admin
        force a server onto a disabled host.
        """
        filters = {'binary': 'nova-compute'}
        if host is None:
            filters['disabled'] = False
        else:
            filters['host'] = host
        services = self.host_api.service_get_all(
            context.elevated(), filters=filters, all_cells=True)
        return sorted({s.host for s in services
                       if self.host_api.servicegroup_api.service_is_up(s)})

    # -- lookups -------------------------------------------------------------

    def _instance(self, context, server_id):
        try:
            return self.compute.get(context, server_id)
        except nova_exception.InstanceNotFound as exc:
            raise faults.Fault(404, exc.format_message())


def _require_version(req, what, version=VERSION):
    # As Nova answers a method its microversion lacks: 404.
    if not microversion.at_least(req.environ['snapext.version'], version):
        raise faults.Fault(404, '%s needs %s API version %s or later '
                                '(OpenStack-API-Version: %s %s).'
                           % (what, microversion.SERVICE_TYPE, version,
                              microversion.SERVICE_TYPE, version))


def _check_exportable(instance):
    # An export only reads the server's disks: a locked server is fine.
    state = None
    if instance.task_state is not None:
        state = 'task_state %s' % instance.task_state
    elif instance.vm_state not in EXPORTABLE:
        state = 'vm_state %s' % instance.vm_state
    if state:
        # Nova's wording (common.raise_http_conflict_for_instance_invalid_
        # state)
        raise faults.Fault(409, "Cannot '%s' instance %s while it is in %s"
                           % (EXPORT_ACTION, instance.uuid, state))
    if not instance.host:
        raise faults.Fault(409, 'Instance %s is not on a compute host.'
                           % instance.uuid)


def _path_to(nodes, snapshot_id):
    """The nodes from a root down to ``snapshot_id``'s, or None."""
    for node in nodes:
        if node['id'] == snapshot_id:
            return [node]
        below = _path_to(node.get('children') or [], snapshot_id)
        if below is not None:
            return [node] + below
    return None


def _not_found(snapshot_id, server_id):
    return faults.Fault(404, 'Snapshot %s of server %s could not be found.'
                        % (snapshot_id, server_id))


def _bundle_image_meta(entity):
    """The queued image a bundle is written to, with what it holds."""
    snapshot_id, since = entity['snapshot_id'], entity.get('since')
    default = 'snapext-bundle-%s%s' % (snapshot_id,
                                       '-since-%s' % since if since else '')
    return {'name': entity.get('name') or default,
            'container_format': 'bare', 'disk_format': 'raw',
            'properties': bundle.image_properties(snapshot_id, since)}


def _staging_image_meta(context):
    """The hidden image an uploaded bundle is staged in for the agent.

    Named after the request, so that an operator can tell the request
    of one a killed nova-api left behind.
    """
    return {'name': STAGING_PREFIX + context.request_id,
            'container_format': 'bare', 'disk_format': 'raw',
            'visibility': 'private', 'os_hidden': True}


def _json(status, body):
    return webob.Response(status=status, content_type='application/json',
                          json_body=body)
