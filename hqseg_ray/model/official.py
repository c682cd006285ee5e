"""The official SAM-HQ checkpoint files (no torch import: the fetcher and ``hqseg doctor`` use it).

The authors publish the files on Hugging Face (``lkeab/hq-sam``) with neither a release tag nor a
sha256 in their README. What is pinned here: the exact byte size of each file (always checked).
What the fetcher adds at download time: Hugging Face's own sha256 of each LFS file (the
``X-Linked-Etag`` header of the ``resolve`` answer) is checked when no sha256 is pinned, and the
repository commit it came from (``X-Repo-Commit``) is logged. To pin both for your deployment, set
``model.checkpoint`` to ``https://huggingface.co/lkeab/hq-sam/resolve/<commit>/<file>`` and
``model.checkpoint_sha256`` to the sha256 ``hqseg doctor`` prints for the file you validated
(docs/deploy.md, "Checkpoints").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

HF_REPO = "lkeab/hq-sam"


@dataclass(frozen=True)
class OfficialCheckpoint:
    """An official SAM-HQ release file."""

    filename: str
    size_bytes: int
    revision: Optional[str] = None  # None: $HQSEG_HQSAM_REVISION (a commit hash), read at use, else "main"
    sha256: Optional[str] = None  # not published by the authors; size is always checked

    @property
    def url(self) -> str:
        rev = self.revision or os.environ.get("HQSEG_HQSAM_REVISION", "main")
        return f"https://huggingface.co/{HF_REPO}/resolve/{rev}/{self.filename}"


OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    "vit_tiny": OfficialCheckpoint("sam_hq_vit_tiny.pth", 42_526_881),
    "vit_b": OfficialCheckpoint("sam_hq_vit_b.pth", 379_335_069),
    "vit_l": OfficialCheckpoint("sam_hq_vit_l.pth", 1_254_865_805),
    "vit_h": OfficialCheckpoint("sam_hq_vit_h.pth", 2_570_940_653),
}


def baked_checkpoint(model_type: str) -> Optional[Path]:
    """The official file of ``model_type`` baked into the image or mounted from a volume, if present:
    ``$HQSEG_WEIGHTS_DIR/<filename>`` (default /opt/hqseg/weights) with the official size."""
    official = OFFICIAL_CHECKPOINTS.get(model_type)
    if official is None:
        return None
    path = Path(os.environ.get("HQSEG_WEIGHTS_DIR", "/opt/hqseg/weights")) / official.filename
    if path.is_file() and path.stat().st_size == official.size_bytes:
        return path
    return None
