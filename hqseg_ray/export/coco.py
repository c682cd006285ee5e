"""COCO instances JSON: one file per video (``coco``), or one for all videos (``coco-merged``).

    OUTPUT/exports/coco/<video_id>.json          per video; image id = frame_index + 1
    OUTPUT/exports/coco-merged/instances.json    all exported videos, ids unique across them

One file per video because labeling tools (CVAT, Label Studio, Datumaro/FiftyOne) import a video's
frames as one task or dataset, and a file per video keeps the export's memory to one video.

* ``images``: one per *labelled* frame of the video (every frame, or every ``chunking.stride``-th:
  a frame the job never looked at is left out rather than exported as an empty frame), with
  ``file_name`` ``<video_id>/00000.jpg`` (DAVIS ``JPEGImages`` layout), ``width``, ``height``,
  ``frame_index``, ``video_id``.
* ``annotations``: one per non-empty (frame, object) mask: ``segmentation`` compressed RLE
  ``{"size": [H, W], "counts": str}``, ``area`` (pixels), ``bbox`` ``[x, y, w, h]``,
  ``category_id`` (from the object's label), ``iscrowd`` 0 (a normal instance mask, not a crowd
  region), ``score``, ``track_id``, ``object_id``, ``source``, and ``attributes``
  ``{"track_id", "keyframe": true, "occluded": false}`` (Datumaro-style track attributes; CVAT
  has no mask tracks, so :mod:`hqseg_ray.export.cvat` writes its own variant).
* ``categories``: the output's labels (:class:`~hqseg_ray.export.categories.Categories`).
"""

from __future__ import annotations

import json
import os
from typing import Callable, Optional, Sequence

from hqseg_ray.export.formats import FormatWriter, StreamedJson, VideoMasks, run_writers, safe_name
from hqseg_ray.export.io import write_text

CATEGORIES = [{"id": 1, "name": "object", "supercategory": "object"}]  # an output without labels
_COMPACT = (",", ":")


def frame_file_name(video_id: str, frame_index: int) -> str:
    """Frame file name used by the COCO and YouTube-VIS exports: ``<video_id>/00042.jpg``."""
    return f"{video_id}/{frame_index:05d}.jpg"


def video_to_coco(vm: VideoMasks, categories=None, frame_name: Callable[[str, int], str] = frame_file_name,
                  first_image_id: Optional[int] = None, first_annotation_id: int = 1,
                  track_id: Optional[Callable[[int], int]] = None) -> dict:
    """One video's masks as a COCO instances dict (see the module docstring for the fields).

    Args:
        categories: a :class:`~hqseg_ray.export.categories.Categories` (default: the video's own labels).
        frame_name: ``(video_id, frame_index) -> file_name``.
        first_image_id: None numbers images ``frame_index + 1``; else consecutively from it.
        first_annotation_id: the first annotation id.
        track_id: ``object_id -> track_id`` (default: the object id).
    """
    from hqseg_ray.export.categories import Categories

    cats = categories or Categories([vm.category(o) for o in vm.object_ids])
    tid = track_id or (lambda oid: oid)
    images, annotations = [], []
    for k, (t, objs) in enumerate(vm.labelled()):
        image_id = t + 1 if first_image_id is None else first_image_id + k
        images.append({"id": image_id, "file_name": frame_name(vm.video_id, t), "width": vm.width,
                       "height": vm.height, "frame_index": t, "video_id": vm.video_id})
        for o in objs:
            annotations.append({
                "id": first_annotation_id + len(annotations), "image_id": image_id,
                "category_id": cats.id_of(o.label), "iscrowd": 0, "segmentation": o.rle, "area": o.area,
                "bbox": o.bbox_xywh, "score": o.score, "track_id": tid(o.object_id), "object_id": o.object_id,
                "source": o.source,
                "attributes": {"track_id": tid(o.object_id), "keyframe": True, "occluded": False},
            })
    info = {"description": f"hqseg-ray masks of video {vm.video_id!r}", "video_id": vm.video_id,
            "video": vm.uri, "frames": vm.num_frames, "stride": vm.stride}
    return {"info": info, "licenses": [], "categories": cats.coco, "images": images, "annotations": annotations}


class CocoWriter(FormatWriter):
    """Writes ``exports/coco/<video_id>.json`` per video."""

    fmt = "coco"
    needs_categories = True

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir
        self.folder = os.path.join(output_dir, "exports", "coco")
        self.categories = None

    def add(self, vm: VideoMasks) -> None:
        path = os.path.join(self.folder, f"{safe_name(vm.video_id)}.json")
        write_text(path, json.dumps(video_to_coco(vm, self.categories), separators=_COMPACT))

    def close(self) -> str:
        return self.folder


class CocoMergedWriter(FormatWriter):
    """``exports/coco-merged/instances.json``: every exported video in one COCO file.

    Image, annotation and track ids are unique across videos (1, 2, … in export order; a track is
    one (video, object)); each image keeps ``video_id`` and ``frame_index``, each annotation its
    ``object_id``. Streamed through local scratch files (``StreamedJson``), so memory holds one video.
    """

    fmt = "coco-merged"
    needs_categories = True

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir
        self.folder = os.path.join(output_dir, "exports", "coco-merged")
        self.path = os.path.join(self.folder, "instances.json")
        self._json: Optional[StreamedJson] = None
        self.n_tracks = 0
        self.videos: list[dict] = []

    def open(self) -> None:
        super().open()
        self._json = StreamedJson(("images", "annotations"), prefix="hqseg-coco-merged-")

    def add(self, vm: VideoMasks) -> None:
        tracks = {oid: self.n_tracks + i + 1 for i, oid in enumerate(vm.object_ids)}
        coco = video_to_coco(vm, self.categories, first_image_id=self._json.counts["images"] + 1,
                             first_annotation_id=self._json.counts["annotations"] + 1, track_id=tracks.__getitem__)
        for key in ("images", "annotations"):
            self._json.extend(key, coco[key])
        self.n_tracks += len(tracks)
        self.videos.append({"video_id": vm.video_id, "video": vm.uri, "frames": vm.num_frames, "stride": vm.stride,
                            "tracks": {str(o): t for o, t in tracks.items()}})

    def close(self) -> str:
        head = {"info": {"description": "hqseg-ray masks, all exported videos", "videos": self.videos},
                "licenses": [], "categories": self.categories.coco}
        return self._json.finish(head, self.path)

    def discard(self) -> None:
        if self._json is not None:
            self._json.discard()


def export_coco(output_dir: str, video_ids: Optional[Sequence[str]] = None) -> str:
    """Write ``exports/coco/<video_id>.json`` for each video; returns the folder."""
    return run_writers(output_dir, [CocoWriter(output_dir)], video_ids)["coco"]
