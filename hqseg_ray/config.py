"""Pydantic models for every hqseg-ray config. No Ray, no torch imports here.

Each model forbids unknown keys, so a typo in a YAML file is an error naming the key, and every
field carries a description (``hqseg validate`` and docs print them).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ModelType = Literal["vit_tiny", "vit_b", "vit_l", "vit_h", "toy"]
CHECKPOINT_SCHEMES = ("file://", "s3://", "gs://", "https://", "http://")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    """Which SAM-HQ model to run, from where its weights come, and how it runs."""

    type: ModelType = Field(
        "vit_b",
        description="Model architecture: official SAM-HQ vit_tiny | vit_b | vit_l | vit_h, or 'toy' "
        "(the project's small model, trained on synthetic scenes; ships in the package).",
    )
    checkpoint: Optional[str] = Field(
        "auto",
        description="Weights: a local path, file://, s3://, gs://, https:// URL, 'auto' (the official "
        "release for `type`, downloaded once into `cache_dir`; for 'toy' the shipped file), or null for "
        "random initialisation (only with allow_random_init: true; tests and speed benchmarks).",
    )
    checkpoint_sha256: Optional[str] = Field(
        None, description="Expected sha256 (hex) of the checkpoint file; checked after download/read."
    )
    allow_random_init: bool = Field(
        False,
        description="Permit checkpoint: null (random weights). Masks are meaningless; for tests and "
        "speed benchmarks only.",
    )
    cache_dir: Optional[str] = Field(
        None,
        description="Where downloaded checkpoints are cached; default $HQSEG_CACHE or ~/.cache/hqseg_ray.",
    )
    device: str = Field(
        "auto",
        description="auto (CUDA when usable, else CPU) | cpu | cuda | cuda:N. When Ray assigned a GPU "
        "but CUDA is not usable, the engine falls back to CPU with one warning.",
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32",
        description="Compute dtype via autocast. float16/bfloat16 on CUDA; bfloat16 also on CPUs "
        "with native bf16 (float16 on CPU runs as float32).",
    )
    hq_token_only: bool = Field(
        False,
        description="Return only the HQ token's mask (True) or SAM's mask plus the HQ mask (False, "
        "SAM-HQ's default for general objects).",
    )
    multimask: bool = Field(
        False,
        description="Let the decoder pick the best of SAM's three masks by predicted IoU (helps single "
        "ambiguous clicks); the result is still one mask per prompt.",
    )
    compile: bool = Field(False, description="torch.compile the image encoder (CUDA; slow first call).")
    sdpa: bool = Field(
        True,
        description="Run the encoder's attention through torch's scaled_dot_product_attention with the "
        "relative-position bias as mask (same results within float tolerance, faster).",
    )
    encode_batch: int = Field(4, ge=1, le=256, description="Frames per image-encoder forward pass.")
    decode_batch: int = Field(4, ge=1, le=1024, description="Prompts per mask-decoder call.")

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v

    @field_validator("checkpoint")
    @classmethod
    def _check_checkpoint(cls, v: Optional[str]) -> Optional[str]:
        if v is None or v == "auto":
            return v
        if not v.strip():
            raise ValueError("checkpoint must not be empty (use null for random init, or 'auto')")
        if "://" in v and not v.startswith(CHECKPOINT_SCHEMES):
            raise ValueError(
                f"checkpoint {v!r}: unsupported scheme; use a path, file://, s3://, gs:// or https://"
            )
        return v

    @field_validator("checkpoint_sha256")
    @classmethod
    def _check_sha(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", v):
            raise ValueError("checkpoint_sha256 must be 64 hex characters")
        return v.lower() if v else v

    @model_validator(mode="after")
    def _random_init_needs_flag(self) -> "ModelConfig":
        if self.checkpoint is None and self.type != "toy" and not self.allow_random_init:
            raise ValueError(
                f"model.checkpoint is null for type {self.type!r}: random weights give meaningless "
                "masks; set allow_random_init: true if that is what you want (tests, speed benchmarks)"
            )
        return self


# --------------------------------------------------------------------------------------------
# Loading YAML with dotted overrides
# --------------------------------------------------------------------------------------------

def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
            node = nxt
        node[path[-1]] = value
    return data


def load_yaml(path: str | Path, overrides: Sequence[str] = ()) -> dict:
    """Read a YAML config file into a dict and apply ``key.path=value`` overrides."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {str(p)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(p)!r} must hold a mapping at the top level")
    return apply_overrides(data, overrides)


# --------------------------------------------------------------------------------------------
# Top-level config files: each top-level section maps to one model. Sections are registered by
# the feature that owns them (job, serve, ...); `validate_config_dict` checks all present ones.
# --------------------------------------------------------------------------------------------

SECTIONS: dict[str, type[BaseModel]] = {"model": ModelConfig}


def validate_config_dict(data: dict) -> list[str]:
    """Every problem in a config dict, as ``section.key: message`` lines (empty when valid)."""
    from pydantic import ValidationError

    problems: list[str] = []
    for key, value in data.items():
        cls = SECTIONS.get(key)
        if cls is None:
            problems.append(f"{key}: unknown section (known: {', '.join(sorted(SECTIONS))})")
            continue
        try:
            cls.model_validate(value or {})
        except ValidationError as exc:
            for e in exc.errors():
                loc = ".".join(str(p) for p in (key, *e["loc"]))
                problems.append(f"{loc}: {e['msg']}")
    return problems
