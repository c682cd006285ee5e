"""``hqseg eval PRED GT``: score Parquet masks against DAVIS-layout ground truth."""

from __future__ import annotations

import json


class EvalCommand:
    def add_arguments(self, p) -> None:
        p.add_argument("pred", help="Parquet output folder (masks/video_id=<id>/*.parquet) or one Parquet file")
        p.add_argument("gt", help="DAVIS-layout ground truth (folder with Annotations/<video_id>/NNNNN.png)")
        p.add_argument("--videos", nargs="*", help="video ids to score (default: all ground-truth videos)")
        p.add_argument("--exclude-first-last", action="store_true",
                       help="DAVIS semi-supervised protocol: do not score the first and last frame")
        p.add_argument("--bound-th", type=float, default=0.008, help="F tolerance: fraction of the diagonal (or pixels if >= 1)")
        p.add_argument("--match", action="store_true",
                       help="output without given identities (automatic mode): assign predicted objects one-to-one "
                       "to ground-truth objects by J&F over each video first (DAVIS unsupervised protocol); "
                       "unassigned predictions are not scored")
        p.add_argument("--json", dest="json_out", help="write the full result (per object) as JSON here")

    def run(self, args) -> int:
        from hqseg_ray.eval.dataset import evaluate_dataset

        res = evaluate_dataset(args.pred, args.gt, args.videos, args.bound_th, args.exclude_first_last,
                               match=args.match)
        print(f"{'video':<28} {'objects':>7} {'J':>6} {'F':>6} {'J&F':>6} {'IDsw':>5}")
        for vid, r in res["videos"].items():
            print(f"{vid:<28} {len(r['per_object']):>7} {r['J']:6.3f} {r['F']:6.3f} {r['JF']:6.3f} {r['id_switches']:>5}")
        print(f"{'ALL (mean over objects)':<28} {res['objects']:>7} {res['J']:6.3f} {res['F']:6.3f} {res['JF']:6.3f} "
              f"{res['id_switches']:>5}")
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(res, f, indent=1)
        return 0
