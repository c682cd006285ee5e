"""Video sessions end to end: upload, prompts, propagate (NDJSON), correction on a later frame,
frame masks, bounds, delete. The session's masks equal the tracker's own ``segment_video``."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

CHUNK = 8  # serve.session_chunk_frames in the test config; overlap is chunk // 8 = 1


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from hqseg_ray.synth.dataset import write_mp4
    from hqseg_ray.synth.generate import generate_video

    video = generate_video(3, frames=20, size=(96, 128), n_objects=(2, 2), pan=False)
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_mp4(video.frames, path)
    return video, path


def stream(client, session_id):
    with client.stream("POST", f"/v1/videos/{session_id}/propagate") as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.iter_lines() if line.strip()]


def reference(engine, path, prompts):
    from hqseg_ray.config import ChunkingConfig, TrackingConfig
    from hqseg_ray.track import segment_video

    chunking = ChunkingConfig(chunk_frames=CHUNK, overlap=1, stride=1, align_to_keyframes=False)
    return {fr.frame_index: fr for fr in segment_video(str(path), prompts, engine, TrackingConfig(),
                                                       chunking=chunking, video_id="ref")}


def by_object(line):
    return {o["object_id"]: o for o in line["objects"]}


def test_video_session_end_to_end(client, clip, engine):
    video, path = clip
    r = client.post("/v1/videos", files={"video": ("clip.mp4", path.read_bytes(), "video/mp4")})
    assert r.status_code == 200, r.text
    sess = r.json()
    sid = sess["session_id"]
    assert sess["frames"] == 20 and sess["fps"] == pytest.approx(24, abs=0.1)

    prompts = [{"object_id": 1, "frame": 0, "box": video.box(0, 1)},
               {"object_id": 2, "frame": 0, "points": [[float(v) for v in np.argwhere(video.mask(0, 2))[0][::-1]]],
                "labels": [1]}]
    assert client.post(f"/v1/videos/{sid}/prompts", json={"prompts": prompts}).json()["prompts"] == 2
    lines = stream(client, sid)
    assert [ln["frame"] for ln in lines] == list(range(20))
    assert set(by_object(lines[0])) == {1, 2}
    ref = reference(engine, path, prompts)
    for ln in lines:
        fr = ref[ln["frame"]]
        assert [o["object_id"] for o in ln["objects"]] == fr.object_ids
        assert [o["counts"] for o in ln["objects"]] == [r["counts"] for r in fr.rles], ln["frame"]

    # a correction on a later frame: object 1 gets a new box on frame 13 and the video is re-propagated
    box13 = [10, 10, 60, 50]
    correction = {"object_id": 1, "frame": 13, "box": box13}
    assert client.post(f"/v1/videos/{sid}/prompts", json={"prompts": [correction]}).json()["prompts"] == 3
    lines2 = stream(client, sid)
    ref2 = reference(engine, path, prompts + [correction])
    for ln in lines2:
        assert [o["counts"] for o in ln["objects"]] == [r["counts"] for r in ref2[ln["frame"]].rles], ln["frame"]
    o13 = by_object(lines2[13]).get(1)
    assert o13 is not None and o13["source"] == "prompt"
    # the stored results are the latest propagation's
    got = client.get(f"/v1/videos/{sid}/frames/13/masks").json()
    assert got == lines2[13]
    # replacing the frame-13 prompt (same object and frame) does not add one
    assert client.post(f"/v1/videos/{sid}/prompts", json={"prompts": [correction]}).json()["prompts"] == 3
    assert client.get(f"/v1/videos/{sid}").json()["propagated_frames"] == 20

    assert client.delete(f"/v1/videos/{sid}").status_code == 200
    r = client.get(f"/v1/videos/{sid}/frames/0/masks")
    assert r.status_code == 404 and "does not exist" in r.json()["detail"]


def test_video_session_bad_input(client, clip):
    _, path = clip
    r = client.post("/v1/videos", content=b"definitely not a video", headers={"content-type": "video/mp4"})
    assert r.status_code == 400 and "not a readable video" in r.json()["detail"]
    assert client.post("/v1/videos/vid_nope/prompts", json={"prompts": [{"frame": 0, "box": [0, 0, 5, 5]}]}).status_code == 404
    sid = client.post("/v1/videos", content=path.read_bytes(), headers={"content-type": "video/mp4"}).json()["session_id"]
    try:
        r = client.post(f"/v1/videos/{sid}/propagate")
        assert r.status_code == 400 and "no prompts" in r.json()["detail"]
        r = client.get(f"/v1/videos/{sid}/frames/3/masks")
        assert r.status_code == 404 and "not been propagated" in r.json()["detail"]
        assert client.get(f"/v1/videos/{sid}/frames/99/masks").status_code == 404
        bad = [{"object_id": 1, "frame": 25, "box": [0, 0, 5, 5]}, {"object_id": 2, "frame": 0, "box": [0, 0, 500, 5]}]
        r = client.post(f"/v1/videos/{sid}/prompts", json={"prompts": bad})
        assert r.status_code == 400
        assert "outside the video" in r.json()["detail"] and "outside the 128x96 frame" in r.json()["detail"]
        assert client.post(f"/v1/videos/{sid}/prompts", json={"prompts": [{"frame": 0, "bogus": 1}]}).status_code == 422
        # sessions are bounded in count (2 in the test config)
        other = client.post("/v1/videos", content=path.read_bytes(), headers={"content-type": "video/mp4"})
        assert other.status_code == 200
        third = client.post("/v1/videos", content=path.read_bytes(), headers={"content-type": "video/mp4"})
        assert third.status_code == 429 and "max_sessions" in third.json()["detail"]
        client.delete(f"/v1/videos/{other.json()['session_id']}")
    finally:
        client.delete(f"/v1/videos/{sid}")


def test_video_session_limits_and_uri(client, allowed_dir):
    from hqseg_ray.synth.dataset import write_mp4
    from hqseg_ray.synth.generate import generate_video

    long_clip = allowed_dir / "long.mp4"
    write_mp4(generate_video(4, frames=44, size=(64, 96), n_objects=(1, 1), pan=False).frames, long_clip)
    r = client.post("/v1/videos", json={"uri": f"file://{long_clip}"})  # an allowed URI, but too long
    assert r.status_code == 413 and "max_video_frames" in r.json()["detail"]
    r = client.post("/v1/videos", json={"uri": "file:///etc/hostname"})
    assert r.status_code == 403
    short = allowed_dir / "short.mp4"
    write_mp4(generate_video(5, frames=6, size=(64, 96), n_objects=(1, 1), pan=False).frames, short)
    r = client.post("/v1/videos", json={"uri": f"file://{short}"})
    assert r.status_code == 200 and r.json()["frames"] == 6
    client.delete(f"/v1/videos/{r.json()['session_id']}")
