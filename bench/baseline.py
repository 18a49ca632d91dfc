"""The baseline: Nova's live snapshot of a running instance, step by step.

This follows nova/virt/libvirt/driver.py ``LibvirtDriver._live_snapshot``
(Nova 34.0.0) and the helpers it calls, without Nova's services around it:

1. abort any leftover block job on the root disk (ignore errors);
2. ``qemu-img create -f qcow2 -o backing_file=<root's backing file>,
   backing_fmt=...,cluster_size=... <delta> <root virtual size>``
   (libvirt_utils.create_image with the *backing file of* the root disk:
   the shallow copy below fills only the root's top layer);
3. undefine the persistent domain: blockRebase refuses persistent domains;
4. ``blockRebase(root, delta, 0, COPY | REUSE_EXT | SHALLOW)`` and poll
   every 0.5 s until the mirror is ready (BlockDevice.is_job_complete);
5. freeze through the guest agent when quiescing, abort the job without
   pivot, redefine the saved persistent XML, thaw;
6. ``qemu-img convert -t none -f qcow2 -O qcow2 -c <delta> <out>``
   (extract_snapshot with snapshot_compression), then remove the delta.

After step 5 the point in time is fixed and the guest runs unaffected;
after step 6 the standalone image Nova uploads to Glance exists.
"""

import os
import time
from xml.etree import ElementTree as ET

import libvirt

from bench import rig
from nova_snapext.capture import domain_xml
from nova_snapext.capture import qemu_img

# Nova's BlockDevice.is_job_complete polling interval.
POLL_SECONDS = 0.5
REBASE_FLAGS = (libvirt.VIR_DOMAIN_BLOCK_REBASE_COPY |
                libvirt.VIR_DOMAIN_BLOCK_REBASE_REUSE_EXT |
                libvirt.VIR_DOMAIN_BLOCK_REBASE_SHALLOW)


def _ms(since):
    return round((time.monotonic() - since) * 1000, 1)


def _mirror_ready(dom, target):
    """Nova's test: cursor at the end and libvirt's mirror says ready."""
    info = dom.blockJobInfo(target, 0)
    if not info:
        return True
    if info['cur'] != info['end']:
        return False
    for disk in ET.fromstring(dom.XMLDesc(0)).findall('./devices/disk'):
        if disk.find('target').get('dev') == target:
            mirror = disk.find('mirror')
            return mirror is not None and mirror.get('ready') == 'yes'
    return False


def _create_delta(root, delta):
    info = qemu_img.info(root)
    backing = qemu_img.backing_file(root)
    cmd = ['qemu-img', 'create', '-q', '-f', 'qcow2']
    if backing:
        base = qemu_img.info(backing)
        opts = ['backing_file=%s' % backing,
                'backing_fmt=%s' % base['format']]
        if base.get('cluster-size'):
            opts.append('cluster_size=%d' % base['cluster-size'])
        cmd += ['-o', ','.join(opts)]
    rig.run(*(cmd + [delta, str(info['virtual-size'])]))


def live_snapshot(conn, name, out_path, quiesce=True, target='vda'):
    """Run Nova's live snapshot of domain ``name``'s root into ``out_path``.

    :returns: dict of timings (ms, from the request) and sizes (bytes):
        fixed_ms (point in time fixed, guest unaffected), image_ms (Glance
        image written), mirror_ms (delta created to mirror ready),
        frozen_ms (freeze request to thaw done; None unquiesced),
        convert_ms, delta_bytes, image_bytes
    """
    started = time.monotonic()
    dom = conn.lookupByName(name)
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE |
                      libvirt.VIR_DOMAIN_XML_SECURE)
    root = {d.target: d for d in
            domain_xml.writable_disks(dom.XMLDesc(0))}[target]
    try:
        dom.blockJobAbort(target, 0)
    except libvirt.libvirtError:
        pass
    delta = out_path + '.delta'
    _create_delta(root.path, delta)
    result = {'frozen_ms': None}
    mirror_started = time.monotonic()
    try:
        if dom.isPersistent():
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
        dom.blockRebase(target, delta, 0, REBASE_FLAGS)
        while not _mirror_ready(dom, target):
            time.sleep(POLL_SECONDS)
        result['mirror_ms'] = _ms(mirror_started)
    finally:
        frozen_at = time.monotonic()
        quiesced = False
        if quiesce:
            try:
                dom.fsFreeze()
                quiesced = True
            except libvirt.libvirtError:
                pass  # Nova logs "Skipping quiescing instance" and goes on
        dom.blockJobAbort(target, 0)
        conn.defineXML(xml)
        if quiesced:
            dom.fsThaw()
            result['frozen_ms'] = _ms(frozen_at)
    result['fixed_ms'] = _ms(started)
    convert_started = time.monotonic()
    rig.convert_compressed(delta, out_path)
    result['convert_ms'] = _ms(convert_started)
    result['delta_bytes'] = rig.allocated_bytes(delta)
    os.unlink(delta)
    result['image_bytes'] = rig.allocated_bytes(out_path)
    result['image_ms'] = _ms(started)
    return result
