"""Prompt types and their validation.

A :class:`Prompt` is what the engine decodes: one object on one encoded frame, given by any
combination of points (+ labels), a box and low-resolution mask logits. Coordinates are pixels
of the *original* frame: points are ``[N, 2]`` (X, Y), boxes ``[4]`` XYXY.

Validation reports every problem at once; problems are phrased so that the caller can prefix
them with where the prompt came from (``"prompt 3 (frame 2): box [...] has x2 < x1"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np


def _as_float_array(value: Any, name: str) -> Optional[np.ndarray]:
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {value!r}") from exc
    return arr


@dataclass(frozen=True, eq=False)
class Prompt:
    """One prompt for one object on one frame.

    Attributes:
        frame: index of the frame (into the encoded frames for the engine; into the video for
            manifests).
        points: ``[N, 2]`` float (X, Y) in pixels of the original frame, or None.
        labels: ``[N]`` int, 1 = foreground, 0 = background; required with points.
        box: ``[4]`` float XYXY in pixels of the original frame, or None.
        mask_input: ``[h, w]`` float low-resolution mask *logits* at the model's low-res size
            (``4 * image_size / patch_size`` per side, e.g. 256 for 1024-px models), or None.
            Typically the ``low_res_logits`` of an earlier decode.
        object_id: the object this prompt is about (optional; used by the tracker).
    """

    frame: int = 0
    points: Optional[Any] = None
    labels: Optional[Any] = None
    box: Optional[Any] = None
    mask_input: Optional[Any] = None
    object_id: Optional[int] = None
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", _as_float_array(self.points, "points"))
        object.__setattr__(self, "box", _as_float_array(self.box, "box"))
        if self.labels is not None:
            object.__setattr__(self, "labels", np.asarray(self.labels))
        if self.mask_input is not None:
            mi = self.mask_input
            if hasattr(mi, "detach"):  # a torch tensor
                mi = mi.detach().float().cpu().numpy()
            object.__setattr__(self, "mask_input", np.asarray(mi, dtype=np.float32))

    # -- structure -------------------------------------------------------------------------
    @property
    def num_points(self) -> int:
        return 0 if self.points is None else int(self.points.reshape(-1, 2).shape[0])

    def signature(self) -> tuple[int, bool, bool]:
        """(number of points, has box, has mask): prompts decoded in one call share it."""
        return (self.num_points, self.box is not None, self.mask_input is not None)

    # -- validation ------------------------------------------------------------------------
    def problems(
        self,
        image_size: Optional[tuple[int, int]] = None,
        mask_size: Optional[tuple[int, int]] = None,
    ) -> list[str]:
        """Every problem with this prompt, as short phrases (empty when valid).

        Args:
            image_size: (H, W) of the original frame; enables bounds checks.
            mask_size: (h, w) the low-res mask input must have.
        """
        out: list[str] = []
        if isinstance(self.frame, bool) or not isinstance(self.frame, (int, np.integer)):
            out.append(f"frame must be an integer, got {self.frame!r}")
        elif self.frame < 0:
            out.append(f"frame {self.frame} is negative")
        if self.points is None and self.box is None and self.mask_input is None:
            out.append("needs at least one of points, box or mask_input")
        if self.points is not None:
            pts = self.points
            if pts.ndim != 2 or pts.shape[-1] != 2 or pts.shape[0] == 0:
                out.append(f"points must be a non-empty [N, 2] list of (x, y), got shape {list(pts.shape)}")
            elif not np.all(np.isfinite(pts)):
                out.append("points contain NaN or infinity")
            elif image_size is not None:
                h, w = image_size
                bad = [p.tolist() for p in pts if not (0 <= p[0] <= w and 0 <= p[1] <= h)]
                if bad:
                    out.append(f"points {bad} are outside the {w}x{h} frame")
            if self.labels is None:
                out.append("points given without labels")
            else:
                lab = self.labels.reshape(-1)
                if pts.ndim == 2 and lab.shape[0] != pts.shape[0]:
                    out.append(f"{pts.shape[0]} points but {lab.shape[0]} labels")
                bad_labels = sorted({v for v in lab.tolist() if v not in (0, 1)}, key=str)
                if bad_labels:
                    out.append(f"labels must be 0 or 1, got {bad_labels}")
        elif self.labels is not None:
            out.append("labels given without points")
        if self.box is not None:
            b = self.box
            if b.shape != (4,):
                out.append(f"box must be [x1, y1, x2, y2], got shape {list(b.shape)}")
            elif not np.all(np.isfinite(b)):
                out.append("box contains NaN or infinity")
            else:
                x1, y1, x2, y2 = b.tolist()
                if x2 < x1:
                    out.append(f"box {_fmt(b)} has x2 < x1")
                if y2 < y1:
                    out.append(f"box {_fmt(b)} has y2 < y1")
                if image_size is not None:
                    h, w = image_size
                    if min(x1, y1) < 0 or max(x1, x2) > w or max(y1, y2) > h:
                        out.append(f"box {_fmt(b)} is outside the {w}x{h} frame")
        if self.mask_input is not None:
            m = self.mask_input
            if m.ndim == 3 and m.shape[0] == 1:
                m = m[0]
            if m.ndim != 2:
                out.append(f"mask_input must be [h, w] low-res logits, got shape {list(self.mask_input.shape)}")
            elif mask_size is not None and tuple(m.shape) != tuple(mask_size):
                out.append(f"mask_input has shape {list(m.shape)}, the model needs {list(mask_size)}")
        return out


def _fmt(arr: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:g}" for v in arr.tolist()) + "]"


def check_prompts(
    prompts: Sequence[Prompt],
    image_sizes: Sequence[tuple[int, int]],
    mask_size: Optional[tuple[int, int]] = None,
    where: str = "",
) -> None:
    """Raise one ValueError listing every problem of every prompt.

    Args:
        prompts: the prompts; ``prompt.frame`` indexes ``image_sizes``.
        image_sizes: (H, W) of each frame the prompts may refer to.
        mask_size: (h, w) required of mask inputs.
        where: prefix naming the input (e.g. ``"video 'a': "``).
    """
    errors: list[str] = []
    for i, p in enumerate(prompts):
        if not isinstance(p, Prompt):
            errors.append(f"prompt {i}: expected a Prompt, got {type(p).__name__}")
            continue
        size = None
        if isinstance(p.frame, (int, np.integer)) and not isinstance(p.frame, bool):
            if 0 <= p.frame < len(image_sizes):
                size = image_sizes[p.frame]
            elif p.frame >= 0:
                errors.append(
                    f"prompt {i} (frame {p.frame}): frame {p.frame} was not encoded "
                    f"({len(image_sizes)} frames available)"
                )
        for problem in p.problems(size, mask_size):
            errors.append(f"prompt {i} (frame {p.frame}): {problem}")
    if errors:
        raise ValueError(where + "; ".join(errors) if len(errors) == 1 else where + f"{len(errors)} problems:\n  " + "\n  ".join(errors))
