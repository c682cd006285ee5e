"""Corrections: prompts a reviewer saved on the review page, picked up by the next bulk job.

Format (``OUTPUT/corrections.jsonl``, appended one line per save, never rewritten)::

    {"video_id": "a", "prompts": [{"object_id": 2, "frame": 14, "points": [[40, 31]], "labels": [1]}],
     "saved_at": "2026-12-06T03:10:00+00:00", "source": "review-page"}

``prompts`` are manifest prompts (:class:`hqseg_ray.prompts.PromptSpec`, pixels of the original
frame) and must name their ``object_id``. A rerun of ``hqseg label`` with ``input.corrections``
pointing at the file merges them into the manifest: a correction replaces the manifest's prompt
of the same (object, frame) and adds the others; later lines replace earlier ones the same way.
The merge happens before the job computes each video's resume key (``pipeline/resume.py``), which
hashes the video's prompts: a video whose corrections changed since its masks were made gets a new
key and is labelled again; every other video resumes as usual.

No Ray or torch here: the endpoint writes the file, the job reads it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hqseg_ray.prompts import PromptSpec

CORRECTIONS_FILE = "corrections.jsonl"
MAX_FILE_BYTES = 64 << 20  # a review session's worth is kilobytes; the cap keeps a runaway client bounded


class CorrectionRow(BaseModel):
    """One saved correction: prompts of one video."""

    model_config = ConfigDict(extra="forbid")

    video_id: str = Field(..., min_length=1, description="The video's id in the job's output.")
    prompts: list[PromptSpec] = Field(..., min_length=1, description="Manifest prompts, each with object_id.")
    saved_at: Optional[str] = Field(None, description="UTC time the reviewer saved it (ISO 8601).")
    source: Optional[str] = Field(None, description="Who wrote it (review-page, a script...).")

    @field_validator("prompts")
    @classmethod
    def _named_objects(cls, prompts: list[PromptSpec]) -> list[PromptSpec]:
        missing = [i for i, p in enumerate(prompts) if p.object_id is None]
        if missing:
            raise ValueError(f"prompts {missing} have no object_id: a correction must name the object it corrects")
        return prompts


def merge_prompts(base: list[PromptSpec], extra: list[PromptSpec]) -> list[PromptSpec]:
    """``base`` with ``extra`` on top: an extra prompt replaces a base prompt of the same
    (object_id, frame); everything else is kept, in order (base first)."""
    keys = {(p.object_id, p.frame) for p in extra}
    kept = [p for p in base if p.object_id is None or (p.object_id, p.frame) not in keys]
    last: dict = {}
    for p in extra:  # the last of several extras for one (object, frame) wins
        last[(p.object_id, p.frame)] = p
    return kept + list(last.values())


def read_corrections(path: str) -> dict[str, list[PromptSpec]]:
    """``corrections.jsonl`` -> video id -> merged correction prompts (in file order).

    Raises:
        ValueError: naming the file and line of every bad line, at once.
        FileNotFoundError: when the file does not exist.
    """
    local = path[len("file://"):] if path.startswith("file://") else path
    if not os.path.exists(local):
        raise FileNotFoundError(f"input.corrections {path!r} does not exist (the review page writes "
                                f"{CORRECTIONS_FILE} into the job's output folder)")
    out: dict[str, list[PromptSpec]] = {}
    problems = []
    with open(local, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = CorrectionRow.model_validate_json(line)
            except ValidationError as exc:
                msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                problems.append(f"{path}:{n}: {msgs}")
                continue
            out[row.video_id] = merge_prompts(out.get(row.video_id, []), row.prompts)
    if problems:
        raise ValueError("corrections file has problems:\n  " + "\n  ".join(problems))
    return out


def append_correction(path: str, row: CorrectionRow, max_bytes: int = MAX_FILE_BYTES) -> int:
    """Append ``row`` as one line (stamped with ``saved_at`` when it has none); returns the
    file's size after. One ``write`` of one line with O_APPEND, so concurrent savers interleave
    whole lines."""
    if row.saved_at is None:
        row = row.model_copy(update={"saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    line = (row.model_dump_json(exclude_none=True) + "\n").encode()
    size = os.path.getsize(path) if os.path.exists(path) else 0
    if size + len(line) > max_bytes:
        raise OverflowError(f"{path} would exceed {max_bytes} bytes; rerun the job on it and start a new file")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size + len(line)


# -- the job's side ----------------------------------------------------------------------------------

def apply_to_rows(rows: list[dict], corrections: dict[str, list[PromptSpec]]) -> tuple[list[str], list[str]]:
    """Merge corrections into the job's manifest rows (``prompts_json``) in place. Returns (ids of
    the corrected rows, corrected ids that are not in the manifest)."""
    by_id = {r["video_id"]: r for r in rows if not r.get("duplicate")}
    for vid, extra in corrections.items():
        row = by_id.get(vid)
        if row is None:
            continue
        base = [PromptSpec.model_validate(p) for p in json.loads(row["prompts_json"])]
        row["prompts_json"] = json.dumps([p.model_dump(exclude_none=True) for p in merge_prompts(base, extra)])
    return sorted(set(corrections) & set(by_id)), sorted(set(corrections) - set(by_id))
