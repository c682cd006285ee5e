"""Test doubles for the tracker: an oracle engine that answers prompts from ground truth.

``OracleEngine`` has the parts of ``SegEngine``'s interface the tracker uses (``encode``,
``decode_low_res``, ``postprocess``, ``image_size``, ``low_res_size``, ``config``, ``stats``). A
prompt decodes to the ground-truth object that best fits it (under the first positive point, else
the one most covered by the mask input inside the box, else the one, mostly inside the box, whose
tight box fits the box best), so tests of propagation, occlusion and stitching
mechanics do not depend on a model's quality and run in milliseconds.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import torch

from hqseg_ray.model.engine import FrameEmbeddings, SegEngine
from hqseg_ray.track.motion import LowResGeometry


class OracleEngine:
    def __init__(self, annotations: np.ndarray, frames: np.ndarray, image_size: int = 256, low_res: int = 64):
        self.ann = annotations
        self.by_hash = {hashlib.sha1(f.tobytes()).hexdigest(): t for t, f in enumerate(frames)}
        self.image_size = image_size
        self.low_res_size = (low_res, low_res)
        self.config = SimpleNamespace(encode_batch=4, decode_batch=4, multimask=False)
        self.stats = {"encoded_frames": 0, "encode_calls": 0, "decoded_prompts": 0, "decode_calls": 0}
        self.geo = LowResGeometry(annotations.shape[1:], image_size, self.low_res_size)
        self.device = torch.device("cpu")

    def encode(self, frames, original_sizes=None):
        ids = [self.by_hash[hashlib.sha1(np.ascontiguousarray(f).tobytes()).hexdigest()] for f in frames]
        self.stats["encoded_frames"] += len(ids)
        self.stats["encode_calls"] += 1
        n = len(ids)
        size = tuple(self.ann.shape[1:])
        return FrameEmbeddings(torch.tensor(ids, dtype=torch.float32).view(n, 1, 1, 1), torch.zeros(n, 1, 1, 1),
                               [size] * n, [self.geo.input_size] * n)

    def _object_for(self, idmap: np.ndarray, p) -> int:
        if p.points is not None:
            for (x, y), lab in zip(p.points.reshape(-1, 2), p.labels.reshape(-1)):
                if lab == 1:
                    v = int(idmap[min(int(y), idmap.shape[0] - 1), min(int(x), idmap.shape[1] - 1)])
                    if v:
                        return v
        if p.mask_input is not None and p.box is not None:  # like SAM: the mask prompt says which object
            import torch.nn.functional as F

            lh, lw = self.low_res_size
            ih, iw = self.geo.input_size
            x = torch.from_numpy(p.mask_input.reshape(1, 1, lh, lw))
            x = F.interpolate(x, (self.image_size, self.image_size), mode="bilinear")[..., :ih, :iw]
            hint = F.interpolate(x, idmap.shape, mode="bilinear")[0, 0].numpy() > 0
            x1, y1, x2, y2 = [int(round(v)) for v in p.box]
            inside = np.zeros_like(hint)
            inside[max(0, y1):y2, max(0, x1):x2] = True
            ids, counts = np.unique(idmap[hint & inside & (idmap > 0)], return_counts=True)
            if len(ids):
                return int(ids[np.argmax(counts)])
        if p.box is not None:  # the object, mostly inside the box, whose tight box fits it best
            from hqseg_ray.masks import box_iou, mask_to_box

            x1, y1, x2, y2 = [int(round(v)) for v in p.box]
            crop = idmap[max(0, y1):y2, max(0, x1):x2]
            best, best_iou = 0, 0.0
            for i in np.unique(crop[crop > 0]):
                m = idmap == i
                if (crop == i).sum() < 0.5 * m.sum():
                    continue
                iou = float(box_iou(p.box, mask_to_box(m))[0, 0])
                if iou > best_iou:
                    best, best_iou = int(i), iou
            return best
        return 0

    def decode_low_res(self, embeddings, prompts, multimask=None, hq_token_only=None):
        self.stats["decode_calls"] += 1
        self.stats["decoded_prompts"] += len(prompts)
        logits, scores = [], []
        for p in prompts:
            t = int(embeddings.image_embeddings[p.frame].item())
            obj = self._object_for(self.ann[t], p)
            m = self.ann[t] == obj if obj else np.zeros(self.ann.shape[1:], bool)
            logits.append(torch.from_numpy(self.geo.mask_to_logits(m)))
            scores.append(0.95 if m.any() else 0.05)
        h, w = self.low_res_size
        k = (3,) if multimask == "all" else ()  # SAM's three masks per prompt: here three times the same
        if not prompts:
            return torch.zeros((0, *k, h, w)), torch.zeros((0, *k))
        lg, sc = torch.stack(logits), torch.tensor(scores)
        if k:
            return lg[:, None].expand(-1, 3, -1, -1), sc[:, None].expand(-1, 3)
        return lg, sc

    postprocess = SegEngine.postprocess


def synthetic_video(seed: int = 1, frames: int = 24, size=(96, 128), n_objects=(2, 3), pan: bool = True):
    from hqseg_ray.synth import generate_video

    return generate_video(seed, frames=frames, size=size, n_objects=n_objects, pan=pan)


def frame0_prompts(video) -> list[dict]:
    return [{"object_id": o, "frame": 0, "box": video.box(0, o)} for o in video.objects]


def crossing_video(frames: int = 30, size=(64, 96), hide=(12, 17)):
    """A small disc (object 1) moving left to right passes behind a large square (object 2) and is
    fully hidden on frames ``hide[0]..hide[1]`` (inclusive). Returns (frames, annotations)."""
    h, w = size
    rng = np.random.default_rng(0)
    bg = rng.integers(60, 120, (h, w, 3)).astype(np.uint8)
    out = np.zeros((frames, h, w, 3), np.uint8)
    ann = np.zeros((frames, h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    sq = (abs(xx - w // 2) < 14) & (abs(yy - h // 2) < 16)
    for t in range(frames):
        cx = 8 + t * (w - 16) / (frames - 1)
        disc = (xx - cx) ** 2 + (yy - h // 2) ** 2 <= 6 ** 2
        img = bg.copy()
        img[disc] = (220, 40, 40)
        img[sq] = (40, 40, 220)
        vis = disc & ~sq
        ann[t][vis] = 1
        ann[t][sq] = 2
        out[t] = img
    hidden = [t for t in range(frames) if not ann[t].__eq__(1).any()]
    assert hidden and hidden[0] <= hide[0] and hidden[-1] >= hide[1], hidden
    return out, ann
