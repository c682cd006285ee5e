"""Contract numbers derived from one run's measurements, and the report files.

``derive`` turns raw scenario results into the contract keys (``efficiency``,
``speedup_vs_naive``, ``rss_ratio``, ``actor_scaling``) plus the other targets; a key whose
scenario did not run is None. ``write_report`` writes ``bench.json``, ``bench.md`` and PNG plots.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

logger = logging.getLogger(__name__)

CONTRACT_KEYS = ("efficiency", "speedup_vs_naive", "rss_ratio", "actor_scaling")


def _div(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def derive(r: dict) -> dict:
    out: dict[str, Any] = {k: None for k in CONTRACT_KEYS}
    out.update(object_cost=None, overhead=None, serve_latency=None)
    job = r.get("job")
    if job:
        eng, j, tr = job["engine_only"], job["job"], job["in_process_tracker"]
        e = eng["frames_per_s"]
        u = job.get("job_decode_tasks") or {}
        util = _div(j["actor_s"], j["wall_s"] * j["actors"])
        out["efficiency"] = {
            "value": _div(j["frames_per_s"], e),
            "actor_busy": _div(_div(j["frames"], j["actor_s"]), e),
            "actor_utilisation": util,
            "decode_tasks": _div(u.get("frames_per_s"), e),
            "in_process_tracker": _div(tr["frames_per_s"], e),
            "cpu": _div(eng["cpu_s_per_frame"], j["cpu_s_per_frame"]),
            "actor_cpu": _div(eng["cpu_s_per_frame"], j.get("actor_cpu_s_per_frame")),
            "in_process_tracker_cpu": _div(eng["cpu_s_per_frame"], tr["cpu_s_per_frame"]),
            "job_frames_per_s": j["frames_per_s"], "engine_only_frames_per_s": e,
            "in_process_tracker_frames_per_s": tr["frames_per_s"],
            "engine_only_cpu_s_per_frame": eng["cpu_s_per_frame"], "job_cpu_s_per_frame": j["cpu_s_per_frame"],
            "encodes_per_frame": tr["encodes_per_frame"], "prompts_per_frame": tr["prompts_per_frame"],
        }
    naive = r.get("naive")
    if naive:
        sp: dict[str, Any] = {"engine": {k: v["speedup"] for k, v in naive["per_objects"].items()}}
        jo = naive.get("job_objects")
        if jo and job:
            jj = job["job"]
            sp["job"] = {"objects": jo["objects"], "value": _div(jj["frames_per_s"], jo["frames_per_s"]),
                         "actor_busy": _div(_div(jj["frames"], jj["actor_s"]), jo["frames_per_s"])}
        out["speedup_vs_naive"] = sp
    length = r.get("length")
    if length and len(length) == 2:
        short, long_ = list(length.values())
        out["rss_ratio"] = {
            "value": _div(long_["peak_rss_mib"], short["peak_rss_mib"]),
            "short_peak_rss_mib": short["peak_rss_mib"], "long_peak_rss_mib": long_["peak_rss_mib"],
            "short_frames": short["frames"], "long_frames": long_["frames"],
            "growth_ratio": _div(long_["peak_rss_mib"] - long_["baseline_rss_mib"],
                                 short["peak_rss_mib"] - short["baseline_rss_mib"]),
        }
    actors = r.get("actors")
    if actors:
        one, two = actors["1"], actors["2"]
        out["actor_scaling"] = {"value": _div(two["frames_per_s"], one["frames_per_s"]),
                                "actor_busy": _div(_div(two["frames"], two["actor_s"] / 2),
                                                   _div(one["frames"], one["actor_s"])),
                                "utilisation_1": _div(one["actor_s"], one["wall_s"]),
                                "utilisation_2": _div(two["actor_s"], 2 * two["wall_s"])}
    cost = {}
    if r.get("objects"):
        cost["toy"] = r["objects"]["marginal_fraction_of_encode"]
    for key in ("vit_tiny", "vit_b"):
        if r.get(key):
            cost[key] = r[key]["objects"]["marginal_fraction_of_encode"]
    out["object_cost"] = cost or None
    jobs = {}
    if job:
        jobs["1 actor"] = job["job"]["overhead_of_wall"]
    if actors:
        jobs["1 actor"] = actors["1"]["overhead_of_wall"]
        jobs["2 actors"] = actors["2"]["overhead_of_wall"]
        jobs["2 actors (of actor time)"] = actors["2"]["overhead_of_actor_time"]
    out["overhead"] = jobs or None
    serve = r.get("serve")
    if serve and "not_measured" not in serve:
        out["serve_latency"] = {k: {"p50_ms": v["p50_ms"], "p99_ms": v["p99_ms"]}
                                for k, v in serve.items() if isinstance(v, dict)}
    return out


def targets(res: dict) -> list[tuple[str, Optional[float], str, Optional[bool]]]:
    """(metric, value, target, met) rows."""
    def val(key, sub="value"):
        v = res.get(key)
        return v.get(sub) if isinstance(v, dict) else None

    rows = []
    eff = val("efficiency")
    rows.append(("efficiency (job end-to-end / engine-only)", eff, ">= 0.95", None if eff is None else eff >= 0.95))
    ab = val("efficiency", "actor_busy")
    rows.append(("efficiency, segment actor busy time only (no start-up, no idle)", ab, ">= 0.95",
                 None if ab is None else ab >= 0.95))
    ut = val("efficiency", "actor_utilisation")
    rows.append(("segment actor busy / job wall (1 actor)", ut, "(diagnostic)", None))
    ac = val("efficiency", "actor_cpu")
    rows.append(("efficiency in CPU seconds, segment actor only (engine-only / actor)", ac, ">= 0.95",
                 None if ac is None else ac >= 0.95))
    dt = val("efficiency", "decode_tasks")
    if dt is not None:
        rows.append(("efficiency, decode in its own tasks (end-to-end)", dt, ">= 0.95", dt >= 0.95))
    eff_c = val("efficiency", "cpu")
    rows.append(("efficiency in CPU seconds (engine-only / whole Ray tree)", eff_c, ">= 0.95",
                 None if eff_c is None else eff_c >= 0.95))
    for name, frac in (res.get("object_cost") or {}).items():
        rows.append((f"marginal cost per object / frame encode ({name})", frac, "<= 0.02", frac <= 0.02))
    rss = val("rss_ratio")
    rows.append(("peak RSS ratio long / short video", rss, "<= 1.1", None if rss is None else rss <= 1.1))
    act = val("actor_scaling")
    rows.append(("2 actors / 1 actor (end-to-end)", act, ">= 1.8", None if act is None else act >= 1.8))
    act_b = val("actor_scaling", "actor_busy")
    rows.append(("2 actors / 1 actor, per-actor busy-time throughput x 2", act_b, ">= 1.8",
                 None if act_b is None else act_b >= 1.8))
    for name, frac in (res.get("overhead") or {}).items():
        rows.append((f"relay + stitch / wall ({name})", frac, "<= 0.05", frac <= 0.05))
    from hqseg_ray.bench.feed import feed_targets

    rows += feed_targets((res.get("scenarios") or {}).get("feed"))
    sp = res.get("speedup_vs_naive") or {}
    for k, v in (sp.get("engine") or {}).items():
        rows.append((f"speed-up over naive loop, engine path, {k} object(s)", v, "reported", None))
    if sp.get("job"):
        rows.append((f"speed-up over naive loop, job end-to-end, {sp['job']['objects']} objects", sp["job"]["value"],
                     "reported", None))
        rows.append((f"speed-up over naive loop, job's segment actor busy time, {sp['job']['objects']} objects",
                     sp["job"]["actor_busy"], "reported", None))
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"Command: `{res['command']}`  ",
        f"Run: {res['started_at']} → {res['finished_at']} ({res['wall_s']} s), mode `{res['mode']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, GPU: {m['gpu'] or 'none'}; "
        f"AMX-BF16: {m['amx_bf16']}; load average at start {m['load_avg_1m_at_start']} "
        f"(per scenario: {', '.join(f'{k} {v}' for k, v in res['load_avg_1m_at_scenario_start'].items())})  ",
        f"Versions: torch {m['torch']}, ray {m['ray']}, python {m['python']}  ",
        f"Model: {res['model']}  ",
        f"Torch threads in every measured process: {res['settings']['torch_threads']}",
        "",
        "| metric | value | target | met |",
        "|---|---|---|---|",
    ]
    for name, v, target, met in targets(res):
        lines.append(f"| {name} | {_fmt(v)} | {target} | {'—' if met is None else ('yes' if met else 'NO')} |")
    sc = res["scenarios"]
    if "job" in sc:
        j, e, t = sc["job"]["job"], sc["job"]["engine_only"], sc["job"]["in_process_tracker"]
        ba = ""
        if "engine_only_after" in sc["job"]:
            b, a = sc["job"]["engine_only_before"], sc["job"]["engine_only_after"]
            ba = f"; mean of {b['frames_per_s']:.2f} before and {a['frames_per_s']:.2f} frames/s after the jobs"
        lines += ["", "| job pipeline | frames | seconds | frames/s |", "|---|---|---|---|",
                  f"| engine-only{ba} (encode {e['encode_s']:.1f} s + decode {e['decode_s']:.1f} s + masks "
                  f"{e['postprocess_s']:.1f} s, {e['prompts_per_frame']:.2f} prompts/frame) | {e['frames']} | "
                  f"{e['seconds']:.1f} | {e['frames_per_s']:.2f} |",
                  f"| in-process tracker (segment_video, no Ray; {t['encodes_per_frame']:.3f} encodes/frame) | "
                  f"{t['frames']} | {t['seconds']:.1f} | {t['frames_per_s']:.2f} |",
                  f"| Ray job, 1 actor (end-to-end; actor busy {j['actor_s']:.1f} s, first video after "
                  f"{j['first_video_done_s']:.1f} s, start-up ~{j['startup_s']:.1f} s) | {j['frames']} | {j['wall_s']:.1f} | "
                  f"{j['frames_per_s']:.2f} |"]
    if "job_decode_tasks" in sc.get("job", {}):
        u = sc["job"]["job_decode_tasks"]
        lines.append(f"| Ray job, 1 actor, decode in its own tasks (decode_cpus 0.5; actor busy {u['actor_s']:.1f} s) | "
                     f"{u['frames']} | {u['wall_s']:.1f} | {u['frames_per_s']:.2f} |")
    if "actors" in sc:
        two = sc["actors"]["2"]
        lines.append(f"| Ray job, 2 actors (end-to-end; actor busy {two['actor_s']:.1f} s in all) | "
                     f"{two['frames']} | {two['wall_s']:.1f} | {two['frames_per_s']:.2f} |")
    if "naive" in sc:
        lines += ["", "| objects | naive frames/s | engine frames/s | speed-up |", "|---|---|---|---|"]
        for k, v in sc["naive"]["per_objects"].items():
            lines.append(f"| {k} | {v['naive_frames_per_s']:.2f} | {v['engine_frames_per_s']:.2f} | {v['speedup']:.2f} |")
    for key, label in (("objects", "toy"), ("vit_tiny", "vit_tiny"), ("vit_b", "vit_b")):
        o = sc.get(key)
        if key != "objects" and o:
            o = o["objects"]
        if o:
            lines += ["", f"| objects/frame ({label}) | decode+masks s/frame |", "|---|---|"]
            lines += [f"| {k} | {v:.4f} |" for k, v in o["decode_s_per_frame"].items()]
            lines.append(f"| encode s/frame | {o['encode_s_per_frame']:.4f} |")
    if "feed" in sc:
        from hqseg_ray.bench.feed import feed_markdown

        lines += ["", *feed_markdown(sc["feed"])]
    if "speed" in sc:
        lines += ["", f"| encode variant ({sc['speed']['model']}) | median s/frame | speed-up |", "|---|---|---|"]
        lines += [f"| {k} | {v['median_s']:.4f} | {v['speedup']:.2f} |" for k, v in sc["speed"]["variants"].items()]
    for key in ("speed", "vit_tiny"):
        if key in sc and "decode_variants" in sc[key]:
            lines += ["", f"| decoder variant ({sc[key]['model']}, {sc[key]['decode_prompts']} prompts on one frame) | "
                      "median s/prompt | speed-up |", "|---|---|---|"]
            lines += [f"| {k} | {v['median_s']:.4f} | {v['speedup']:.2f} |" for k, v in sc[key]["decode_variants"].items()]
    if "vit_tiny" in sc:
        lines += ["", f"| encode ({sc['vit_tiny']['model']}, {sc['vit_tiny']['input_size']} px) | s/frame | speed-up |",
                  "|---|---|---|"]
        lines += [f"| {k} | {v['median_s']:.3f} | {v['speedup']:.2f} |" for k, v in sc["vit_tiny"]["encode"].items()]
    if "compile" in sc and "not_measured" not in sc["compile"]:
        c = sc["compile"]
        lines += ["", "| torch.compile (toy encoder, child process) | value |", "|---|---|",
                  f"| first call (compile) s | {c['compile_s']} |", f"| eager s/frame | {c['eager_s_per_frame']:.4f} |",
                  f"| compiled s/frame | {c['compiled_s_per_frame']:.4f} |", f"| speed-up | {c['speedup']:.2f} |"]
    if "speed" in sc and "bf16_mask_iou_vs_fp32" in sc["speed"]:
        lines.append(f"\nbf16 vs fp32 masks (toy, box prompts): mean IoU {sc['speed']['bf16_mask_iou_vs_fp32']:.4f}")
    if "length" in sc:
        lines += ["", "| video | labelled frames | peak RSS MiB | before job MiB | wall s |", "|---|---|---|---|---|"]
        lines += [f"| {k} s @ {v['fps']} fps ({v['video_frames']} frames), every {v['stride']}th labelled | "
                  f"{v['frames']} | {v['peak_rss_mib']} | {v['baseline_rss_mib']} | {v['wall_s']:.1f} |"
                  for k, v in sc["length"].items()]
        for k, v in sc["length"].items():
            top = list((v.get("peak_rss_mib_by_process") or {}).items())[:4]
            if top:
                lines.append(f"\n{k} s video, biggest processes at the peak (MiB): "
                             + ", ".join(f"`{name}` {mib}" for name, mib in top))
    if res.get("serve_latency"):
        lines += ["", "| Serve clients | p50 ms | p99 ms | requests/s |", "|---|---|---|---|"]
        lines += [f"| {k} | {_fmt(v['p50_ms'])} | {_fmt(v['p99_ms'])} | {_fmt(sc['serve'][k]['requests_per_s'])} |"
                  for k, v in res["serve_latency"].items()]
    if res["not_measured"]:
        lines += ["", "Not measured:"] + [f"- {k}: {v}" for k, v in res["not_measured"].items()]
    return "\n".join(lines) + "\n"


def plots(res: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc, written = res["scenarios"], []
    sub = f"{res['machine']['cpu']}, {res['machine']['cores']} cores, {res['settings']['torch_threads']} torch thread(s)"

    def save(fig, name):
        fig.text(0.01, 0.01, sub, fontsize=7, color="gray")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    curves = [(lab, sc[key] if key == "objects" else sc[key]["objects"]) for key, lab in
              (("objects", "toy"), ("vit_tiny", "vit_tiny (random, 1024 px)"), ("vit_b", "vit_b (random, 1024 px)"))
              if sc.get(key)]
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
        for ax, (lab, o) in zip(axes[0], curves):
            ks = [int(k) for k in o["decode_s_per_frame"]]
            ax.plot(ks, list(o["decode_s_per_frame"].values()), "o-", label="decode + masks")
            ax.axhline(o["encode_s_per_frame"], color="k", ls="--", label="encode (1 frame)")
            ax.set_xticks(ks)
            ax.set_xlabel("objects per frame")
            ax.set_ylabel("seconds per frame")
            ax.set_title(f"{lab}\n{100 * o['marginal_fraction_of_encode']:.1f}% of an encode per extra object", fontsize=10)
            ax.legend()
        save(fig, "objects.png")
    if sc.get("naive"):
        po = sc["naive"]["per_objects"]
        ks = [int(k) for k in po]
        fig, ax = plt.subplots(figsize=(5.5, 4))
        ax.plot(ks, [v["naive_frames_per_s"] for v in po.values()], "o-", label="naive SamPredictor loop")
        ax.plot(ks, [v["engine_frames_per_s"] for v in po.values()], "s-", label="SegEngine (batched)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("objects per frame")
        ax.set_ylabel("frames/s")
        ax.set_ylim(bottom=0)
        ax.set_title("naive loop vs engine, same model and boxes")
        ax.legend()
        save(fig, "naive.png")
    if sc.get("actors"):
        a = sc["actors"]
        fig, ax = plt.subplots(figsize=(5.5, 4))
        xs = [1, 2]
        ax.plot(xs, [a["1"]["frames_per_s"], a["2"]["frames_per_s"]], "o-", label="end-to-end")
        ax.plot(xs, [a["1"]["frames_per_s"], 2 * a["1"]["frames_per_s"]], "k:", label="linear")
        ax.set_xticks(xs)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("segment actors (1 torch thread each)")
        ax.set_ylabel("frames/s")
        ax.set_title("actor scaling")
        ax.legend()
        save(fig, "actors.png")
    if sc.get("length"):
        L = sc["length"]
        fig, ax = plt.subplots(figsize=(5.5, 4))
        frames = [v["frames"] for v in L.values()]
        ax.plot(frames, [v["peak_rss_mib"] for v in L.values()], "o-", label="peak (job)")
        ax.plot(frames, [v["baseline_rss_mib"] for v in L.values()], "s--", label="before the job")
        ax.set_xticks(frames, [f"{k} s\n{f} frames" for k, f in zip(L, frames)])
        ax.set_xlabel("video length (labelled frames)")
        ax.set_ylabel("summed RSS of the process tree (MiB)")
        ax.set_ylim(bottom=0)
        ax.set_title("memory vs video length")
        ax.legend()
        save(fig, "length.png")
    return written


def write_report(res: dict, out: Path) -> None:
    out = Path(out)
    try:
        res["plots"] = plots(res, out)
    except Exception as exc:  # noqa: BLE001 -- numbers matter more than pictures
        logger.warning("plots failed: %s", exc)
        res["plots"] = []
        res["not_measured"]["plots"] = f"failed: {exc}"
    (out / "bench.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "bench.md").write_text(markdown(res))
