"""A small client of the snapext API, under the compute endpoint.

An export's bundle is read from its Glance image with Glance's v2 API in
the same keystone session; an import sends the bundle to nova-api as the
request body (1.3).
"""

from keystoneauth1 import adapter
from osc_lib import exceptions

HEADER = 'OpenStack-API-Version'
SERVICE_TYPE = 'instance-snapshot'
# What a download holds in memory at once.
CHUNK = 1 << 20


class Client(object):

    def __init__(self, session, region_name=None, interface=None,
                 version='1.0'):
        self.version = version
        self.api = adapter.Adapter(session, service_type='compute',
                                   region_name=region_name,
                                   interface=interface)
        self.image = adapter.Adapter(session, service_type='image',
                                     region_name=region_name,
                                     interface=interface, version='2')

    def _request(self, method, url, headers=None, **kwargs):
        headers = dict(headers or {})
        headers[HEADER] = '%s %s' % (SERVICE_TYPE, self.version)
        resp = self.api.request(url, method, headers=headers,
                                raise_exc=False, **kwargs)
        return _checked(resp)

    def tree(self, server_id):
        return self._request(
            'GET', '/servers/%s/snapext-snapshots' % server_id).json()

    def show(self, snapshot_id):
        return self._request(
            'GET', '/snapext-snapshots/%s' % snapshot_id).json()['snapshot']

    def delete(self, snapshot_id):
        self._request('DELETE', '/snapext-snapshots/%s' % snapshot_id)

    def revert(self, server_id, snapshot_id):
        self._request('POST', '/servers/%s/action' % server_id,
                      json={'snapextRevert': {'snapshot_id': snapshot_id}})

    def export(self, server_id, snapshot_id, since=None):
        """Start an export (1.2); the id of the image it is written to."""
        entity = {'snapshot_id': snapshot_id}
        if since:
            entity['since'] = since
        return self._request('POST', '/servers/%s/action' % server_id,
                             json={'snapextExport': entity}).json()[
                                 'image_id']

    def import_bundle(self, image_id, name, server_id=None):
        """Import the bundle in an image (1.2): {snapshot_id, image_id}."""
        entity = {'image_id': image_id, 'name': name}
        if server_id:
            entity['server_id'] = server_id
        return self._request('POST', '/snapext-snapshots/import',
                             json={'import': entity}).json()

    def import_upload(self, fileobj, name, server_id=None):
        """Import the bundle in ``fileobj``, sent as the body (1.3).

        requests streams the file (its Content-Length from its size):
        nothing is read into memory, and nova-api stages it in a hidden
        Glance image that it deletes itself.
        """
        params = {'name': name}
        if server_id:
            params['server_id'] = server_id
        return self._request(
            'POST', '/snapext-snapshots/import', params=params,
            data=fileobj,
            headers={'Content-Type': 'application/octet-stream'}).json()

    # -- Glance ------------------------------------------------------------

    def _image_request(self, method, url, **kwargs):
        return _checked(self.image.request(url, method, raise_exc=False,
                                           **kwargs))

    def get_image(self, image_id):
        return self._image_request('GET', '/images/%s' % image_id).json()

    def download_image(self, image_id, fileobj):
        """Stream the image's data into ``fileobj``; the bytes written."""
        resp = self._image_request('GET', '/images/%s/file' % image_id,
                                   stream=True)
        count = 0
        for chunk in resp.iter_content(CHUNK):
            fileobj.write(chunk)
            count += len(chunk)
        return count

    def delete_image(self, image_id):
        self._image_request('DELETE', '/images/%s' % image_id)


def _checked(resp):
    if resp.status_code >= 400:
        raise _error(resp)
    return resp


def _error(resp):
    """An osc-lib exception carrying the fault's message and status."""
    message = resp.text
    try:
        body = resp.json()
        fault = next(iter(body.values()))
        message = fault.get('message', message)
    except (ValueError, StopIteration, AttributeError):
        pass
    # One line: Glance answers in plain text over several.
    message = ' '.join(str(message).split())
    klass = {400: exceptions.BadRequest, 401: exceptions.Unauthorized,
             403: exceptions.Forbidden, 404: exceptions.NotFound,
             409: exceptions.Conflict}.get(resp.status_code,
                                           exceptions.ClientException)
    return klass(resp.status_code, message)
