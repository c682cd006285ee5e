"""Mask helpers: COCO RLE encode/decode (pycocotools), boxes, areas and IoU.

Masks are ``[H, W]`` bool (or ``[N, H, W]``). RLE is COCO *compressed* RLE:
``{"size": [H, W], "counts": str}``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from pycocotools import mask as mask_utils


def rle_encode(mask: np.ndarray) -> dict:
    """``[H, W]`` bool mask -> COCO compressed RLE with ``counts`` as a str."""
    if mask.ndim != 2:
        raise ValueError(f"rle_encode expects an [H, W] mask, got shape {list(mask.shape)}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def rle_encode_many(masks: np.ndarray) -> list[dict]:
    """``[N, H, W]`` bool masks -> list of COCO RLE dicts (one pycocotools call)."""
    if masks.ndim != 3:
        raise ValueError(f"rle_encode_many expects [N, H, W], got shape {list(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(r["size"][0]), int(r["size"][1])],
             "counts": r["counts"].decode("ascii")} for r in rles]


def _as_coco(rle: dict) -> dict:
    counts = rle["counts"]
    size = [int(v) for v in rle["size"]]
    if isinstance(counts, list):  # uncompressed RLE
        return mask_utils.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
    return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def rle_decode(rle: dict) -> np.ndarray:
    """COCO RLE (compressed or uncompressed) -> ``[H, W]`` bool mask."""
    return mask_utils.decode(_as_coco(rle)).astype(bool)


def rle_area(rle: dict) -> int:
    return int(mask_utils.area(_as_coco(rle)))


def rle_bbox_xywh(rle: dict) -> list[float]:
    """Tight box of an RLE mask as [x, y, w, h] (COCO convention); zeros when empty."""
    return [float(v) for v in mask_utils.toBbox(_as_coco(rle)).tolist()]


def rle_iou(a: Sequence[dict], b: Sequence[dict]) -> np.ndarray:
    """``[len(a), len(b)]`` IoU matrix of two lists of RLEs (same image size)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    return np.asarray(
        mask_utils.iou([_as_coco(r) for r in a], [_as_coco(r) for r in b], [0] * len(b)),
        dtype=np.float64,
    ).reshape(len(a), len(b))


def mask_to_box(mask: np.ndarray) -> np.ndarray | None:
    """Tight XYXY box (pixel edges, so a one-pixel mask at (x, y) is [x, y, x+1, y+1])."""
    mask = np.asarray(mask)
    rows = np.flatnonzero(mask.any(axis=1))  # projections: far cheaper than np.nonzero on a large mask
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks of the same shape; 1.0 when both are empty."""
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(inter) / float(union)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, M]`` IoU of XYXY boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def masks_from_rles(rles: Iterable[dict]) -> np.ndarray:
    rl = list(rles)
    if not rl:
        raise ValueError("masks_from_rles needs at least one RLE")
    return np.stack([rle_decode(r) for r in rl])
