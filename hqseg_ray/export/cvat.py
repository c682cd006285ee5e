"""CVAT imports, made for what CVAT's importers actually do with masks and tracks.

    OUTPUT/exports/cvat/<video_id>.xml        CVAT for video 1.1: polygon tracks (upload as "CVAT 1.1")
    OUTPUT/exports/cvat/<video_id>.masks.xml  CVAT for video 1.1: pixel masks, one shape per frame
    OUTPUT/exports/cvat/<video_id>.coco.json  COCO 1.0 with CVAT's frame names: pixel masks per frame
    OUTPUT/exports/cvat/labels.json           the task's labels (CVAT's "Raw" label editor)

All for a CVAT task created from the source video file (one task per video, frame step 1).

CVAT does not track masks: its CVAT-XML loader turns a ``<mask>`` track into one shape made of
the track's *first* mask (the rest are dropped), and its UI has no mask tracks. So:

* ``<video_id>.xml`` holds one ``<track>`` per object of **polygons** (CVAT interpolates polygon
  tracks): a ``<polygon>`` keyframe (``keyframe="1" outside="0"``) on every labelled frame where
  the object has a mask, the outline of its largest connected part (holes and smaller parts are
  not in a polygon; ``masks.xml`` has them), and an ``outside="1"`` copy on the first labelled frame
  where it has none (occluded, lost or gone), which ends that stretch of the track. Each shape
  carries ``<attribute name="object_id">``. With ``chunking.stride`` > 1 only labelled frames are
  keyframes; CVAT interpolates in between instead of calling those frames empty.
* ``<video_id>.masks.xml`` holds every mask pixel-exact, each as a one-keyframe ``<mask>`` track,
  which CVAT's loader turns into a mask shape on that frame, with the ``object_id`` attribute.
  Masks use CVAT's RLE: the mask's pixel box (``left``, ``top``, ``width``, ``height``) read row by
  row as alternating run lengths starting with background.
* ``<video_id>.coco.json`` is the per-video COCO with ``file_name`` ``frame_000042.PNG`` (CVAT
  names a video task's frames ``frame_%06d`` and matches an imported image by that name without
  extension) and ``attributes: {"object_id": N}``; no ``track_id``/``keyframe`` attributes, which
  would ask CVAT for a mask track. Every mask becomes a mask shape.

``labels.json`` declares each label with a text attribute ``object_id`` (CVAT drops attributes its
labels do not declare), so the object ids survive the import.
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


def mask_to_polygon(mask: np.ndarray) -> Optional[list[tuple[int, int]]]:
    """The outline of the largest connected part of ``mask`` as ``[(x, y), ...]`` pixel points
    (OpenCV's external contour), or None when the mask has no part with 3 or more outline points."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = [c for c in contours if len(c) >= 3]
    if not contours:
        return None
    best = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    return [(int(x), int(y)) for x, y in best.reshape(-1, 2)]


def _attr(oid: int) -> str:
    return f'\n      <attribute name="object_id">{oid}</attribute>\n'


def _polygon_element(t: int, points: list, outside: bool, oid: int) -> str:
    pts = ";".join(f"{x:.2f},{y:.2f}" for x, y in points)
    return (f'    <polygon frame="{t}" keyframe="1" outside="{int(outside)}" occluded="0" points="{pts}" '
            f'z_order="0">{_attr(oid)}    </polygon>')


def _mask_element(t: int, shape: tuple, oid: int) -> str:
    runs, left, top, w, h = shape
    return (f'    <mask frame="{t}" keyframe="1" outside="0" occluded="0" rle="{", ".join(map(str, runs))}" '
            f'left="{left}" top="{top}" width="{w}" height="{h}" z_order="0">{_attr(oid)}    </mask>')


def _document(vm: VideoMasks, categories, tracks: list[str]) -> str:
    labels = "".join(f"\n        <label>\n          <name>{_esc(n)}</name>\n          <type>any</type>\n"
                     "          <attributes>\n            <attribute>\n              <name>object_id</name>\n"
                     "              <mutable>True</mutable>\n              <input_type>text</input_type>\n"
                     "              <default_value></default_value>\n              <values></values>\n"
                     "            </attribute>\n          </attributes>\n        </label>" for n in categories.names)
    last = vm.num_frames - 1
    meta = (f"  <meta>\n    <task>\n      <name>{_esc(vm.video_id)}</name>\n      <size>{vm.num_frames}</size>\n"
            f"      <mode>interpolation</mode>\n      <overlap>0</overlap>\n      <start_frame>0</start_frame>\n"
            f"      <stop_frame>{last}</stop_frame>\n      <frame_filter></frame_filter>\n"
            f"      <labels>{labels}\n      </labels>\n      <original_size>\n        <width>{vm.width}</width>\n"
            f"        <height>{vm.height}</height>\n      </original_size>\n    </task>\n"
            f"    <source>{_esc(os.path.basename(vm.uri or vm.video_id))}</source>\n  </meta>")
    return ('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n'
            + meta + "\n" + "\n".join(tracks) + ("\n" if tracks else "") + "</annotations>\n")


def video_to_cvat_xml(vm: VideoMasks, categories) -> str:
    """One video as polygon tracks in a "CVAT for video 1.1" document (see the module docstring)."""
    shapes: dict[int, list[tuple[int, list]]] = {}
    for t, objs in vm.labelled():
        for o in objs:
            poly = mask_to_polygon(o.mask())
            if poly is not None:
                shapes.setdefault(o.object_id, []).append((t, poly))
    last = vm.num_frames - 1
    tracks = []
    for k, oid in enumerate(sorted(shapes)):
        lines = [f'  <track id="{k}" label={quoteattr(vm.category(oid))} source="auto">']
        seq = shapes[oid]
        for i, (t, poly) in enumerate(seq):
            lines.append(_polygon_element(t, poly, False, oid))
            nxt = t + vm.stride
            if nxt <= last and (i + 1 == len(seq) or seq[i + 1][0] > nxt):
                lines.append(_polygon_element(nxt, poly, True, oid))  # gone on the next labelled frame
        lines.append("  </track>")
        tracks.append("\n".join(lines))
    return _document(vm, categories, tracks)


def video_to_cvat_masks_xml(vm: VideoMasks, categories) -> str:
    """Every mask pixel-exact as a one-keyframe ``<mask>`` track (CVAT imports each as a shape)."""
    tracks = []
    for t, objs in vm.labelled():
        for o in objs:
            enc = mask_to_cvat_rle(o.mask())
            if enc is not None:
                tracks.append(f'  <track id="{len(tracks)}" label={quoteattr(vm.category(o.object_id))} '
                              f'source="auto">\n{_mask_element(t, enc, o.object_id)}\n  </track>')
    return _document(vm, categories, tracks)


def _esc(text: str) -> str:
    return quoteattr(str(text))[1:-1]


class CvatWriter(FormatWriter):
    """Writes ``exports/cvat/<video_id>.xml``, ``.masks.xml``, ``.coco.json`` per video, ``labels.json`` once."""

    fmt = "cvat"
    needs_categories = True

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir
        self.folder = os.path.join(output_dir, "exports", "cvat")

    def add(self, vm: VideoMasks) -> None:
        from hqseg_ray.export.coco import video_to_coco

        base = os.path.join(self.folder, safe_name(vm.video_id))
        xml = video_to_cvat_xml(vm, self.categories)
        masks_xml = video_to_cvat_masks_xml(vm, self.categories)
        coco = video_to_coco(vm, self.categories, frame_name=cvat_frame_name)
        for a in coco["annotations"]:  # mask shapes, not a mask track (CVAT has none)
            a["attributes"] = {"object_id": a["object_id"]}
        write_text(base + ".xml", xml)
        write_text(base + ".masks.xml", masks_xml)
        write_text(base + ".coco.json", json.dumps(coco, separators=(",", ":")))

    def close(self) -> str:
        attr = {"name": "object_id", "mutable": True, "input_type": "text", "default_value": "", "values": [""]}
        labels = [{"name": n, "type": "any", "attributes": [attr]} for n in self.categories.names]
        write_text(os.path.join(self.folder, "labels.json"), json.dumps(labels, indent=1))
        return self.folder


def export_cvat(output_dir: str, video_ids: Optional[Sequence[str]] = None) -> str:
    """Write the CVAT files of each video; returns the folder."""
    return run_writers(output_dir, [CvatWriter(output_dir)], video_ids)["cvat"]
