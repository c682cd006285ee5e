"""Video tracking inside chunks and identity stitching across chunks.

    from hqseg_ray.track import track_chunk, Stitcher, segment_video
"""

from hqseg_ray.track.stitch import Stitcher
from hqseg_ray.track.tracker import track_chunk
from hqseg_ray.track.types import (ChunkResult, Engine, FrameResult, ObjectState, TrackEntry, TrackInfo,
                                   as_tracking_config)

__all__ = ["ChunkResult", "Engine", "FrameResult", "ObjectState", "Stitcher", "TrackEntry", "TrackInfo",
           "as_tracking_config", "segment_video", "track_chunk"]


def __getattr__(name):  # segment_video pulls in video I/O; import it lazily
    if name == "segment_video":
        from hqseg_ray.track.segment import segment_video

        return segment_video
    raise AttributeError(name)
