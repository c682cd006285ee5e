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


# ============================================================================================
# Prompt manifest: one row per video (JSONL, Parquet, or a folder / glob of videos).
# Coordinates are pixels of the frame as displayed (after the video's rotation), XY / XYXY.
# ============================================================================================

import os as _os
import re as _re
from typing import Iterator, Union

from pydantic import BaseModel as _BaseModel
from pydantic import ConfigDict as _ConfigDict
from pydantic import Field as _Field
from pydantic import model_validator as _model_validator


class PromptSpec(_BaseModel):
    """One prompt of a manifest: an object on a frame, by points, a box and/or a mask."""

    model_config = _ConfigDict(extra="forbid")

    object_id: Optional[int] = _Field(
        None, description="Object id to keep in the output; null for detector boxes (matched to tracks by IoU).")
    frame: int = _Field(0, description="Frame index (0-based, presentation order) the prompt is on.")
    points: Optional[list[list[float]]] = _Field(
        None, description="[[x, y], ...] pixels of the displayed frame.")
    labels: Optional[list[int]] = _Field(None, description="One per point: 1 = object, 0 = background.")
    box: Optional[list[float]] = _Field(None, description="[x1, y1, x2, y2] pixels of the displayed frame.")
    mask: Optional[dict] = _Field(
        None, description="COCO RLE {size: [H, W], counts: str | list[int]} at the frame's size.")
    label: Optional[str] = _Field(
        None, description="Category name of the object (e.g. 'person'); carried to the masks' label column "
        "and the exports' categories. One label per object; on a detector box (no object_id) it labels the "
        "track the box is matched to.")


class ManifestRow(_BaseModel):
    """One video and its prompts."""

    model_config = _ConfigDict(extra="forbid")

    video: str = _Field(description="Video file, frame folder or image: path, file://, s3:// or gs://.")
    video_id: Optional[str] = _Field(
        None, description="Output id (partition name); default: the file or folder name without extension.")
    prompts: list[PromptSpec] = _Field(default_factory=list, description="Prompts; empty = automatic mode.")
    auto: Optional[bool] = _Field(
        None, description="Force automatic object discovery on (true) or off (false) for this video; "
        "null follows the job config.")
    meta: Optional[dict] = _Field(None, description="Free-form user data carried into the status table.")
    labels: Optional[dict[int, str]] = _Field(
        None, description="Category name per object id, e.g. {\"1\": \"person\"} (same as a prompt's label).")
    default_label: Optional[str] = _Field(
        None, description="Category of objects with no label of their own: detector boxes (no object_id) and "
        "automatically discovered objects. Null: they have no label (exports call them 'object').")

    @_model_validator(mode="after")
    def _default_id(self) -> "ManifestRow":
        if not self.video.strip():
            raise ValueError("video must not be empty")
        if not self.video_id:
            self.video_id = video_id_from_uri(self.video)
        return self

    def object_labels(self) -> dict[int, str]:
        """``{object_id: label}`` from ``labels`` and the prompts' ``label`` (call
        :func:`validate_prompts` first: conflicting labels are reported there)."""
        out = {int(k): v for k, v in (self.labels or {}).items() if v}
        for p in self.prompts:
            if p.label and p.object_id is not None:
                out.setdefault(int(p.object_id), p.label)
        return out


class PromptValidationError(ValueError):
    """Every problem of a video's prompts (``problems``: one line each)."""

    def __init__(self, video_id: str, problems: list[str]) -> None:
        self.video_id = video_id
        self.problems = list(problems)
        head = f"video {video_id!r}: "
        msg = head + (problems[0] if len(problems) == 1 else
                      f"{len(problems)} problems with prompts:\n  " + "\n  ".join(problems))
        super().__init__(msg)

    def __reduce__(self):  # keep it picklable (Ray ships exceptions between processes)
        return (type(self), (self.video_id, self.problems))


def video_id_from_uri(uri: str) -> str:
    """File (or folder) name without extension, made safe for a partition name."""
    name = str(uri).rstrip("/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return _re.sub(r"[^A-Za-z0-9._-]", "_", stem) or "video"


def validate_prompts(row: ManifestRow, info: Any = None) -> None:
    """Check a row's prompts against the probed video; raise one error listing every problem.

    Args:
        row: the manifest row.
        info: the video's ``VideoInfo`` (``num_frames``, ``width``, ``height`` after rotation);
            None checks only what needs no video.

    Raises:
        PromptValidationError: lines like ``"prompt 2 (frame 9): box [5, 2, 1, 8] has x2 < x1"``.
    """
    from hqseg_ray.masks import rle_decode

    problems: list[str] = []
    size = (int(info.height), int(info.width)) if info is not None else None
    seen: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(row.prompts):
        where = f"prompt {i} (frame {p.frame})"
        if info is not None and p.frame >= info.num_frames:
            problems.append(f"{where}: frame {p.frame} is outside the video "
                            f"({info.num_frames} frames, 0..{info.num_frames - 1})")
        try:
            # the mask's presence only (Prompt.problems knows low-res logits, not RLE); RLE below
            engine_like = Prompt(frame=p.frame, points=p.points, labels=p.labels, box=p.box,
                                 mask_input=np.zeros((1, 1)) if p.mask is not None else None)
            problems += [f"{where}: {msg}" for msg in engine_like.problems(size)]
        except ValueError as exc:  # ragged point lists
            problems.append(f"{where}: {exc}")
        if p.mask is not None:
            problems += [f"{where}: {msg}" for msg in _rle_problems(p.mask, size, rle_decode)]
        if p.object_id is not None:
            seen.setdefault((p.object_id, p.frame), []).append(i)
        problems += [f"{where}: {msg}" for msg in _label_problems(p.label)]
    for (oid, frame), idx in seen.items():
        if len(idx) > 1:
            problems.append(f"prompts {idx} (frame {frame}): object {oid} is prompted {len(idx)} times "
                            "on one frame; merge them into one prompt (points and a box may be combined)")
    problems += _object_label_problems(row)
    if problems:
        raise PromptValidationError(row.video_id or video_id_from_uri(row.video), problems)


def _label_problems(label: Optional[str]) -> list[str]:
    if label is None:
        return []
    if not label.strip() or label != label.strip():
        return [f"label {label!r} must be a non-empty name without leading or trailing spaces"]
    return []


def _object_label_problems(row: "ManifestRow") -> list[str]:
    """One label per object: ``labels`` and the prompts must agree."""
    problems = [f"labels[{k}]: {msg}" for k, v in (row.labels or {}).items() for msg in _label_problems(v)]
    problems += [f"default_label: {msg}" for msg in _label_problems(row.default_label)]
    named: dict[int, dict[str, list[str]]] = {}
    for k, v in (row.labels or {}).items():
        named.setdefault(int(k), {}).setdefault(v, []).append(f"labels[{k}]")
    for i, p in enumerate(row.prompts):
        if p.label and p.object_id is not None:
            named.setdefault(int(p.object_id), {}).setdefault(p.label, []).append(f"prompt {i}")
    for oid, names in sorted(named.items()):
        if len(names) > 1:
            said = "; ".join(f"{name!r} by {', '.join(w)}" for name, w in names.items())
            problems.append(f"object {oid} has {len(names)} labels ({said}); give each object one label")
    return problems


def _rle_problems(rle: dict, size: Optional[tuple[int, int]], rle_decode) -> list[str]:
    if set(rle) != {"size", "counts"}:
        return [f"mask must be a COCO RLE {{size, counts}}, got keys {sorted(rle)}"]
    try:
        rs = [int(v) for v in rle["size"]]
    except (TypeError, ValueError):
        rs = []
    if len(rs) != 2:
        return [f"mask size must be [H, W], got {rle['size']!r}"]
    if size is not None and tuple(rs) != size:
        return [f"mask RLE size {rs} differs from the frame size [{size[0]}, {size[1]}] (H, W)"]
    try:
        rle_decode({"size": rs, "counts": rle["counts"]})
    except Exception as exc:
        return [f"mask RLE counts do not decode: {exc}"]
    return []


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file and line/row."""


def load_manifest(source: Union[str, _os.PathLike, list], filesystem: Any = None) -> list[ManifestRow]:
    """Read a manifest into rows (every row's structure checked; all problems in one error).

    Args:
        source: a ``.jsonl``/``.ndjson`` file (one row per line), a ``.json`` file (a list of
            rows), a ``.parquet`` file (columns ``video``, ``video_id``, ``prompts`` as a JSON
            string or nested list), a folder (its videos and frame folders, no prompts), a glob
            of videos, or a list of dicts. Local, ``file://``, ``s3://`` or ``gs://``. Relative
            ``video`` paths in a manifest file are relative to the manifest's folder.
        filesystem: optional ``pyarrow.fs.FileSystem`` for remote sources.

    Raises:
        ManifestError: naming the file and the line (JSONL) or row (Parquet) of every problem,
            and duplicate video ids.
    """
    from hqseg_ray.video.manifest import iter_manifest

    return list(iter_manifest(source, filesystem))


def iter_manifest(source: Union[str, _os.PathLike, list], filesystem: Any = None) -> Iterator[ManifestRow]:
    """Rows of :func:`load_manifest` (the source is checked whole before the first row)."""
    from hqseg_ray.video.manifest import iter_manifest as _iter

    return _iter(source, filesystem)
