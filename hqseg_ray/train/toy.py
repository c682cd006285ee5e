"""Train the toy SAM-HQ model (toy, trained on synthetic scenes) on this CPU.

    hqseg train-toy --out hqseg_ray/model/weights/toy.pt --seed 0 --steps 6000 --minutes 115 --workers 2

The model is built by ``build_vit_sam`` from ``segment_anything_hq.modeling`` classes only; its
spec travels inside the checkpoint. Per step: ``batch`` synthetic scenes, one prompt of each kind
per scene (1 point; 1-3 points with negatives; jittered box; box + previous-frame-like mask
logits; box + 2 points + mask logits). Losses as in SAM: focal x 20 + dice on the output the
engine returns (SAM token 0 + HQ), on the HQ-only output, the best of SAM's three multimask
outputs (+HQ), and MSE of the predicted IoUs. Half of the box+mask prompts use the model's own
detached logits from the box prompt of the same object (refinement, as the tracker feeds it).
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from hqseg_ray.model.decoder import hq_features, paired_decoder_outputs, preprocess
from hqseg_ray.model.registry import TOY_LABEL, ViTSpec, build_vit_sam, save_spec_checkpoint
from hqseg_ray.train.data import KINDS, make_batch, warp_logits

logger = logging.getLogger(__name__)

# candidate specs (timed by --probe); "p16e160" is the shipped one, see docs/models.md
SPECS: dict[str, ViTSpec] = {
    "p16e160": ViTSpec(embed_dim=160, depth=6, num_heads=4, global_attn_indexes=(1, 3, 5), image_size=256,
                       patch_size=16, window_size=8, prompt_embed_dim=128, decoder_mlp_dim=1024,
                       decoder_num_heads=8, iou_head_hidden_dim=128),
    "p8e128": ViTSpec(embed_dim=128, depth=6, num_heads=4, global_attn_indexes=(1, 3, 5), image_size=256,
                      patch_size=8, window_size=8, prompt_embed_dim=128, decoder_mlp_dim=1024,
                      decoder_num_heads=8, iou_head_hidden_dim=128),
    "p8e96": ViTSpec(embed_dim=96, depth=6, num_heads=3, global_attn_indexes=(1, 3, 5), image_size=256,
                     patch_size=8, window_size=8, prompt_embed_dim=96, decoder_mlp_dim=768,
                     decoder_num_heads=8, iou_head_hidden_dim=96),
    "s192p8e128": ViTSpec(embed_dim=128, depth=6, num_heads=4, global_attn_indexes=(1, 3, 5), image_size=192,
                          patch_size=8, window_size=8, prompt_embed_dim=128, decoder_mlp_dim=1024,
                          decoder_num_heads=8, iou_head_hidden_dim=128),
}
# hard-example mixing: thin shapes are drawn more often
SHAPE_WEIGHTS = {"ellipse": 0.8, "polygon": 0.9, "star": 1.0, "blob": 0.9, "bar": 1.4, "ring": 1.6}
HELDOUT_SEED = 777_001  # evaluation scenes during training; never a training seed


# ------------------------------------------------------------------------------------------
# Forward passes (training versions of SegEngine.encode / _predict_paired, keeping all outputs)
# ------------------------------------------------------------------------------------------

def encode(sam, images: np.ndarray, sizes) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``[B, S, S, 3]`` (top-left content of ``sizes``) -> (embeddings, HQ features)."""
    emb, interm = sam.image_encoder(preprocess(sam, torch.from_numpy(images), sizes))
    return emb, hq_features(sam, emb, interm[0])


def decode(sam, emb, hq, frame: np.ndarray, points=None, labels=None, box=None, mask=None):
    """All decoder outputs for P prompts paired with their frames.

    Returns: sam_masks ``[P, 4, s, s]``, hq_mask ``[P, 1, s, s]`` low-res logits, iou ``[P, 4]``.
    """
    pts = None
    if points is not None:
        pts = (torch.from_numpy(points), torch.from_numpy(labels))
    bx = torch.from_numpy(box) if box is not None else None
    mk = torch.from_numpy(mask)[:, None] if mask is not None else None
    sparse, dense = sam.prompt_encoder(points=pts, boxes=bx, masks=mk)
    fidx = torch.from_numpy(frame).long()
    return paired_decoder_outputs(sam, emb.index_select(0, fidx), hq.index_select(0, fidx), sparse, dense,
                                  sam.prompt_encoder.get_dense_pe())


# ------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------

def _up(logits: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(logits.float(), (size, size), mode="bilinear", align_corners=False)


def mask_losses(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-mask focal x 20 + dice. logits, gt ``[P, K, S, S]`` -> ``[P, K]``."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none")
    pt = p * gt + (1 - p) * (1 - gt)
    focal = (0.25 * gt + 0.75 * (1 - gt)) * ce * (1 - pt) ** 2
    focal = focal.flatten(2).mean(-1)
    inter = (p * gt).flatten(2).sum(-1)
    dice = 1 - (2 * inter + 1) / (p.flatten(2).sum(-1) + gt.flatten(2).sum(-1) + 1)
    return 20 * focal + dice


def hard_iou(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    pred = logits > 0
    g = gt > 0.5
    inter = (pred & g).flatten(2).sum(-1).float()
    union = (pred | g).flatten(2).sum(-1).float()
    return inter / union.clamp(min=1)


def step_loss(sam, batch, image_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    emb, hq = encode(sam, batch.images, batch.sizes)
    # losses at twice the low-res logit size (at most the input size): 4x cheaper than full size
    loss_size = min(image_size, 2 * hq.shape[-1])
    total = 0.0
    parts = {}
    box_logits = None
    for kind in KINDS:
        d = dict(batch.prompts[kind])
        if kind == "box_mask" and box_logits is not None:
            own = rng.random(len(d["frame"])) < 0.5
            m = d["mask"].copy()
            # the model's own detached box logits, moved like one frame of motion (the tracker
            # feeds frame t-1's logits into frame t's prompt)
            m[own] = warp_logits(rng, box_logits[own])
            d["mask"] = m
        m_sam, m_hq, iou = decode(sam, emb, hq, d["frame"], d.get("points"), d.get("labels"), d.get("box"),
                                  d.get("mask"))
        gt = torch.from_numpy(d["gt"]).float()[:, None]
        if loss_size != image_size:
            gt = F.interpolate(gt, (loss_size, loss_size), mode="area")  # soft targets at the edges
        out0 = _up(m_sam[:, :1] + m_hq, loss_size)
        outm = _up(m_sam[:, 1:] + m_hq, loss_size)
        outh = _up(m_hq, loss_size)
        l0 = mask_losses(out0, gt)[:, 0]
        lh = mask_losses(outh, gt)[:, 0]
        lm = mask_losses(outm, gt.expand_as(outm)).min(1).values
        with torch.no_grad():
            tgt = torch.cat([hard_iou(out0, gt), hard_iou(outm, gt.expand_as(outm))], 1)
        li = F.mse_loss(iou.float(), tgt, reduction="none").mean(1)
        loss = (l0 + 0.5 * lh + 0.3 * lm + li).mean()
        total = total + loss
        parts[kind] = float(l0.detach().mean())
        if kind == "box":
            # the engine's low-res output for this prompt: its own refinement input
            box_logits = (m_sam[:, 0] + m_hq[:, 0]).detach().float().numpy()
    return total / len(KINDS), parts


# ------------------------------------------------------------------------------------------
# Evaluation on held-out scenes (same computation as SegEngine with default settings)
# ------------------------------------------------------------------------------------------

def heldout_set(n_images: int, spec: ViTSpec, seed: int = HELDOUT_SEED):
    rng = np.random.default_rng(seed)
    low = 4 * spec.image_size // spec.patch_size
    return [make_batch(rng, 8, spec.image_size, low) for _ in range(max(1, n_images // 8))]


@torch.no_grad()
def evaluate(sam, batches, image_size: int, autocast: bool = True) -> dict:
    sam.eval()
    ious: dict[str, list] = {k: [] for k in KINDS}
    per_shape: dict[str, list] = {}
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        for batch in batches:
            emb, hq = encode(sam, batch.images, batch.sizes)
            for kind in KINDS:
                d = batch.prompts[kind]
                m_sam, m_hq, _ = decode(sam, emb, hq, d["frame"], d.get("points"), d.get("labels"),
                                        d.get("box"), d.get("mask"))
                v = hard_iou(_up(m_sam[:, :1] + m_hq, image_size), torch.from_numpy(d["gt"]).float()[:, None])[:, 0]
                ious[kind] += v.tolist()
                if kind == "box":
                    for s, x in zip(d["shape"], v.tolist()):
                        per_shape.setdefault(s, []).append(x)
    sam.train()
    out = {f"miou_{k}": float(np.mean(v)) for k, v in ious.items()}
    out.update({f"box_{s}": float(np.mean(v)) for s, v in sorted(per_shape.items())})
    return out


# ------------------------------------------------------------------------------------------
# Training loop
# ------------------------------------------------------------------------------------------

def train(out: str, seed: int = 0, steps: Optional[int] = None, minutes: Optional[float] = None,
          spec_name: str = "p16e160", batch_images: int = 8, lr: float = 1e-3, warmup: int = 200,
          eval_every: int = 250, ckpt_minutes: float = 5.0, curve: Optional[str] = None,
          threads: int = 2, bf16: bool = True, eval_images: int = 48, workers: int = 1) -> dict:
    """Train and write the checkpoint to ``out``.

    The cosine schedule runs over ``steps`` (reproducible); ``minutes`` as well only stops the run
    early when the time is up (the schedule has then not annealed; a warning says so), so a
    wall-clock limit never changes the learning rate of a step-defined run. ``minutes`` alone runs
    the cosine over the time instead (not reproducible: for a shared machine). ``workers`` > 1 trains data-parallel
    in that many processes (torch.distributed, gloo on 127.0.0.1), each with ``threads // workers``
    threads and ``batch_images`` scenes of its own per step; gradients are averaged every step, so
    the run is as reproducible as a single process (same seed, steps and workers -> same weights).
    On a small CPU model one process gains little from a second thread (docs/models.md), so two
    one-thread workers see nearly twice the scenes per minute.
    """
    kw = dict(out=out, seed=seed, steps=steps, minutes=minutes, spec_name=spec_name, batch_images=batch_images,
              lr=lr, warmup=warmup, eval_every=eval_every, ckpt_minutes=ckpt_minutes, curve=curve,
              threads=max(1, threads // max(1, workers)), bf16=bf16, eval_images=eval_images)
    if workers <= 1:
        return _train_worker(0, 1, None, **kw)
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:  # a free port for the process group, on the loopback only
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(_spawned_worker, args=(workers, port, results, kw), nprocs=workers, join=True,
                       start_method="spawn")
    return results.get()


def _spawned_worker(rank: int, world: int, port: int, results, kw: dict) -> None:
    import torch.distributed as dist

    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [worker {rank}] %(message)s")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        res = _train_worker(rank, world, dist, **kw)
        if rank == 0:
            results.put(res)
    finally:
        dist.destroy_process_group()


def _average_gradients(params: list, world: int, dist) -> None:
    """All-reduce every gradient as one flat buffer (parameters without a gradient count as 0)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.nn.utils.parameters_to_vector(grads)
    dist.all_reduce(flat)
    torch.nn.utils.vector_to_parameters(flat / world, grads)  # each grad becomes a view of the mean


def _train_worker(rank: int, world: int, dist, *, out: str, seed: int, steps: Optional[int],
                  minutes: Optional[float], spec_name: str, batch_images: int, lr: float, warmup: int,
                  eval_every: int, ckpt_minutes: float, curve: Optional[str], threads: int, bf16: bool,
                  eval_images: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    # worker 0 draws exactly the scenes of a single-process run with this seed
    rng = np.random.default_rng(seed if rank == 0 else (seed, rank))
    spec = SPECS[spec_name]
    sam = build_vit_sam(spec)
    # no enable_sdpa here: with the rel-pos bias as a float mask, CPU training ran 2x slower
    sam.train()
    params = list(sam.parameters())
    if dist is not None:
        for p in params:  # same start everywhere (the seed already gives it; this makes it certain)
            dist.broadcast(p.data, 0)
    lead = rank == 0
    low = 4 * spec.image_size // spec.patch_size
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    n_params = sum(p.numel() for p in params)
    if lead:
        logger.info("training toy model (%s), spec %s, %.2f M parameters, %d worker(s) x %d scenes x %d thread(s)",
                    TOY_LABEL, spec_name, n_params / 1e6, world, batch_images, threads)
    heldout = heldout_set(eval_images, spec) if lead else None
    curve_f = open(curve, "a") if (curve and lead) else None
    total_steps = steps or 10 ** 9
    t0 = time.time()
    last_ckpt = t0
    metrics: dict = {}
    extra_flags = f" --workers {world}" if world > 1 else ""
    extra_flags += f" --minutes {minutes:g}" if minutes is not None else ""

    def save(step: int, final: bool = False) -> None:
        meta = {"label": TOY_LABEL, "spec_name": spec_name, "seed": seed, "step": step, "workers": world,
                "batch_per_worker": batch_images, "total_steps": total_steps,
                "minutes": round((time.time() - t0) / 60, 2), "final": final, "heldout": metrics,
                "command": f"hqseg train-toy --out {out} --seed {seed} --steps {step} --spec {spec_name}"
                           f" --batch {batch_images}{extra_flags}"}
        save_spec_checkpoint(sam, spec, out, meta=meta)
        logger.info("checkpoint step %d -> %s", step, out)

    step = 0
    ema = None
    while True:
        # cosine over the steps (reproducible), or over the time when only --minutes is given;
        # with both, the time only stops the run (it must never touch a step-defined schedule:
        # an earlier version took the larger fraction, and the wall clock of the first, slower
        # steps nudged their learning rates enough that a rerun diverged)
        elapsed = (time.time() - t0) / 60 / minutes if minutes is not None else 0.0
        progress = step / total_steps if steps else elapsed
        out_of_time = elapsed >= 1.0
        if dist is not None:  # worker 0's clock decides, so every worker runs the same schedule
            pt = torch.tensor([progress, float(out_of_time)], dtype=torch.float64)
            dist.broadcast(pt, 0)
            progress, out_of_time = float(pt[0]), bool(pt[1])
        if progress >= 1.0:
            break
        if out_of_time:
            if lead:
                logger.warning("--minutes %s reached at step %d of %d: stopping before the schedule annealed",
                               minutes, step, total_steps)
            break
        lr_now = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * progress))
        for g in opt.param_groups:
            g["lr"] = lr_now
        batch = make_batch(rng, batch_images, spec.image_size, low, SHAPE_WEIGHTS)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, parts = step_loss(sam, batch, spec.image_size, rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if dist is not None:
            _average_gradients(params, world, dist)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        loss_f = float(loss.detach())
        ema = loss_f if ema is None else 0.98 * ema + 0.02 * loss_f
        if not lead:
            continue
        if step % 25 == 0:
            logger.info("step %d loss %.4f (ema %.4f) lr %.2e %.1f min", step, loss_f, ema, lr_now,
                        (time.time() - t0) / 60)
        if step % eval_every == 0:
            metrics = evaluate(sam, heldout, spec.image_size, bf16)
            row = {"step": step, "minutes": round((time.time() - t0) / 60, 2), "loss_ema": round(ema, 4), **{k: round(v, 4) for k, v in metrics.items()}}
            logger.info("eval %s", row)
            if curve_f:
                curve_f.write(json.dumps(row) + "\n")
                curve_f.flush()
        if time.time() - last_ckpt > ckpt_minutes * 60:
            save(step)
            last_ckpt = time.time()
    if not lead:
        return {}
    metrics = evaluate(sam, heldout, spec.image_size, bf16)
    save(step, final=True)
    if curve_f:
        curve_f.write(json.dumps({"step": step, "final": True, "minutes": round((time.time() - t0) / 60, 2), **metrics}) + "\n")
        curve_f.close()
    return {"steps": step, "minutes": (time.time() - t0) / 60, "loss_ema": ema, **metrics}


def probe(spec_names, seconds: float = 60.0, batch_images: int = 8, threads: int = 2) -> dict:
    """Seconds per training step of each spec (bf16 autocast), after 2 warm-up steps."""
    torch.set_num_threads(threads)
    out = {}
    for name in spec_names:
        spec = SPECS[name]
        sam = build_vit_sam(spec)
        sam.train()
        opt = torch.optim.AdamW(sam.parameters(), lr=1e-4)
        rng = np.random.default_rng(0)
        low = 4 * spec.image_size // spec.patch_size
        n, t_data, t_start = 0, 0.0, None
        while True:
            t = time.time()
            batch = make_batch(rng, batch_images, spec.image_size, low, SHAPE_WEIGHTS)
            t_data += time.time() - t
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss, _ = step_loss(sam, batch, spec.image_size, rng)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += 1
            if n == 2:
                t_start, t_data = time.time(), 0.0
            if t_start and time.time() - t_start > seconds:
                break
        k = n - 2
        out[name] = {"s_per_step": (time.time() - t_start) / k, "data_s_per_step": t_data / k,
                     "params_M": sum(p.numel() for p in sam.parameters()) / 1e6}
        logger.info("probe %s: %s", name, out[name])
    return out


class TrainToyCommand:
    """``hqseg train-toy --out PATH --seed S [--steps N | --minutes M]``."""

    def add_arguments(self, p) -> None:
        p.add_argument("--out", required=True, help="checkpoint path (written atomically, every few minutes)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--steps", type=int, default=None, help="schedule length in steps (reproducible)")
        p.add_argument("--minutes", type=float, default=None, help="wall-clock budget (stops early if reached)")
        p.add_argument("--spec", default="p16e160", choices=sorted(SPECS))
        p.add_argument("--batch", type=int, default=8, help="scenes per step (one prompt of each kind per scene)")
        p.add_argument("--lr", type=float, default=1e-3)
        p.add_argument("--curve", default=None, help="append held-out evaluation rows (JSON lines) here")
        p.add_argument("--eval-every", type=int, default=250)
        p.add_argument("--threads", type=int, default=2, help="torch threads in all (split among the workers)")
        p.add_argument("--workers", type=int, default=1,
                       help="data-parallel training processes (gloo on 127.0.0.1); each draws --batch scenes per step")
        p.add_argument("--probe", nargs="*", metavar="SPEC", help="only time these specs (s/step) and exit")

    def run(self, args) -> int:
        if args.probe is not None:
            print(json.dumps(probe(args.probe or sorted(SPECS), threads=args.threads), indent=1))
            return 0
        if args.steps is None and args.minutes is None:
            raise ValueError("give --steps N (reproducible) or --minutes M")
        res = train(args.out, args.seed, args.steps, args.minutes, args.spec, args.batch, args.lr,
                    eval_every=args.eval_every, curve=args.curve, threads=args.threads, workers=args.workers)
        print(json.dumps(res, indent=1))
        return 0
