"""Issue 18 item 4 without a cluster: the dispatch order that caps chunks in flight per video, the
progress-aware relay wait, and the writer's record of a carry given up on."""

import asyncio
import json
import pickle

import pytest

from hqseg_ray.pipeline.build import fair_order
from hqseg_ray.pipeline.relay import RelayStore


def _rows(video, n):
    return [{"video_id": video, "chunk_index": k} for k in range(n)]


def test_fair_order_caps_chunks_of_one_video_among_the_actors_next_chunks():
    rows = _rows("long", 10) + _rows("a", 3) + _rows("b", 3) + [{"video_id": "bad", "chunk_index": -1}]
    out = fair_order(rows, per_video=1, actors=2)
    assert out[0]["video_id"] == "bad" and len(out) == len(rows)
    order = [(r["video_id"], r["chunk_index"]) for r in out[1:]]
    for vid in ("long", "a", "b"):  # each video's chunks stay in chunk order (the relay needs it)
        ks = [k for v, k in order if v == vid]
        assert ks == sorted(ks)
    # while other videos have chunks, no two neighbouring rows belong to one video
    other_left = [i for i, (v, _) in enumerate(order) if v != "long"]
    for i in range(other_left[-1]):
        assert order[i][0] != order[i + 1][0], order
    # per_video >= actors keeps today's order: video after video
    assert [r["video_id"] for r in fair_order(rows, 2, 2)[1:]] == ["long"] * 10 + ["a"] * 3 + ["b"] * 3


def test_fair_order_opens_only_as_many_videos_as_the_pool_needs():
    rows = [r for v in "abcdefgh" for r in _rows(v, 4)]
    out = fair_order(rows, per_video=1, actors=3)
    first_seen = {}
    for i, r in enumerate(out):
        first_seen.setdefault(r["video_id"], i)
    assert first_seen["d"] >= 3 * 4 - 2  # d opens only when a, b or c is done


def test_relay_waits_while_the_previous_chunk_makes_progress_and_gives_up_when_it_stalls():
    async def scenario():
        store = RelayStore()
        # chunk 0 reports progress every 0.2 s for 1.5 s, then delivers: a 0.5 s stall limit is never hit
        async def worker():
            for _ in range(7):
                await store.beat("v", 0)
                await asyncio.sleep(0.2)
            await store.put("v", 0, {"objects": []})

        task = asyncio.create_task(worker())
        found, states, why = await store.get("v", 0, stall_s=0.5, poll_s=0.05)
        await task
        assert found and states == {"objects": []} and why == ""
        # chunk 1 starts, then its worker goes silent (actor died): the waiter gives up after ~0.5 s
        await store.beat("v", 1)
        found, _, why = await store.get("v", 1, stall_s=0.5, poll_s=0.05)
        assert not found and "its worker stopped reporting" in why
        # a chunk that never starts
        found, _, why = await store.get("v", 5, stall_s=0.3, poll_s=0.05)
        assert not found and "never started" in why
        # an absolute cap, when configured, wins over progress
        async def beating():
            for _ in range(20):
                await store.beat("w", 0)
                await asyncio.sleep(0.05)

        task = asyncio.create_task(beating())
        found, _, why = await store.get("w", 0, stall_s=5, timeout_s=0.3, poll_s=0.05)
        task.cancel()
        assert not found and "relay_timeout_s" in why

    asyncio.run(scenario())


def _writer_rows(vid, results, reserved, dropped=()):
    for r in results:
        yield {"video": "x.mp4", "video_id": vid, "chunk_index": r.chunk_index, "num_chunks": len(results),
               "error": "", "result": pickle.dumps(r), "reserved_ids_json": json.dumps(reserved),
               "frame_indices": r.frame_indices, "pts_times": [f / 10 for f in r.frame_indices],
               "carry_dropped": "chunk 0 showed no progress" if r.chunk_index in dropped else ""}


@pytest.fixture(scope="module")
def auto_chunks():
    """Two chunks of a synthetic clip in automatic mode (oracle engine), object 1 prompted only in
    chunk 1: chunk 0's discovered tracks know nothing of object 1."""
    from hqseg_ray.config import TrackingConfig
    from hqseg_ray.track import track_chunk
    from tests.track.helpers import OracleEngine, synthetic_video

    v = synthetic_video(3, frames=20, size=(64, 96), n_objects=(3, 3), pan=False)
    eng = OracleEngine(v.annotations, v.frames)
    cfg = TrackingConfig.model_validate({"auto": {"enabled": True, "points_per_side": 16, "stability_thresh": 0.6}})
    obj = sorted(v.objects)[0]
    r0 = track_chunk(eng, v.frames[:12], range(12), [], cfg, chunk_index=0, video_id="v", overlap_next=4)
    r1 = track_chunk(eng, v.frames[8:], range(8, 20), [{"object_id": 1, "frame": 15, "box": v.box(15, obj)}], cfg,
                     carry_in=r0.carry_out, chunk_index=1, video_id="v", overlap_next=0)
    return cfg, [r0, r1]


def _writer(tmp_path, cfg):
    from hqseg_ray.config import JobConfig
    from hqseg_ray.pipeline.write import VideoWriter

    job = JobConfig.model_validate({"model": {"type": "toy"}, "output": {"path": str(tmp_path)},
                                    **json.loads(cfg.model_dump_json())})
    return VideoWriter(job.model_dump_json())


def test_writer_reserves_the_prompted_ids_and_takes_chunks_in_any_order(tmp_path, auto_chunks):
    from hqseg_ray.export.parquet import read_video_parquet

    cfg, results = auto_chunks
    w = _writer(tmp_path, cfg)
    rows = list(_writer_rows("v", results, [1]))
    assert w.process(rows[1]) is None  # chunk 1 first: buffered
    assert w.process(rows[1]) is None  # a duplicate (retried task) is ignored, not an error
    status = w.process(rows[0])
    assert status["status"] == "ok" and json.loads(status["dropped_carries"]) == []
    frames = list(read_video_parquet(status["path"]))
    early = {o for fr in frames if fr.frame_index < 8 for o in fr.object_ids}
    assert early and 1 not in early, early  # issue 18 item 6: auto tracks of chunk 0 never take id 1
    import pyarrow.parquet as pq

    t = pq.read_table(status["path"]).to_pydict()
    assert all(p == pytest.approx(f / 10) for f, p in zip(t["frame_index"], t["pts_time"]))


def test_a_carry_given_up_on_is_recorded_per_video(tmp_path, auto_chunks):
    from hqseg_ray.pipeline.write import status_lists

    cfg, results = auto_chunks
    w = _writer(tmp_path, cfg)
    rows = list(_writer_rows("v", results, [1], dropped={1}))
    w.process(rows[0])
    status = status_lists(w.process(rows[1]))
    assert status["dropped_carries"] == [1]
    handed_on = {o["track_id"] for o in results[0].carry_out["objects"]}
    assert handed_on and len(status["dropped_objects"]) == len(handed_on)


@pytest.mark.ray
def test_heartbeats_through_ray_keep_a_waiter_waiting_past_the_stall_limit():
    """A segment actor's RelayClient beats while it works on a chunk: a waiter with a 1 s stall
    limit waits 3 s for it and gets the states; once the worker stops (actor died) it gives up."""
    import threading
    import time

    import ray

    from hqseg_ray.pipeline.relay import RelayClient, start_relay

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        relay = start_relay("fairness-test")
        worker = RelayClient("fairness-test", stall_s=1.0, heartbeat_s=0.2)
        waiter = RelayClient("fairness-test", stall_s=1.0)
        worker.working_on("v", 0)

        def finish():
            time.sleep(3.0)
            worker.put("v", 0, {"objects": [1]})
            worker.done()

        threading.Thread(target=finish).start()
        t0 = time.monotonic()
        found, states, why = waiter.get("v", 0)
        assert found and states == {"objects": [1]} and time.monotonic() - t0 > 2.5, why
        worker.working_on("v", 1)
        time.sleep(0.5)
        worker.done()  # the worker stops reporting (as if its actor died)
        found, _, why = waiter.get("v", 1)
        assert not found and "stopped reporting" in why
        ray.kill(relay)
    finally:
        ray.shutdown()
