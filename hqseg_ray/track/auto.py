"""Automatic object discovery on one encoded frame (SAM's "everything" mode, single crop).

A grid of single positive points is decoded in batches, each point giving SAM's three masks (or
the best one, ``masks_per_point: 1``); with ``refine`` each plausible point mask (points that hit
the same object merged by NMS first) is decoded once more from its own box and logits. Masks are
kept when their predicted IoU and stability score are high enough and their area is plausible for
an object, then de-duplicated by box NMS (torchvision). Filtering runs on the low-res logits, so
only the kept masks are upsampled to the original frame size.

With ``crop_n_layers`` > 0 (SAM's crop layers) the same runs again on overlapping crops of the
frame, each encoded on its own at the model's input size: an object of a few hundred pixels
becomes two to three times larger in the model's view. Crop masks that touch a crop edge inside
the frame are dropped (they are cut objects), the others are pasted back into the frame and merged
with the whole frame's masks by box NMS on predicted IoU (SAM prefers the crop's mask whatever its
score; with the toy model that replaced good whole-frame masks by worse crop ones, docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hqseg_ray.config import AutoConfig
from hqseg_ray.masks import mask_to_box
from hqseg_ray.prompts import Prompt


@dataclass
class Discovered:
    """Discovered objects on one frame, best first.

    Attributes:
        masks: ``[K, H, W]`` bool at the original frame size.
        logits: ``[K, h, w]`` float32 low-res logits.
        scores: ``[K]`` float32 predicted IoU.
    """

    masks: np.ndarray
    logits: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def point_grid(n: int, size: tuple[int, int]) -> np.ndarray:
    """``[n*n, 2]`` float (X, Y) cell centres of an n x n grid over an (H, W) frame."""
    h, w = size
    c = (np.arange(n) + 0.5) / n
    xs, ys = np.meshgrid(c * w, c * h)
    return np.stack([xs.ravel(), ys.ravel()], 1)


def stability_score(logits: torch.Tensor, offset: float) -> torch.Tensor:
    """``[P, h, w]`` logits -> ``[P]`` area(logits > offset) / area(logits > -offset)."""
    hi = (logits > offset).flatten(1).sum(1).float()
    lo = (logits > -offset).flatten(1).sum(1).float()
    return torch.where(lo > 0, hi / lo.clamp(min=1), torch.zeros_like(lo))


def discover_objects(engine, embeddings, frame: int, config: AutoConfig, image=None) -> Discovered:
    """Find objects on encoded frame ``frame`` of ``embeddings`` (see the module docstring).

    ``image``: that frame's uint8 RGB pixels ``[h, w, 3]`` (the original frame, or the frame resized
    with its aspect ratio kept); needed only when ``config.crop_n_layers`` > 0, to cut the crops.
    """
    size = embeddings.original_sizes[frame]
    if config.crop_n_layers > 0:
        image = _check_image(image, size)  # before any work
    whole = _discover_one(engine, embeddings, frame, config, config.points_per_side,
                          config.max_objects if config.crop_n_layers == 0 else None)
    if config.crop_n_layers == 0:
        return whole
    return _merge_crops(engine, size, whole, config, image)


def _check_image(image, size: tuple[int, int]) -> np.ndarray:
    if image is None:
        raise ValueError("auto.crop_n_layers > 0 needs the frame's pixels (discover_objects(..., image=frame))")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"discover_objects: image must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    (h, w), (ih, iw) = size, image.shape[:2]
    if abs(ih / h - iw / w) > 0.02 * max(ih / h, iw / w):
        raise ValueError(f"discover_objects: image {iw}x{ih} does not have the frame's aspect ratio ({w}x{h})")
    return image


def _merge_crops(engine, size: tuple[int, int], whole: Discovered, config: AutoConfig, image: np.ndarray) -> Discovered:
    """Discovery on SAM's crop layers of the frame, merged with the whole frame's ``whole``."""
    from segment_anything_hq.utils.amg import generate_crop_boxes, is_box_near_crop_edge
    from torchvision.ops import nms

    from hqseg_ray.track.motion import LowResGeometry

    h, w = size
    fy, fx = image.shape[0] / h, image.shape[1] / w
    geo = LowResGeometry(size, engine.image_size, engine.low_res_size)
    # SAM drops masks within 20 px of an inner crop edge on ~1500 px images; the same share of the frame here
    atol = max(2.0, 20.0 / 1500 * max(h, w))
    masks, logits, scores = [whole.masks], [whole.logits], [whole.scores]
    crop_boxes, layers = generate_crop_boxes((h, w), config.crop_n_layers, config.crop_overlap_ratio)
    for (x0, y0, x1, y1), layer in zip(crop_boxes[1:], layers[1:]):
        rows, cols = slice(round(y0 * fy), round(y1 * fy)), slice(round(x0 * fx), round(x1 * fx))
        crop = np.ascontiguousarray(image[rows, cols])
        emb = engine.encode(crop[None], [(y1 - y0, x1 - x0)])  # masks come back in frame pixels of the crop
        pps = max(1, config.points_per_side // config.crop_n_points_downscale_factor ** layer)
        found = _discover_one(engine, emb, 0, config, pps, None)
        if not len(found):
            continue
        boxes = torch.from_numpy(np.stack([mask_to_box(m) for m in found.masks])).float()
        ok = ~is_box_near_crop_edge(boxes, [x0, y0, x1, y1], [0, 0, w, h], atol=atol).numpy()
        if not ok.any():
            continue
        pasted = np.zeros((int(ok.sum()), h, w), bool)
        pasted[:, y0:y1, x0:x1] = found.masks[ok]
        masks.append(pasted)
        logits.append(np.stack([geo.mask_to_logits(m) for m in pasted]))
        scores.append(found.scores[ok])
    masks, logits, scores = np.concatenate(masks), np.concatenate(logits), np.concatenate(scores)
    if not len(scores):
        return whole
    boxes = torch.from_numpy(np.stack([mask_to_box(m) for m in masks])).float()
    keep = nms(boxes, torch.from_numpy(scores).float(), config.nms_iou)[: config.max_objects].numpy()
    return Discovered(masks[keep], logits[keep].astype(np.float32), scores[keep].astype(np.float32))


def _discover_one(engine, embeddings, frame: int, config: AutoConfig, points_per_side: int,
                  max_objects) -> Discovered:
    """Discovery on one encoded image: grid, refinement, filters and NMS (``max_objects`` None: no cap)."""
    from torchvision.ops import nms

    size = embeddings.original_sizes[frame]
    ih, iw = embeddings.input_sizes[frame]
    lh, lw = engine.low_res_size
    vh, vw = max(1, round(ih * lh / engine.image_size)), max(1, round(iw * lw / engine.image_size))
    pts = point_grid(points_per_side, size)
    prompts = [Prompt(frame=frame, points=p[None], labels=[1]) for p in pts]
    empty = Discovered(np.zeros((0, *size), bool), np.zeros((0, lh, lw), np.float32), np.zeros((0,), np.float32))
    if config.masks_per_point == 3:
        # every point's three masks (whole, part, subpart), as SAM's generator keeps them: the best
        # one by predicted IoU alone misses objects whose right mask is not the one rated best
        all_logits, scores = engine.decode_low_res(embeddings, prompts, multimask="all")
        all_logits, scores = all_logits.flatten(0, 1), scores.flatten(0, 1)
    else:
        all_logits, scores = engine.decode_low_res(embeddings, prompts, multimask=True)
    if config.refine:
        # 1. drop points whose mask is empty or background-sized, and points that hit the same object
        idx = _plausible(all_logits[:, :vh, :vw].float(), config)
        if idx.numel() == 0:
            return empty
        boxes = _lowres_boxes(all_logits[idx, :vh, :vw].float() > 0, vh, vw)
        idx = idx[nms(boxes, scores[idx].float(), 0.8)]
        # 2. re-prompt with the mask's own box (in original pixels) and logits
        sx, sy = size[1] / (vw * 1.0), size[0] / (vh * 1.0)
        boxes = _lowres_boxes(all_logits[idx, :vh, :vw].float() > 0, vh, vw).cpu().numpy() * [sx, sy, sx, sy]
        lg = all_logits[idx].float().cpu().numpy()
        refined = [Prompt(frame=frame, box=b, mask_input=m) for b, m in zip(boxes, lg)]
        all_logits, scores = engine.decode_low_res(embeddings, refined)
        prompts = refined
    logits = all_logits[:, :vh, :vw].float()  # the frame's part of the padded grid
    keep = scores >= config.pred_iou_thresh
    keep &= stability_score(logits, config.stability_offset) >= config.stability_thresh
    area_frac = (logits > 0).flatten(1).sum(1).float() / float(vh * vw)
    keep &= (area_frac >= config.min_area_fraction) & (area_frac <= config.max_area_fraction)
    idx = torch.nonzero(keep).flatten()
    if idx.numel() == 0:
        return empty
    boxes = _lowres_boxes(logits[idx] > 0, vh, vw)
    kept = nms(boxes, scores[idx].float(), config.nms_iou)[:max_objects]
    sel = idx[kept]
    full_logits = all_logits[sel]
    masks = engine.postprocess(embeddings, [frame] * len(sel), full_logits)
    areas = masks.reshape(len(sel), -1).sum(1)
    ok = areas > 0
    return Discovered(np.asarray(masks)[ok], full_logits.float().cpu().numpy()[ok],
                      scores[sel].float().cpu().numpy()[ok])


def _plausible(logits: torch.Tensor, config: AutoConfig) -> torch.Tensor:
    """Indices of ``[P, h, w]`` masks whose area fraction lies within the configured bounds."""
    frac = (logits > 0).flatten(1).sum(1).float() / float(logits.shape[1] * logits.shape[2])
    return torch.nonzero((frac >= config.min_area_fraction) & (frac <= config.max_area_fraction)).flatten()


def _lowres_boxes(fg: torch.Tensor, vh: int, vw: int) -> torch.Tensor:
    """``[P, h, w]`` bool -> ``[P, 4]`` float XYXY boxes in low-res cells (pixel edges)."""
    ys, xs = fg.any(2), fg.any(1)
    ar_h, ar_w = torch.arange(vh, device=fg.device), torch.arange(vw, device=fg.device)
    return torch.stack([
        torch.where(xs, ar_w, vw).min(1).values, torch.where(ys, ar_h, vh).min(1).values,
        torch.where(xs, ar_w, -1).max(1).values + 1, torch.where(ys, ar_h, -1).max(1).values + 1], 1).float()
