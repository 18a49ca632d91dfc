"""A small client of the snapext API, under the compute endpoint."""

from keystoneauth1 import adapter
from osc_lib import exceptions

HEADER = 'OpenStack-API-Version'
SERVICE_TYPE = 'instance-snapshot'


class Client(object):

    def __init__(self, session, region_name=None, interface=None,
                 version='1.0'):
        self.version = version
        self.api = adapter.Adapter(session, service_type='compute',
                                   region_name=region_name,
                                   interface=interface)

    def _request(self, method, url, **kwargs):
        headers = {HEADER: '%s %s' % (SERVICE_TYPE, self.version)}
        resp = self.api.request(url, method, headers=headers,
                                raise_exc=False, **kwargs)
        if resp.status_code >= 400:
            raise _error(resp)
        return resp

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


def _error(resp):
    """An osc-lib exception carrying the fault's message and status."""
    message = resp.text
    try:
        body = resp.json()
        fault = next(iter(body.values()))
        message = fault.get('message', message)
    except (ValueError, StopIteration, AttributeError):
        pass
    klass = {400: exceptions.BadRequest, 401: exceptions.Unauthorized,
             403: exceptions.Forbidden, 404: exceptions.NotFound,
             409: exceptions.Conflict}.get(resp.status_code,
                                           exceptions.ClientException)
    return klass(resp.status_code, message)
