"""Parquet output: schema, round trip, atomic write, metadata, pts, empty videos, bad ids."""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from hqseg_ray.export.parquet import (MASKS_SCHEMA, SCHEMA_VERSION, read_video_meta, read_video_parquet,
                                      video_parquet_path, write_video_parquet)
from hqseg_ray.masks import rle_decode, rle_encode
from hqseg_ray.track.types import FrameResult


def _results(n_frames=5, h=24, w=32):
    out = []
    for f in range(n_frames):
        ids, rles, scores, sources = [], [], [], []
        for oid in (1, 7):
            if oid == 7 and f % 2:
                continue  # object 7 hidden on odd frames
            m = np.zeros((h, w), bool)
            m[f:f + 5, oid:oid + 6] = True
            ids.append(oid)
            rles.append(rle_encode(m))
            scores.append(0.5 + 0.1 * oid / 7)
            sources.append("prompt" if f == 0 else "track")
        out.append(FrameResult(f, ids, rles, scores, sources, chunk_index=f // 3, chunk_indices=[f // 3] * len(ids)))
    out.append(FrameResult(n_frames, [], [], [], [], chunk_index=1))  # a frame without masks: no rows
    return out


def test_roundtrip_schema_and_columns(tmp_path):
    frames = _results()
    path = write_video_parquet(iter(frames), tmp_path, "clip-1", pts_times={f: f / 24 for f in range(10)},
                               meta={"config_hash": "abc"})
    assert path == video_parquet_path(tmp_path, "clip-1")
    assert path.endswith(os.path.join("masks", "video_id=clip-1", "part-0.parquet"))
    table = pq.read_table(path)
    assert table.schema.remove_metadata().equals(MASKS_SCHEMA)
    assert table.num_rows == sum(len(fr) for fr in frames)
    row = table.slice(0, 1).to_pylist()[0]
    assert row["video_id"] == "clip-1" and row["frame_index"] == 0 and row["object_id"] == 1
    assert row["rle_size"] == [24, 32] and row["source"] == "prompt"
    assert row["bbox_xywh"] == [1.0, 0.0, 6.0, 5.0] and row["area"] == 30
    assert row["pts_time"] == 0.0
    assert read_video_meta(path) == {"config_hash": "abc", "schema_version": SCHEMA_VERSION}
    back = list(read_video_parquet(path))
    assert [b.frame_index for b in back] == [0, 1, 2, 3, 4]
    for a, b in zip(frames, back):
        assert a.object_ids == b.object_ids and a.sources == b.sources and a.chunk_indices == b.chunk_indices
        for ra, rb in zip(a.rles, b.rles):
            assert np.array_equal(rle_decode(ra), rle_decode(rb))
    assert not [p for p in os.listdir(os.path.dirname(path)) if ".tmp" in p]


def test_pts_from_results_or_sequence(tmp_path):
    frames = _results(3)
    for fr in frames:
        fr.pts_time = fr.frame_index * 0.5
    p = write_video_parquet(frames, tmp_path, "a")
    assert pq.read_table(p).column("pts_time").to_pylist()[:2] == [0.0, 0.0]
    p = write_video_parquet(_results(3), tmp_path, "b", pts_times=[10.0, 11.0, 12.0])
    assert set(pq.read_table(p).column("pts_time").to_pylist()) == {10.0, 11.0, 12.0}
    p = write_video_parquet(_results(3), tmp_path, "c")
    assert set(pq.read_table(p).column("pts_time").to_pylist()) == {None}


def test_empty_video_writes_schema_only_file(tmp_path):
    path = write_video_parquet(iter([]), tmp_path, "empty")
    t = pq.read_table(path)
    assert t.num_rows == 0 and t.schema.remove_metadata().equals(MASKS_SCHEMA)


def test_failed_write_leaves_no_file(tmp_path):
    def broken():
        yield from _results(2)
        raise RuntimeError("stream died")

    with pytest.raises(RuntimeError):
        write_video_parquet(broken(), tmp_path, "v")
    folder = os.path.dirname(video_parquet_path(tmp_path, "v"))
    assert os.listdir(folder) == []


def test_rewrite_replaces_atomically(tmp_path):
    write_video_parquet(_results(4), tmp_path, "v")
    path = write_video_parquet(_results(2), tmp_path, "v")
    assert pq.read_table(path).column("frame_index").to_pylist()[-1] == 1


@pytest.mark.parametrize("bad", ["a/b", "..", "", "x y"])
def test_unsafe_video_id_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="video_id"):
        write_video_parquet([], tmp_path, bad)


def test_whole_output_reads_as_one_table(tmp_path):
    import pyarrow.dataset as ds

    for vid in ("a", "b"):
        write_video_parquet(_results(3), tmp_path, vid)
    t = pq.read_table(tmp_path / "masks", partitioning=None)  # as docs/formats.md says
    assert sorted(set(t.column("video_id").to_pylist())) == ["a", "b"]
    assert ds.dataset(tmp_path / "masks", format="parquet").count_rows() == t.num_rows
