"""One video on one machine, without Ray: plan chunks, decode each, track, stitch, and write.

``segment_video`` is a generator of per-frame :class:`FrameResult` in frame order whose memory is
bounded by one chunk (its frames, their embeddings and the stitcher's held overlap), whatever the
video's length. ``hqseg segment`` wraps it and writes the Parquet output (and an overlay MP4).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import time
from typing import Any, Iterator, Optional, Sequence

from hqseg_ray.config import ChunkingConfig
from hqseg_ray.track.tracker import track_chunk
from hqseg_ray.track.types import FrameResult, as_tracking_config

logger = logging.getLogger(__name__)


def segment_video(video: str, prompts: Sequence[Any], engine, config: Any = None, *,
                  chunking: Optional[ChunkingConfig] = None, video_id: Optional[str] = None, info=None,
                  stats: Optional[dict] = None) -> Iterator[FrameResult]:
    """Segment and track the prompted objects of one video; yields one result per processed frame.

    Args:
        video: path / URI of a video file, frame folder or image.
        prompts: manifest prompts (``PromptSpec`` or dicts): video frame indices, pixels of the
            displayed frame. Empty with ``auto.enabled`` = automatic mode.
        engine: a ``SegEngine``.
        config: ``TrackingConfig`` (or a ``JobConfig``, whose tracker/auto/stitch are used).
        chunking: chunk size / overlap / stride (default ``ChunkingConfig()``; a ``JobConfig``
            passed as ``config`` provides its own).
        video_id: default: from the file name.
        info: the ``VideoInfo`` when already probed.
        stats: optional dict filled with per-stage seconds and counts.

    Raises:
        ValueError: prompts outside the video or malformed (all problems at once), or no prompts
            while automatic mode is off.
    """
    from hqseg_ray.prompts import ManifestRow, PromptSpec, validate_prompts, video_id_from_uri
    from hqseg_ray.track.driver import ChunkSequence, decode_chunk, model_size
    from hqseg_ray.video import plan_chunks, probe_video

    chunking = chunking or getattr(config, "chunking", None) or ChunkingConfig()
    cfg = as_tracking_config(config)
    vid = video_id or video_id_from_uri(video)
    specs = [p if isinstance(p, PromptSpec) else PromptSpec.model_validate(p) for p in (prompts or [])]
    if not specs and not cfg.auto.enabled:
        raise ValueError(f"video {vid!r}: no prompts and auto.enabled is false, so there is nothing to segment; "
                         "add prompts or set auto.enabled=true")
    info = info or probe_video(video)
    validate_prompts(ManifestRow(video=video, video_id=vid, prompts=specs), info)
    chunks = plan_chunks(info, specs, chunking.chunk_frames, chunking.overlap, chunking.stride,
                         chunking.align_to_keyframes, video_id=vid)
    original = (int(info.height), int(info.width))
    size = model_size(original, engine.image_size)  # frames travel at model size
    seq = ChunkSequence(chunks, cfg, vid, specs, original, stats if stats is not None else {})
    yield from seq.run(lambda c: decode_chunk(video, c.start, c.stop, c.stride, info, size),
                       functools.partial(track_chunk, engine))


def write_overlay(video: str, parquet_path: str, out_path: str, info=None) -> int:
    """Draw the masks of a written Parquet file over the video's frames into an MP4; returns frames."""
    from hqseg_ray.export.parquet import read_video_parquet
    from hqseg_ray.masks import rle_decode
    from hqseg_ray.video import iter_frames, probe_video, render_overlay, write_overlay_video

    info = info or probe_video(video)
    results = read_video_parquet(parquet_path)
    nxt = next(results, None)

    def frames():
        nonlocal nxt
        for frame, idx, _ in iter_frames(video, info=info):
            masks, scores = {}, {}
            while nxt is not None and nxt.frame_index < idx:
                nxt = next(results, None)
            if nxt is not None and nxt.frame_index == idx:
                masks = {o: rle_decode(r) for o, r in zip(nxt.object_ids, nxt.rles)}
                scores = dict(zip(nxt.object_ids, nxt.scores))
            yield render_overlay(frame, masks, scores)

    return write_overlay_video(out_path, frames(), info.fps)


class SegmentCommand:
    """``hqseg segment VIDEO --prompts FILE --out DIR [--overlay] [--config YAML] [--set key=value]``."""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("video", help="video file, frame folder or image (path, file://, s3://, gs://)")
        p.add_argument("--prompts", metavar="FILE",
                       help="one manifest row as JSON ({video, video_id, prompts}); without it the video is "
                       "labelled in automatic mode (a row with an empty prompt list needs auto.enabled=true)")
        p.add_argument("--out", required=True, metavar="DIR",
                       help="output directory: DIR/masks/video_id=<id>/part-0.parquet (+ DIR/overlay/<id>.mp4)")
        p.add_argument("--overlay", action="store_true", help="also write an overlay MP4 of the masks")
        p.add_argument("--config", help="YAML with model / chunking / tracker / auto / stitch sections (e.g. a job config)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value by its dotted key, e.g. model.type=toy (repeatable)")

    def run(self, args: argparse.Namespace) -> int:
        from hqseg_ray.config import JobConfig, apply_overrides, load_job_config
        from hqseg_ray.export.parquet import write_video_parquet
        from hqseg_ray.model.engine import SegEngine
        from hqseg_ray.export.labels import detection_boxes, resolve_labels
        from hqseg_ray.prompts import ManifestRow, validate_prompts, video_id_from_uri

        if args.config:
            config = load_job_config(args.config, args.overrides)
        else:
            config = JobConfig.model_validate(apply_overrides({}, args.overrides))
        row = {}
        if args.prompts:
            try:
                with open(args.prompts) as f:
                    row = json.load(f)
            except FileNotFoundError:
                raise FileNotFoundError(f"--prompts {args.prompts!r} does not exist") from None
            except json.JSONDecodeError as exc:
                raise ValueError(f"--prompts {args.prompts!r} is not valid JSON: {exc}") from None
            if not isinstance(row, dict):
                raise ValueError(f"--prompts {args.prompts!r} must hold one manifest row (a JSON object)")
        if row.get("auto") or not args.prompts:
            config = config.model_copy(update={"auto": config.auto.model_copy(update={"enabled": True})})
        vid = row.get("video_id") or video_id_from_uri(args.video)
        mrow = ManifestRow.model_validate({**row, "video": args.video, "video_id": vid})
        validate_prompts(mrow)  # before any work; labels: one per object
        engine = SegEngine.load(config.model)
        logger.info("segmenting %s (video_id %s) with model %s", args.video, vid, engine.label)
        stats: dict = {}
        t0 = time.perf_counter()
        frames = segment_video(args.video, row.get("prompts") or [], engine, config.tracking(),
                               chunking=config.chunking, video_id=vid, stats=stats)
        detections = detection_boxes(mrow.prompts)
        if detections:  # detector boxes' labels are resolved against the tracked masks: keep them
            frames = list(frames)
        labels = resolve_labels(frames, mrow.object_labels(), detections) if detections else mrow.object_labels()
        path = write_video_parquet(frames, args.out, vid, meta={"video": args.video, "model": engine.label,
                                                                "stride": config.chunking.stride},
                                   labels=labels, default_label=mrow.default_label)
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        print(f"wrote {path}: {stats['frames']} frames in {stats['seconds']} s "
              f"({stats['chunks']} chunks; model {engine.label})")
        if args.overlay:
            ov = os.path.join(args.out, "overlay", f"{vid}.mp4")
            os.makedirs(os.path.dirname(ov), exist_ok=True)
            n = write_overlay(args.video, path, ov)
            print(f"wrote {ov} ({n} frames)")
        return 0
