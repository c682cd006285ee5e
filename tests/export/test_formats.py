"""Exports (COCO, YouTube-VIS, DAVIS, overlay) from a small Parquet output built here.

The output is made from synthetic ground truth: two 10-frame videos whose masks are the DAVIS
annotations, plus, in the first video, a box object (id 200) that overlaps the others with a higher
score on frames 2-4 and a lower one on frame 5, and a lost object (area 0) on frame 7; a third video
with status ok and no masks, and a failed one.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hqseg_ray.export.formats import ExportError, export_all, list_videos
from hqseg_ray.export.parquet import MASKS_SCHEMA
from hqseg_ray.masks import rle_bbox_xywh, rle_decode, rle_encode
from hqseg_ray.synth import DAVIS_PALETTE, write_dataset

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

T, H, W = 10, 96, 128
BOX = (slice(10, 60), slice(20, 90))  # object 200 on frames 2..5
BOX_SCORES = {2: 0.99, 3: 0.99, 4: 0.99, 5: 0.01}


def _gt_rows(video_id: str, ann_dir: str) -> list[dict]:
    rows = []
    for t in range(T):
        idmap = np.asarray(Image.open(os.path.join(ann_dir, f"{t:05d}.png")))
        objs = {int(o): idmap == o for o in np.unique(idmap) if o}
        if video_id.endswith("000") and t in BOX_SCORES:
            m = np.zeros((H, W), bool)
            m[BOX] = True
            objs[200] = m
        for oid, m in objs.items():
            rle = rle_encode(m)
            score = BOX_SCORES[t] if oid == 200 else 0.5 + 0.01 * oid
            rows.append({"video_id": video_id, "frame_index": t, "pts_time": t / 24, "object_id": oid,
                         "score": score, "rle_counts": rle["counts"], "rle_size": [H, W],
                         "bbox_xywh": rle_bbox_xywh(rle),
                         "area": int(m.sum()), "source": "track", "chunk_index": 0})
        if video_id.endswith("000") and t == 7:  # a lost object: a row with an empty mask
            rle = rle_encode(np.zeros((H, W), bool))
            rows.append({"video_id": video_id, "frame_index": t, "pts_time": t / 24, "object_id": 9, "score": 0.1,
                         "rle_counts": rle["counts"], "rle_size": [H, W], "bbox_xywh": [0.0] * 4, "area": 0,
                         "source": "track", "chunk_index": 0})
    return rows


@pytest.fixture(scope="module")
def job_output(tmp_path_factory):
    """``(output_dir, {video_id: [rows]}, synth_dir)`` of a job-shaped output (see module doc)."""
    root = tmp_path_factory.mktemp("export")
    data, out = root / "data", root / "out"
    manifest = write_dataset(data, videos=2, frames=T, seed=3, size=(H, W), n_objects=(2, 4))
    videos = [json.loads(line) for line in open(manifest)]
    rows_by_video, status = {}, []
    for v in videos:
        rows = _gt_rows(v["video_id"], str(data / "Annotations" / v["video_id"]))
        part = out / "masks" / f"video_id={v['video_id']}"
        part.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=MASKS_SCHEMA), part / "part-0.parquet")
        rows_by_video[v["video_id"]] = rows
        status.append({"video_id": v["video_id"], "video": v["video"], "status": "ok", "error": None,
                       "frames": T, "objects": len({r["object_id"] for r in rows})})
    # no masks at all: the job's status says 0 frames with results; the probe gives the length
    status.append({"video_id": "empty", "video": videos[1]["video"], "status": "ok", "error": None,
                   "frames": 0, "objects": 0})
    status.append({"video_id": "broken", "video": "/nonexistent.mp4", "status": "failed",
                   "error": "VideoError: does not exist", "frames": None, "objects": None})
    pq.write_table(pa.Table.from_pylist(status), out / "videos.parquet")
    return str(out), rows_by_video, data


def _mask(row: dict) -> np.ndarray:
    return rle_decode({"size": row["rle_size"], "counts": row["rle_counts"]})


def test_list_videos_skips_failed_and_reports_requested_problems(job_output):
    out, rows_by_video, _ = job_output
    refs, problems = list_videos(out)
    assert [r.video_id for r in refs] == ["empty", *sorted(rows_by_video)] and problems == []
    refs, problems = list_videos(out, ["broken", "nope"])
    assert refs == [] and "failed" in problems[0] and "'nope' is not in" in problems[1]


def test_coco_loads_in_pycocotools_and_masks_equal_parquet(job_output):
    from pycocotools.coco import COCO

    out, rows_by_video, _ = job_output
    folder = export_all(out, ["coco"])["coco"]
    assert sorted(os.listdir(folder)) == ["empty.json", *(f"{v}.json" for v in sorted(rows_by_video))]
    for vid, rows in rows_by_video.items():
        coco = COCO(os.path.join(folder, f"{vid}.json"))
        imgs = coco.loadImgs(coco.getImgIds())
        assert [i["file_name"] for i in imgs] == [f"{vid}/{t:05d}.jpg" for t in range(T)]
        assert {(i["width"], i["height"]) for i in imgs} == {(W, H)}
        assert coco.loadCats(coco.getCatIds()) == [{"id": 1, "name": "object", "supercategory": "object"}]
        expected = {(r["frame_index"], r["object_id"]): r for r in rows if r["area"]}
        anns = coco.loadAnns(coco.getAnnIds())
        assert len(anns) == len(expected)  # the empty (lost) row is not an annotation
        for a in anns:
            t = coco.imgs[a["image_id"]]["frame_index"]
            r = expected[(t, a["track_id"])]
            assert a["attributes"] == {"track_id": r["object_id"], "keyframe": True, "occluded": False}
            assert a["source"] == "track" and a["object_id"] == r["object_id"]
            assert a["area"] == r["area"] and a["iscrowd"] == 0 and a["category_id"] == 1
            assert a["bbox"] == r["bbox_xywh"] and a["score"] == pytest.approx(r["score"])
            np.testing.assert_array_equal(coco.annToMask(a).astype(bool), _mask(r))
    empty = COCO(os.path.join(folder, "empty.json"))
    assert len(empty.imgs) == T and empty.anns == {}


def test_ytvis_structure_and_masks(job_output):
    out, rows_by_video, _ = job_output
    path = export_all(out, ["ytvis"], video_ids=sorted(rows_by_video))["ytvis"]
    data = json.load(open(path))
    assert set(data) == {"info", "licenses", "categories", "videos", "annotations"}
    videos = {v["name"]: v for v in data["videos"]}
    assert sorted(videos) == sorted(rows_by_video)
    by_video: dict = {}
    for a in data["annotations"]:
        by_video.setdefault(a["video_id"], []).append(a)
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    for vid, rows in rows_by_video.items():
        v = videos[vid]
        assert (v["length"], v["width"], v["height"]) == (T, W, H) and v["file_names"][3] == f"{vid}/00003.jpg"
        tracks = {a["object_id"]: a for a in by_video[v["id"]]}
        assert sorted(tracks) == sorted({r["object_id"] for r in rows if r["area"]})
        for a in tracks.values():
            assert len(a["segmentations"]) == len(a["areas"]) == len(a["bboxes"]) == T and a["category_id"] == 1
        for r in rows:
            seg = tracks[r["object_id"]]["segmentations"][r["frame_index"]] if r["area"] else None
            if r["area"]:
                np.testing.assert_array_equal(rle_decode(seg), _mask(r))
        box = tracks.get(200)
        if box is not None:  # present on frames 2..5 only
            assert [s is not None for s in box["segmentations"]] == [t in BOX_SCORES for t in range(T)]


def test_davis_palette_ids_and_overlap_order(job_output):
    out, rows_by_video, data = job_output
    folder = export_all(out, ["davis"])["davis"]
    for vid, rows in rows_by_video.items():
        files = sorted(os.listdir(os.path.join(folder, vid)))
        assert files == [f"{t:05d}.png" for t in range(T)]
        for t in range(T):
            im = Image.open(os.path.join(folder, vid, f"{t:05d}.png"))
            assert im.mode == "P" and im.getpalette() == DAVIS_PALETTE  # all 256 entries
            got = np.asarray(im)
            gt = np.asarray(Image.open(data / "Annotations" / vid / f"{t:05d}.png"))
            expected = gt.copy()
            if vid.endswith("000") and t in BOX_SCORES:
                under = expected[BOX]
                expected[BOX] = 200 if BOX_SCORES[t] > 0.5 else np.where(under > 0, under, 200)
            np.testing.assert_array_equal(got, expected)
    # first video: frames 2..4 have 200 on top, frame 5 keeps the ground-truth objects on top
    assert (np.asarray(Image.open(os.path.join(folder, sorted(rows_by_video)[0], "00002.png")))[BOX] == 200).all()
    empty_dir = os.path.join(folder, "empty")  # status says 0 frames: the probe gives the length
    empty = [np.asarray(Image.open(os.path.join(empty_dir, f))) for f in sorted(os.listdir(empty_dir))]
    assert len(empty) == T and all(e.shape == (H, W) and not e.any() for e in empty)


def test_davis_ids_over_255_fail_unless_remapped(job_output, tmp_path):
    out, rows_by_video, _ = job_output
    vid = sorted(rows_by_video)[1]
    big = tmp_path / "big"
    shutil.copytree(out, big)
    part = big / "masks" / f"video_id={vid}" / "part-0.parquet"
    rows = [dict(r, object_id=r["object_id"] + 1000) for r in rows_by_video[vid]]
    pq.write_table(pa.Table.from_pylist(rows, schema=MASKS_SCHEMA), part)
    with pytest.raises(ExportError, match="outside 1..255.*--davis-remap") as err:
        export_all(str(big), ["davis"], video_ids=[vid])
    assert err.value.paths["davis"].endswith("davis")
    folder = export_all(str(big), ["davis"], video_ids=[vid], davis_remap=True)["davis"]
    mapping = json.load(open(os.path.join(folder, vid, "ids.json")))
    ids = sorted({r["object_id"] for r in rows})
    assert mapping == {str(i + 1): oid for i, oid in enumerate(ids)}
    got = np.asarray(Image.open(os.path.join(folder, vid, "00000.png")))
    for r in rows:
        if r["frame_index"] == 0:
            assert (got[_mask(r)] == ids.index(r["object_id"]) + 1).all()


def test_overlay_mp4_and_preview(job_output):
    import av

    out, rows_by_video, _ = job_output
    vid = sorted(rows_by_video)[0]
    folder = export_all(out, ["overlay"], video_ids=[vid])["overlay"]
    with av.open(os.path.join(folder, f"{vid}.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert c.streams.video[0].codec_context.name == "h264"
    assert len(frames) == T and frames[0].shape == (H, W, 3)
    preview = np.asarray(Image.open(os.path.join(folder, f"{vid}.png")).convert("RGB"))
    assert preview.shape == (H, W, 3)
    # the preview is the busiest frame (frame 2: the box joins the others); its box area is tinted
    from hqseg_ray.video import object_color

    tint = preview[BOX].reshape(-1, 3).astype(float).mean(0)
    assert np.dot(tint - tint.mean(), np.asarray(object_color(200)) - np.mean(object_color(200))) > 0
    if os.environ.get("HQSEG_KEEP_PREVIEW"):
        shutil.copy(os.path.join(folder, f"{vid}.png"), os.environ["HQSEG_KEEP_PREVIEW"])


def test_unreadable_source_uses_the_masks_and_overlay_reports_it(job_output, tmp_path):
    out, rows_by_video, _ = job_output
    vid, other = sorted(rows_by_video)
    moved = tmp_path / "moved"
    shutil.copytree(out, moved, ignore=shutil.ignore_patterns("exports", "overlay"))
    status = pq.read_table(moved / "videos.parquet").to_pylist()
    for r in status:
        if r["video_id"] == vid:
            r.update(video="/gone/video.mp4", frames=T - 1)
    pq.write_table(pa.Table.from_pylist(status), moved / "videos.parquet")
    # masks end on frame T - 1 (index), so the export still has T frames although the source is gone
    folder = export_all(str(moved), ["davis"], video_ids=[vid])["davis"]
    assert len(os.listdir(os.path.join(folder, vid))) == T
    with pytest.raises(ExportError, match=f"overlay: video '{vid}'.*gone") as err:
        export_all(str(moved), ["overlay", "coco"], video_ids=[vid, other])
    assert sorted(os.listdir(err.value.paths["overlay"])) == [f"{other}.mp4", f"{other}.png"]
    assert sorted(os.listdir(err.value.paths["coco"])) == [f"{vid}.json", f"{other}.json"]


def test_masks_without_status_row_use_the_file_metadata(job_output, tmp_path):
    """``hqseg segment`` writes masks only; the source video is in the file's metadata."""
    out, rows_by_video, data = job_output
    vid = sorted(rows_by_video)[1]
    rows = [r for r in rows_by_video[vid] if r["frame_index"] < 4]  # masks stop early: the probe gives T
    part = tmp_path / "seg" / "masks" / f"video_id={vid}"
    part.mkdir(parents=True)
    meta = {"hqseg.meta": json.dumps({"video": str(data / "videos" / f"{vid}.mp4")}), "hqseg.schema_version": "1"}
    table = pa.Table.from_pylist(rows, schema=MASKS_SCHEMA).replace_schema_metadata(meta)
    pq.write_table(table, part / "part-0.parquet")
    (part / "part-0.parquet.tmp-1234").write_bytes(b"half-written")  # a killed writer's leftover: ignored
    paths = export_all(str(tmp_path / "seg"), ["davis", "overlay"])
    assert len(os.listdir(os.path.join(paths["davis"], vid))) == T
    assert os.path.exists(os.path.join(paths["overlay"], f"{vid}.mp4"))


def test_cli_export_reports_problems_after_writing_the_rest(job_output, capsys):
    """Exit 0 when all is written, 1 with the problems listed after the rest, 2 for bad arguments."""
    from hqseg_ray.cli import main

    out, rows_by_video, _ = job_output
    vid = sorted(rows_by_video)[1]
    assert main(["export", out, "--format", "coco,davis", "--video", vid]) == 0
    printed = capsys.readouterr().out
    assert os.path.join("exports", "coco") in printed and os.path.join("exports", "davis") in printed
    assert main(["export", out, "--format", "coco", "--video", vid, "--video", "broken"]) == 1
    assert "'broken' has status 'failed'" in capsys.readouterr().err
    assert os.path.exists(os.path.join(out, "exports", "coco", f"{vid}.json"))
    with pytest.raises(ValueError, match="unknown export format"):
        export_all(out, ["yolo"])
    missing = os.path.join(out, "no-such-output")
    assert main(["export", missing, "--format", "ytvis"]) == 2 and not os.path.exists(missing)


def test_categories_are_read_once_per_export_run(job_output, tmp_path, monkeypatch):
    from hqseg_ray.export.categories import Categories
    from hqseg_ray.export.coco import CocoWriter

    out = str(tmp_path / "out")
    shutil.copytree(job_output[0], out)
    calls = []
    real = Categories.of_output.__func__
    monkeypatch.setattr(Categories, "of_output", classmethod(lambda cls, d: calls.append(d) or real(cls, d)))
    paths = export_all(out, ["coco", "coco-merged", "ytvis", "cvat", "labelstudio", "davis"])
    assert calls == [out] and len(paths) == 6
    merged = json.load(open(paths["coco-merged"]))
    assert merged["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    calls.clear()
    export_all(out, ["davis"])  # no writer that names categories: the masks are not scanned for them
    assert calls == []
    writer = CocoWriter(out)  # used alone, without run_writers: open() still finds the categories
    writer.open()
    assert calls == [out] and writer.categories.names == ["object"]
