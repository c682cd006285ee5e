"""DAVIS palette PNG folders: ``OUTPUT/exports/davis/<video_id>/00000.png``, one per frame.

Each PNG is mode ``P`` with the standard DAVIS (PASCAL VOC) palette, pixel value = object id,
0 = background; every labelled frame of the video gets a PNG, empty frames included (with
``chunking.stride`` > 1 only every stride-th frame was labelled: the others get no PNG, rather
than an empty one that DAVIS scoring would count as "object absent"). Where masks overlap
the higher-scoring object is on top (equal scores: the larger id). Ids must lie in 1..255 (a PNG
palette index); with ``remap=True`` the ids of a video are renumbered 1..K in ascending order and
``ids.json`` (``{"<png value>": object_id}``) is written next to the PNGs.
"""

from __future__ import annotations

import io
import json
import os
from typing import Optional, Sequence

import numpy as np

from hqseg_ray.export.formats import FormatWriter, ObjectMask, VideoMasks, run_writers, safe_name


def id_map(objs: list[ObjectMask], height: int, width: int, values: dict[int, int]) -> np.ndarray:
    """Masks of one frame -> ``[H, W]`` uint8 map of ``values[object_id]`` (higher score on top)."""
    out = np.zeros((height, width), dtype=np.uint8)
    for o in sorted(objs, key=lambda o: (o.score, o.object_id)):
        m = o.mask()
        if m.shape != out.shape:
            raise ValueError(f"object {o.object_id}: mask is {list(m.shape)}, the video is {[height, width]}")
        out[m] = values[o.object_id]
    return out


def palette_values(vm: VideoMasks, remap: bool) -> dict[int, int]:
    """Object id -> PNG value for one video (identity unless ``remap``)."""
    ids = vm.object_ids
    if remap:
        if len(ids) > 255:
            raise ValueError(f"{len(ids)} objects: a palette PNG holds at most 255")
        return {oid: i + 1 for i, oid in enumerate(ids)}
    bad = [oid for oid in ids if not 1 <= oid <= 255]
    if bad:
        raise ValueError(f"object ids {bad[:5]} are outside 1..255 (a palette PNG index); "
                         "rerun with --davis-remap to renumber them 1..K (ids.json keeps the mapping)")
    return {oid: oid for oid in ids}


def write_davis_video(vm: VideoMasks, folder: str, remap: bool = False) -> int:
    """Write one video's PNGs into ``folder`` (a path or URI; through hqseg_ray.storage, each file
    atomically); files of an earlier export that this one does not rewrite are removed at the end.
    Returns the PNG count."""
    from PIL import Image

    from hqseg_ray.storage import open_store
    from hqseg_ray.synth.dataset import DAVIS_PALETTE

    values = palette_values(vm, remap)  # fails before anything is written
    store = open_store(folder)
    written = set()
    for t, objs in vm.labelled():
        im = Image.fromarray(id_map(objs, vm.height, vm.width, values), mode="P")
        im.putpalette(DAVIS_PALETTE)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        written.add(f"{t:05d}.png")
        store.write_bytes(f"{t:05d}.png", buf.getvalue())
    if remap:
        written.add("ids.json")
        store.write_bytes("ids.json", json.dumps({str(v): oid for oid, v in values.items()}).encode())
    for e in store.list():
        if not e.is_dir and e.name not in written:
            store.delete(e.name)
    return len(written) - bool(remap)


class DavisWriter(FormatWriter):
    """Writes ``exports/davis/<video_id>/`` per video."""

    fmt = "davis"

    def __init__(self, output_dir: str, remap: bool = False) -> None:
        self.folder, self.remap = os.path.join(output_dir, "exports", "davis"), remap

    def add(self, vm: VideoMasks) -> None:
        write_davis_video(vm, os.path.join(self.folder, safe_name(vm.video_id)), remap=self.remap)

    def close(self) -> str:
        return self.folder


def export_davis(output_dir: str, video_ids: Optional[Sequence[str]] = None, remap: bool = False) -> str:
    """Write ``exports/davis/<video_id>/`` for each video; returns ``exports/davis``."""
    return run_writers(output_dir, [DavisWriter(output_dir, remap)], video_ids)["davis"]
