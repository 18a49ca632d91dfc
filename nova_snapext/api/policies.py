"""oslo.policy rules of the snapext API, and their enforcement.

The rules are enforced by Nova's own enforcer (``context.can``) rather than
a separate one: their defaults are written with Nova's base rules
(``project_reader_or_admin``, ``context_is_admin``, ...), which only exist
there; operators override them in the policy file nova-api already reads;
and a denial is Nova's ``PolicyNotAuthorized``, a 403 like any compute one.
``list_rules`` is also the ``oslo.policy.policies`` entry point, so
``oslopolicy-sample-generator --namespace nova_snapext`` documents them.
"""

import threading

from nova.policies import base
from nova import policy as nova_policy
from oslo_policy import policy

PREFIX = 'snapext:snapshots:%s'

INDEX = PREFIX % 'index'
SHOW = PREFIX % 'show'
DELETE = PREFIX % 'delete'
DELETE_BROKEN = PREFIX % 'delete_broken'
REVERT = PREFIX % 'revert'
CREATE = PREFIX % 'create'
EXPORT = PREFIX % 'export'
IMPORT = PREFIX % 'import'
IMPORT_HOST = PREFIX % 'import:host'


def _rule(name, check_str, description, method, path):
    return policy.DocumentedRuleDefault(
        name=name, check_str=check_str, description=description,
        operations=[{'method': method, 'path': path}],
        scope_types=['project'])


_rules = [
    _rule(INDEX, base.PROJECT_READER_OR_ADMIN,
          'List the snapshot tree of a server.',
          'GET', '/servers/{server_id}/snapext-snapshots'),
    _rule(SHOW, base.PROJECT_READER_OR_ADMIN,
          'Show the record of a snapshot.',
          'GET', '/snapext-snapshots/{snapshot_id}'),
    _rule(DELETE, base.PROJECT_MEMBER_OR_ADMIN,
          'Delete a snapshot; its children are kept.',
          'DELETE', '/snapext-snapshots/{snapshot_id}'),
    # A broken record is damaged data on a compute host (a bad disk, a
    # hand-made copy): deleting it destroys what an operator would look at
    # or restore, and leaves disk states only an operator can drop.
    _rule(DELETE_BROKEN, base.ADMIN,
          'Delete a broken snapshot record (unreadable, invalid, or a copy '
          'of another snapshot\'s record): its record and memory image are '
          'removed, the disk states it names are kept.',
          'DELETE', '/snapext-snapshots/{snapshot_id}'),
    _rule(REVERT, base.PROJECT_MEMBER_OR_ADMIN,
          'Revert a server to a snapshot, memory included (server action '
          'snapextRevert).',
          'POST', '/servers/{server_id}/action (snapextRevert)'),
    _rule(CREATE, base.PROJECT_MEMBER_OR_ADMIN,
          'Take a full snapshot (memory and every disk) when createImage is '
          'called on a volume-backed server.  When denied, createImage '
          'takes Nova\'s stock volume snapshot unless the request asked '
          'for snapext_full=true, which is then refused.  Nova\'s own '
          'create_image rules apply as well.',
          'POST', '/servers/{server_id}/action (createImage)'),
    _rule(EXPORT, base.PROJECT_MEMBER_OR_ADMIN,
          'Export a snapshot of a server to a bundle in a new Glance image '
          'of the caller (server action snapextExport).',
          'POST', '/servers/{server_id}/action (snapextExport)'),
    # The target is the caller's own project: what is imported (the
    # snapshot, the bootable image) becomes the caller's, and the bundle
    # image must be one the caller can see in Glance.
    _rule(IMPORT, base.PROJECT_MEMBER_OR_ADMIN,
          'Import a bundle from a Glance image the caller can see, or sent '
          'as the request body (staged in a hidden image of the caller), '
          'making a snapshot and a bootable image of the caller\'s '
          'project.',
          'POST', '/snapext-snapshots/import'),
    # As Nova's compute:servers:create:forced_host: hosts are the
    # operator's business.
    _rule(IMPORT_HOST, base.ADMIN,
          'Choose the compute host an import runs on ("host" in the '
          'request).',
          'POST', '/snapext-snapshots/import'),
]


def list_rules():
    return _rules


_lock = threading.Lock()


def _register():
    """Add snapext's rules to the enforcer ``context.can`` uses.

    That is the one ``nova.policy.init()`` builds on the service's parsed
    configuration.  ``nova.policy.get_enforcer()`` is not: it is meant for
    the oslopolicy-* tools and re-parses ``CONF`` with no arguments, which
    in a real nova-api drops its configuration files and fails on
    keystonemiddleware's required options (``RequiredOptError: auth-url``).
    Nova has no public accessor for its enforcer, hence ``_ENFORCER``.

    ``nova.policy.reset()`` (configuration reload, tests) drops the
    enforcer, and the new one knows only Nova's rules: checked on every
    use.  The enforcer adds registered defaults to its rules on its next
    ``load_rules()``, which every ``authorize()`` calls.
    """
    nova_policy.init()
    enforcer = nova_policy._ENFORCER
    if all(rule.name in enforcer.registered_rules for rule in _rules):
        return
    with _lock:
        for rule in _rules:
            if rule.name not in enforcer.registered_rules:
                enforcer.register_default(rule)


def authorize(context, rule, instance, fatal=True):
    """Nova's ``context.can`` on the instance's project.

    :param instance: the instance, or None for the caller's own project
    :raises nova.exception.PolicyNotAuthorized: (403) when denied and
        ``fatal``; otherwise returns False.
    """
    _register()
    owner = instance or context
    target = {'project_id': owner.project_id, 'user_id': owner.user_id}
    return context.can(rule, target=target, fatal=fatal)
