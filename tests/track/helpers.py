"""Test doubles for the tracker: an oracle engine that answers prompts from ground truth.

``OracleEngine`` has the parts of ``SegEngine``'s interface the tracker uses (``encode``,
``decode_low_res``, ``postprocess``, ``image_size``, ``low_res_size``, ``config``, ``stats``). A
prompt decodes to the ground-truth object that best fits it (under the first positive point, else
the object with most pixels inside the box), so tests of propagation, occlusion and stitching
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
        if not prompts:
            return torch.zeros((0, h, w)), torch.zeros((0,))
        return torch.stack(logits), torch.tensor(scores)

    postprocess = SegEngine.postprocess


def synthetic_video(seed: int = 1, frames: int = 24, size=(96, 128), n_objects=(2, 3), pan: bool = True):
    from hqseg_ray.synth import generate_video

    return generate_video(seed, frames=frames, size=size, n_objects=n_objects, pan=pan)


def frame0_prompts(video) -> list[dict]:
    return [{"object_id": o, "frame": 0, "box": video.box(0, o)} for o in video.objects]
