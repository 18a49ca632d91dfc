"""python-openstackclient plugin: the snapext API of nova-api.

Loaded through the ``openstack.cli.extension`` entry point; its commands
are in the ``openstack.instance_snapshot.v1`` group.  The API version is
the ``instance-snapshot`` microversion (``--os-instance-snapshot-api-version``
or ``OS_INSTANCE_SNAPSHOT_API_VERSION``), sent in every request as
``OpenStack-API-Version: instance-snapshot <version>``.
"""

import re

from osc_lib import exceptions
from osc_lib import utils

from nova_snapext.osc import client

API_NAME = 'instance_snapshot'
API_VERSION_OPTION = 'os_instance_snapshot_api_version'
# The newest this client knows: 1.1 shows a snapshot's last verification,
# 1.2 exports and imports bundles, 1.3 takes a bundle as the import's body.
DEFAULT_API_VERSION = '1.3'
API_VERSIONS = {'1': 'nova_snapext.osc.client.Client',
                '1.0': 'nova_snapext.osc.client.Client',
                '1.1': 'nova_snapext.osc.client.Client',
                '1.2': 'nova_snapext.osc.client.Client',
                '1.3': 'nova_snapext.osc.client.Client'}

_VERSION = re.compile(r'^(1(\.\d+)?|latest)$')


def check_api_version(check_version):
    """Accept 1.N and latest; the server answers 406 if it lacks them."""
    if not _VERSION.match(str(check_version)):
        raise exceptions.CommandError(
            'instance-snapshot API version %s is not 1.N or latest'
            % check_version)
    return True


def make_client(instance):
    version = instance._api_version[API_NAME]
    if version in ('1', 'latest'):
        version = 'latest' if version == 'latest' else DEFAULT_API_VERSION
    return client.Client(instance.session,
                         region_name=instance.region_name,
                         interface=instance.interface,
                         version=version)


def build_option_parser(parser):
    parser.add_argument(
        '--os-instance-snapshot-api-version',
        metavar='<instance-snapshot-api-version>',
        default=utils.env('OS_INSTANCE_SNAPSHOT_API_VERSION'),
        help='snapext instance-snapshot API version, default=%s '
             '(Env: OS_INSTANCE_SNAPSHOT_API_VERSION)' % DEFAULT_API_VERSION)
    return parser
