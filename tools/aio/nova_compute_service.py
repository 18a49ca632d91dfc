"""Register this host's nova-compute service before its first start.

    python nova_compute_service.py --config-file nova.conf ...

nova-compute refuses to start as a new service while its hypervisor has
any domain ("My hypervisor has existing instances, but I appear to be a
new service in this database"), and this machine's libvirtd is shared with
the project's functional tests, whose domains come and go.  So the AIO
creates the service record and the local node identity itself, with
Nova's own objects, exactly as a first start would; an existing record is
left alone.
"""

import sys
import uuid

from nova import config
from nova import context as nova_context
from nova import objects
from nova.virt import node

import nova.conf

CONF = nova.conf.CONF


def main(argv):
    config.parse_args(argv)
    objects.register_all()
    ctxt = nova_context.get_admin_context()
    try:
        objects.Service.get_by_host_and_binary(ctxt, CONF.host,
                                               'nova-compute')
        found = True
    except Exception:  # ServiceNotFound, or None on some versions
        found = False
    if found and objects.Service.get_by_host_and_binary(
            ctxt, CONF.host, 'nova-compute') is not None:
        return
    if node.read_local_node_uuid() is None:
        node.write_local_node_uuid(str(uuid.uuid4()))
    objects.Service(ctxt, host=CONF.host, binary='nova-compute',
                    topic='compute', report_count=0).create()
    print('registered nova-compute on %s' % CONF.host)


if __name__ == '__main__':
    main(sys.argv)
