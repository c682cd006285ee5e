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
        description="auto (CUDA when usable, else CPU) | cpu | cuda | cuda:N. cuda, or a GPU that Ray "
        "assigned to the worker, that CUDA cannot use is an error naming the GPU, the driver and torch's "
        "CUDA build (hqseg_ray/model/gpu.py); the model never silently runs on the CPU instead.",
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32",
        description="Compute dtype via autocast. float16/bfloat16 on CUDA; bfloat16 also on CPUs "
        "with native bf16 (float16 on CPU runs as float32).",
    )
    tf32: bool = Field(
        False,
        description="On CUDA, run float32 matmuls and convolutions (what autocast leaves in float32) on "
        "TF32 tensor cores (Ampere and newer). Off keeps exact float32; configs/label-gpu.yaml turns it on.",
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
        "relative-position bias as mask, and the mask decoder's attention through it too, with a fused "
        "LayerNorm2d and channels-last convolutions (same results within float tolerance, faster; "
        "measured by hqseg bench).",
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


#: Hard bounds of the API's request schema (hqseg_ray.serve.schemas), whatever the config says:
#: serve.max_prompts / serve.max_points must stay at or below them.
MAX_PROMPTS_HARD = 1024
MAX_POINTS_HARD = 1024


class ServeConfig(_Strict):
    """The online endpoint (``hqseg serve``): where it listens, how engine replicas scale, and the
    bounds that keep any client input from hurting the server."""

    host: str = Field("127.0.0.1", description="HTTP listen address of the Serve proxy.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port of the Serve proxy.")
    app_name: str = Field("hqseg", description="Serve application name (bulk jobs find the engine by it).")
    route_prefix: str = Field("/", description="URL prefix of the application.")
    num_gpus: float = Field(
        1.0, ge=0, description="GPUs per engine replica (ray_actor_options.num_gpus); 0 runs on CPU.")
    num_cpus: float = Field(1.0, ge=0, description="CPUs per engine replica.")
    min_replicas: int = Field(1, ge=0, description="Autoscaling: fewest engine replicas.")
    max_replicas: int = Field(1, ge=1, description="Autoscaling: most engine replicas.")
    target_ongoing_requests: float = Field(
        4.0, gt=0, description="Autoscaling: ongoing requests per engine replica to aim for.")
    max_ongoing_requests: int = Field(
        32, ge=1, description="Requests one engine replica takes at once; at least the decode batch size "
        "(4) or batches never fill, and above the expected concurrency: requests past it wait in the "
        "router, which retries with backoff (up to 0.5 s) and leaves the replica idle meanwhile "
        "(measured: 16 gave 17 req/s and an engine busy 39% of the time under 32 clients, 64 gave "
        "41 req/s, busy 96%).")
    batch_wait_timeout_s: float = Field(
        0.01, ge=0, le=5, description="How long a decoder batch waits for more requests before it runs "
        "short (adds at most this much latency to a lone click).")
    api_max_ongoing_requests: int = Field(64, ge=1, description="Requests the HTTP ingress takes at once.")
    cache_max_bytes: int = Field(
        2 << 30, ge=1, description="Image embedding cache: total bytes (LRU eviction past it). vit_b/l/h "
        "embeddings take 12 MiB per image (float32), the toy 0.4 MiB.")
    cache_ttl_s: float = Field(600.0, gt=0, description="Evict a cached image after this many idle seconds.")
    max_upload_bytes: int = Field(
        64 << 20, ge=1, description="Largest request body (upload or JSON), checked on Content-Length and "
        "on the bytes streamed; larger gets 413.")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest image (width*height), checked from the header before "
        "decoding (decompression bombs).")
    max_prompts: int = Field(64, ge=1, le=MAX_PROMPTS_HARD,
                             description=f"Most prompts per request (at most the schema's {MAX_PROMPTS_HARD}).")
    max_points: int = Field(64, ge=1, le=MAX_POINTS_HARD,
                            description=f"Most points per prompt (at most the schema's {MAX_POINTS_HARD}).")
    allowed_uri_prefixes: list[str] = Field(
        default_factory=list, description="URIs a client may ask the server to read (file:///data/, "
        "s3://bucket/clips/, https://host/path/); anything else is refused. Empty: no URIs.")
    review_outputs: list[str] = Field(
        default_factory=list, description="Bulk-job output folders (local paths) the review page (/ui/) may "
        "open: read their masks, status table and review queue, and append reviewers' corrections to "
        "their corrections.jsonl. Clients name them by position, never by path. Empty: review mode off.")
    max_sessions: int = Field(8, ge=1, description="Most open video sessions.")
    session_max_bytes: int = Field(
        1 << 30, ge=1, description="Total bytes of all video sessions (frames plus results).")
    session_ttl_s: float = Field(900.0, gt=0, description="Close a video session after this many idle seconds.")
    max_video_frames: int = Field(1000, ge=1, description="Most frames in a video session.")
    session_chunk_frames: int = Field(
        32, ge=1, description="Frames per tracker call when a session propagates (one NDJSON line per "
        "frame streams out as each chunk finishes).")
    # -- security (docs/serving.md, "Security") ------------------------------------------------
    max_json_bytes: int = Field(
        1 << 20, ge=1, description="Largest body of the routes that take only prompts (POST "
        "/v1/images/{id}/segment, /v1/videos/{id}/prompts); uploads use max_upload_bytes. Larger gets 413.")
    max_session_prompts: int = Field(
        256, ge=1, description="Most prompts a video session holds (all frames, all objects).")
    max_session_objects: int = Field(64, ge=1, description="Most distinct object ids in a video session.")
    api_keys_file: Optional[str] = Field(
        None, description="File of API keys, one per line ('#' comments). With api_keys_env, the keys "
        "a client may send as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'; a source that yields no "
        "key stops the server from starting.")
    api_keys_env: Optional[str] = Field(
        None, description="Name of an environment variable holding API keys (comma or whitespace "
        "separated), e.g. HQSEG_API_KEYS set from a Kubernetes secret.")
    allow_unauthenticated: bool = Field(
        False, description="Serve without API keys on a non-loopback host. Only behind a gateway "
        "that authenticates; without keys a non-loopback host is refused unless this is true.")
    cors_allow_origins: list[str] = Field(
        default_factory=list, description="Origins a browser page may call the API from (CORS); "
        "empty (the default): no CORS headers, so browsers refuse cross-origin calls.")
    uri_allow_private_hosts: bool = Field(
        False, description="Let http(s) URIs reach loopback and private (RFC 1918, ULA) addresses; "
        "link-local and cloud metadata addresses stay refused.")
    uri_connect_timeout_s: float = Field(5.0, gt=0, description="Connect timeout of URI reads (HTTP, S3, GCS).")
    uri_read_timeout_s: float = Field(30.0, gt=0, description="Per-request timeout of URI reads (HTTP, S3, GCS).")
    s3_endpoint_override: Optional[str] = Field(
        None, description="S3 endpoint (host:port) for s3:// URIs, e.g. a MinIO; a URI never sets it.")
    s3_scheme: Literal["https", "http"] = Field("https", description="Scheme of the S3 endpoint.")
    s3_region: Optional[str] = Field(None, description="S3 region (default: the SDK's, else us-east-1).")
    gcs_endpoint_override: Optional[str] = Field(None, description="GCS endpoint (host:port) for gs:// URIs.")
    request_timeout_s: Optional[float] = Field(
        300.0, gt=0, description="Serve's HTTP request timeout (http_options.request_timeout_s): a request "
        "(a propagation stream included) still running after it is cut with 408.")
    max_queued_requests: int = Field(
        256, ge=-1, description="Requests that may wait for an engine replica (Serve max_queued_requests; "
        "-1 unbounded); past it callers get 503 at once instead of piling up.")
    api_max_queued_requests: int = Field(
        128, ge=-1, description="Requests that may wait for the HTTP ingress (its max_queued_requests).")
    health_probe_timeout_s: float = Field(
        5.0, gt=0, description="GET /healthz calls an engine replica; 503 when it does not answer within this.")

    @model_validator(mode="after")
    def _check_scaling(self) -> "ServeConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        if self.max_ongoing_requests < 4:
            raise ValueError(f"max_ongoing_requests {self.max_ongoing_requests} is below the decode "
                             "batch size 4: batches could never fill")
        if (not is_loopback_host(self.host) and not self.allow_unauthenticated
                and not (self.api_keys_file or self.api_keys_env)):
            raise ValueError(f"host {self.host!r} is reachable from other machines: set api_keys_file or "
                             "api_keys_env (API keys), or allow_unauthenticated: true behind a gateway that "
                             "authenticates")
        return self


def is_loopback_host(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    host = str(host).strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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

SECTIONS: dict[str, type[BaseModel]] = {"model": ModelConfig, "serve": ServeConfig}


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


# --------------------------------------------------------------------------------------------
# Tracking inside a chunk, automatic discovery, stitching across chunks (hqseg_ray/track/)
# --------------------------------------------------------------------------------------------

class TrackerConfig(_Strict):
    """How objects are propagated from their seeds through a chunk (hqseg_ray/track/tracker.py)."""

    method: Literal["flow", "naive"] = Field(
        "flow",
        description="flow: each step prompts frame t with the previous box moved by optical flow and "
        "expanded, positive points inside the moved mask and the previous low-res logits as mask input. "
        "naive: the previous box only (no motion, no points, no mask input); a baseline for benchmarks.",
    )
    box_margin: float = Field(
        0.1, ge=0.0, le=1.0,
        description="Each side of the propagated box grows by this fraction of the box's width/height.")
    num_points: int = Field(
        1, ge=0, le=8,
        description="Positive points placed inside the moved previous mask (most interior first).")
    use_mask_input: bool = Field(
        True, description="Give the previous frame's low-res logits (shifted by the motion) as mask_input.")
    flow_max_corners: int = Field(
        40, ge=4, le=500, description="Feature points (cv2.goodFeaturesToTrack) tracked per object per step.")
    flow_min_points: int = Field(
        3, ge=1, description="Below this many successfully tracked points the object's velocity (from its recent "
        "masks) is used as its motion instead.")
    min_score: float = Field(
        0.5, ge=0.0, le=1.0,
        description="A predicted IoU below min(min_score, min_score_ratio x the object's recent median score) "
        "marks the object occluded on that frame (no mask emitted).")
    min_score_ratio: float = Field(
        0.7, ge=0.0, le=1.0,
        description="Relative part of the occlusion score test, so that a model whose scores run low (a small "
        "or early model) is judged against its own typical score for the object.")
    min_area_ratio: float = Field(
        0.2, ge=0.0, le=1.0,
        description="An area below this fraction of the object's recent median area marks it occluded.")
    max_area_growth: float = Field(
        3.0, ge=1.0,
        description="An area above this multiple of the recent median area is rejected as a bleed into "
        "the background or a neighbour (treated like an occluded frame).")
    min_area: int = Field(
        8, ge=0, description="Masks with fewer pixels (original frame) are treated as empty (occluded).")
    area_window: int = Field(
        5, ge=1, description="Number of recent good frames whose median area is the reference area.")
    max_lost_frames: int = Field(
        24, ge=0,
        description="After this many consecutive occluded frames the object is lost until a new seed "
        "(its last good state is no longer used for re-acquisition).")
    reacquire_margin: float = Field(
        0.0, ge=0.0,
        description="While occluded, candidate boxes of the whole object's size (its last box before it began "
        "to be cut off), grown by box_margin plus this fraction per side (plus the same again per 16 lost "
        "frames; at most twice the object), are tried along its extrapolated path, beside it, and around a still "
        "object. Kept tight by default: a box prompt asks for an object that fills the box, and a larger box "
        "gets the occluder or the background segmented.")
    reacquire_appearance_candidates: int = Field(
        5, ge=0,
        description="While occluded, also try boxes of the whole object's size (grown as above) at this many "
        "places of the frame whose colours look most like the object's colour model (back-projection of its "
        "colour histogram against the frame's, box-filtered at the object's size minus a ring around it), "
        "wherever they are: finds an object lost in mid-frame that is still in view, or one coming back away "
        "from where it left. The acceptance, colour and identity tests of re-acquisition apply to them. 0: only "
        "the path, edge and around-it candidates.")
    reacquire_min_score: float = Field(
        0.7, ge=0.0, le=1.0,
        description="Re-acquiring an occluded object needs a predicted IoU of at least min(reacquire_min_score, "
        "reacquire_score_ratio x its median score while it was visible).")
    reacquire_score_ratio: float = Field(
        0.7, ge=0.0, le=1.0, description="Relative part of the re-acquisition score test (see reacquire_min_score).")
    reacquire_min_area_ratio: float = Field(
        0.3, ge=0.0, le=1.0,
        description="A re-acquired mask must have at least this fraction of the last good area (and at "
        "most max_area_growth times it).")
    reacquire_min_appearance: float = Field(
        0.75, ge=0.0, le=1.0,
        description="A re-acquisition candidate's colours must match the object's colour model (histogram "
        "intersection, as min_appearance) at least this well, and among the candidates that pass, the best match "
        "wins (predicted IoU breaks ties). Measured on synthetic occlusions, the colour match separates the "
        "object from the occluder and the background far better than the model's predicted IoU. 0: candidates "
        "are ranked by predicted IoU and only min_appearance applies.")
    clip_to_box: bool = Field(
        True,
        description="Cut each mask (and its low-res logits) to its prompt box: the moved box grown by box_margin, "
        "a prompt's box grown by box_margin, or a re-acquisition candidate. Keeps a mask from bleeding into "
        "the background or a neighbour frame after frame; legitimate growth is bounded by box_margin per frame.")
    min_appearance: float = Field(
        0.6, ge=0.0, le=1.0,
        description="Histogram intersection (8 bins per RGB channel) between a propagated mask's colours and the "
        "object's colour model (from its seed, slowly updated) below this marks it occluded: its mask slid onto "
        "a differently coloured occluder or the background. 0 disables the test.")
    appearance_update_min: float = Field(
        0.8, ge=0.0, le=1.0,
        description="The colour model takes in 10 % of a kept mask's colours only when they already match it at "
        "least this well (histogram intersection): a mask creeping onto a neighbour or the background does not "
        "drag the model along with it, while slow changes (lighting) keep the match high and still update it. "
        "0: every kept mask updates it.")
    non_overlap: bool = Field(
        True,
        description="Give each pixel claimed by several objects' masks on a frame to the object with the highest "
        "logit there, so that one object's mask does not swallow another in front of it or inside it.")
    max_overlap: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Identity guard between objects of one frame: a re-acquired mask with more than this fraction "
        "of its pixels inside another object's mask, or a propagated mask whose IoU with a stronger object's mask "
        "exceeds it, has jumped to that object and is rejected (the object counts as occluded on that frame).")
    detector_match_iou: float = Field(
        0.5, ge=0.0, le=1.0,
        description="A prompt without object_id (detector box) continues the track whose predicted box "
        "overlaps it with at least this IoU; otherwise it starts a new object.")
    encode_batch: Optional[int] = Field(
        None, ge=1, description="Frames per encoder call while encoding a chunk (default: model.encode_batch).")


class AutoConfig(_Strict):
    """Automatic object discovery on a chunk's first frame (SAM's 'everything' mode)."""

    enabled: bool = Field(
        False,
        description="Discover and track objects automatically on each chunk's first frame (also used when "
        "a video has no prompts). Off: only prompted objects are tracked.")
    points_per_side: int = Field(16, ge=1, le=64, description="Point grid is points_per_side x points_per_side.")
    masks_per_point: Literal[1, 3] = Field(
        3,
        description="3: each grid point gives SAM's three masks (whole, part, subpart), all of them candidates, as "
        "SAM's automatic mask generator keeps them; 1: only the one the model rates best (about 0.6x the decoder "
        "work with refine on: fewer candidates to refine).")
    pred_iou_thresh: float = Field(0.7, ge=0.0, le=1.0, description="Keep masks whose predicted IoU is at least this.")
    stability_thresh: float = Field(
        0.85, ge=0.0, le=1.0,
        description="Keep masks whose stability score (area at logit > +offset / area at > -offset) is at least this.")
    stability_offset: float = Field(1.0, gt=0.0, description="Logit offset of the stability score.")
    nms_iou: float = Field(0.5, ge=0.0, le=1.0, description="Box NMS IoU threshold between discovered masks.")
    refine: bool = Field(
        True,
        description="Re-prompt each point's mask once with its own box and logits (SAM-style refinement) before "
        "the score and stability filters; costs one more decode per surviving point, gains much with small models "
        "whose single-point masks are poor.")
    min_area_fraction: float = Field(
        0.001, ge=0.0, le=1.0, description="Drop masks smaller than this fraction of the frame.")
    max_area_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="Drop masks larger than this fraction of the frame (background).")
    max_objects: int = Field(32, ge=1, description="At most this many discovered objects per chunk (best scores first).")
    crop_n_layers: int = Field(
        0, ge=0, le=3,
        description="SAM's crop layers: besides the whole frame, layer i runs discovery on (2**i)**2 overlapping crops, "
        "each encoded on its own at the model's input size, so small objects are seen zoomed in; masks that touch a crop "
        "edge inside the frame are dropped, the rest merged with the whole frame's by box NMS on predicted IoU. "
        "0: whole frame only. Costs one encode per crop and a point grid per crop.")
    crop_overlap_ratio: float = Field(
        512 / 1500, ge=0.0, lt=1.0,
        description="Overlap of neighbouring crops, as a fraction of the frame's short side (SAM's default).")
    crop_n_points_downscale_factor: int = Field(
        2, ge=1,
        description="Crop layer i uses points_per_side / factor**i points per side (objects are larger there).")
    dedupe_iou: float = Field(
        0.5, ge=0.0, le=1.0,
        description="A discovered track whose masks overlap a prompted track's with this mean IoU is dropped.")


class StitchConfig(_Strict):
    """How object identities cross chunk boundaries (hqseg_ray/track/stitch.py)."""

    mechanism: Literal["relay", "auto_match"] = Field(
        "relay",
        description="relay: a chunk starts from the previous chunk's last-frame states (chunks of one video "
        "track in order; their frames can still be encoded ahead). auto_match: every chunk discovers objects "
        "on its first frame and the stitcher matches them to the previous chunk's tracks over the overlap "
        "(chunks run fully in parallel; costs a discovery pass and tracking of discovered objects).")
    match_iou: float = Field(
        0.3, ge=0.0, le=1.0,
        description="Minimum mean mask IoU over the overlap frames for two chunks' tracks to be one object.")


SECTIONS.update({"tracker": TrackerConfig, "auto": AutoConfig, "stitch": StitchConfig})


class TrackingConfig(_Strict):
    """The tracker, auto-discovery and stitch sections together: what ``track_chunk``, ``Stitcher`` and
    ``segment_video`` take. A job config holds the same three as top-level sections."""

    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="Propagation inside a chunk.")
    auto: AutoConfig = Field(default_factory=AutoConfig, description="Automatic object discovery.")
    stitch: StitchConfig = Field(default_factory=StitchConfig, description="Identity across chunks.")


# --------------------------------------------------------------------------------------------
# The bulk labeling job (hqseg label): input, chunking, compute, segment backend, output
# --------------------------------------------------------------------------------------------

class ChunkingConfig(_Strict):
    """How a video is cut into chunks that run on different GPU actors (hqseg_ray/video plan_chunks)."""

    chunk_frames: int = Field(64, ge=2, le=100_000, description="Frames per chunk (before overlap).")
    overlap: int = Field(
        8, ge=1, description="Frames shared by neighbouring chunks; both predict them and the stitcher "
        "matches identities over them.")
    stride: int = Field(1, ge=1, description="Label every stride-th frame (1 = every frame).")
    align_to_keyframes: bool = Field(
        True, description="Move chunk starts onto codec keyframes when close, so a chunk's decode starts "
        "at a keyframe instead of decoding frames it then drops.")

    @model_validator(mode="after")
    def _overlap_fits(self) -> "ChunkingConfig":
        if self.overlap >= self.chunk_frames:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than chunk_frames ({self.chunk_frames})")
        return self


SECTIONS["chunking"] = ChunkingConfig


class InputConfig(_Strict):
    """Where the videos and their prompts come from."""

    manifest: Optional[str] = Field(
        None, description="JSONL or Parquet manifest (one row per video: video, video_id, prompts), or a "
        "directory / glob of videos and frame folders without prompts. Local, file://, s3:// or gs://.")
    auto: bool = Field(
        False, description="Label every row in automatic mode (discover objects), prompts or not. Rows "
        "without prompts are labelled automatically when this or auto.enabled is set; otherwise they fail "
        "with a clear error.")
    corrections: Optional[str] = Field(
        None, description="A corrections JSONL saved by the review page (OUTPUT/corrections.jsonl): its "
        "prompts are merged into the manifest's (a correction replaces the prompt of the same object and "
        "frame); a video whose merged prompts changed since its masks were made is labelled again (its "
        "resume key hashes them), the others resume. Local path.")


class ComputeConfig(_Strict):
    """Ray resources of each stage."""

    segment_actors_min: int = Field(1, ge=1, description="Minimum number of segment (GPU) actors.")
    segment_actors_max: int = Field(
        1, ge=1, description="Maximum number of segment actors; the pool grows up to this when more GPUs join.")
    gpus_per_actor: float = Field(
        1.0, ge=0.0, description="GPUs reserved per segment actor (0 on a CPU-only machine). A fraction "
        "(0.5, 0.25, ...) lets several actors share one GPU, so one actor's CPU work (tracking, masks) "
        "overlaps another's GPU work; above 1 a whole number. An actor given a GPU that CUDA cannot use "
        "fails with an error naming the GPU, driver and torch CUDA build.")

    @field_validator("gpus_per_actor")
    @classmethod
    def _gpus_fraction_or_whole(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError(f"gpus_per_actor {v} is not a fraction of one GPU or a whole number of GPUs "
                             "(Ray schedules 0.5 or 2, not 1.5): use a value <= 1 or an integer")
        return v
    cpus_per_actor: float = Field(1.0, gt=0.0, description="CPUs reserved per segment actor.")
    accelerator_type: Optional[str] = Field(
        None, description="Pin segment actors to nodes of this accelerator type (Ray's accelerator_type, "
        "e.g. A100 or H200), so a mixed cluster keeps the model on the hardware it was sized for.")
    torch_threads: Optional[int] = Field(
        None, ge=1, description="torch.set_num_threads in each segment actor (CPU runs); default: torch's choice.")
    decode_cpus: float = Field(
        0.5, gt=0.0, description="CPUs per decode task (PyAV decodes with its own threads; 0.5 lets a 2-core "
        "laptop run a decode task beside a segment actor).")
    max_tasks_in_flight_per_actor: int = Field(
        1, ge=1, description="Chunks queued per segment actor. 1 keeps chunk order strict, which the relay "
        "needs to never wait on a chunk queued behind itself.")
    relay_stall_s: float = Field(
        120.0, gt=0.0, description="A chunk waits for the previous chunk's states (relay) as long as that chunk "
        "shows progress (its actor reports every few seconds); it gives up after this many seconds without "
        "any sign of it (actor dead and not retried, or never started). A carry given up on is listed in "
        "videos.parquet (dropped_carries, dropped_objects): objects without a seed in the chunk stop there.")
    relay_timeout_s: Optional[float] = Field(
        None, gt=0.0, description="Absolute cap on one relay wait, however much progress the previous chunk "
        "shows (default: none; relay_stall_s decides).")
    max_chunks_in_flight_per_video: int = Field(
        1, ge=1, description="Chunks of one video the segment pool works on at once while other videos have "
        "chunks to run: chunks are dispatched round-robin over enough videos that one long video cannot hold "
        "every actor waiting on its relay (1: one chunk per video at a time while other videos wait; higher "
        "lets a video's next chunks encode ahead, each then waiting on its predecessor's tracking).")


class SegmentConfig(_Strict):
    """Where the segment stage runs."""

    backend: Literal["actors", "serve"] = Field(
        "actors", description="actors: the job starts its own segment actor pool. serve: it sends chunks to a "
        "running Serve deployment (hqseg serve), so online and offline work share one GPU pool.")
    serve_app: str = Field("hqseg", description="Serve application name when backend is serve.")


class OutputConfig(_Strict):
    """What the job writes."""

    path: str = Field("hqseg-out", description="Output location: masks/video_id=<id>/*.parquet and videos.parquet "
                                               "(a local path, file://, s3://, gs:// or an fsspec URL).")
    formats: list[Literal["coco", "coco-merged", "ytvis", "davis", "overlay", "cvat", "labelstudio", "review"]] = Field(
        default_factory=list, description="Extra exports written after the job from the Parquet output.")
    overwrite: bool = Field(
        False, description="Redo videos already written with the same config hash (default: skip them — resume).")
    fail_on_error: bool = Field(
        False, description="Exit non-zero (after finishing every other video) when any video failed.")
    shared: bool = Field(
        False, description="A local output.path is a filesystem mounted at the same path on every node (NFS, "
                           "EFS, a ReadWriteMany volume); without it a multi-node cluster refuses a local path.")
    lock_ttl_s: float = Field(
        300.0, gt=0, description="The output's lock (_hqseg.lock) expires this long after its owner's last "
                                 "heartbeat (a killed driver on another machine); heartbeats every ttl/5.")


class JobConfig(_Strict):
    """A bulk labeling job (hqseg label CONFIG): every section of the config file."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The SAM-HQ model.")
    input: InputConfig = Field(default_factory=InputConfig, description="Videos and prompts.")
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig, description="Chunk planning.")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="Propagation inside a chunk.")
    auto: AutoConfig = Field(default_factory=AutoConfig, description="Automatic object discovery.")
    stitch: StitchConfig = Field(default_factory=StitchConfig, description="Identity across chunks.")
    compute: ComputeConfig = Field(default_factory=ComputeConfig, description="Ray resources.")
    segment: SegmentConfig = Field(default_factory=SegmentConfig, description="Segment backend.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Outputs.")

    @model_validator(mode="after")
    def _pool_sizes(self) -> "JobConfig":
        if self.compute.segment_actors_min > self.compute.segment_actors_max:
            raise ValueError("compute.segment_actors_min must be <= compute.segment_actors_max")
        return self

    def tracking(self) -> "TrackingConfig":
        return TrackingConfig(tracker=self.tracker, auto=self.auto, stitch=self.stitch)

    def config_hash(self) -> str:
        """Hash of everything that changes the masks (model, chunking, tracking); not compute/output."""
        import hashlib
        import json

        keep = self.model_dump(include={"model", "chunking", "tracker", "auto", "stitch", "input"})
        keep["model"].pop("device", None)
        keep["model"].pop("cache_dir", None)
        keep["input"].pop("manifest", None)
        keep["input"].pop("corrections", None)  # a corrected video is redone by its resume key (its prompts)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


SECTIONS.update({"input": InputConfig, "compute": ComputeConfig, "segment": SegmentConfig, "output": OutputConfig})


def load_job_config(path: str | Path, overrides: Sequence[str] = ()) -> JobConfig:
    """Read a job YAML with ``key.path=value`` overrides; raises ValueError listing every problem."""
    data = load_yaml(path, overrides)
    problems = validate_config_dict(data)
    if problems:
        raise ValueError(f"config {str(path)!r} has {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    try:
        return JobConfig.model_validate(data)
    except Exception as exc:  # cross-section validators
        raise ValueError(f"config {str(path)!r}: {exc}") from exc
