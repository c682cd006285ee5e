"""Tracking benchmark on the standard synthetic set: tracker vs naive baseline, chunked vs not,
and the model's ceiling (the true box prompted on every frame, no tracking).

    python -m hqseg_ray.track.bench [--videos 4] [--frames 48] [--size 320x240] [--out FILE.md]

The standard set is what ``hqseg synth OUT`` writes by default (seed 0, 4 clips, 48 frames,
320x240; objects move, rotate, scale, occlude one another, leave and re-enter, camera pan), built
in memory. Each clip is encoded once and shared by the variants; seconds per frame are that
encode time plus the variant's tracking and stitching (end to end on this machine, without video
decoding); ratios between rows come from one run.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from functools import partial
from typing import Any, Optional

import numpy as np

from hqseg_ray.config import TrackingConfig
from hqseg_ray.synth.render import render
from hqseg_ray.track.tracker import track_chunk

STANDARD = {"seed": 0, "videos": 4, "frames": 48, "size": (240, 320)}


def standard_set(seed: int = 0, videos: int = 4, frames: int = 48, size: tuple[int, int] = (240, 320)) -> list:
    """The clips of ``hqseg synth --seed S --videos N --frames T --size WxH``, in memory."""
    from hqseg_ray.synth import generate_video
    from hqseg_ray.synth.dataset import video_seed

    return [generate_video(video_seed(seed, i), frames=frames, size=size, video_id=f"synth_s{seed}_{i:03d}")
            for i in range(videos)]


def occlusion_clip(seed: int, frames: int = 32, size: tuple[int, int] = (120, 160)):
    """A clip with one full occlusion: object 1 (a compact textured shape) crosses the view
    horizontally and passes behind object 2 (a larger disc in the middle), fully hidden for a few
    frames, then comes out on the other side. Returns a ``hqseg_ray.synth.Video``."""
    from hqseg_ray.synth.generate import Video
    from hqseg_ray.synth.render import Pose, finish, make_background, random_sprite

    rng = np.random.default_rng([7, seed])
    h, w = size
    bg = make_background(rng, h, w)
    target = random_sprite(rng, str(rng.choice(["ellipse", "polygon", "star", "blob"])), z=0)
    target.aspect = max(target.aspect, 0.7)
    occluder = random_sprite(rng, "ellipse", z=1)
    occluder.aspect = 1.0
    r_occ = 0.26 * min(h, w)
    r_tgt = float(rng.uniform(0.35, 0.55)) * r_occ
    cy = h / 2 + rng.uniform(-0.08, 0.08) * h
    x0, x1 = r_tgt + 2, w - r_tgt - 2
    if rng.random() < 0.5:
        x0, x1 = x1, x0
    angle0, omega = rng.uniform(0, 2 * np.pi), rng.uniform(-0.05, 0.05)
    occ_pose = Pose(w / 2, h / 2, r_occ, 0.0)
    out = np.zeros((frames, h, w, 3), np.uint8)
    ann = np.zeros((frames, h, w), np.uint8)
    for t in range(frames):
        x = x0 + (x1 - x0) * t / (frames - 1)
        img, idmap = render(bg, [target, occluder], [Pose(x, cy, r_tgt, angle0 + omega * t), occ_pose])
        out[t] = finish(img, rng, blur=0.5, noise=2.0)
        ann[t] = idmap
    return Video(out, ann, {1: target.shape, 2: "ellipse"}, f"occlusion_{seed:03d}")


def occlusion_events(video, object_id: int = 1, reappear_fraction: float = 0.25) -> tuple[list[int], list[int]]:
    """(fully hidden frames, reappearance frames) of an object: a reappearance is the first frame
    after a hidden stretch where its visible area reaches ``reappear_fraction`` of its median
    visible area."""
    areas = np.array([(a == object_id).sum() for a in video.annotations])
    hidden = [int(t) for t in np.nonzero(areas == 0)[0]]
    ref = float(np.median(areas[areas > 0])) if (areas > 0).any() else 0.0
    back = []
    for t in hidden:
        if t + 1 < len(areas) and areas[t + 1] > 0:
            after = [u for u in range(t + 1, len(areas)) if areas[u] >= reappear_fraction * ref]
            if after:
                back.append(after[0])
    return hidden, back


def frame0_prompts(video) -> list[dict]:
    """A box per object on frame 0 (the manifest ``hqseg synth`` writes)."""
    return [{"object_id": o, "frame": 0, "box": video.box(0, o)} for o in video.objects]


def keyframe_prompts(video, every: int = 16) -> list[dict]:
    """Boxes on frames 0, every, 2*every, ... for each object visible there."""
    from hqseg_ray.synth.dataset import keyframe_prompts as kp

    return kp(video, every)


def true_box_predictions(engine, video, embeddings=None, min_area: int = 8) -> dict:
    """The model's ceiling for box-prompted tracking: every frame decoded from each visible
    object's true box (``video.box``, objects under ``min_area`` pixels left out), no tracking.

    Returns {frame: {object_id: [H, W] bool}} like :func:`track_video`. No tracker can be expected
    to beat it by much: it prompts with the box the tracker has to estimate.
    """
    from hqseg_ray.prompts import Prompt

    emb = embeddings if embeddings is not None else engine.encode(video.frames)
    pred: dict[int, dict[int, np.ndarray]] = {}
    for t in range(len(video.frames)):
        objs = [o for o in video.objects if video.box(t, o, min_area) is not None]
        masks = engine.decode(emb, [Prompt(frame=t, box=video.box(t, o, min_area), object_id=o)
                                    for o in objs])[0] if objs else []
        pred[t] = {o: np.asarray(m) for o, m in zip(objs, masks)}
    return pred


def track_video(engine, video, prompts: list, config: Any = None, chunk: Optional[int] = None, overlap: int = 4,
                embeddings=None) -> tuple[dict, dict]:
    """Track one in-memory clip, chunked like the bulk job when ``chunk`` is set.

    Returns ({frame: {object_id: [H, W] bool}}, stats with ``seconds``). ``embeddings`` (of all
    frames) skips encoding (tests reuse them across variants).
    """
    from hqseg_ray.masks import rle_decode
    from hqseg_ray.track.driver import ChunkSequence
    from hqseg_ray.video import ChunkSpec

    cfg = config if isinstance(config, TrackingConfig) else TrackingConfig.model_validate(config or {})
    n = len(video.frames)
    chunk = chunk or n
    starts = [0]
    while starts[-1] + chunk < n:
        starts.append(starts[-1] + chunk - overlap)
    chunks = []
    for k, s in enumerate(starts):
        e = min(s + chunk, n)
        nxt = starts[k + 1] if k + 1 < len(starts) else e
        chunks.append(ChunkSpec(video.video_id, "memory", k, len(starts), s, e, 1, e - nxt,
                                [p for p in prompts if s <= p["frame"] < e]))
    seq = ChunkSequence(chunks, cfg, video.video_id, prompts, tuple(video.frames.shape[1:3]))
    pred: dict[int, dict[int, np.ndarray]] = {}
    t0 = time.perf_counter()
    frames_of = lambda c: (video.frames[c.start:c.stop], range(c.start, c.stop), None)  # noqa: E731
    emb_of = {"embeddings": lambda c: embeddings.select(range(c.start, c.stop))} if embeddings is not None else {}
    for fr in seq.run(frames_of, partial(track_chunk, engine), **emb_of):
        pred[fr.frame_index] = {o: rle_decode(r) for o, r in zip(fr.object_ids, fr.rles)}
    st = seq.stats
    stats = {k: st[k] for k in ("encode_s", "decode_s", "flow_s", "discover_s")}
    stats.update({k[len("stitch_"):]: v for k, v in st.items() if k.startswith("stitch_") and k != "stitch_s"})
    return pred, {"seconds": time.perf_counter() - t0, "frames": n, "chunks": len(starts), **stats}


def score(pred: dict, video) -> dict:
    """DAVIS J, F, J&F and identity switches of one clip (every frame scored)."""
    from hqseg_ray.eval import evaluate_video

    return evaluate_video(pred, {t: video.annotations[t] for t in range(len(video.frames))})


VARIANTS = [
    # name, tracker method, prompts, chunk, stitch mechanism
    ("tracker, frame-0 box, unchunked", "flow", "frame0", None, "relay"),
    ("naive baseline, frame-0 box, unchunked", "naive", "frame0", None, "relay"),
    ("tracker, frame-0 box, chunk 16 / overlap 4, relay", "flow", "frame0", 16, "relay"),
    ("tracker, frame-0 box, chunk 16 / overlap 4, auto_match", "flow", "frame0", 16, "auto_match"),
    ("tracker, boxes every 16 frames, unchunked", "flow", "keyframes", None, "relay"),
    ("ceiling: true box on every frame, no tracking", None, "true_boxes", None, "relay"),
]


def run(engine, videos: list, variants=VARIANTS) -> list[dict]:
    """Score every variant; each clip is encoded once (timed) and its embeddings are shared by the
    variants, whose seconds per frame are that encode time plus their own tracking and stitching."""
    embs, enc_s = [], []
    for v in videos:
        t0 = time.perf_counter()
        embs.append(engine.encode(v.frames))
        enc_s.append(time.perf_counter() - t0)
    rows = []
    for name, method, prompts, chunk, mech in variants:
        cfg = None if method is None else TrackingConfig.model_validate({"tracker": {"method": method},
                                                                         "stitch": {"mechanism": mech}})
        jf, j, f, ids, secs, frames, enc = [], [], [], 0, 0.0, 0, 0.0
        for v, emb, e_s in zip(videos, embs, enc_s):
            if prompts == "true_boxes":
                t0 = time.perf_counter()
                pred = true_box_predictions(engine, v, emb)
                st = {"seconds": time.perf_counter() - t0, "frames": len(v.frames)}
            else:
                p = frame0_prompts(v) if prompts == "frame0" else keyframe_prompts(v)
                pred, st = track_video(engine, v, p, cfg, chunk=chunk, embeddings=emb)
            ev = score(pred, v)
            jf.append(ev["JF"])
            j.append(ev["J"])
            f.append(ev["F"])
            ids += ev["id_switches"]
            secs += st["seconds"] + e_s
            enc += e_s
            frames += st["frames"]
        rows.append({"variant": name, "JF": float(np.mean(jf)), "J": float(np.mean(j)), "F": float(np.mean(f)),
                     "id_switches": ids, "s_per_frame": secs / frames, "encode_s_per_frame": enc / frames,
                     "track_s_per_frame": (secs - enc) / frames})
    return rows


def occlusion_report(engine, clips: int = 10, config: Any = None) -> dict:
    """Counts over ``clips`` occlusion clips (see ``occlusion_clip``): hidden frames without a mask,
    reappearances re-acquired (IoU >= 0.5) within 5 frames."""
    from hqseg_ray.masks import mask_iou

    c = {"silent": 0, "hidden": 0, "reacquired": 0, "events": 0}
    for seed in range(clips):
        v = occlusion_clip(seed)
        pred, _ = track_video(engine, v, frame0_prompts(v), config)
        hidden, back = occlusion_events(v)
        c["hidden"] += len(hidden)
        c["silent"] += sum(1 for t in hidden if 1 not in pred.get(t, {}))
        for r in back:
            c["events"] += 1
            c["reacquired"] += any(1 in pred.get(t, {}) and mask_iou(pred[t][1], v.mask(t, 1)) >= 0.5
                                   for t in range(r, min(r + 5, len(v.frames))))
    return c


def toy_auto_config():
    """The ``auto`` section of ``configs/model-toy.yaml`` (discovery settings for the toy model)."""
    from pathlib import Path

    from hqseg_ray.config import load_job_config

    return load_job_config(Path(__file__).resolve().parents[2] / "configs" / "model-toy.yaml").auto


def automatic_mode_report(engine, videos: list, auto: Any, chunk: Optional[int] = None, embeddings=None) -> dict:
    """Automatic mode with no prompts (``auto`` an ``AutoConfig``, enabled here), scored after the
    one-to-one assignment of ``hqseg eval --match`` (automatic ids mean nothing to the ground truth)."""
    from hqseg_ray.eval.metrics import evaluate_video, match_objects, relabel

    cfg = TrackingConfig(auto=auto.model_copy(update={"enabled": True}))
    jf, secs, frames, tracks = [], 0.0, 0, 0
    for i, v in enumerate(videos):
        pred, st = track_video(engine, v, [], cfg, chunk=chunk, embeddings=embeddings[i] if embeddings else None)
        gt = {t: v.annotations[t] for t in range(len(v.frames))}
        jf.append(evaluate_video(relabel(pred, match_objects(pred, gt)), gt)["JF"])
        secs += st["seconds"]
        frames += st["frames"]
        tracks += len({o for f in pred.values() for o in f})
    return {"JF": float(np.mean(jf)), "tracks_per_clip": tracks / len(videos), "track_s_per_frame": secs / frames}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hqseg_ray.track.bench", description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=STANDARD["videos"])
    p.add_argument("--frames", type=int, default=STANDARD["frames"])
    p.add_argument("--size", default="320x240", help="WxH")
    p.add_argument("--seed", type=int, default=STANDARD["seed"])
    p.add_argument("--checkpoint", default="auto", help="toy checkpoint (default: the shipped one)")
    p.add_argument("--auto-mode", action="store_true",
                   help="also run automatic mode with no prompts (configs/model-toy.yaml's discovery, with and "
                   "without its crop layer, unchunked and chunk 16 / overlap 4), scored as hqseg eval --match")
    args = p.parse_args(argv)
    import torch

    from hqseg_ray.config import ModelConfig
    from hqseg_ray.model.engine import SegEngine

    w, h = (int(x) for x in args.size.split("x"))
    engine = SegEngine.load(ModelConfig(type="toy", checkpoint=args.checkpoint, device="cpu"))
    videos = standard_set(args.seed, args.videos, args.frames, (h, w))
    meta = engine.info.get("meta") or {}
    rows = run(engine, videos)
    out = sys.stdout
    out.write(f"command: python -m hqseg_ray.track.bench {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    out.write(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
              f"model: {engine.label}, checkpoint step {meta.get('step')} ({meta.get('minutes')} min)\n")
    out.write(f"set: {len(videos)} clips x {args.frames} frames, {w}x{h}, seed {args.seed}, "
              f"{sum(len(v.objects) for v in videos)} objects\n\n")
    out.write("| variant | J&F | J | F | ID switches | s/frame (all) | encode s/frame | track+stitch s/frame |\n"
              "|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        out.write(f"| {r['variant']} | {r['JF']:.3f} | {r['J']:.3f} | {r['F']:.3f} | {r['id_switches']} | "
                  f"{r['s_per_frame']:.3f} | {r['encode_s_per_frame']:.3f} | {r['track_s_per_frame']:.3f} |\n")
    occ = occlusion_report(engine)
    out.write(f"\nocclusion (10 clips, one full occlusion each): no mask on {occ['silent']}/{occ['hidden']} fully "
              f"hidden frames; re-acquired within 5 frames in {occ['reacquired']}/{occ['events']} cases\n")
    if args.auto_mode:
        auto = toy_auto_config()
        embs = [engine.encode(v.frames) for v in videos]
        out.write("\n| automatic mode (no prompts) | chunks | matched J&F | tracks per clip | track s/frame |\n"
                  "|---|---|---|---|---|\n")
        for crop in (auto.crop_n_layers, 0):
            for chunk in (None, 16):
                r = automatic_mode_report(engine, videos, auto.model_copy(update={"crop_n_layers": crop}), chunk, embs)
                out.write(f"| crop_n_layers {crop} | {'chunk 16 / overlap 4, relay' if chunk else 'unchunked'} | "
                          f"{r['JF']:.3f} | {r['tracks_per_clip']:.1f} | {r['track_s_per_frame']:.2f} |\n")
                out.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
