"""The exports read back by the readers that cannot share the project's venv (their pins clash):
Datumaro (CVAT's COCO reader) and FiftyOne. Each runs from its own interpreter, named by
HQSEG_DATUMARO_PYTHON / HQSEG_FIFTYONE_PYTHON (.ci/run builds both; skipped when unset)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from hqseg_ray.export.formats import export_all
from tests.export.test_tool_imports import LABELS, T, _mask, _present, output, video  # noqa: F401 (fixtures)


_DATUMARO_CHECK = r"""
import json, sys
import numpy as np
from datumaro.components.annotation import AnnotationType
from datumaro.components.dataset import Dataset
ds = Dataset.import_from(sys.argv[1], "coco_instances")
cats = ds.categories()[AnnotationType.label]
out = []
for item in ds:
    for a in item.annotations:
        if a.type == AnnotationType.mask:
            out.append({"item": item.id, "label": cats.items[a.label].name, "attributes": dict(a.attributes),
                        "pixels": np.flatnonzero(np.asarray(a.image).reshape(-1)).tolist()})
print(json.dumps(out))
"""


def test_cvat_coco_through_datumaro(output, tmp_path):
    """CVAT imports COCO through Datumaro (then makes a shape of each mask). Datumaro's
    pins clash with this project's, so it runs from its own interpreter: set
    HQSEG_DATUMARO_PYTHON to a Python with datumaro installed (skipped otherwise)."""
    import shutil
    import subprocess

    python = os.environ.get("HQSEG_DATUMARO_PYTHON")
    if not python:
        pytest.skip("HQSEG_DATUMARO_PYTHON is not set (a Python with datumaro; it cannot share this venv)")
    folder = export_all(output, ["cvat"])["cvat"]
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "images" / "default").mkdir(parents=True)
    shutil.copy(os.path.join(folder, "clip.coco.json"), root / "annotations" / "instances_default.json")
    res = subprocess.run([python, "-c", _DATUMARO_CHECK, str(root)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    masks = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(masks) == sum(_present(o, t) for o in (1, 2, 7) for t in range(T))
    for m in masks:
        t = int(m["item"][len("frame_"):])  # CVAT's fallback match for video tasks: frame_<n>
        oid = m["attributes"]["object_id"]
        assert "track_id" not in m["attributes"] and "keyframe" not in m["attributes"]  # shapes, not a track
        assert m["label"] == LABELS.get(oid, "object")
        assert m["pixels"] == np.flatnonzero(_mask(oid, t).reshape(-1)).tolist()


_FIFTYONE_CHECK = r"""
import json, sys
import fiftyone as fo
ds = fo.Dataset.from_dir(dataset_type=fo.types.COCODetectionDataset, data_path=sys.argv[1],
                         labels_path=sys.argv[2], label_types=["segmentations"], include_id=True)
fields = [n for n, f in ds.get_field_schema().items()
          if getattr(f, "document_type", None) is fo.Detections]
out = []
for s in ds:
    dets = s[fields[0]].detections if s[fields[0]] else []
    out.append({"file": s.filepath, "dets": [{"label": d.label, "object_id": d["object_id"],
                                              "pixels": int(d.mask.sum())} for d in dets]})
print(json.dumps(out))
"""


@pytest.fixture()
def fiftyone_env(tmp_path):
    """Environment for the FiftyOne interpreter: a MongoDB started here on 127.0.0.1 from
    HQSEG_MONGOD (a mongod binary) unless FIFTYONE_DATABASE_URI names one; stopped afterwards."""
    import socket
    import subprocess
    import time

    env = dict(os.environ, FIFTYONE_DO_NOT_TRACK="true", FIFTYONE_DATABASE_VALIDATION="false")
    mongod = os.environ.get("HQSEG_MONGOD")
    if os.environ.get("FIFTYONE_DATABASE_URI") or not mongod:
        yield env
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "mongo").mkdir()
    proc = subprocess.Popen([mongod, "--dbpath", str(tmp_path / "mongo"), "--bind_ip", "127.0.0.1",
                             "--port", str(port), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mongod {mongod!r} did not start on 127.0.0.1:{port}")
                time.sleep(0.2)
        yield dict(env, FIFTYONE_DATABASE_URI=f"mongodb://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_coco_loads_in_fiftyone_as_documented(output, video, tmp_path, fiftyone_env):
    """docs/formats.md's FiftyOne loader on the ``coco`` export. FiftyOne (and its MongoDB) cannot
    share this venv: set HQSEG_FIFTYONE_PYTHON to a Python with fiftyone and pycocotools, and
    HQSEG_MONGOD to a mongod when FiftyOne cannot start its own (skipped without the former)."""
    import subprocess

    from PIL import Image

    from hqseg_ray.video import read_frames

    python = os.environ.get("HQSEG_FIFTYONE_PYTHON")
    if not python:
        pytest.skip("HQSEG_FIFTYONE_PYTHON is not set (a Python with fiftyone; it cannot share this venv)")
    folder = export_all(output, ["coco"])["coco"]
    frames = read_frames(video, 0, T)[0]
    data = tmp_path / "JPEGImages"
    (data / "clip").mkdir(parents=True)
    for t, f in enumerate(frames):  # extracted as the docs say: <video_id>/00000.jpg
        Image.fromarray(f).save(data / "clip" / f"{t:05d}.jpg")
    res = subprocess.run([python, "-c", _FIFTYONE_CHECK, str(data), os.path.join(folder, "clip.json")],
                         capture_output=True, text=True, timeout=600, env=fiftyone_env)
    assert res.returncode == 0, res.stderr[-3000:]
    samples = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(samples) == T
    for s in samples:
        t = int(os.path.splitext(os.path.basename(s["file"]))[0])
        got = sorted((d["object_id"], d["label"], d["pixels"]) for d in s["dets"])
        want = sorted((o, LABELS.get(o, "object"), int(_mask(o, t).sum())) for o in (1, 2, 7) if _present(o, t))
        assert got == want, t
