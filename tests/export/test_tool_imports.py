"""Labels and the labeling-tool exports (COCO categories, merged COCO, CVAT, Label Studio), each
checked against the format's reader where one installs here: pycocotools for COCO, Label
Studio's own brush decoder and encoder (label-studio-converter) for its RLE, and for CVAT (a server)
its documented XML schema and what its loader does with masks and tracks, read back by an
independent decoder, plus Datumaro (CVAT's COCO reader) from its own interpreter when given.

The outputs are written with ``write_video_parquet`` from synthetic ground truth: a 12-frame video
with a "car" (id 1, present throughout), a "person" (id 2, absent on frames 4..7: occluded, then
back) and an unlabelled object (id 7, frames 0..5: gone for the rest of the video); the same
video labelled with stride 2 (only even frames); both with masks-file metadata as the job writes it.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import numpy as np
import pyarrow.parquet as pq
import pytest

from hqseg_ray.export.formats import export_all
from hqseg_ray.export.parquet import SCHEMA_VERSION, write_video_parquet
from hqseg_ray.masks import rle_decode, rle_encode
from hqseg_ray.track.types import FrameResult

T, H, W = 12, 48, 64
LABELS = {1: "car", 2: "person"}


def _mask(oid: int, t: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    if oid == 1:
        m[5:20, 2 + t:20 + t] = True
    elif oid == 2:
        m[25:45, 30:40] = True
        m[30:35, 40 + t % 3:44] = True  # a ragged edge
    else:
        m[2:6, 50:60] = True
    return m


def _present(oid: int, t: int) -> bool:
    return oid == 1 or (oid == 2 and not 4 <= t <= 7) or (oid == 7 and t <= 5)


def _frames(stride: int) -> list[FrameResult]:
    out = []
    for t in range(0, T, stride):
        ids = [o for o in (1, 2, 7) if _present(o, t)]
        out.append(FrameResult(t, ids, [rle_encode(_mask(o, t)) for o in ids], [0.9 - 0.01 * o for o in ids],
                               ["track"] * len(ids), 0, [0] * len(ids)))
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A 12-frame synthetic video file (only its length and size matter to the exports)."""
    from hqseg_ray.synth import write_dataset

    root = tmp_path_factory.mktemp("video")
    manifest = write_dataset(root, videos=1, frames=T, seed=5, size=(H, W), n_objects=(1, 1))
    return json.loads(manifest.read_text().splitlines()[0])["video"]


def _output(root, video, stride: int, vid: str = "clip") -> str:
    out = str(root)
    write_video_parquet(_frames(stride), out, vid, meta={"video": video, "num_frames": T, "stride": stride},
                        labels=LABELS)
    return out


@pytest.fixture()
def output(tmp_path, video):
    return _output(tmp_path / "out", video, 1)


@pytest.fixture()
def strided(tmp_path, video):
    return _output(tmp_path / "out2", video, 2)


def _decoded(rle) -> np.ndarray:
    return rle_decode({"size": rle["size"], "counts": rle["counts"]}).astype(bool)


# ------------------------------------------------------------------------------------- labels
def test_masks_carry_the_label_column(output):
    path = os.path.join(output, "masks", "video_id=clip", "part-0.parquet")
    table = pq.read_table(path)
    assert pq.read_schema(path).metadata[b"hqseg.schema_version"].decode() == SCHEMA_VERSION == "2"
    got = {(r["object_id"], r["label"]) for r in table.select(["object_id", "label"]).to_pylist()}
    assert got == {(1, "car"), (2, "person"), (7, None)}


def test_coco_categories_come_from_labels(output):
    from pycocotools.coco import COCO

    export_all(output, ["coco"])
    coco = COCO(os.path.join(output, "exports", "coco", "clip.json"))
    cats = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
    assert cats == {"car": 1, "object": 2, "person": 3}  # sorted names; "object" = no label
    for a in coco.loadAnns(coco.getAnnIds()):
        expected = LABELS.get(a["object_id"], "object")
        assert a["category_id"] == cats[expected]
        t = coco.imgs[a["image_id"]]["frame_index"]
        np.testing.assert_array_equal(coco.annToMask(a).astype(bool), _mask(a["object_id"], t))


def test_merged_coco_has_unique_ids_across_videos(tmp_path, video):
    from pycocotools.coco import COCO

    out = tmp_path / "out"
    _output(out, video, 1, "a")
    _output(out, video, 2, "b")
    path = export_all(str(out), ["coco-merged"])["coco-merged"]
    coco = COCO(path)  # pycocotools indexes by id: duplicates would silently collapse, so count
    data = json.load(open(path))
    assert len({i["id"] for i in data["images"]}) == len(data["images"]) == T + T // 2
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    tracks = {(coco.imgs[a["image_id"]]["video_id"], a["object_id"]): a["track_id"] for a in data["annotations"]}
    assert len(set(tracks.values())) == len(tracks) == 6  # 3 objects x 2 videos, one track id each
    assert {v["video_id"] for v in data["info"]["videos"]} == {"a", "b"}
    for a in data["annotations"]:
        img = coco.imgs[a["image_id"]]
        np.testing.assert_array_equal(coco.annToMask(a).astype(bool), _mask(a["object_id"], img["frame_index"]))


# ------------------------------------------------------------------------------------- CVAT
def _cvat_tracks(xml_path: str) -> tuple[ET.Element, dict]:
    """Parse a CVAT-for-video-1.1 file as CVAT documents it (and its loader reads it):
    ``{(label, object_id): [(frame, outside, keyframe, tag, [H, W] mask)]}``; polygons rasterised."""
    import cv2

    from hqseg_ray.export.cvat import cvat_rle_to_mask

    root = ET.parse(xml_path).getroot()
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    task = root.find("meta/task")
    assert task.findtext("mode") == "interpolation"
    h, w = int(task.findtext("original_size/height")), int(task.findtext("original_size/width"))
    tracks = {}
    for tr in root.findall("track"):
        assert set(tr.attrib) == {"id", "label", "source"}
        shapes = []
        for el in tr:
            a = el.attrib
            (oid,) = [int(x.text) for x in el.findall("attribute") if x.attrib["name"] == "object_id"]
            if el.tag == "mask":
                runs = [int(v) for v in a["rle"].split(",")]  # as CVAT's load_anno: int() of each item
                mask = cvat_rle_to_mask(runs, int(a["left"]), int(a["top"]), int(a["width"]), int(a["height"]), h, w)
            else:
                assert el.tag == "polygon"
                pts = np.array([[float(v) for v in p.split(",")] for p in a["points"].split(";")])
                mask = np.zeros((h, w), np.uint8)
                cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
                mask = mask.astype(bool)
            shapes.append((int(a["frame"]), a["outside"] == "1", a["keyframe"] == "1", el.tag, mask))
        tracks.setdefault((tr.attrib["label"], oid), []).extend(shapes)
    return root, tracks


def _iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def test_cvat_xml_polygon_tracks_with_keyframes_and_outside(output):
    folder = export_all(output, ["cvat"])["cvat"]
    root, tracks = _cvat_tracks(os.path.join(folder, "clip.xml"))
    assert sorted(lab.findtext("name") for lab in root.findall("meta/task/labels/label")) == ["car", "object", "person"]
    assert sorted(tracks) == [("car", 1), ("object", 7), ("person", 2)] and len(root.findall("track")) == 3
    car = tracks[("car", 1)]
    assert [f for f, out, _, _, _ in car] == list(range(T)) and not any(out for _, out, _, _, _ in car)
    person = [(f, out) for f, out, _, _, _ in tracks[("person", 2)]]
    # occluded on 4..7: an outside shape on 4 ends the first stretch, a keyframe on 8 starts the next
    assert person == [(0, False), (1, False), (2, False), (3, False), (4, True)] + [(t, False) for t in range(8, T)]
    gone = [(f, out) for f, out, _, _, _ in tracks[("object", 7)]]
    assert gone[-1] == (6, True) and len(gone) == 7
    for (label, oid), shapes in tracks.items():
        for f, out, key, tag, mask in shapes:
            assert key and tag == "polygon"
            if not out:
                assert _iou(mask, _mask(oid, f)) > 0.8  # the outline of the (one-part) mask


def test_cvat_masks_xml_is_pixel_exact_one_shape_per_frame(output):
    """CVAT's XML loader turns a mask track into one shape from its first mask: so one track per
    (frame, object), each a single keyframe, decoded here to the exact Parquet mask."""
    folder = export_all(output, ["cvat"])["cvat"]
    root, tracks = _cvat_tracks(os.path.join(folder, "clip.masks.xml"))
    n = 0
    for tr in root.findall("track"):
        assert len(tr) == 1 and tr[0].tag == "mask"
    for (label, oid), shapes in tracks.items():
        assert label == LABELS.get(oid, "object")
        assert sorted(f for f, *_ in shapes) == [t for t in range(T) if _present(oid, t)]
        for f, out, key, tag, mask in shapes:
            assert key and not out
            np.testing.assert_array_equal(mask, _mask(oid, f))
            n += 1
    assert n == sum(_present(o, t) for o in (1, 2, 7) for t in range(T))


def test_cvat_rle_matches_cvats_own_encoder():
    """CVAT's importer turns a mask into points = runs over the box crop (row by row, from a run of
    zeros) + [left, top, right, bottom]; the XML holds the runs and left/top/width/height."""
    from functools import reduce

    from hqseg_ray.export.cvat import mask_to_cvat_rle

    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.random((H, W)) < 0.3
        m[0, 0] = rng.random() < 0.5
        ys, xs = np.nonzero(m)
        crop = m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]

        def step(acc, v):  # as CVAT's bindings.import_dm_annotations does it
            if v == acc["val"]:
                acc["res"][-1] += 1
            else:
                acc["val"] = v
                acc["res"].append(1)
            return acc

        expected = reduce(step, crop.reshape(-1), {"res": [0], "val": False})["res"]
        runs, left, top, w, h = mask_to_cvat_rle(m)
        assert runs == expected and (left, top, w, h) == (xs.min(), ys.min(), crop.shape[1], crop.shape[0])


def test_cvat_coco_frame_names_and_attributes(output):
    """CVAT matches a COCO image to a video task's frame by name without extension
    (``frame_%06d``); masks come as shapes (no ``track_id``/``keyframe``: CVAT has no mask tracks)
    with the object id in an attribute ``labels.json`` declares."""
    from pycocotools.coco import COCO

    folder = export_all(output, ["cvat"])["cvat"]
    coco = COCO(os.path.join(folder, "clip.coco.json"))
    for img in coco.imgs.values():
        stem = os.path.splitext(os.path.basename(img["file_name"]))[0]
        assert stem == f"frame_{img['frame_index']:06d}" and int(stem[len("frame_"):]) == img["frame_index"]
    for a in coco.anns.values():
        assert a["attributes"] == {"object_id": a["object_id"]}
        t = coco.imgs[a["image_id"]]["frame_index"]
        np.testing.assert_array_equal(coco.annToMask(a).astype(bool), _mask(a["object_id"], t))
    labels = json.load(open(os.path.join(folder, "labels.json")))
    assert [lab["name"] for lab in labels] == ["car", "object", "person"]
    assert all([at["name"] for at in lab["attributes"]] == ["object_id"] for lab in labels)


def test_cvat_xml_strided_run_keeps_unlabelled_frames_open(strided):
    folder = export_all(strided, ["cvat"])["cvat"]
    _, tracks = _cvat_tracks(os.path.join(folder, "clip.xml"))
    # stride 2: the car is a keyframe on every even frame and never outside in between
    assert [(f, out) for f, out, *_ in tracks[("car", 1)]] == [(t, False) for t in range(0, T, 2)]
    # the person is missing on labelled frames 4 and 6 only: outside on 4, back on 8
    assert [(f, out) for f, out, *_ in tracks[("person", 2)]] == [(0, False), (2, False), (4, True), (8, False),
                                                                  (10, False)]


# ------------------------------------------------------------------------------------- Label Studio
def test_labelstudio_tasks_decode_with_label_studios_decoder(output):
    brush = pytest.importorskip("label_studio_converter.brush")
    folder = export_all(output, ["labelstudio"], options={"labelstudio": {"image_root": "/data/local-files/?d=f/"}})[
        "labelstudio"]
    tasks = json.load(open(os.path.join(folder, "clip.json")))
    assert len(tasks) == T
    config = ET.parse(os.path.join(folder, "label_config.xml")).getroot()
    names = {lab.attrib["value"] for lab in config.iter("Label")}
    assert names == {"car", "object", "person"}
    brushes = config.find("BrushLabels")
    for task in tasks:
        t = task["data"]["frame_index"]
        assert task["data"]["image"] == f"/data/local-files/?d=f/clip/{t:05d}.jpg"
        (pred,) = task["predictions"]
        assert {r["meta"]["object_id"] for r in pred["result"]} == {o for o in (1, 2, 7) if _present(o, t)}
        for r in pred["result"]:
            assert r["from_name"] == brushes.attrib["name"] and r["to_name"] == brushes.attrib["toName"]
            assert r["type"] == "brushlabels" and r["value"]["format"] == "rle"
            assert (r["original_width"], r["original_height"]) == (W, H)
            assert r["value"]["brushlabels"][0] in names
            rgba = np.asarray(brush.decode_rle(r["value"]["rle"])).reshape(H, W, 4)
            np.testing.assert_array_equal(rgba[:, :, 3] > 0, _mask(r["meta"]["object_id"], t))


def test_labelstudio_strided_run_has_tasks_for_labelled_frames_only(strided):
    pytest.importorskip("label_studio_converter.brush")
    folder = export_all(strided, ["labelstudio"], options={"labelstudio": {"as_annotations": True}})["labelstudio"]
    tasks = json.load(open(os.path.join(folder, "clip.json")))
    assert [t["data"]["frame_index"] for t in tasks] == list(range(0, T, 2))
    assert all("annotations" in t and "predictions" not in t for t in tasks)


# ------------------------------------------------------------------------------------- stride
def test_strided_run_is_not_exported_as_empty_frames(strided):
    from pycocotools.coco import COCO

    paths = export_all(strided, ["coco", "ytvis", "davis"])
    coco = COCO(os.path.join(paths["coco"], "clip.json"))
    assert sorted(i["frame_index"] for i in coco.imgs.values()) == list(range(0, T, 2))
    yt = json.load(open(paths["ytvis"]))
    (v,) = yt["videos"]
    assert v["length"] == T // 2 and v["frame_indices"] == list(range(0, T, 2))
    assert v["file_names"][1] == "clip/00002.jpg"
    for a in yt["annotations"]:
        assert len(a["segmentations"]) == T // 2
        for k, seg in enumerate(a["segmentations"]):
            if seg is not None:
                np.testing.assert_array_equal(_decoded(seg), _mask(a["object_id"], 2 * k))
    pngs = sorted(os.listdir(os.path.join(paths["davis"], "clip")))
    assert pngs == [f"{t:05d}.png" for t in range(0, T, 2)]


def test_version_1_masks_without_label_column_still_export(tmp_path, video):
    import pyarrow as pa

    out = _output(tmp_path / "old", video, 1)
    path = os.path.join(out, "masks", "video_id=clip", "part-0.parquet")
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["label"]).replace_schema_metadata(
        {"hqseg.schema_version": "1", "hqseg.meta": json.dumps({"video": video})}), path)
    assert "label" not in pq.read_schema(path).names and isinstance(table, pa.Table)
    paths = export_all(out, ["coco", "ytvis"])
    data = json.load(open(os.path.join(paths["coco"], "clip.json")))
    assert data["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert {a["category_id"] for a in data["annotations"]} == {1}


def test_cli_exports_every_tool_format(output, capsys):
    pytest.importorskip("label_studio_converter.brush")
    from hqseg_ray.cli import main

    rc = main(["export", output, "--format", "cvat,labelstudio", "--format", "coco-merged",
               "--image-root", "http://127.0.0.1:8081/frames/", "--as-annotations"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert all(f in printed for f in ("cvat", "labelstudio", "coco-merged"))
    tasks = json.load(open(os.path.join(output, "exports", "labelstudio", "clip.json")))
    assert tasks[0]["data"]["image"] == "http://127.0.0.1:8081/frames/clip/00000.jpg" and "annotations" in tasks[0]
    assert main(["export", output, "--format", "cvta"]) == 2
    assert "unknown export format(s) ['cvta']" in capsys.readouterr().err


def test_labelstudio_rle_is_byte_identical_to_label_studios_encoder():
    brush = pytest.importorskip("label_studio_converter.brush")
    from hqseg_ray.export.labelstudio import mask_to_ls_rle

    rng = np.random.default_rng(1)
    cases = [np.zeros((5, 7), bool), np.ones((300, 300), bool), np.ones((200, 400), bool),  # a run > 65536 bytes
             rng.random((31, 17)) < 0.5, rng.random((64, 64)) < 0.02, _mask(2, 3), _mask(1, 0)]
    for m in cases:
        assert mask_to_ls_rle(m) == [int(v) for v in brush.mask2rle(m.astype(np.uint8) * 255)]
