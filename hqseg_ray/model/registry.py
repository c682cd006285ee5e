"""Model registry: build SAM-HQ architectures and load their weights strictly.

Official types (vit_tiny, vit_b, vit_l, vit_h) are built here from ``segment_anything_hq.modeling``
classes rather than through the package's builders, which call ``print``, ``torch.load`` without
``map_location`` and ``load_state_dict(strict=False)``. The ``toy`` type (and any spec'd ViT
model) stores its architecture inside its checkpoint as ``{"model_spec": {...}, "state_dict":
{...}}`` so it loads strictly with no side information.

Checkpoint sources: local path, ``file://``, ``s3://`` and ``gs://`` (through ``pyarrow.fs``),
``https://`` (``model/fetch.py``: once per node under a file lock, resumed, retried with backoff,
``HF_TOKEN`` / auth header, size and sha256 checked, atomic rename: a half-downloaded file is never
used), and ``auto`` (the official release for the type, ``model/official.py``; a copy baked into the
image or a volume under ``$HQSEG_WEIGHTS_DIR`` is used first).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch

from hqseg_ray.model.fetch import FetchError, RetryPolicy, _check, download, node_lock
from hqseg_ray.model.official import OFFICIAL_CHECKPOINTS, baked_checkpoint

logger = logging.getLogger(__name__)

SHIPPED_TOY_CHECKPOINT = Path(__file__).parent / "weights" / "toy.pt"
TOY_LABEL = "toy, trained on synthetic scenes"


def import_sam_hq():
    """Import ``segment_anything_hq.modeling`` with its timm re-registration noise filtered."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import segment_anything_hq.modeling as modeling  # noqa: WPS433
    return modeling


@dataclass(frozen=True)
class ViTSpec:
    """Architecture of a SAM-HQ model with an ``ImageEncoderViT`` backbone.

    The official ViT types use image_size 1024, patch 16, window 14, prompt dim 256, decoder
    MLP 2048, 8 decoder heads. Smaller specs (the toy model) change any of these.
    """

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    decoder_depth: int = 2
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    mlp_ratio: float = 4.0

    @classmethod
    def from_dict(cls, d: dict) -> "ViTSpec":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"model_spec has unknown fields {sorted(unknown)}")
        d = dict(d)
        d["global_attn_indexes"] = tuple(d["global_attn_indexes"])
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["global_attn_indexes"] = list(self.global_attn_indexes)
        return d


OFFICIAL_SPECS: dict[str, ViTSpec] = {
    "vit_b": ViTSpec(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": ViTSpec(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": ViTSpec(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}


def build_vit_sam(spec: ViTSpec) -> torch.nn.Module:
    """Build an (untrained) SAM-HQ model with an ``ImageEncoderViT`` of the given spec."""
    m = import_sam_hq()
    emb = spec.image_size // spec.patch_size
    sam = m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=spec.depth,
            embed_dim=spec.embed_dim,
            img_size=spec.image_size,
            mlp_ratio=spec.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=spec.num_heads,
            patch_size=spec.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=spec.global_attn_indexes,
            window_size=spec.window_size,
            out_chans=spec.prompt_embed_dim,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=spec.prompt_embed_dim,
            image_embedding_size=(emb, emb),
            input_image_size=(spec.image_size, spec.image_size),
            mask_in_chans=spec.mask_in_chans,
        ),
        mask_decoder=m.MaskDecoderHQ(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(
                depth=spec.decoder_depth,
                embedding_dim=spec.prompt_embed_dim,
                mlp_dim=spec.decoder_mlp_dim,
                num_heads=spec.decoder_num_heads,
            ),
            transformer_dim=spec.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=spec.iou_head_hidden_dim,
            vit_dim=spec.embed_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def build_vit_tiny_sam() -> torch.nn.Module:
    """Light HQ-SAM: TinyViT encoder at 1024 px (fixed by TinyViT's forward)."""
    m = import_sam_hq()
    sam = m.Sam(
        image_encoder=m.TinyViT(
            img_size=1024, in_chans=3, num_classes=1000, embed_dims=[64, 128, 160, 320],
            depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7],
            mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False,
            mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
            mask_in_chans=16,
        ),
        mask_decoder=m.MaskDecoderHQ(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256, vit_dim=160,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def build_model(model_type: str, spec: Optional[dict | ViTSpec] = None) -> torch.nn.Module:
    """Build the architecture of ``model_type`` with random weights (on the CPU)."""
    if model_type == "vit_tiny":
        return build_vit_tiny_sam()
    if model_type in OFFICIAL_SPECS:
        return build_vit_sam(OFFICIAL_SPECS[model_type])
    if model_type == "toy":
        if spec is None:
            raise ValueError("model type 'toy' needs a model_spec (it is stored in its checkpoint)")
        return build_vit_sam(spec if isinstance(spec, ViTSpec) else ViTSpec.from_dict(spec))
    raise ValueError(f"unknown model type {model_type!r}; known: vit_tiny, vit_b, vit_l, vit_h, toy")


# --------------------------------------------------------------------------------------------
# Checkpoint sources
# --------------------------------------------------------------------------------------------

class CheckpointError(RuntimeError):
    """A checkpoint could not be fetched, verified or loaded; the message names it."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("HQSEG_CACHE", Path.home() / ".cache" / "hqseg_ray"))


def cached_path(uri: str, cache_dir: Optional[str] = None) -> Path:
    """Where a remote checkpoint ``uri`` is kept in the cache (``sha256(uri)[:16]-<file name>``)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    return cache / (hashlib.sha256(uri.encode()).hexdigest()[:16] + "-" + uri.rstrip("/").rsplit("/", 1)[-1])


def _verify(path: Path, uri: str, size: Optional[int], sha256: Optional[str]) -> None:
    try:
        _check(path, uri, size, sha256)
    except FetchError as exc:
        raise CheckpointError(str(exc)) from exc


def _download_https(url: str, dest: Path, size: Optional[int], sha256: Optional[str]) -> Path:
    """Once per node, resumed, retried, authenticated, verified: :func:`hqseg_ray.model.fetch.download`."""
    try:
        return download(url, dest, size, sha256)
    except FetchError as exc:
        raise CheckpointError(str(exc)) from exc


def _fetch_pyarrow(uri: str, dest: Path, sha256: Optional[str]) -> Path:
    import pyarrow.fs as pafs

    with node_lock(dest, RetryPolicy.from_env().lock_timeout_s):
        if dest.is_file():  # another process of this node fetched it while we waited
            try:
                _verify(dest, uri, None, sha256)
                return dest
            except CheckpointError:
                dest.unlink()
        try:
            fs, path = pafs.FileSystem.from_uri(uri)
            fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as out, fs.open_input_stream(path) as src:
                    while True:
                        block = src.read(1 << 20)
                        if not block:
                            break
                        out.write(block)
                _verify(Path(tmp_name), uri, None, sha256)
                os.replace(tmp_name, dest)
            finally:
                if os.path.exists(tmp_name):
                    os.unlink(tmp_name)
        except CheckpointError:
            raise
        except Exception as exc:  # pyarrow raises OSError / ArrowInvalid with useful text
            raise CheckpointError(f"checkpoint {uri!r}: cannot read: {exc}") from exc
    return dest


def resolve_checkpoint(
    uri: str,
    model_type: str,
    sha256: Optional[str] = None,
    cache_dir: Optional[str | Path] = None,
) -> Path:
    """Turn a checkpoint reference into a verified local file path.

    ``auto`` for an official type first looks for the file baked into the image or mounted from a
    volume (``$HQSEG_WEIGHTS_DIR``, see :func:`~hqseg_ray.model.official.baked_checkpoint`), then
    downloads the official release into the cache, once per node.
    """
    expected_size: Optional[int] = None
    if uri == "auto":
        if model_type == "toy":
            return SHIPPED_TOY_CHECKPOINT
        official = OFFICIAL_CHECKPOINTS[model_type]
        baked = baked_checkpoint(model_type)
        if baked is not None:
            _verify(baked, str(baked), official.size_bytes, sha256 or official.sha256)
            return baked
        uri, expected_size = official.url, official.size_bytes
        sha256 = sha256 or official.sha256
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" not in uri:
        path = Path(uri).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint {uri!r} (type {model_type}): file not found")
        _verify(path, uri, expected_size, sha256)
        return path
    dest = cached_path(uri, cache_dir)
    if dest.is_file():
        try:
            _verify(dest, uri, expected_size, sha256)
            return dest
        except CheckpointError:
            logger.warning("cached checkpoint %s failed verification; fetching %s again", dest, uri)
            dest.unlink(missing_ok=True)
    if uri.startswith(("https://", "http://")):
        return _download_https(uri, dest, expected_size, sha256)
    if uri.startswith(("s3://", "gs://")):
        return _fetch_pyarrow(uri, dest, sha256)
    raise CheckpointError(f"checkpoint {uri!r}: unsupported scheme")


# --------------------------------------------------------------------------------------------
# Strict loading
# --------------------------------------------------------------------------------------------

def read_checkpoint(path: Path, uri: str) -> tuple[dict, Optional[dict], dict]:
    """Read a checkpoint file -> (state_dict, model_spec or None, meta)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {uri!r}: not a readable torch checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return obj["state_dict"], obj.get("model_spec"), obj.get("meta", {}) or {}
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None, {}
    raise CheckpointError(f"checkpoint {uri!r}: expected a state_dict (or {{'state_dict', 'model_spec'}}), got {type(obj).__name__}")


def _guess_type(state: dict) -> Optional[str]:
    """Which official type a state_dict looks like (by encoder width and depth)."""
    pe = state.get("image_encoder.pos_embed")
    if pe is None:
        return "vit_tiny" if any(k.startswith("image_encoder.layers.") for k in state) else None
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for name, spec in OFFICIAL_SPECS.items():
        if pe.shape[-1] == spec.embed_dim and depth == spec.depth:
            return name
    return f"a ViT with width {pe.shape[-1]} and depth {depth}"


def load_state_strict(model: torch.nn.Module, state: dict, uri: str, model_type: str) -> None:
    """load_state_dict(strict=True) with an error that names the checkpoint, type and keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {list(state[k].shape)} vs {list(own[k].shape)}"
        for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        looks = _guess_type(state)
        hint = f"; the file looks like {looks}" if looks and looks != model_type else ""
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[:3]})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (first: {mismatched[:3]})")
        raise CheckpointError(
            f"checkpoint {uri!r} does not fit model type {model_type!r}: " + "; ".join(parts) + hint
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def load_model(
    model_type: str,
    checkpoint: Optional[str] = "auto",
    checkpoint_sha256: Optional[str] = None,
    cache_dir: Optional[str] = None,
    allow_random_init: bool = False,
) -> tuple[torch.nn.Module, dict]:
    """Build ``model_type`` and load its weights strictly, on the CPU.

    Returns (model in eval mode, info) where info holds ``checkpoint`` (the resolved path or
    None), ``random_init`` and, for the toy model, ``label``.
    """
    if model_type == "toy" and checkpoint is None:
        checkpoint = "auto"
    if checkpoint is None:
        if not allow_random_init:
            raise CheckpointError(f"model type {model_type!r}: no checkpoint and random init not allowed")
        logger.warning("model %s has RANDOM weights (no checkpoint): masks are meaningless", model_type)
        return build_model(model_type), {"checkpoint": None, "random_init": True}
    path = resolve_checkpoint(checkpoint, model_type, checkpoint_sha256, cache_dir)
    state, spec, meta = read_checkpoint(path, checkpoint)
    if model_type == "toy" and spec is None:
        raise CheckpointError(f"checkpoint {checkpoint!r}: a 'toy' checkpoint must carry its model_spec")
    model = build_model(model_type, spec if model_type == "toy" else None)
    load_state_strict(model, state, checkpoint, model_type)
    info: dict[str, Any] = {"checkpoint": str(path), "random_init": False, "meta": meta}
    if model_type == "toy":
        info["label"] = TOY_LABEL
        logger.info("loaded model 'toy' (%s) from %s", TOY_LABEL, path)
    else:
        logger.info("loaded model %s from %s", model_type, path)
    return model.eval(), info


def save_spec_checkpoint(model: torch.nn.Module, spec: ViTSpec, path: str | Path,
                         meta: Optional[dict] = None, half: bool = True) -> Path:
    """Write ``{"model_spec", "state_dict", "meta"}`` (fp16 by default) atomically."""
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model_spec": spec.to_dict(), "state_dict": state, "meta": meta or {}}, tmp)
    os.replace(tmp, path)
    return path


def model_input_size(model_type: str, checkpoint: Optional[str] = "auto", sha256: Optional[str] = None,
                     cache_dir: Optional[str] = None) -> int:
    """The image size a model takes, without building it (the job's decode stage resizes to it).

    Official types are 1024 px. A spec'd checkpoint (the toy model) stores its size in the file."""
    if model_type != "toy":
        return 1024
    ref = checkpoint or "auto"
    path = resolve_checkpoint(ref, "toy", sha256, cache_dir)
    _, spec, _ = read_checkpoint(path, ref)
    if spec is None:
        raise CheckpointError(f"checkpoint {ref!r}: a 'toy' checkpoint must carry its model_spec")
    return int(ViTSpec.from_dict(spec).image_size)
