"""COCO instances JSON, one file per video: ``OUTPUT/exports/coco/<video_id>.json``.

One file per video because labeling tools (CVAT, Label Studio, Datumaro/FiftyOne) import a video's
frames as one task or dataset, and a file per video keeps the export's memory to one video.

* ``images``: one per frame of the video (empty frames included), ``id = frame_index + 1``,
  ``file_name = "<video_id>/00000.jpg"`` (DAVIS ``JPEGImages`` layout), ``width``, ``height``,
  ``frame_index``, ``video_id``.
* ``annotations``: one per non-empty (frame, object) mask: ``segmentation`` compressed RLE
  ``{"size": [H, W], "counts": str}``, ``area`` (pixels), ``bbox`` ``[x, y, w, h]``,
  ``category_id`` 1, ``iscrowd`` 0 (RLE here is a normal instance mask, not a crowd region),
  ``score``, ``track_id`` (the object id, also in ``attributes`` with ``source``).
* ``categories``: ``[{"id": 1, "name": "object"}]``.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from hqseg_ray.export.formats import FormatWriter, VideoMasks, run_writers, safe_name, write_atomic

CATEGORIES = [{"id": 1, "name": "object", "supercategory": "object"}]


def frame_file_name(video_id: str, frame_index: int) -> str:
    """Frame file name used by the COCO and YouTube-VIS exports: ``<video_id>/00042.jpg``."""
    return f"{video_id}/{frame_index:05d}.jpg"


def video_to_coco(vm: VideoMasks) -> dict:
    """One video's masks as a COCO instances dict (see the module docstring for the fields)."""
    images, annotations = [], []
    for t, objs in vm.frames():
        images.append({"id": t + 1, "file_name": frame_file_name(vm.video_id, t), "width": vm.width,
                       "height": vm.height, "frame_index": t, "video_id": vm.video_id})
        for o in objs:
            annotations.append({
                "id": len(annotations) + 1, "image_id": t + 1, "category_id": 1, "iscrowd": 0,
                "segmentation": o.rle, "area": o.area, "bbox": o.bbox_xywh, "score": o.score,
                "track_id": o.object_id, "attributes": {"track_id": o.object_id, "source": o.source},
            })
    info = {"description": f"hqseg-ray masks of video {vm.video_id!r}", "video_id": vm.video_id,
            "video": vm.uri, "frames": vm.num_frames}
    return {"info": info, "licenses": [], "categories": CATEGORIES, "images": images, "annotations": annotations}


class CocoWriter(FormatWriter):
    """Writes ``exports/coco/<video_id>.json`` per video."""

    fmt = "coco"

    def __init__(self, output_dir: str) -> None:
        self.folder = os.path.join(output_dir, "exports", "coco")

    def add(self, vm: VideoMasks) -> None:
        path = os.path.join(self.folder, f"{safe_name(vm.video_id)}.json")
        write_atomic(path, json.dumps(video_to_coco(vm), separators=(",", ":")))

    def close(self) -> str:
        return self.folder


def export_coco(output_dir: str, video_ids: Optional[Sequence[str]] = None) -> str:
    """Write ``exports/coco/<video_id>.json`` for each video; returns the folder."""
    return run_writers(output_dir, [CocoWriter(output_dir)], video_ids)["coco"]
