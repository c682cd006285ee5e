"""Label Studio import: JSON tasks, one per labelled frame, with brush masks as pre-annotations.

    OUTPUT/exports/labelstudio/<video_id>.json     a JSON list of tasks (import into a project)
    OUTPUT/exports/labelstudio/label_config.xml    the project's labeling config (BrushLabels)

Label Studio's COCO import drops RLE masks, and its video tasks hold boxes only, so masks go in
as image tasks, one per labelled frame of the video (frames a strided run never looked at get no
task; a labelled frame with no object gets a task with an empty result, i.e. "checked: nothing
there"). Each task::

    {"data": {"image": "<image_root><video_id>/00042.jpg", "video_id": "a", "frame_index": 42},
     "predictions": [{"model_version": "hqseg-ray", "score": 0.93, "result": [
        {"id": "a-42-1", "from_name": "label", "to_name": "image", "type": "brushlabels",
         "origin": "prediction", "original_width": W, "original_height": H, "image_rotation": 0,
         "score": 0.95, "value": {"format": "rle", "rle": [...], "brushlabels": ["person"]},
         "meta": {"object_id": 1, "source": "track"}}]}]}

``rle`` is Label Studio's own brush encoding (not COCO's): the RGBA image of the mask (every
channel 255 on the object, 0 elsewhere), run-length coded into a bit stream (see
:func:`mask_to_ls_rle`). It is produced here with numpy, byte for byte what Label Studio's own
encoder (``label_studio_converter.brush.mask2rle``, pure Python, about 100x slower on a 480p mask)
writes: the tests compare the two and decode with Label Studio's decoder. ``as_annotations=True`` writes the
masks as ``annotations`` (ground truth) instead of ``predictions``. Frames are served from
``image_root`` (default ``/data/local-files/?d=``, Label Studio's local files storage; extract
them as in the COCO section of docs/formats.md).
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

from hqseg_ray.export.coco import frame_file_name
from hqseg_ray.export.formats import FormatWriter, VideoMasks, run_writers, safe_name
from hqseg_ray.export.io import write_text

FROM_NAME, TO_NAME = "label", "image"


_RLE_SIZES = (3, 4, 8, 16)  # bits of a run length, selected by a 2-bit index


def mask_to_ls_rle(mask: np.ndarray) -> list[int]:
    """``[H, W]`` bool mask -> Label Studio brush RLE (``value.rle``), a list of byte values.

    The stream (Label Studio's ``brush.encode_rle`` of the flattened RGBA image, word size 8): a
    32-bit value count (``H * W * 4``), 5 bits word size - 1 (7), four 4-bit run-size widths - 1
    (3, 4, 8, 16 bits); then per run of equal bytes ``1``, a 2-bit width index, length - 1 in that
    width, the byte in 8 bits (runs longer than 65536 are split; a run of one byte would be ``0 00
    000`` + byte, which a mask repeated over 4 channels never has); then 1 to 8 zero bits of
    padding (always at least one, as Label Studio pads) and the bits packed into bytes, MSB first.
    """
    flat = np.ascontiguousarray(mask, dtype=bool).reshape(-1)
    n = flat.size
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    lengths = (np.diff(np.concatenate([starts, [n]])) * 4).tolist()  # each pixel is 4 equal bytes
    values = np.where(flat[starts], 255, 0).tolist() if n else []
    acc, nbits = 4 * n, 32
    for field, width in ((7, 5), (2, 4), (3, 4), (7, 4), (15, 4)):
        acc, nbits = (acc << width) | field, nbits + width
    for length, value in zip(lengths, values):
        while length > 1 << 16:
            acc, nbits = (acc << 27) | (0b111 << 24) | (0xFFFF << 8) | value, nbits + 27
            length -= 1 << 16
        if length == 1:
            acc, nbits = (acc << 14) | value, nbits + 14
            continue
        idx = 0 if length <= 8 else 1 if length <= 16 else 2 if length <= 256 else 3
        width = _RLE_SIZES[idx]
        acc = (((((acc << 3) | 0b100 | idx) << width) | (length - 1)) << 8) | value
        nbits += 3 + width + 8
    pad = 8 - nbits % 8
    acc, nbits = acc << pad, nbits + pad
    return list(acc.to_bytes(nbits // 8, "big"))


def ls_rle_to_mask(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """Label Studio brush RLE -> ``[H, W]`` bool mask, with Label Studio's own decoder
    (``label_studio_converter.brush.decode_rle``; alpha channel > 0)."""
    from label_studio_converter import brush

    flat = np.asarray(brush.decode_rle(list(rle)))
    return flat.reshape(height, width, 4)[:, :, 3] > 0


def label_config(names: Sequence[str]) -> str:
    """A Label Studio labeling config with one brush label per category."""
    labels = "\n".join(f"    <Label value={quoteattr(n)}/>" for n in names)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
            f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </BrushLabels>\n</View>\n')


def video_to_ls_tasks(vm: VideoMasks, image_root: str = "/data/local-files/?d=",
                      as_annotations: bool = False, model_version: str = "hqseg-ray") -> list[dict]:
    """One task per labelled frame (see the module docstring)."""
    tasks = []
    for t, objs in vm.labelled():
        result = [{
            "id": f"{vm.video_id}-{t}-{o.object_id}", "from_name": FROM_NAME, "to_name": TO_NAME,
            "type": "brushlabels", "origin": "prediction" if not as_annotations else "manual",
            "original_width": vm.width, "original_height": vm.height, "image_rotation": 0,
            "score": round(o.score, 4),
            "value": {"format": "rle", "rle": mask_to_ls_rle(o.mask()), "brushlabels": [vm.category(o.object_id)]},
            "meta": {"object_id": o.object_id, "source": o.source},
        } for o in objs]
        task = {"data": {"image": f"{image_root}{frame_file_name(vm.video_id, t)}", "video_id": vm.video_id,
                         "frame_index": t}}
        if as_annotations:
            task["annotations"] = [{"result": result, "ground_truth": False}]
        else:
            pred = {"model_version": model_version, "result": result}
            if objs:  # Label Studio sorts tasks by this; a frame with nothing on it has none
                pred["score"] = round(float(np.mean([o.score for o in objs])), 4)
            task["predictions"] = [pred]
        tasks.append(task)
    return tasks


class LabelStudioWriter(FormatWriter):
    """Writes ``exports/labelstudio/<video_id>.json`` per video and ``label_config.xml`` once."""

    fmt = "labelstudio"
    needs_categories = True

    def __init__(self, output_dir: str, image_root: str = "/data/local-files/?d=",
                 as_annotations: bool = False) -> None:
        self.output_dir = output_dir
        self.folder = os.path.join(output_dir, "exports", "labelstudio")
        self.image_root, self.as_annotations = image_root, as_annotations

    def add(self, vm: VideoMasks) -> None:
        tasks = video_to_ls_tasks(vm, self.image_root, self.as_annotations)
        write_text(os.path.join(self.folder, f"{safe_name(vm.video_id)}.json"),
                   json.dumps(tasks, separators=(",", ":")))

    def close(self) -> str:
        write_text(os.path.join(self.folder, "label_config.xml"), label_config(self.categories.names))
        return self.folder


def export_labelstudio(output_dir: str, video_ids: Optional[Sequence[str]] = None, **options) -> str:
    """Write the Label Studio tasks of each video; returns the folder."""
    return run_writers(output_dir, [LabelStudioWriter(output_dir, **options)], video_ids)["labelstudio"]
