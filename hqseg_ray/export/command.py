"""``hqseg export``: the command line of :func:`hqseg_ray.export.formats.export_all`."""

from __future__ import annotations

import argparse
import sys

from hqseg_ray.export.formats import FORMATS, ExportError, export_all


class ExportCommand:
    """``hqseg export OUTPUT --format FORMAT [--format ...] [--video ID ...]``."""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("output", help="output folder of a labeling job (holds masks/ and videos.parquet)")
        p.add_argument("--format", dest="formats", action="append", required=True, metavar="FORMAT",
                       help=f"one of {', '.join(FORMATS)} (repeatable, or comma-separated)")
        p.add_argument("--video", dest="videos", action="append", default=None, metavar="ID",
                       help="export only this video id (repeatable; default: every video with status ok)")
        p.add_argument("--davis-remap", action="store_true",
                       help="DAVIS: renumber object ids 1..K per video (writes ids.json) instead of failing "
                            "on ids outside 1..255")
        p.add_argument("--image-root", default=None, metavar="URL",
                       help="labelstudio: prefix of the frame image URLs (default /data/local-files/?d=, Label "
                            "Studio's local files storage); the task's image is <URL><video_id>/00042.jpg")
        p.add_argument("--as-annotations", action="store_true",
                       help="labelstudio: write masks as annotations instead of predictions (pre-annotations)")
        p.add_argument("--review-items", type=int, default=100, metavar="N",
                       help="review: at most N items per video in exports/review/tasks.* (the per-video "
                            "review/<id>.json keeps all)")
        for name, default, what in (("low-score", 0.7, "a mask scored below this is low_score"),
                                    ("score-drop", 0.2, "a fall of the score by this much is score_drop"),
                                    ("area-jump", 2.0, "an area growing or shrinking by this factor is area_jump"),
                                    ("stitch-iou", 0.5, "box IoU below this across a chunk boundary is stitched")):
            p.add_argument(f"--review-{name}", type=float, default=default, metavar="X",
                           help=f"review: {what} (default {default:g})")

    def run(self, args: argparse.Namespace) -> int:
        formats = [f.strip() for arg in args.formats for f in arg.split(",") if f.strip()]
        ls = {"as_annotations": args.as_annotations}
        if args.image_root is not None:
            ls["image_root"] = args.image_root
        options = {"labelstudio": ls, "review": {
            "max_items_per_video": args.review_items, "low_score": args.review_low_score,
            "score_drop": args.review_score_drop, "area_jump": args.review_area_jump,
            "stitch_iou": args.review_stitch_iou}}
        try:
            paths, failed = export_all(args.output, formats, args.videos, davis_remap=args.davis_remap,
                                       options=options), None
        except ExportError as exc:
            paths, failed = exc.paths, exc
        except (ValueError, ImportError, FileNotFoundError) as exc:
            print(f"hqseg export: {exc}", file=sys.stderr)
            return 2
        for fmt, path in paths.items():
            if path:
                print(f"{fmt:12s} {path}")
        if failed is not None:
            print(f"hqseg export: {failed}", file=sys.stderr)
            return 1
        return 0
