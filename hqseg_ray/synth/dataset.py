"""Write synthetic videos to disk: MP4 + DAVIS-layout ground truth + prompt manifests.

Layout under OUTDIR::

    videos/<video_id>.mp4                  H.264, yuv420p, even size
    Annotations/<video_id>/00000.png       palette PNG, pixel value = object id (0 = background)
    JPEGImages/<video_id>/00000.jpg        (optional) the frames
    manifest.jsonl                         one row per video, frame-0 box per object
    manifest_keyframes.jsonl               boxes every ``keyframe_every`` frames (visible objects)
    objects.json                           {video_id: {object_id: shape}}
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from hqseg_ray.synth.generate import Video, generate_video

logger = logging.getLogger(__name__)


def _davis_palette() -> list[int]:
    """The DAVIS / PASCAL VOC colour map (256 entries, flat RGB list)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


DAVIS_PALETTE = _davis_palette()


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 24, crf: int = 16) -> Path:
    """``[T, H, W, 3]`` uint8 RGB (H, W even) -> H.264 yuv420p MP4, written atomically."""
    import av

    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs an even frame size, got {w}x{h}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def write_annotation(idmap: np.ndarray, path: str | Path) -> None:
    from PIL import Image

    im = Image.fromarray(idmap.astype(np.uint8), mode="P")
    im.putpalette(DAVIS_PALETTE)
    im.save(path)


def keyframe_prompts(video: Video, every: int = 16, min_area: int = 30) -> list[dict]:
    """Box prompts on frames 0, every, 2*every, ... for each object visible there."""
    out = []
    for t in range(0, len(video.frames), every):
        for oid in video.objects:
            box = video.box(t, oid, min_area)
            if box is not None:
                out.append({"object_id": oid, "frame": t, "box": box})
    return out


def write_video(video: Video, outdir: str | Path, fps: int = 24, jpeg: bool = False,
                keyframe_every: int = 16) -> tuple[dict, dict]:
    """Write one clip; returns its (manifest row, keyframe manifest row)."""
    outdir = Path(outdir)
    vid = video.video_id
    mp4 = write_mp4(video.frames, outdir / "videos" / f"{vid}.mp4", fps=fps)
    ann_dir = outdir / "Annotations" / vid
    ann_dir.mkdir(parents=True, exist_ok=True)
    for t, idmap in enumerate(video.annotations):
        write_annotation(idmap, ann_dir / f"{t:05d}.png")
    if jpeg:
        import cv2

        jdir = outdir / "JPEGImages" / vid
        jdir.mkdir(parents=True, exist_ok=True)
        for t, f in enumerate(video.frames):
            cv2.imwrite(str(jdir / f"{t:05d}.jpg"), f[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    first = [{"object_id": oid, "frame": 0, "box": video.box(0, oid)} for oid in video.objects]
    row = {"video": str(mp4.resolve()), "video_id": vid, "prompts": first}
    krow = {"video": str(mp4.resolve()), "video_id": vid, "prompts": keyframe_prompts(video, keyframe_every)}
    return row, krow


def video_seed(seed: int, index: int) -> int:
    """Seed of clip ``index`` of a dataset generated with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_dataset(outdir: str | Path, videos: int = 4, frames: int = 48, seed: int = 0,
                  size: tuple[int, int] = (240, 320), fps: int = 24, jpeg: bool = False,
                  keyframe_every: int = 16, n_objects: tuple[int, int] = (1, 6)) -> Path:
    """Generate ``videos`` clips of ``frames`` frames at ``size`` = (H, W) and write them.

    Returns the path of ``manifest.jsonl``. Deterministic in (seed, videos, frames, size).
    """
    h, w = size
    if h % 2 or w % 2:
        raise ValueError(f"--size must be even for H.264 yuv420p, got {w}x{h}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rows, krows, objects = [], [], {}
    for i in range(videos):
        vid = f"synth_s{seed}_{i:03d}"
        video = generate_video(video_seed(seed, i), frames=frames, size=size, n_objects=n_objects, video_id=vid)
        row, krow = write_video(video, outdir, fps=fps, jpeg=jpeg, keyframe_every=keyframe_every)
        rows.append(row)
        krows.append(krow)
        objects[vid] = {str(k): v for k, v in video.objects.items()}
        logger.info("wrote %s: %d frames, %d objects", vid, frames, len(video.objects))
    manifest = outdir / "manifest.jsonl"
    for path, data in ((manifest, rows), (outdir / "manifest_keyframes.jsonl", krows)):
        with open(path, "w") as f:
            for r in data:
                f.write(json.dumps(r) + "\n")
    (outdir / "objects.json").write_text(json.dumps(objects, indent=1))
    return manifest


class SynthCommand:
    """``hqseg synth OUTDIR --videos N --frames T --seed S [--size WxH]``."""

    def add_arguments(self, p) -> None:
        p.add_argument("outdir", help="output folder (created)")
        p.add_argument("--videos", type=int, default=4, help="number of clips")
        p.add_argument("--frames", type=int, default=48, help="frames per clip")
        p.add_argument("--seed", type=int, default=0, help="dataset seed (clips are a pure function of it)")
        p.add_argument("--size", default="320x240", help="frame size WxH (even numbers)")
        p.add_argument("--fps", type=int, default=24)
        p.add_argument("--jpeg", action="store_true", help="also write DAVIS JPEGImages/")
        p.add_argument("--keyframe-every", type=int, default=16, help="box prompts every N frames in manifest_keyframes.jsonl")

    def run(self, args) -> int:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise ValueError(f"--size must look like 320x240, got {args.size!r}") from None
        manifest = write_dataset(args.outdir, args.videos, args.frames, args.seed, (h, w), args.fps,
                                 args.jpeg, args.keyframe_every)
        print(f"wrote {args.videos} synthetic videos ({args.frames} frames, {w}x{h}) and {manifest}")
        return 0
