"""The review page's own routes (/ui/...), over HTTP on the shared test server and on a second
application (the trained toy model, a job output to review) deployed beside it under a route
prefix. The browser tests (tests/serve/test_ui_browser.py) reuse the second application."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = [pytest.mark.e2e]


# -- the page itself, on the shared server ---------------------------------------------------------------
def test_page_is_served_same_origin_without_a_cdn(client):
    r = client.get("/ui", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in page.text and "http" not in page.text.split("<body", 1)[1].lower()
    js = "text/javascript"
    for name, ctype in (("app.js", js), ("rle.js", js), ("review.js", js), ("app.css", "text/css")):
        r = client.get(f"/ui/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(ctype), name
        assert "://" not in r.text.replace("file://", ""), f"{name} loads something from elsewhere"


@pytest.mark.parametrize("name", ["nope.js", "..%2Fapi.py", "%2E%2E%2Fui.py", "index.htm"])
def test_only_the_page_assets_are_served(client, name):
    assert client.get(f"/ui/static/{name}").status_code == 404


def test_config_and_no_review_outputs(client):
    cfg = client.get("/ui/api/config").json()
    assert cfg["review_outputs"] == [] and cfg["max_prompts"] == 8
    r = client.get("/ui/api/outputs/0/videos")
    assert r.status_code == 404 and "serve.review_outputs" in r.json()["detail"]


def test_session_frame_png(client, tmp_path):
    from hqseg_ray.synth.dataset import write_mp4
    from hqseg_ray.synth.generate import generate_video

    path = write_mp4(generate_video(1, frames=6, size=(64, 96), n_objects=(1, 1)).frames, tmp_path / "v.mp4")
    sess = client.post("/v1/videos", content=path.read_bytes(), headers={"content-type": "video/mp4"}).json()
    try:
        r = client.get(f"/ui/api/videos/{sess['session_id']}/frames/5")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        from PIL import Image
        import io

        img = np.asarray(Image.open(io.BytesIO(r.content)))
        assert img.ndim == 3 and img.shape[2] == 3
        assert client.get(f"/ui/api/videos/{sess['session_id']}/frames/6").status_code == 404
        assert client.get("/ui/api/videos/vid_nope/frames/0").status_code == 404
    finally:
        client.delete(f"/v1/videos/{sess['session_id']}")


# -- a job's output, on the toy application -------------------------------------------------------------
def test_output_listing_masks_and_queue(ui_app):
    c, vid = ui_app["client"], ui_app["video_id"]
    videos = c.get("/ui/api/outputs/0/videos").json()["videos"]
    assert [v["video_id"] for v in videos] == [vid]
    assert videos[0]["uri"].startswith("file:///") and videos[0]["status"] == "ok"
    m = c.get(f"/ui/api/outputs/0/videos/{vid}/frames/3/masks").json()
    assert m["frame"] == 3 and {o["object_id"] for o in m["objects"]} <= set(ui_app["object_ids"])
    assert all(o["size"] == list(ui_app["size"]) for o in m["objects"])
    q = c.get(f"/ui/api/outputs/0/videos/{vid}/queue").json()
    assert q["source"] == "job" and [i["frame_index"] for i in q["items"]] == [5, 2]
    assert q["items"][0]["reason"] == "low_score,score_drop" and q["items"][0]["label"] == "kite"
    assert "future_key" not in q["items"][1]


def test_queue_from_the_masks_when_the_job_wrote_none(tmp_path):
    from hqseg_ray.export.parquet import write_video_parquet
    from hqseg_ray.masks import rle_encode
    from hqseg_ray.export.review import load_review
    from hqseg_ray.serve.review import review_queue
    from hqseg_ray.track.types import FrameResult

    def mask(side):
        m = np.zeros((40, 40), bool)
        m[:side, :side] = True
        return rle_encode(m)

    # object 1: 10x10 on frames 0-1, 20x20 on frame 2 (area x4); object 2 scored 0.4 on frame 1
    frames = [FrameResult(f, [1, 2], [mask(20 if f == 2 else 10), mask(5)], [0.9, 0.4 if f == 1 else 0.95],
                          ["track", "track"], 0, [0, 0]) for f in range(3)]
    write_video_parquet(frames, tmp_path, "v")
    q = review_queue(str(tmp_path), "v")
    assert q["source"] == "masks" and not (tmp_path / "review").exists()
    # the export module's queue (built from the masks), every reason, in its priority order
    want = load_review(str(tmp_path), "v")["items"]
    assert want and q["total"] == len(want)
    assert [(i["frame_index"], i["object_id"], i["reason"]) for i in q["items"]] == \
        [(i["frame_index"], i["object_id"], ",".join(i["reasons"])) for i in want]
    got = {(i["frame_index"], i["object_id"]): i["reason"].split(",") for i in q["items"]}
    assert "low_score" in got[(1, 2)] and "area_jump" in got[(2, 1)]


@pytest.mark.parametrize("path,status", [
    ("/ui/api/outputs/1/videos", 404),
    ("/ui/api/outputs/0/videos/..%2F..%2Fetc/queue", 404),
    ("/ui/api/outputs/0/videos/a%20b/queue", 400),
    ("/ui/api/outputs/0/videos/unknown/queue", 404),
    ("/ui/api/outputs/0/videos/unknown/frames/0/masks", 404),
])
def test_output_routes_refuse_what_is_not_there(ui_app, path, status):
    r = ui_app["client"].get(path)
    assert r.status_code == status, r.text


def test_save_corrections_validates_and_appends(ui_app):
    c, vid, out = ui_app["client"], ui_app["video_id"], ui_app["output"]
    url = f"/ui/api/outputs/0/videos/{vid}/corrections"
    bad = [({"prompts": [{"frame": 1, "points": [[5, 5]], "labels": [1]}]}, "object_id"),
           ({"prompts": [{"object_id": 1, "frame": 99, "points": [[5, 5]], "labels": [1]}]}, "frame outside"),
           ({"prompts": [{"object_id": 1, "frame": 0, "points": [[5, 5]] * 17, "labels": [1] * 17}]}, "limit"),
           ({"prompts": [{"object_id": 1, "frame": 0, "box": [1, 1, 4, 4]}] * 9}, "limit"),
           ({"prompts": [{"object_id": 1, "frame": 0, "mask": {"size": [2, 2], "counts": "04"}}]}, "mask")]
    for body, word in bad:
        r = c.post(url, json=body)
        assert r.status_code in (400, 422) and word in r.text, (body, r.text)
    assert not (out / "corrections.jsonl").exists()
    r = c.post(url, json={"prompts": [{"object_id": 2, "frame": 1, "points": [[10, 12]], "labels": [1]}]})
    assert r.status_code == 200, r.text
    r = c.post(url, json={"prompts": [{"object_id": 2, "frame": 1, "box": [3, 4, 30, 40]},
                                      {"object_id": 5, "frame": 0, "points": [[1, 2]], "labels": [0]}]})
    lines = [json.loads(x) for x in (out / "corrections.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(x["video_id"] == vid and x["source"] == "review-page" for x in lines)
    merged = r.json()["prompts"]  # the (object 2, frame 1) prompt was replaced by the box
    assert merged == [{"object_id": 2, "frame": 1, "box": [3, 4, 30, 40]},
                      {"object_id": 5, "frame": 0, "points": [[1, 2]], "labels": [0]}]
    assert c.get(url).json()["prompts"] == merged
    (out / "corrections.jsonl").unlink()
