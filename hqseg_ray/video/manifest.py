"""Reading prompt manifests: JSONL, JSON, Parquet, a folder or a glob of videos.

The row model (``ManifestRow``) and its validation live in :mod:`hqseg_ray.prompts`; this module
only finds and parses the rows (it lives here because it shares the URI handling of video input).
Use it through ``hqseg_ray.prompts.load_manifest``.
"""

from __future__ import annotations

import fnmatch as _fnmatch
import glob as _glob
import json as _json
import os as _os
from typing import Any, Iterator, Optional, Union

from pydantic import ValidationError as _ValidationError

from hqseg_ray.prompts import ManifestError, ManifestRow

from .source import IMAGE_EXTS as _IMAGE_EXTS
from .source import VideoError, file_kind, is_remote, local_path, natural_key, read_bytes, resolve_fs

# videos a folder or glob manifest picks up (raw streams like .h264 only when named explicitly)
_VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".mpg", ".mpeg",
               ".flv", ".wmv", ".3gp", ".gif")


def iter_manifest(source: Union[str, _os.PathLike, list], filesystem: Any = None) -> Iterator[ManifestRow]:
    """Rows of :func:`load_manifest` (the source is checked whole before the first row)."""
    if isinstance(source, (list, tuple)):
        raw = [(f"item {i}", r) for i, r in enumerate(source)]
        name, base = "manifest list", None
    else:
        name = str(source)
        raw, base = _read_source(name, filesystem)
    rows, errors, ids = [], [], {}
    for where, item in raw:
        if isinstance(item, ManifestRow):
            rows.append(item)
        else:
            try:
                if isinstance(item, dict) and isinstance(item.get("prompts"), str):
                    item = dict(item, prompts=_json.loads(item["prompts"]))
                if isinstance(item, dict) and item.get("prompts") is None and "prompts" in item:
                    item = dict(item, prompts=[])
                if isinstance(item, dict) and isinstance(item.get("labels"), str):  # Parquet: a JSON string
                    item = dict(item, labels=_json.loads(item["labels"]))
                if isinstance(item, dict) and isinstance(item.get("labels"), list):  # Parquet: a map column
                    item = dict(item, labels=dict(item["labels"]))
                row = ManifestRow.model_validate(item)
            except _ValidationError as exc:
                errors += [f"{name} {where}: {'.'.join(str(x) for x in e['loc']) or 'row'}: {e['msg']}"
                           for e in exc.errors()]
                continue
            except ValueError as exc:  # bad JSON in a prompts or labels string
                field = "prompts" if isinstance(item, dict) and isinstance(item.get("prompts"), str) else "labels"
                errors.append(f"{name} {where}: {field} is not valid JSON: {exc}")
                continue
            if base is not None and "://" not in row.video and not _os.path.isabs(row.video):
                row.video = _os.path.join(base, row.video)
            rows.append(row)
        ids.setdefault(rows[-1].video_id, []).append(where)
    errors += [f"{name}: video_id {vid!r} is used by {', '.join(w)}; give each video its own id"
               for vid, w in ids.items() if len(w) > 1]
    if errors:
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        raise ManifestError(f"{len(errors)} problem(s) in manifest {name!r}:\n  " + "\n  ".join(errors[:50]) + more)
    yield from rows


def _read_source(name: str, filesystem: Any) -> tuple[list, Optional[str]]:
    """``([(where, row dict)], base folder for relative paths)``."""
    try:
        return _read_source_unchecked(name, filesystem)
    except VideoError as exc:  # the shared URI helpers speak of videos; this input is a manifest
        raise ManifestError(f"manifest {name!r}: {exc.reason}") from exc


def _read_source_unchecked(name: str, filesystem: Any) -> tuple[list, Optional[str]]:
    lower = name.lower()
    if any(c in name for c in "*?["):
        return [(f"match {v!r}", {"video": v}) for v in _glob_videos(name, filesystem)], None
    kind = file_kind(name, filesystem)
    if kind == "missing":
        raise ManifestError(f"manifest {name!r} does not exist")
    remote = is_remote(name) or filesystem is not None
    base = None if remote else _os.path.dirname(_os.path.abspath(local_path(name)))
    if kind == "dir":
        return [(f"entry {v!r}", {"video": v}) for v in _folder_videos(name, filesystem)], None
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            if remote:
                fs, path = resolve_fs(name, filesystem)
                table = pq.read_table(path, filesystem=fs)
            else:
                table = pq.read_table(local_path(name))
        except Exception as exc:
            raise ManifestError(f"manifest {name!r} is not a readable Parquet file: {exc}") from exc
        return [(f"row {i}", r) for i, r in enumerate(table.to_pylist())], base
    try:
        text = read_bytes(name, filesystem).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {name!r} is not UTF-8 text: {exc}") from exc
    if lower.endswith(".json"):
        try:
            data = _json.loads(text)
        except ValueError as exc:
            raise ManifestError(f"manifest {name!r}: invalid JSON: {exc}") from exc
        data = data if isinstance(data, list) else [data]
        return [(f"item {i}", r) for i, r in enumerate(data)], base
    out, bad = [], []
    for ln, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((f"line {ln}", _json.loads(line)))
        except ValueError as exc:
            bad.append(f"{name} line {ln}: invalid JSON: {exc}")
    if bad:
        raise ManifestError(f"{len(bad)} problem(s) in manifest {name!r}:\n  " + "\n  ".join(bad[:50]))
    return out, base


def _is_frame_folder(path: str) -> bool:
    try:
        return any(n.lower().endswith(_IMAGE_EXTS) for n in _os.listdir(path))
    except OSError:
        return False


def _folder_videos(name: str, filesystem: Any) -> list[str]:
    """Videos and frame folders inside a folder; the folder itself if it holds only frames."""
    if is_remote(name) or filesystem is not None:
        import pyarrow.fs as pafs

        fs, path = resolve_fs(name, filesystem)
        scheme = name.split("://", 1)[0] + "://" if "://" in name else ""
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        vids = [scheme + i.path for i in infos if i.type == pafs.FileType.File and i.path.lower().endswith(_VIDEO_EXTS)]
        return sorted(vids, key=natural_key)
    root = local_path(name)
    entries = sorted(_os.listdir(root), key=natural_key)
    vids = [_os.path.join(root, e) for e in entries
            if (e.lower().endswith(_VIDEO_EXTS) and _os.path.isfile(_os.path.join(root, e)))
            or _is_frame_folder(_os.path.join(root, e))]
    if not vids and _is_frame_folder(root):
        vids = [root]
    if not vids:
        raise ManifestError(f"folder {name!r} holds no videos ({', '.join(_VIDEO_EXTS)}) and no frame folders")
    return vids


def _glob_videos(pattern: str, filesystem: Any) -> list[str]:
    if is_remote(pattern) or filesystem is not None:
        import pyarrow.fs as pafs

        folder, leaf = pattern.rsplit("/", 1)
        if any(c in folder for c in "*?["):
            raise ManifestError(f"manifest glob {pattern!r}: remote globs may use wildcards in the file name only")
        fs, path = resolve_fs(folder, filesystem)
        scheme = pattern.split("://", 1)[0] + "://" if "://" in pattern else ""
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        found = [scheme + i.path for i in infos if _fnmatch.fnmatch(i.path.rsplit("/", 1)[-1], leaf)]
    else:
        found = [p for p in _glob.glob(local_path(pattern), recursive=True)
                 if (_os.path.isfile(p) and p.lower().endswith(_VIDEO_EXTS)) or _is_frame_folder(p)]
    if not found:
        raise ManifestError(f"manifest glob {pattern!r} matches no videos")
    return sorted(found, key=natural_key)
