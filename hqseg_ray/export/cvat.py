"""CVAT imports: "CVAT for video 1.1" XML with mask tracks, and COCO with CVAT's frame names.

    OUTPUT/exports/cvat/<video_id>.xml        CVAT for video 1.1 (upload as "CVAT 1.1")
    OUTPUT/exports/cvat/<video_id>.coco.json  COCO 1.0 whose frames CVAT matches (upload as "COCO 1.0")
    OUTPUT/exports/cvat/labels.json           the task's labels for CVAT's "Raw" label editor

Both are for a CVAT task made from the source video file (one task per video).

**XML.** One ``<track>`` per object (``label`` = its category, ``source="auto"``) holding one
``<mask>`` per labelled frame with a mask (``keyframe="1" outside="0"``); where the object has no
mask on the next labelled frame (occluded, lost, or gone for the rest of the video) a copy of its
last shape with ``outside="1"`` ends that stretch. ``frame`` is the video's frame index (a task
with frame step 1). Masks use CVAT's own RLE: the mask is cropped to its box (``left``, ``top``,
``width``, ``height``, inclusive pixel box) and the crop, read row by row, is written as
alternating run lengths starting with a run of 0s (``rle="3, 5, 2, ..."``). With
``chunking.stride`` > 1 only labelled frames are keyframes; CVAT holds a mask track's shape
between keyframes, so unlabelled frames are shown as "not keyframe", never as empty.

**COCO.** The per-video COCO of :mod:`hqseg_ray.export.coco` with ``file_name``
``frame_000042.PNG``: CVAT names a video task's frames ``frame_%06d`` and matches an imported
image by that name without its extension. The ``attributes`` ``{"track_id", "keyframe": true,
"occluded": false}`` make CVAT rebuild tracks (it needs ``track_id`` and ``keyframe``; it adds the
``outside`` shapes itself wherever a track skips a frame of the task). So for a strided run create
the task with *frame step* = ``chunking.stride``, otherwise every unlabelled frame becomes an
``outside`` gap; the XML has no such requirement.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

from hqseg_ray.export.formats import FormatWriter, VideoMasks, run_writers, safe_name
from hqseg_ray.export.io import write_text


def cvat_frame_name(video_id: str, frame_index: int) -> str:
    """The name CVAT gives frame ``frame_index`` of a task made from a video: ``frame_000042.PNG``."""
    return f"frame_{frame_index:06d}.PNG"


def mask_to_cvat_rle(mask: np.ndarray) -> Optional[tuple[list[int], int, int, int, int]]:
    """``[H, W]`` bool mask -> ``(runs, left, top, width, height)`` in CVAT's mask encoding (see the
    module docstring); None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    top, bottom, left, right = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    flat = np.ascontiguousarray(mask[top:bottom + 1, left:right + 1]).reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:  # runs start with 0s
        runs.insert(0, 0)
    return runs, left, top, right - left + 1, bottom - top + 1


def cvat_rle_to_mask(runs: Sequence[int], left: int, top: int, width: int, height: int,
                     image_height: int, image_width: int) -> np.ndarray:
    """Inverse of :func:`mask_to_cvat_rle`: an ``[image_height, image_width]`` bool mask."""
    crop = np.zeros(width * height, dtype=bool)
    pos, value = 0, False
    for r in runs:
        crop[pos:pos + int(r)] = value
        pos += int(r)
        value = not value
    if pos != width * height:
        raise ValueError(f"CVAT RLE covers {pos} pixels, the {width}x{height} box has {width * height}")
    out = np.zeros((image_height, image_width), dtype=bool)
    out[top:top + height, left:left + width] = crop.reshape(height, width)
    return out


def _mask_element(t: int, shape: tuple, outside: bool) -> str:
    runs, left, top, w, h = shape
    return (f'    <mask frame="{t}" keyframe="1" outside="{int(outside)}" occluded="0" '
            f'rle="{", ".join(map(str, runs))}" left="{left}" top="{top}" width="{w}" height="{h}" z_order="0">'
            "\n    </mask>")


def video_to_cvat_xml(vm: VideoMasks, categories) -> str:
    """One video as a "CVAT for video 1.1" document (see the module docstring)."""
    shapes: dict[int, list[tuple[int, tuple]]] = {}
    for t, objs in vm.labelled():
        for o in objs:
            enc = mask_to_cvat_rle(o.mask())
            if enc is not None:
                shapes.setdefault(o.object_id, []).append((t, enc))
    last = vm.num_frames - 1
    tracks = []
    for k, oid in enumerate(sorted(shapes)):
        lines = [f'  <track id="{k}" label={quoteattr(vm.category(oid))} source="auto">']
        seq = shapes[oid]
        for i, (t, enc) in enumerate(seq):
            lines.append(_mask_element(t, enc, False))
            nxt = t + vm.stride
            if nxt <= last and (i + 1 == len(seq) or seq[i + 1][0] > nxt):
                lines.append(_mask_element(nxt, enc, True))  # gone on the next labelled frame
        lines.append("  </track>")
        tracks.append("\n".join(lines))
    labels = "".join(f"\n        <label>\n          <name>{_esc(n)}</name>\n          <type>mask</type>\n"
                     "          <attributes>\n          </attributes>\n        </label>" for n in categories.names)
    meta = (f"  <meta>\n    <task>\n      <name>{_esc(vm.video_id)}</name>\n      <size>{vm.num_frames}</size>\n"
            f"      <mode>interpolation</mode>\n      <overlap>0</overlap>\n      <start_frame>0</start_frame>\n"
            f"      <stop_frame>{last}</stop_frame>\n      <frame_filter></frame_filter>\n"
            f"      <labels>{labels}\n      </labels>\n      <original_size>\n        <width>{vm.width}</width>\n"
            f"        <height>{vm.height}</height>\n      </original_size>\n    </task>\n"
            f"    <source>{_esc(os.path.basename(vm.uri or vm.video_id))}</source>\n  </meta>")
    return ('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n'
            + meta + "\n" + "\n".join(tracks) + ("\n" if tracks else "") + "</annotations>\n")


def _esc(text: str) -> str:
    return quoteattr(str(text))[1:-1]


class CvatWriter(FormatWriter):
    """Writes ``exports/cvat/<video_id>.xml`` and ``<video_id>.coco.json`` per video, ``labels.json`` once."""

    fmt = "cvat"

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir
        self.folder = os.path.join(output_dir, "exports", "cvat")

    def open(self) -> None:
        from hqseg_ray.export.categories import Categories

        super().open()
        self.categories = Categories.of_output(self.output_dir)

    def add(self, vm: VideoMasks) -> None:
        from hqseg_ray.export.coco import video_to_coco

        base = os.path.join(self.folder, safe_name(vm.video_id))
        xml = video_to_cvat_xml(vm, self.categories)
        coco = video_to_coco(vm, self.categories, frame_name=cvat_frame_name)
        write_text(base + ".xml", xml)
        write_text(base + ".coco.json", json.dumps(coco, separators=(",", ":")))

    def close(self) -> str:
        labels = [{"name": n, "type": "mask", "attributes": []} for n in self.categories.names]
        write_text(os.path.join(self.folder, "labels.json"), json.dumps(labels, indent=1))
        return self.folder


def export_cvat(output_dir: str, video_ids: Optional[Sequence[str]] = None) -> str:
    """Write the CVAT files of each video; returns the folder."""
    return run_writers(output_dir, [CvatWriter(output_dir)], video_ids)["cvat"]
