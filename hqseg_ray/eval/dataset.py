"""Read the project's Parquet output and DAVIS-layout ground truth; score whole datasets."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np

from hqseg_ray.eval.metrics import BOUND_TH, evaluate_video, match_objects, relabel
from hqseg_ray.masks import rle_decode

logger = logging.getLogger(__name__)

PRED_COLUMNS = ("video_id", "frame_index", "object_id", "rle_counts", "rle_size")


# ------------------------------------------------------------------------------------------
# Ground truth
# ------------------------------------------------------------------------------------------

def gt_video_dirs(gt: Union[str, Path]) -> dict[str, Path]:
    """``{video_id: folder of NNNNN.png}`` for a DAVIS root (``Annotations/[480p/]<id>/``), an
    ``Annotations`` folder, or a folder of video folders."""
    root = Path(gt)
    if not root.is_dir():
        raise FileNotFoundError(f"ground truth {str(gt)!r} is not a folder")
    for cand in (root / "Annotations" / "480p", root / "Annotations", root / "480p", root):
        if cand.is_dir():
            vids = {d.name: d for d in sorted(cand.iterdir()) if d.is_dir() and any(d.glob("*.png"))}
            if vids:
                return vids
    raise FileNotFoundError(f"ground truth {str(gt)!r}: no Annotations/<video_id>/*.png found")


def read_annotation(path: Union[str, Path]) -> np.ndarray:
    """One annotation PNG -> ``[H, W]`` uint8 object ids. Palette PNGs give their indices
    (DAVIS 2017); a grey/RGB image with only 0 and 255 (DAVIS 2016) becomes object 1."""
    from PIL import Image

    im = Image.open(path)
    if im.mode == "P":
        return np.array(im, dtype=np.uint8)
    arr = np.array(im.convert("L"))
    return (arr > 127).astype(np.uint8)


def read_gt_video(folder: Union[str, Path]) -> dict[int, np.ndarray]:
    """``{frame_index: id map}`` from ``NNNNN.png`` files (frame index = the number in the name)."""
    out = {}
    for p in sorted(Path(folder).glob("*.png")):
        m = re.search(r"(\d+)$", p.stem)
        if not m:
            continue
        out[int(m.group(1))] = read_annotation(p)
    return out


# ------------------------------------------------------------------------------------------
# Predictions (the project's Parquet output)
# ------------------------------------------------------------------------------------------

def parquet_files(pred: Union[str, Path]) -> list[Path]:
    p = Path(pred)
    if p.is_file():
        return [p]
    if p.is_dir():
        base = p / "masks" if (p / "masks").is_dir() else p
        files = sorted(base.rglob("*.parquet"))
        if files:
            return files
    raise FileNotFoundError(f"predictions {str(pred)!r}: no Parquet file (expected masks/video_id=<id>/*.parquet)")


def read_predictions(pred: Union[str, Path], videos: Optional[set[str]] = None
                     ) -> dict[str, dict[int, dict[int, np.ndarray]]]:
    """``{video_id: {frame_index: {object_id: [H, W] bool}}}`` from Parquet rows with columns
    video_id (or a ``video_id=<id>`` folder), frame_index, object_id, rle_counts, rle_size."""
    import pyarrow.parquet as pq

    out: dict[str, dict[int, dict[int, np.ndarray]]] = {}
    for f in parquet_files(pred):
        names = set(pq.read_schema(f).names)
        missing = [c for c in PRED_COLUMNS if c not in names and c != "video_id"]
        if missing:
            raise ValueError(f"predictions file {str(f)!r} lacks columns {missing}")
        table = pq.read_table(f, columns=[c for c in PRED_COLUMNS if c in names])
        part = re.search(r"video_id=([^/\\]+)", str(f.parent))
        rows = table.to_pylist()
        for r in rows:
            vid = r.get("video_id") or (part.group(1) if part else None)
            if vid is None:
                raise ValueError(f"predictions file {str(f)!r}: no video_id column or video_id=<id> folder")
            vid = str(vid)
            if videos is not None and vid not in videos:
                continue
            mask = rle_decode({"size": [int(v) for v in r["rle_size"]], "counts": r["rle_counts"]})
            frame = out.setdefault(vid, {}).setdefault(int(r["frame_index"]), {})
            oid = int(r["object_id"])
            frame[oid] = frame[oid] | mask if oid in frame else mask
    return out


# ------------------------------------------------------------------------------------------
# Dataset score
# ------------------------------------------------------------------------------------------

def evaluate_dataset(pred: Union[str, Path, Mapping], gt: Union[str, Path], videos: Optional[list[str]] = None,
                     bound_th: float = BOUND_TH, exclude_first_last: bool = False,
                     per_frame: bool = False, match: bool = False) -> dict:
    """Score predictions against DAVIS-layout ground truth.

    Args:
        pred: Parquet file or output folder, or ``{video_id: {frame: {object_id: mask}}}``.
        gt: DAVIS root / Annotations folder.
        videos: video ids to score (default: every ground-truth video; one with no predictions
            scores as empty masks).
        match: output without given identities (automatic mode): each video's predicted ids are
            first assigned one-to-one to ground-truth ids by J&F (``match_objects``, DAVIS's
            unsupervised protocol); unassigned predictions are not scored, and each video's
            result gets ``"matched": {predicted id: ground-truth id}``.

    Returns:
        ``{"J", "F", "JF"}`` (means over all objects of all videos, as DAVIS), ``"id_switches"``,
        ``"objects"``, and ``"videos": {id: {"J", "F", "JF", "id_switches", "frames", "per_object"}}``.
    """
    dirs = gt_video_dirs(gt)
    wanted = list(videos) if videos else sorted(dirs)
    unknown = [v for v in wanted if v not in dirs]
    if unknown:
        raise ValueError(f"videos {unknown} have no ground truth under {str(gt)!r}")
    preds = pred if isinstance(pred, Mapping) else read_predictions(pred, set(wanted))
    no_pred = [v for v in wanted if v not in preds]
    if no_pred:
        logger.warning("no predictions for %d video(s) %s: scored as empty", len(no_pred), no_pred[:5])
    results, js, fs = {}, [], []
    for vid in wanted:
        gt_v, pred_v, mapping = read_gt_video(dirs[vid]), preds.get(vid, {}), None
        if match:
            scored = sorted(gt_v)[1:-1] if exclude_first_last and len(gt_v) > 2 else sorted(gt_v)
            mapping = match_objects(pred_v, {f: gt_v[f] for f in scored}, bound_th)
            pred_v = relabel(pred_v, mapping)
        r = evaluate_video(pred_v, gt_v, bound_th, exclude_first_last)
        if mapping is not None:
            r["matched"] = mapping
        if not per_frame:
            for o in r["per_object"].values():
                o.pop("J_per_frame"), o.pop("F_per_frame")
        results[vid] = r
        js += [o["J"] for o in r["per_object"].values()]
        fs += [o["F"] for o in r["per_object"].values()]
    j = float(np.mean(js)) if js else float("nan")
    f = float(np.mean(fs)) if fs else float("nan")
    return {"J": j, "F": f, "JF": (j + f) / 2, "objects": len(js),
            "id_switches": sum(r["id_switches"] for r in results.values()), "videos": results}
