"""The AIO's Keystone catalog, users, flavors and guest images (idempotent).

    python bootstrap.py identity   services, endpoints, service and test users
    python bootstrap.py compute    flavors and the guest images

Runs in the AIO's OpenStack venv (openstacksdk), with the admin
credentials in OS_* variables.  Everything is checked before it is
created, so a re-run changes nothing.
"""

import hashlib
import os
import sys

import openstack

URL = 'http://127.0.0.1'
PASSWORD = os.environ.get('AIO_PASSWORD', 'snapext-aio')
REGION = 'RegionOne'

# name, type, url
SERVICES = [
    ('glance', 'image', URL + ':9292'),
    ('placement', 'placement', URL + ':8778'),
    ('nova', 'compute', URL + ':8774/v2.1'),
    ('neutron', 'network', URL + ':9696'),
    ('cinderv3', 'volumev3', URL + ':8776/v3/$(project_id)s'),
    ('cinder', 'block-storage', URL + ':8776/v3/$(project_id)s'),
]
SERVICE_USERS = ['glance', 'placement', 'nova', 'neutron', 'cinder']
# project: [(user, role)]: the integration tier's users.
TEST_USERS = {
    'demo': [('demo', 'member'), ('demo-reader', 'reader')],
    'alt': [('alt', 'member')],
}
FLAVORS = [('snapext.256', 256), ('snapext.1024', 1024)]


def _conn():
    return openstack.connect(cloud=os.environ.get('OS_CLOUD'))


def _project(idc, name):
    return (idc.find_project(name, domain_id='default') or
            idc.create_project(name=name, domain_id='default'))


def _user(idc, name, project):
    user = idc.find_user(name, domain_id='default')
    if user is None:
        user = idc.create_user(name=name, password=PASSWORD,
                               domain_id='default',
                               default_project_id=project.id)
    return user


def _grant(idc, project, user, role_name):
    role = idc.find_role(role_name)
    if role is None:
        role = idc.create_role(name=role_name)
    if not idc.validate_user_has_project_role(project, user, role):
        idc.assign_project_role_to_user(project, user, role)


def identity():
    conn = _conn()
    idc = conn.identity
    service_project = _project(idc, 'service')
    for name in SERVICE_USERS:
        user = _user(idc, name, service_project)
        for role in ('admin', 'service'):
            _grant(idc, service_project, user, role)
    for project_name, users in TEST_USERS.items():
        project = _project(idc, project_name)
        for name, role in users:
            _grant(idc, project, _user(idc, name, project), role)
    for name, stype, url in SERVICES:
        service = next((s for s in idc.services() if s.type == stype), None)
        if service is None:
            service = idc.create_service(name=name, type=stype,
                                         is_enabled=True)
        have = {e.interface for e in idc.endpoints(service_id=service.id)}
        for interface in ('public', 'internal', 'admin'):
            if interface not in have:
                idc.create_endpoint(service_id=service.id,
                                    interface=interface, url=url,
                                    region_id=REGION)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _image(conn, name, path, disk_format, container_format, **props):
    """The image ``name`` holding ``path``: replaced when the file changed."""
    # The file and the properties (a new kernel makes a new root image).
    digest = hashlib.sha256(('%s %r' % (_sha256(path), sorted(props.items())))
                            .encode()).hexdigest()
    for image in conn.image.images(name=name):
        if image.properties.get('aio_sha256') == digest:
            return image
        conn.image.delete_image(image)
    return conn.image.create_image(
        name=name, filename=path, disk_format=disk_format,
        container_format=container_format, visibility='public',
        aio_sha256=digest, wait=True, **props)


def compute(guest_dir, root_disk):
    conn = _conn()
    for project_name in TEST_USERS:
        project = conn.identity.find_project(project_name,
                                             domain_id='default')
        conn.set_volume_quotas(project.id, volumes=100, snapshots=100,
                               gigabytes=1000, groups=50)
    for name, ram in FLAVORS:
        if conn.compute.find_flavor(name) is None:
            conn.compute.create_flavor(name=name, ram=ram, vcpus=1, disk=1,
                                       is_public=True)
    kernel = _image(conn, 'snapext-guest-kernel',
                    os.path.join(guest_dir, 'vmlinuz'), 'aki', 'aki')
    ramdisk = _image(conn, 'snapext-guest-ramdisk',
                     os.path.join(guest_dir, 'initrd.img'), 'ari', 'ari')
    _image(conn, 'snapext-guest', root_disk, 'qcow2', 'bare',
           kernel_id=kernel.id, ramdisk_id=ramdisk.id,
           os_command_line='console=ttyS0 quiet panic=-1',
           hw_qemu_guest_agent='yes')


def main(argv):
    if argv[1] == 'identity':
        identity()
    elif argv[1] == 'compute':
        compute(argv[2], argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == '__main__':
    main(sys.argv)
