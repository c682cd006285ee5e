"""The review page's test application: the trained toy model (so a click on a synthetic object
gives that object's mask), deployed as a second Serve application beside the shared test server
under the route prefix /toyui, with one bulk-job output to review."""

from __future__ import annotations

import json

import pytest

UI_PREFIX = "/toyui"
TOY = {"type": "toy", "checkpoint": "auto", "device": "cpu"}
VIDEO_SEED, FRAMES, SIZE = 8, 8, (120, 160)  # seed 8: the toy tracks its object 2 to the end


def make_job_output(root):
    """A synthetic clip (MP4 + ground truth) and a job output for it made by the toy model's own
    tracking of the frame-0 boxes (``segment_video``, the job's chunk loop), plus a review queue."""
    from hqseg_ray.config import ModelConfig
    from hqseg_ray.export.parquet import write_video_parquet
    from hqseg_ray.model.engine import SegEngine
    from hqseg_ray.pipeline.job import write_status_table
    from hqseg_ray.synth.dataset import write_video
    from hqseg_ray.synth.generate import generate_video
    from hqseg_ray.track.segment import segment_video

    video = generate_video(VIDEO_SEED, frames=FRAMES, size=SIZE, n_objects=(1, 2), video_id="clip")
    row, _ = write_video(video, root / "data")
    out = root / "out"
    engine = SegEngine.load(ModelConfig.model_validate(TOY))
    frames = list(segment_video(row["video"], row["prompts"], engine, video_id="clip"))
    write_video_parquet(frames, out, "clip", meta={"config_hash": "ui-test"})
    write_status_table(str(out), [{"video_id": "clip", "video": row["video"], "status": "ok", "error": "",
                                   "frames": FRAMES, "objects": len(video.objects), "low_confidence_frames": 2}])
    (out / "review").mkdir()
    # the queue file as hqseg_ray.export.review writes it (schema hqseg.review v1, items by priority)
    (out / "review" / "clip.json").write_text(json.dumps({"schema": "hqseg.review", "version": 1, "items": [
        {"rank": 1, "video_id": "clip", "frame_index": 5, "object_id": 2, "label": "kite", "priority": 0.9,
         "reasons": ["low_score", "score_drop"], "score": 0.31, "detail": "score 0.31 < 0.7"},
        {"rank": 2, "video_id": "clip", "frame_index": 2, "object_id": 1, "label": None, "priority": 0.5,
         "reasons": ["area_jump"], "score": 0.55, "detail": "area x2.4", "future_key": 1}]}))
    return video, row, out


@pytest.fixture(scope="package")
def ui_app(server, tmp_path_factory):
    """{'base', 'client', 'output', 'video', 'video_id', 'object_ids', 'size'} of the toy app."""
    import httpx
    from ray import serve

    from hqseg_ray.serve.app import build_app
    from tests.serve.conftest import SERVE_SETTINGS

    root = tmp_path_factory.mktemp("ui")
    video, row, out = make_job_output(root)
    settings = {**SERVE_SETTINGS, "review_outputs": [str(out)],
                "allowed_uri_prefixes": [f"file://{root / 'data'}/"]}
    serve.run(build_app({"model": TOY, "serve": settings}), name="hqseg-ui", route_prefix=UI_PREFIX)
    base = server + UI_PREFIX
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            assert c.get("/healthz").status_code == 200
            yield {"base": base, "client": c, "output": out, "video": video, "video_path": row["video"],
                   "video_id": "clip", "object_ids": sorted(video.objects), "size": SIZE}
    finally:
        serve.delete("hqseg-ui")
