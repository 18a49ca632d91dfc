"""The paste filter that serves the snapext API inside nova-api.

It goes after ``keystonecontext`` in the compute pipelines of
api-paste.ini (see ``etc/api-paste.ini.snippet``), where
``req.environ['nova.context']`` is set::

    [filter:snapext]
    use = egg:snapext#snapext

It serves, under the compute endpoint, with or without the project id in
the path as Nova routes:

* ``GET /servers/{id}/snapext-snapshots``: the snapshot tree, with the
  current position;
* ``GET /snapext-snapshots/{id}``: one snapshot record;
* ``DELETE /snapext-snapshots/{id}``: 204 once the snapshot is merged away
  (the agent answers when it is done; its children are kept);
* ``POST /servers/{id}/action`` ``{"snapextRevert": {"snapshot_id": ...}}``:
  202 once the server runs from the snapshot;
* ``POST /servers/{id}/action`` ``{"createImage": ...}`` of a
  volume-backed server when full snapshots apply: a full snapshot through
  the agent, answered exactly as Nova answers createImage;
* from instance-snapshot 1.2, ``POST /servers/{id}/action``
  ``{"snapextExport": ...}`` and ``POST /snapext-snapshots/import``
  (bundles.py); from 1.3 the import's body may be the bundle itself
  (upload.py: the ``snapext_upload`` filter before ``sizelimit`` takes
  that body aside for this filter to read after authentication).

Every other request, including a createImage that is not ours, reaches
Nova untouched.
"""

import re

from nova.api.openstack import api_version_request
from nova.compute import api as compute_api
import nova.conf
from nova.image import glance
from oslo_log import log as logging
import webob
import webob.dec

from nova_snapext.api import bundles as bundles_mod
from nova_snapext.api import controller as controller_mod
from nova_snapext.api import faults
from nova_snapext.api import microversion
from nova_snapext.api import schemas
from nova_snapext.api import upload
from nova_snapext import conf as snapext_conf
from nova_snapext.rpc import api as rpc_api

LOG = logging.getLogger(__name__)

_PROJECT = upload.PROJECT
_IMPORT = upload.IMPORT_PATH
_TREE = re.compile(_PROJECT + r'/servers/(?P<server_id>[^/]+)'
                              r'/snapext-snapshots/?$')
_SNAPSHOT = re.compile(_PROJECT + r'/snapext-snapshots/(?P<snapshot_id>[^/]+)'
                                  r'/?$')
_ACTION = re.compile(_PROJECT + r'/servers/(?P<server_id>[^/]+)/action/?$')


class SnapextFilter(object):

    def __init__(self, application, conf, controller=None, bundles=None):
        self.application = application
        self.conf = conf
        self._controller = controller
        self._bundles = bundles

    @property
    def controller(self):
        # Built on first use: nova-api forks its workers after loading the
        # pipeline, and an RPC transport must not cross a fork.
        if self._controller is None:
            self._controller = controller_mod.Controller(
                self.conf, compute_api.API(), glance.API(),
                rpc_api.AgentAPI(self.conf), compute_api.HostAPI())
        return self._controller

    @property
    def bundles(self):
        # The controller's clients: one RPC client per worker.
        if self._bundles is None:
            controller = self.controller
            self._bundles = bundles_mod.Bundles(
                self.conf, controller.compute_api, controller.image_api,
                controller.agent)
        return self._bundles

    @webob.dec.wsgify
    def __call__(self, req):
        context = req.environ.get('nova.context')
        if context is None:
            # Placed before keystonecontext: Nova answers, as if we were
            # not there, and the operator reads why.
            LOG.error('snapext filter: no nova.context in the request; put '
                      'it after keystonecontext in api-paste.ini')
            return self.application
        path = req.path_info
        match = _IMPORT.match(path)
        if match:
            # Before _SNAPSHOT, which would take "import" for an id.
            return self._versioned(req, context, match,
                                   {'POST': self._import})
        match = _TREE.match(path)
        if match:
            return self._versioned(req, context, match, {'GET': self._tree})
        match = _SNAPSHOT.match(path)
        if match:
            return self._versioned(req, context, match,
                                   {'GET': self._show,
                                    'DELETE': self._delete})
        match = _ACTION.match(path)
        if match and req.method == 'POST':
            return self._action(req, context, match)
        return self.application

    # -- instance-snapshot endpoints ---------------------------------------

    def _versioned(self, req, context, match, handlers):
        """Serve one of ours: version, checks, faults, version headers."""
        version = None
        try:
            version = microversion.from_request(req)
            handler = handlers.get(req.method)
            if handler is None:
                raise faults.Fault(405, 'Method %s is not allowed here; '
                                        'use %s.' % (req.method,
                                                     ', '.join(handlers)))
            _check_project(match, context)
            req.environ['snapext.version'] = version
            resp = handler(req, context, match)
        except Exception as exc:
            resp = faults.render(req, faults.from_exception(exc))
        return microversion.stamp(resp, version)

    def _tree(self, req, context, match):
        return _json(200, self.controller.tree(context,
                                               match.group('server_id')))

    def _show(self, req, context, match):
        return _json(200, self.controller.show(
            context, match.group('snapshot_id'),
            verification=microversion.at_least(
                req.environ['snapext.version'], '1.1')))

    def _delete(self, req, context, match):
        self.controller.delete(context, match.group('snapshot_id'))
        return webob.Response(status=204)

    def _revert(self, req, context, match):
        self.controller.revert(context, match.group('server_id'),
                               req.environ['snapext.body'])
        return webob.Response(status=202)

    def _export(self, req, context, match):
        return self.bundles.export(req, context, match)

    def _import(self, req, context, match):
        return self.bundles.import_bundle(req, context, match)

    # -- server actions ------------------------------------------------------

    def _action(self, req, context, match):
        try:
            body = schemas.parse_json(req)
        except faults.Fault:
            return self.application
        if not isinstance(body, dict):
            return self.application
        if controller_mod.REVERT_ACTION in body:
            req.environ['snapext.body'] = body
            return self._versioned(req, context, match,
                                   {'POST': self._revert})
        if bundles_mod.EXPORT_ACTION in body:
            req.environ['snapext.body'] = body
            return self._versioned(req, context, match,
                                   {'POST': self._export})
        if 'createImage' in body:
            return self._create_image(req, context, match, body)
        return self.application

    def _create_image(self, req, context, match, body):
        nova_req = microversion.compute_request(req)
        if (nova_req is None or
                not schemas.is_valid(schemas.create_image, body) or
                not _same_project(match, context)):
            return self.application
        try:
            image_id = self.controller.create_image(
                context, match.group('server_id'), body['createImage'],
                nova_req)
            if image_id is None:
                return self.application
            # Nova's response: a body from 2.45, a Location header before.
            if api_version_request.is_supported(nova_req, '2.45'):
                resp = _json(202, {'image_id': image_id})
            else:
                resp = webob.Response(status=202)
                resp.headers['Location'] = self.controller.image_url(
                    context, image_id)
        except Exception as exc:
            resp = faults.render(req, faults.from_exception(exc))
        return microversion.stamp_compute(resp, nova_req)


def _same_project(match, context):
    project_id = match.group('project_id')
    return not project_id or project_id == context.project_id


def _check_project(match, context):
    if not _same_project(match, context):
        # Nova's wording (wsgi.Resource._process_stack).
        raise faults.Fault(400, "Malformed request URL: URL's project_id "
                                "'%s' doesn't match Context's project_id "
                                "'%s'" % (match.group('project_id'),
                                          context.project_id))


def _json(status, body):
    return webob.Response(status=status, content_type='application/json',
                          json_body=body)


def filter_factory(global_conf, **local_conf):
    """The paste.filter_factory entry point ``egg:snapext#snapext``."""
    conf = nova.conf.CONF
    snapext_conf.register_opts(conf)

    def _filter(app):
        return SnapextFilter(app, conf)
    return _filter
