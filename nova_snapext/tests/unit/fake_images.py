"""A fake of Nova's image API (nova.image.glance.API) over dicts.

What snapext's Glance module relies on: images with a status, data read
from a file object the way glanceclient reads an upload (64 KiB at a time,
until empty), downloads as chunks, Glance's checksums, Nova's exceptions.
"""

import hashlib
import uuid

from nova import exception as nova_exception

CHUNK = 64 * 1024


class FakeImageAPI(object):

    def __init__(self):
        self.images = {}
        self.data = {}
        self.deleted = []
        # callable(image_id, bytes read so far), run at each upload read
        self.during_upload = None
        # an exception the upload raises once it read everything
        self.fail_upload = None
        # the context of every get, the image of every download, in turn
        self.get_contexts = []
        self.downloaded = []

    def add(self, data, status='active', **meta):
        image = self.create(None, meta)
        if status == 'active':
            self._store(image['id'], data)
        image.update(status=status)
        return image['id']

    def get(self, context, image_id):
        self.get_contexts.append(context)
        if image_id not in self.images:
            raise nova_exception.ImageNotFound(image_id=image_id)
        return dict(self.images[image_id])

    def create(self, context, meta):
        image_id = str(uuid.uuid4())
        self.images[image_id] = dict(meta, id=image_id, status='queued',
                                     size=None, checksum=None,
                                     properties=dict(meta.get('properties',
                                                              {})))
        return self.get(context, image_id)

    def update(self, context, image_id, meta, data=None, purge_props=False):
        image = self.images[image_id]
        if data is None:
            # metadata only (snapext never purges properties)
            image['properties'].update(meta.get('properties', {}))
            return self.get(context, image_id)
        if image['status'] != 'queued':
            raise nova_exception.ImageBadRequest(image_id=image_id,
                                                 response='not queued')
        image['status'] = 'saving'
        received = b''
        while True:
            block = data.read(CHUNK)
            if not block:
                break
            received += block
            if self.during_upload is not None:
                self.during_upload(image_id, len(received))
        if self.fail_upload is not None:
            image['status'] = 'queued'
            raise self.fail_upload
        self._store(image_id, received)
        return self.get(context, image_id)

    def _store(self, image_id, data):
        self.data[image_id] = data
        self.images[image_id].update(
            status='active', size=len(data),
            checksum=hashlib.md5(data, usedforsecurity=False).hexdigest())
        self.images[image_id]['properties'].update(
            os_hash_algo='sha512',
            os_hash_value=hashlib.sha512(data).hexdigest())

    def get_all(self, context, filters):
        """Glance's listing: hidden images only when filtered for them."""
        wanted = dict(filters)
        hidden = wanted.pop('os_hidden', 'false') == 'true'
        # every image here is the caller's: any member status lists it
        wanted.pop('member_status', None)
        return [self.get(context, i) for i, image in self.images.items()
                if bool(image.get('os_hidden')) == hidden and all(
                    image['properties'].get(k) == v
                    for k, v in wanted.items())]

    def download(self, context, image_id):
        self.downloaded.append(image_id)
        data = self.data[image_id]
        return iter([data[i:i + CHUNK] for i in range(0, len(data), CHUNK)])

    def delete(self, context, image_id):
        if self.images.pop(image_id, None) is None:
            raise nova_exception.ImageNotFound(image_id=image_id)
        self.data.pop(image_id, None)
        self.deleted.append(image_id)
