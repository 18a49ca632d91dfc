"""Nova's Cinder API, plus a snapshot create that carries metadata.

nova-api's createImage of a volume-backed server asks Cinder for one
snapshot per volume, as Nova's ``snapshot_volume_backed`` does, with the
metadata ``snapext_adopt=<record id>``: cinder_snapext's driver then adopts
the internal snapshot the capture already left in the volume file instead
of taking a new one.  Nova's own client has no metadata argument.
"""

from nova.volume import cinder

ADOPT = 'snapext_adopt'
HOST = 'snapext_host'


class VolumeAPI(cinder.API):

    @cinder.translate_mixed_exceptions
    def create_snapshot_adopting(self, context, volume_id, name, description,
                                 metadata):
        item = cinder.cinderclient(context).volume_snapshots.create(
            volume_id, True, name, description, metadata=metadata)
        return cinder._untranslate_snapshot_summary_view(context, item)
