"""YouTube-VIS JSON, one file for all exported videos: ``OUTPUT/exports/ytvis/instances.json``.

* ``videos``: ``id`` (1, 2, ... in video id order), ``name`` (the video id), ``width``,
  ``height``, ``length`` (labelled frames), ``file_names`` (``<video_id>/00000.jpg`` ..., as
  COCO's) and ``frame_indices``: the labelled frames only. With ``chunking.stride`` > 1 that is
  every stride-th frame, as YouTube-VIS itself annotates every 5th frame: frames the job never
  looked at are not listed, so they are not read as "object absent".
* ``annotations``: one per track (object id): ``video_id``, ``category_id`` (the object's label),
  ``iscrowd`` 0, ``segmentations`` / ``areas`` / ``bboxes`` with one entry per listed frame
  (compressed RLE ``{"size": [H, W], "counts": str}``, pixels, ``[x, y, w, h]``; ``null`` where the
  object is absent), ``score`` (mean over its frames), ``object_id``, ``width``, ``height``.
* ``categories``: the output's labels (``"object"`` for objects without one).

The file is streamed through local scratch files (``formats.StreamedJson``: videos and annotations
written one video at a time, so memory holds one video whatever the number of videos) and then
copied to the output (any location hqseg_ray.storage reaches) atomically.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from hqseg_ray.export.coco import frame_file_name
from hqseg_ray.export.formats import FormatWriter, StreamedJson, VideoMasks, run_writers


def video_to_ytvis(vm: VideoMasks, numeric_id: int, first_annotation_id: int,
                   categories=None) -> tuple[dict, list[dict]]:
    """One video as a YouTube-VIS ``videos`` entry and its per-track ``annotations``."""
    from hqseg_ray.export.categories import Categories

    cats = categories or Categories([vm.category(o) for o in vm.object_ids])
    frames = list(range(0, vm.num_frames, vm.stride))
    n = len(frames)
    video = {"id": numeric_id, "name": vm.video_id, "width": vm.width, "height": vm.height, "length": n,
             "file_names": [frame_file_name(vm.video_id, t) for t in frames], "frame_indices": frames}
    tracks: dict[int, dict] = {}
    for k, (t, objs) in enumerate(vm.labelled()):
        for o in objs:
            tr = tracks.setdefault(o.object_id, {"segmentations": [None] * n, "areas": [None] * n,
                                                 "bboxes": [None] * n, "scores": []})
            tr["segmentations"][k], tr["areas"][k], tr["bboxes"][k] = o.rle, o.area, o.bbox_xywh
            tr["scores"].append(o.score)
    annotations = []
    for oid in sorted(tracks):
        tr = tracks[oid]
        annotations.append({
            "id": first_annotation_id + len(annotations), "video_id": numeric_id,
            "category_id": cats.id_of(vm.labels.get(oid)),
            "iscrowd": 0, "width": vm.width, "height": vm.height, "object_id": oid,
            "score": float(sum(tr["scores"]) / len(tr["scores"])),
            "segmentations": tr["segmentations"], "areas": tr["areas"], "bboxes": tr["bboxes"],
        })
    return video, annotations


class YtvisWriter(FormatWriter):
    """Streams videos and tracks into local scratch files (``StreamedJson``); ``close`` writes ``instances.json``."""

    fmt = "ytvis"
    needs_categories = True

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir
        self.folder = os.path.join(output_dir, "exports", "ytvis")
        self.path = os.path.join(self.folder, "instances.json")
        self._json: Optional[StreamedJson] = None

    def open(self) -> None:
        super().open()
        self._json = StreamedJson(("videos", "annotations"), prefix="hqseg-ytvis-")

    def add(self, vm: VideoMasks) -> None:
        video, anns = video_to_ytvis(vm, self._json.counts["videos"] + 1, self._json.counts["annotations"] + 1,
                                     self.categories)
        self._json.extend("videos", [video])
        self._json.extend("annotations", anns)

    def close(self) -> str:
        head = {"info": {"description": "hqseg-ray masks (YouTube-VIS layout)"}, "licenses": [],
                "categories": self.categories.coco}
        return self._json.finish(head, self.path)

    def discard(self) -> None:
        if self._json is not None:
            self._json.discard()


def export_ytvis(output_dir: str, video_ids: Optional[Sequence[str]] = None) -> str:
    """Write ``exports/ytvis/instances.json``; returns its path."""
    return run_writers(output_dir, [YtvisWriter(output_dir)], video_ids)["ytvis"]
