"""Engine-level scenarios, measured in this process with the torch threads the caller set.

* ``encode_throughput``: frames/s of ``SegEngine.encode`` on frames already at model input size
  (what a segment actor receives from the decode stage).
* ``engine_only``: encode + the decoder work per frame the job does (prompts of the tracker's
  structure: box + 1 point + previous low-res logits) + mask postprocessing to frame size.
* ``naive_loop``: per frame ``SamPredictor.set_image`` + one ``predict`` per object (same model,
  same boxes) vs ``engine_boxes``: the same boxes through one batched encode and decode.
* ``object_scaling``: decoder seconds per frame for k objects; the slope is the marginal cost.
* ``ab_encode``: A/B variants of the encode (SDPA, bf16, channels-last), interleaved rep by rep
  so that load from other processes hits every variant alike.
"""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from typing import Callable, Sequence

import numpy as np

from hqseg_ray.bench.system import Timer

logger = logging.getLogger(__name__)


def load_engine(model_cfg):
    from hqseg_ray.model.engine import SegEngine

    return SegEngine.load(model_cfg)


def to_input(engine, frames: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Frames resized to the model's input size (as the job's decode stage ships them) and their
    original sizes."""
    from hqseg_ray.model.engine import resize_longest_side

    resized = np.stack([resize_longest_side(f, engine.image_size) for f in frames])
    return resized, [tuple(int(v) for v in f.shape[:2]) for f in frames]


def encode_all(engine, frames_in: np.ndarray, originals) -> "object":
    return engine.encode(frames_in, original_sizes=originals)


def encode_throughput(engine, frames_in: np.ndarray, originals) -> dict:
    encode_all(engine, frames_in[:1], originals[:1])  # warm-up (allocator, oneDNN primitives)
    with Timer() as t:
        encode_all(engine, frames_in, originals)
    n = len(frames_in)
    return {"frames": n, "encode_s": round(t.s, 4), "s_per_frame": t.s / n, "frames_per_s": n / t.s}


def track_like_prompt(engine, frame: int, box: np.ndarray):
    """A prompt with the structure of the tracker's propagation step (box, one positive point at
    the box centre, the previous frame's low-res logits as mask input)."""
    from hqseg_ray.prompts import Prompt

    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return Prompt(frame=frame, box=box, points=[[cx, cy]], labels=[1],
                  mask_input=np.zeros(engine.low_res_size, np.float32))


def box_prompt(frame: int, box: np.ndarray):
    from hqseg_ray.prompts import Prompt

    return Prompt(frame=frame, box=box)


def _decode_and_post(engine, emb, prompts) -> tuple[float, float]:
    t0 = time.perf_counter()
    logits, _ = engine.decode_low_res(emb, prompts)
    t1 = time.perf_counter()
    engine.postprocess(emb, [p.frame for p in prompts], logits)
    return t1 - t0, time.perf_counter() - t1


def engine_only(engine, frames_in: np.ndarray, originals, boxes: np.ndarray, prompts_per_frame: float) -> dict:
    """Encode every frame once, then decode ``prompts_per_frame`` (on average) track-like prompts
    per frame, frame by frame as the tracker does, and postprocess their masks to frame size."""
    n = len(frames_in)
    encode_all(engine, frames_in[:1], originals[:1])
    cpu0 = time.process_time()
    with Timer() as te:
        emb = encode_all(engine, frames_in, originals)
    dec_s = post_s = 0.0
    total = 0
    for f in range(n):
        k = int(round(prompts_per_frame * (f + 1))) - int(round(prompts_per_frame * f))
        if k <= 0:
            continue
        prompts = [track_like_prompt(engine, f, boxes[i % len(boxes)]) for i in range(k)]
        d, p = _decode_and_post(engine, emb, prompts)
        dec_s, post_s, total = dec_s + d, post_s + p, total + k
    wall = te.s + dec_s + post_s
    return {"frames": n, "prompts": total, "cpu_s": time.process_time() - cpu0, "prompts_per_frame": total / n,
            "encode_s": round(te.s, 4),
            "decode_s": round(dec_s, 4), "postprocess_s": round(post_s, 4), "seconds": round(wall, 4),
            "frames_per_s": n / wall}


def naive_loop(engine, frames: np.ndarray, boxes: np.ndarray) -> dict:
    """What a user writes: ``SamPredictor.set_image`` per frame, one ``predict`` per object."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from segment_anything_hq import SamPredictor

    pred = SamPredictor(engine.sam)
    pred.set_image(frames[0])  # warm-up
    pred.predict(box=boxes[0], multimask_output=engine.config.multimask)
    with Timer() as t:
        for f in frames:
            pred.set_image(f)
            for b in boxes:
                pred.predict(box=b, multimask_output=engine.config.multimask,
                             hq_token_only=engine.config.hq_token_only)
    n = len(frames)
    return {"frames": n, "objects": len(boxes), "seconds": round(t.s, 4), "frames_per_s": n / t.s}


def engine_boxes(engine, frames: np.ndarray, boxes: np.ndarray) -> dict:
    """The naive loop's work (same frames, same boxes, masks at frame size) through the engine:
    resize + one batched encode, then one decode call per frame for all its objects."""
    encode_all(engine, *to_input(engine, frames[:1]))
    with Timer() as t:
        frames_in, originals = to_input(engine, frames)
        emb = encode_all(engine, frames_in, originals)
        for f in range(len(frames)):
            _decode_and_post(engine, emb, [box_prompt(f, b) for b in boxes])
    n = len(frames)
    return {"frames": n, "objects": len(boxes), "seconds": round(t.s, 4), "frames_per_s": n / t.s}


def object_scaling(engine, frames_in: np.ndarray, originals, boxes_for: Callable[[int], np.ndarray],
                   ks: Sequence[int], reps: int = 1, warmup: bool = True) -> dict:
    """Decoder + postprocess seconds per frame for k track-like prompts per frame, for each k, and
    the encode seconds per frame, measured in the same rounds (encode, then every k, ``reps``
    times; medians), so that load from other processes hits both alike.

    The marginal cost per extra object is the least-squares slope over k, reported in seconds
    and as a fraction of one frame's encode."""
    n = len(frames_in)
    enc_times: list[float] = []
    dec_times: dict[int, list[float]] = {k: [] for k in ks}
    emb = None
    if warmup:  # skipped for big encoders (one vit_b encode is many seconds here)
        emb = encode_all(engine, frames_in, originals)
    for _ in range(reps):
        with Timer() as t:
            emb = encode_all(engine, frames_in, originals)
        enc_times.append(t.s / n)
        if len(enc_times) == 1:  # warm-up of the decoder (one call is decode_batch prompts)
            _decode_and_post(engine, emb, [track_like_prompt(engine, 0, b)
                                           for b in boxes_for(max(ks))[:engine.config.decode_batch]])
        for k in ks:
            boxes = boxes_for(k)
            total = 0.0
            for f in range(n):
                d, p = _decode_and_post(engine, emb, [track_like_prompt(engine, f, b) for b in boxes])
                total += d + p
            dec_times[k].append(total / n)
    per_k = {k: statistics.median(v) for k, v in dec_times.items()}
    encode_s_per_frame = statistics.median(enc_times)
    xs = np.asarray(list(per_k), dtype=float)
    ys = np.asarray(list(per_k.values()), dtype=float)
    slope = float(np.polyfit(xs, ys, 1)[0]) if len(xs) > 1 else float(ys[0] / xs[0])
    return {"frames": n, "reps": reps, "encode_s_per_frame": encode_s_per_frame,
            "decode_s_per_frame": {str(k): v for k, v in per_k.items()},
            "marginal_s_per_object": slope, "marginal_fraction_of_encode": slope / encode_s_per_frame}


def mask_agreement(a, b, frames_in: np.ndarray, originals, boxes: np.ndarray) -> float:
    """Mean IoU between the masks of engines ``a`` and ``b`` (e.g. fp32 vs bf16) for box prompts on
    every frame."""
    ious = []
    ea, eb = encode_all(a, frames_in, originals), encode_all(b, frames_in, originals)
    prompts = [box_prompt(f, bx) for f in range(len(frames_in)) for bx in boxes]
    ma, _, _ = a.decode(ea, prompts)
    mb, _, _ = b.decode(eb, prompts)
    for x, y in zip(ma, mb):
        union = np.logical_or(x, y).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(x, y).sum() / union))
    return float(np.mean(ious))


def ab_encode(variants: dict[str, Callable[[], float]], reps: int) -> dict:
    """Run each variant's timed callable ``reps`` times, interleaved (A B C A B C ...); report the
    median and min seconds and the speed-up of each over the first variant (median)."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm-up
        fn()
    for _ in range(reps):
        for name, fn in variants.items():
            times[name].append(fn())
    base = statistics.median(times[next(iter(variants))])
    return {name: {"median_s": statistics.median(ts), "min_s": min(ts), "reps": len(ts),
                   "speedup": base / statistics.median(ts)} for name, ts in times.items()}


def encode_variants(engine, frames_in: np.ndarray, originals, include_bf16: bool = True) -> dict[str, Callable]:
    """Timed callables for the encode A/B: SDPA on (the default) / off, bf16 autocast, and
    channels-last weights (the input is already channels-last in memory: ``encode`` permutes an
    NHWC array)."""
    import torch

    from hqseg_ray.model.attention import disable_sdpa, enable_sdpa
    from hqseg_ray.model.engine import SegEngine

    enc = engine.sam.image_encoder
    bf16 = SegEngine(engine.sam, engine.config.model_copy(update={"dtype": "bfloat16"}), engine.info)

    def timed(eng, sdpa: bool, channels_last: bool = False) -> Callable[[], float]:
        def run() -> float:
            (enable_sdpa if sdpa else disable_sdpa)(enc)
            if channels_last:
                enc.to(memory_format=torch.channels_last)
            t0 = time.perf_counter()
            encode_all(eng, frames_in, originals)
            dt = time.perf_counter() - t0
            if channels_last:
                enc.to(memory_format=torch.contiguous_format)
            return dt / len(frames_in)
        return run

    variants = {"fp32 sdpa": timed(engine, True), "fp32 no-sdpa": timed(engine, False)}
    if include_bf16:
        variants["bf16 sdpa"] = timed(bf16, True)
        variants["bf16 no-sdpa"] = timed(bf16, False)
    variants["fp32 sdpa channels-last"] = timed(engine, True, channels_last=True)
    return variants


def decode_variants(engine, emb, prompts, include_bf16: bool = True) -> dict[str, Callable]:
    """Timed callables (seconds per prompt, decode + masks) for the decoder A/B: the published
    decoder with a per-prompt gather of the frame's features ("reference") vs the engine's fast
    path (SDPA attention, fused LayerNorm2d, channels-last convolutions, single-frame views), and
    the fast path under bf16 autocast."""
    from hqseg_ray.model.attention import disable_decoder_fast_path, enable_decoder_fast_path
    from hqseg_ray.model.engine import SegEngine

    dec = engine.sam.mask_decoder
    bf16 = SegEngine(engine.sam, engine.config.model_copy(update={"dtype": "bfloat16"}), engine.info)

    def timed(eng, fast: bool) -> Callable[[], float]:
        def run() -> float:
            (enable_decoder_fast_path if fast else disable_decoder_fast_path)(dec)
            SegEngine.single_frame_views = fast
            try:
                d, p = _decode_and_post(eng, emb, prompts)
            finally:
                enable_decoder_fast_path(dec)
                SegEngine.single_frame_views = True
            return (d + p) / len(prompts)
        return run

    variants = {"reference decoder": timed(engine, False), "fast decoder": timed(engine, True)}
    if include_bf16:
        variants["fast decoder bf16"] = timed(bf16, True)
    return variants


def count_sdpa_modules(engine) -> int:
    from segment_anything_hq.modeling.image_encoder import Attention

    return sum(1 for m in engine.sam.image_encoder.modules() if isinstance(m, Attention))
