"""Builders of valid records for the unit tests."""

import copy

from oslo_config import cfg

from nova_snapext import conf as snapext_conf
from nova_snapext import manifest

DOMAIN_XML = """<domain type='qemu'>
  <name>instance-00000001</name>
  <uuid>6f1c7c1e-0000-4000-8000-000000000001</uuid>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/srv/i/disk'/>
      <backingStore type='file'>
        <format type='raw'/>
        <source file='/srv/base'/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/srv/v/volume-1'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/srv/i/disk.config'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
  </devices>
</domain>"""


def record(snapshot_id='s1', parent_id=None, created_at=None, **kw):
    m = {
        'schema_version': manifest.SCHEMA_VERSION,
        'id': snapshot_id,
        'instance_uuid': '6f1c7c1e-0000-4000-8000-000000000001',
        'domain': 'instance-00000001',
        'parent_id': parent_id,
        'created_at': created_at or '2026-11-26T10:00:00Z',
        'kind': 'full',
        'quiesce': {'policy': 'preferred', 'outcome': 'frozen',
                    'frozen_ms': 42.0},
        'memory': {'store': 'file', 'location': 'memory.save',
                   'bytes': 1024, 'sha256': 'a' * 64},
        'domain_xml': DOMAIN_XML,
        'disks': [
            {'target': 'vda', 'role': 'root', 'path': '/srv/i/%s-vda'
             % snapshot_id, 'format': 'qcow2', 'virtual_size': 1 << 30,
             'snapshot': 'snapext-%s' % snapshot_id, 'backing': None},
        ],
    }
    m.update(copy.deepcopy(kw))
    return m


def conf(**overrides):
    """A fresh ConfigOpts with the [snapext] options and these overrides."""
    opts = cfg.ConfigOpts()
    snapext_conf.register_opts(opts)
    opts([], project='snapext')
    for name, value in overrides.items():
        opts.set_override(name, value, 'snapext')
    return opts
