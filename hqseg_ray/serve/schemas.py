"""Request and response bodies of the HTTP API (they make the OpenAPI schema), and turning
request prompts into :class:`~hqseg_ray.prompts.Prompt`.

Coordinates are pixels of the original image: points ``[[x, y], ...]`` with labels (1 foreground,
0 background), boxes ``[x1, y1, x2, y2]``.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hqseg_ray.config import MAX_POINTS_HARD, MAX_PROMPTS_HARD  # hard bounds of the schema (re-exported)
from hqseg_ray.prompts import Prompt, PromptSpec, check_prompts
from hqseg_ray.serve.errors import ClientError

__all__ = ["MAX_POINTS_HARD", "MAX_PROMPTS_HARD", "check_prompt_bounds", "to_prompts"]


def check_prompt_bounds(prompts: list, max_prompts: int, max_points: int) -> None:
    """ClientError (400) when a request has more than ``max_prompts`` prompts, or a prompt more than
    ``max_points`` points (every such prompt listed). The one bound check of the image, video and
    review-page routes."""
    if len(prompts) > max_prompts:
        raise ClientError(f"{len(prompts)} prompts in one request; the limit is {max_prompts} (serve.max_prompts)")
    too_many = [f"prompt {i}: {len(p.points)} points; the limit is {max_points} (serve.max_points)"
                for i, p in enumerate(prompts) if getattr(p, "points", None) is not None and len(p.points) > max_points]
    if too_many:
        raise ClientError("; ".join(too_many))


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RLE(_Body):
    size: list[int] = Field(..., min_length=2, max_length=2, description="[height, width]")
    counts: Union[str, list[int]] = Field(..., description="COCO RLE counts (compressed string or list)")


class PromptIn(_Body):
    points: Optional[list[list[float]]] = Field(None, max_length=MAX_POINTS_HARD, description="[[x, y], ...] in pixels")
    labels: Optional[list[int]] = Field(None, max_length=MAX_POINTS_HARD,
                                        description="one per point: 1 foreground, 0 background")
    box: Optional[list[float]] = Field(None, max_length=4, description="[x1, y1, x2, y2] in pixels")
    mask_input: Optional[RLE] = Field(
        None, description="a binary mask (COCO RLE at the image's size) to refine")
    mask_input_id: Optional[str] = Field(
        None, description="the mask_id of an earlier result on the same image: its low-res logits "
        "become the mask input (SAM's usual way to refine with more clicks)")


class SegmentRequest(_Body):
    prompts: list[PromptIn] = Field(..., min_length=1, max_length=MAX_PROMPTS_HARD, description="one object per prompt")
    multimask: Optional[bool] = Field(None, description="pick the best of SAM's 3 masks (default: model config)")
    hq_token_only: Optional[bool] = Field(None, description="HQ mask only (default: model config)")


class ImageIn(_Body):
    image: Optional[str] = Field(None, description="base64 PNG/JPEG/WebP bytes (a data: URL is fine)")
    uri: Optional[str] = Field(None, description="an allowed URI (serve.allowed_uri_prefixes)")


class OneShotRequest(SegmentRequest):
    image: Optional[str] = Field(None, description="base64 PNG/JPEG/WebP bytes (a data: URL is fine)")
    uri: Optional[str] = Field(None, description="an allowed URI (serve.allowed_uri_prefixes)")


class VideoIn(_Body):
    video: Optional[str] = Field(None, description="base64 video file bytes (MP4, WebM, ...)")
    uri: Optional[str] = Field(None, description="an allowed URI (serve.allowed_uri_prefixes)")


class VideoPromptsIn(_Body):
    prompts: list[PromptSpec] = Field(
        ..., min_length=1, max_length=MAX_PROMPTS_HARD, description="prompts with frame and object_id; a prompt for an (object, frame) "
        "already prompted replaces it (corrections)")


class ImageOut(BaseModel):
    image_id: str
    width: int
    height: int


class MaskOut(BaseModel):
    size: list[int] = Field(..., description="[height, width]")
    counts: str = Field(..., description="COCO compressed RLE")
    score: float = Field(..., description="predicted IoU")
    bbox_xywh: list[float] = Field(..., description="tight box [x, y, w, h] (zeros when empty)")
    area: int
    mask_id: Optional[str] = Field(None, description="pass as mask_input_id to refine this mask")


class SegmentOut(BaseModel):
    image_id: Optional[str] = None
    width: int
    height: int
    masks: list[MaskOut]
    model: str = Field(..., description="model label (says 'toy' / 'RANDOM weights' where it applies)")


def to_prompts(
    prompts: list[PromptIn],
    image_size: tuple[int, int],
    mask_converter: Callable[[np.ndarray], np.ndarray],
    mask_lookup: Callable[[str], Optional[np.ndarray]],
    max_prompts: int,
    max_points: int,
    frame: int = 0,
) -> list[Prompt]:
    """Request prompts -> engine prompts on ``frame``; one ClientError listing every problem."""
    from hqseg_ray.masks import rle_decode

    check_prompt_bounds(prompts, max_prompts, max_points)
    h, w = image_size
    errors: list[str] = []
    out: list[Prompt] = []
    for i, p in enumerate(prompts):
        mask_input = None
        if p.mask_input is not None and p.mask_input_id is not None:
            errors.append(f"prompt {i}: give mask_input or mask_input_id, not both")
            continue
        if p.mask_input is not None:
            if list(p.mask_input.size) != [h, w]:
                errors.append(f"prompt {i}: mask_input size {p.mask_input.size} is not the image's [{h}, {w}]")
                continue
            try:
                mask_input = mask_converter(rle_decode(p.mask_input.model_dump()))
            except Exception as exc:  # pycocotools raises plain Exceptions on bad counts
                errors.append(f"prompt {i}: mask_input is not a valid COCO RLE ({exc})")
                continue
        elif p.mask_input_id is not None:
            mask_input = mask_lookup(p.mask_input_id)
            if mask_input is None:
                errors.append(f"prompt {i}: mask_input_id {p.mask_input_id!r} is unknown for this image "
                              "(ids are kept for the image's 16 latest masks)")
                continue
        try:
            out.append(Prompt(frame=frame, points=p.points, labels=p.labels, box=p.box, mask_input=mask_input))
        except ValueError as exc:
            errors.append(f"prompt {i}: {exc}")
    if errors:
        raise ClientError("; ".join(errors))
    sizes = [(h, w)] * (frame + 1)
    try:
        check_prompts(out, sizes)
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    return out
