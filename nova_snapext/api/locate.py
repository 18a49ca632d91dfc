"""Which compute host holds a snapshot's record, asked over RPC.

nova-api reads no store: a record lives on the compute host that took it,
and only that host's agent reads it.  A snapshot reached through
createImage is named by its Glance image (``snapext_manifest``, with the
host in ``snapext_host``), so one Glance query finds its host.  One that no
image names (taken by the snapext CLI or by a Cinder group snapshot, or
whose image was deleted) is looked for on every enabled nova-compute host
that is up.  Each agent is given ``[snapext] rpc_lookup_timeout`` to
answer: a GET must not wait a minute on a dead agent.
"""

from oslo_log import log as logging

from nova_snapext import exception

LOG = logging.getLogger(__name__)

MANIFEST_PROPERTY = 'snapext_manifest'
HOST_PROPERTY = 'snapext_host'
COMPUTE_BINARY = 'nova-compute'


class Locator(object):
    """Finds a snapshot's record through Glance and the agents.

    :param image_api: Nova's image API (``get_all`` with filters)
    :param agent: the agent RPC client (nova_snapext.rpc.api.AgentAPI)
    :param host_api: Nova's HostAPI (``service_get_all`` and its
        ``servicegroup_api``)
    """

    def __init__(self, conf, image_api, agent, host_api):
        self.conf = conf
        self.image_api = image_api
        self.agent = agent
        self.host_api = host_api

    def find(self, context, snapshot_id):
        """The record as its host's agent answers it.

        Glance and the agents are asked with the caller's context, so the
        images are those the caller may see.

        :returns: the agent's ``get`` answer ({'manifest', 'reason'}), or
            the record's exception.BrokenRecord
        :raises NotFound: no host holds it
        :raises AgentUnavailable: no host that answered holds it, and some
            did not answer (it may be on one of them)
        """
        timeout = self.conf.snapext.rpc_lookup_timeout
        silent = []
        for host in self._candidates(context, snapshot_id):
            try:
                return self.agent.get(context.to_dict(), host, snapshot_id,
                                      timeout=timeout)
            except exception.BrokenRecord as exc:
                return exc
            except exception.NotFound:
                continue
            except exception.SnapextError as exc:
                # The agent is down, too old (before 2.2) or its host
                # cannot read its store: the others may still have it.
                LOG.warning('snapext agent on host %s did not answer where '
                            'snapshot %s is: %s', host, snapshot_id, exc)
                silent.append(host)
        if silent:
            raise exception.AgentUnavailable(
                'snapshot %s is on none of the compute hosts that answered; '
                'no answer from %s' % (snapshot_id, ', '.join(silent)))
        raise exception.NotFound('snapshot %s not found' % snapshot_id)

    def _candidates(self, context, snapshot_id):
        """The hosts the snapshot's images name, then the others."""
        named = self._image_hosts(context, snapshot_id)
        for host in named:
            yield host
        for host in self._compute_hosts(context):
            if host not in named:
                yield host

    def _image_hosts(self, context, snapshot_id):
        """Hosts named by the images of the snapshot the caller can see."""
        try:
            # Glance v2 filters on a custom property by its plain name.
            images = self.image_api.get_all(
                context, filters={MANIFEST_PROPERTY: snapshot_id})
        except Exception as exc:
            # The agents can still tell; Glance's trouble is in its log.
            LOG.warning('cannot ask Glance for the image of snapshot %s: %s',
                        snapshot_id, exc)
            return []
        hosts = []
        for image in images:
            properties = image.get('properties') or {}
            host = properties.get(HOST_PROPERTY)
            if (properties.get(MANIFEST_PROPERTY) == snapshot_id and host and
                    host not in hosts):
                hosts.append(host)
        return hosts

    def _compute_hosts(self, context):
        """The enabled nova-compute hosts that are up, in every cell."""
        services = self.host_api.service_get_all(
            context.elevated(), filters={'binary': COMPUTE_BINARY,
                                         'disabled': False},
            all_cells=True)
        is_up = self.host_api.servicegroup_api.service_is_up
        return sorted({s.host for s in services if is_up(s)})
