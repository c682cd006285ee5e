"""SegEngine: batched SAM-HQ image encoding and batched, frame-paired prompt decoding.

The engine knows nothing about video or Ray. ``encode`` turns uint8 RGB frames into
:class:`FrameEmbeddings`; ``decode`` turns any number of :class:`~hqseg_ray.prompts.Prompt`
over any of those frames into masks, in prompt order.

Why not ``MaskDecoderHQ.forward``: it assumes one image per call (it repeats the image
embedding by the number of prompts and ``hq_features.repeat(b, ...)``). ``_decode_batch`` is the
same computation with the image embedding and HQ features *gathered per prompt*, so prompts on
different frames share one call. The HQ features (``embedding_encoder(emb) +
compress_vit_feat(interm)``) depend only on the frame, so they are computed once at encode time
and cached instead of the (larger) ViT intermediate features.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hqseg_ray.config import ModelConfig
from hqseg_ray.model.decoder import hq_features, paired_decoder_outputs, preprocess, select_mask
from hqseg_ray.model.gpu import apply_tf32, resolve_device
from hqseg_ray.prompts import Prompt, check_prompts

logger = logging.getLogger(__name__)


@dataclass
class FrameEmbeddings:
    """Encoded frames.

    Attributes:
        image_embeddings: ``[N, C, h, w]`` float, the encoder's output (C = prompt dim).
        hq_features: ``[N, C/8, 4h, 4w]`` float, HQ-SAM's fused early/late features.
        original_sizes: (H, W) of each frame as given by the caller.
        input_sizes: (H, W) of each frame after resizing the long side to the model's input size.
    """

    image_embeddings: torch.Tensor
    hq_features: torch.Tensor
    original_sizes: list[tuple[int, int]]
    input_sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return int(self.image_embeddings.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.image_embeddings.element_size() * self.image_embeddings.nelement()
                   + self.hq_features.element_size() * self.hq_features.nelement())

    def select(self, indices: Sequence[int]) -> "FrameEmbeddings":
        idx = list(indices)
        t = torch.as_tensor(idx, dtype=torch.long, device=self.image_embeddings.device)
        return FrameEmbeddings(self.image_embeddings.index_select(0, t), self.hq_features.index_select(0, t),
                               [self.original_sizes[i] for i in idx], [self.input_sizes[i] for i in idx])

    @staticmethod
    def concat(parts: Sequence["FrameEmbeddings"]) -> "FrameEmbeddings":
        if not parts:
            raise ValueError("FrameEmbeddings.concat needs at least one part")
        return FrameEmbeddings(
            torch.cat([p.image_embeddings for p in parts]), torch.cat([p.hq_features for p in parts]),
            [s for p in parts for s in p.original_sizes], [s for p in parts for s in p.input_sizes])

    def to(self, device) -> "FrameEmbeddings":
        return FrameEmbeddings(self.image_embeddings.to(device), self.hq_features.to(device),
                               list(self.original_sizes), list(self.input_sizes))


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """Size after resizing the long side to ``long_side`` (SAM's ResizeLongestSide rule)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resize_longest_side(frame: np.ndarray, long_side: int) -> np.ndarray:
    """``[H, W, 3]`` uint8 -> resized so that max(H, W) == long_side, exactly as SamPredictor does
    (torchvision's PIL bilinear resize), so masks match the reference."""
    from torchvision.transforms.functional import resize, to_pil_image

    h, w = frame.shape[:2]
    if max(h, w) == long_side:
        return frame
    return np.asarray(resize(to_pil_image(frame), list(preprocess_shape(h, w, long_side))))


class SegEngine:
    """SAM-HQ with batched encode and frame-paired batched decode."""

    # decode prompts that share one frame against views of its embedding instead of gathering a
    # copy per prompt (8 MB of HQ features per prompt at 1024 px); hqseg bench turns it off for A/B
    single_frame_views: bool = True

    def __init__(self, sam: torch.nn.Module, config: Optional[ModelConfig] = None,
                 info: Optional[dict] = None) -> None:
        self.config = config or ModelConfig(type="vit_b", checkpoint=None, allow_random_init=True)
        self.info = info or {}
        self.device = resolve_device(self.config.device)  # fails fast when a GPU is required but unusable
        apply_tf32(self.device, self.config.tf32)
        self.sam = sam.eval().to(self.device)
        for p in self.sam.parameters():
            p.requires_grad_(False)
        self.image_size = int(self.sam.image_encoder.img_size)
        emb_h, emb_w = self.sam.prompt_encoder.image_embedding_size
        self.low_res_size = (4 * int(emb_h), 4 * int(emb_w))
        self._dense_pe = None
        if self.config.sdpa:
            from hqseg_ray.model.attention import enable_decoder_fast_path, enable_sdpa

            enable_sdpa(self.sam.image_encoder)
            enable_decoder_fast_path(self.sam.mask_decoder)
        self._encoder = self.sam.image_encoder
        if self.config.compile:
            self._encoder = torch.compile(self.sam.image_encoder)
        self.stats = {"encoded_frames": 0, "encode_calls": 0, "decoded_prompts": 0, "decode_calls": 0}

    # ---------------------------------------------------------------------------------------
    @classmethod
    def load(cls, config: ModelConfig) -> "SegEngine":
        from hqseg_ray.model.registry import load_model

        sam, info = load_model(config.type, config.checkpoint, config.checkpoint_sha256,
                               config.cache_dir, config.allow_random_init)
        return cls(sam, config, info)

    @property
    def label(self) -> str:
        """Human-readable model description (says 'toy' / 'random weights' where it applies)."""
        if self.info.get("random_init"):
            return f"{self.config.type} (RANDOM weights, speed tests only)"
        if self.config.type == "toy":
            return "toy (toy, trained on synthetic scenes)"
        return self.config.type

    def _autocast(self):
        dt = self.config.dtype
        if dt == "float32":
            return contextlib.nullcontext()
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16 if dt == "float16" else torch.bfloat16)
        if dt == "bfloat16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()  # float16 on CPU: run in float32

    @property
    def dense_pe(self) -> torch.Tensor:
        if self._dense_pe is None:
            with torch.inference_mode():
                self._dense_pe = self.sam.prompt_encoder.get_dense_pe()
        return self._dense_pe

    # ---------------------------------------------------------------------------------------
    def prepare_frames(self, frames) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Validate and resize frames -> ([N, S, S, 3] uint8 padded input, input sizes).

        Accepts a uint8 ``[N, H, W, 3]`` array or a list of ``[H, W, 3]`` uint8 arrays.
        """
        if isinstance(frames, np.ndarray):
            if frames.ndim == 3:
                raise ValueError(f"frames must be uint8 [N, H, W, 3]; got rank 3 shape {list(frames.shape)} "
                                 "(one image? wrap it: frames[None])")
            if frames.ndim != 4:
                raise ValueError(f"frames must be uint8 [N, H, W, 3], got rank {frames.ndim} shape {list(frames.shape)}")
            frame_list = list(frames)
        else:
            frame_list = list(frames)
        if len(frame_list) == 0:
            raise ValueError("frames is empty: nothing to encode")
        out = np.zeros((len(frame_list), self.image_size, self.image_size, 3), dtype=np.uint8)
        sizes = []
        for i, f in enumerate(frame_list):
            f = np.asarray(f)
            if f.dtype != np.uint8:
                raise ValueError(f"frame {i}: dtype must be uint8 (0..255 RGB), got {f.dtype}")
            if f.ndim != 3 or f.shape[2] != 3:
                raise ValueError(f"frame {i}: must be [H, W, 3] RGB, got shape {list(f.shape)}")
            if f.shape[0] < 1 or f.shape[1] < 1:
                raise ValueError(f"frame {i}: empty image of shape {list(f.shape)}")
            r = resize_longest_side(f, self.image_size)
            out[i, : r.shape[0], : r.shape[1]] = r
            sizes.append((int(r.shape[0]), int(r.shape[1])))
        return out, sizes

    @torch.inference_mode()
    def encode(self, frames, original_sizes: Optional[Sequence[tuple[int, int]]] = None) -> FrameEmbeddings:
        """Encode frames in batches of ``encode_batch``.

        Args:
            frames: uint8 RGB ``[N, H, W, 3]`` (or a list of ``[H, W, 3]``) of any size. Frames
                already resized (long side == model input size) may come with ``original_sizes``
                so that prompts and masks stay in original-frame pixels.
            original_sizes: (H, W) per frame of the frames *before* the caller resized them.
        """
        padded, input_sizes = self.prepare_frames(frames)
        if original_sizes is None:
            originals = [(int(np.asarray(f).shape[0]), int(np.asarray(f).shape[1])) for f in frames]
        else:
            originals = [(int(h), int(w)) for h, w in original_sizes]
            if len(originals) != len(input_sizes):
                raise ValueError(f"{len(originals)} original_sizes for {len(input_sizes)} frames")
        embs, hqs = [], []
        bs = self.config.encode_batch
        for start in range(0, len(padded), bs):
            x = torch.from_numpy(padded[start:start + bs]).to(self.device, non_blocking=True)
            x = preprocess(self.sam, x, input_sizes[start:start + bs])
            with self._autocast():
                emb, interm = self._encoder(x)
                hq = hq_features(self.sam, emb, interm[0])
            embs.append(emb.float())
            hqs.append(hq.float())
            self.stats["encode_calls"] += 1
        self.stats["encoded_frames"] += len(padded)
        return FrameEmbeddings(torch.cat(embs), torch.cat(hqs), originals, input_sizes)

    # ---------------------------------------------------------------------------------------
    def decode(
        self,
        embeddings: FrameEmbeddings,
        prompts: Sequence[Prompt],
        multimask: Optional[bool] = None,
        hq_token_only: Optional[bool] = None,
        return_logits: bool = False,
    ):
        """Decode prompts over encoded frames, ``decode_batch`` prompts per decoder call.

        Returns:
            masks: ``[P, H, W]`` bool at each prompt's frame's original size (a list of
                ``[H, W]`` arrays when the frames differ in size); float logits when
                ``return_logits``.
            scores: ``[P]`` float32 predicted IoU.
            low_res_logits: ``[P, h, w]`` float32 (h, w = ``self.low_res_size``), usable as the
                ``mask_input`` of a later prompt.
        """
        logits_lr, scores = self.decode_low_res(embeddings, prompts, multimask, hq_token_only)
        masks = self.postprocess(embeddings, [p.frame for p in prompts], logits_lr, return_logits)
        return masks, scores.cpu().numpy(), logits_lr.float().cpu().numpy()

    @torch.inference_mode()
    def decode_low_res(self, embeddings: FrameEmbeddings, prompts: Sequence[Prompt],
                       multimask: Optional[bool | str] = None,
                       hq_token_only: Optional[bool] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`decode` but returns only (low-res logits ``[P, h, w]``, scores ``[P]``) as
        tensors on the engine's device. ``multimask="all"``: SAM's three masks of every prompt
        (logits ``[P, 3, h, w]``, scores ``[P, 3]``), for automatic discovery."""
        prompts = list(prompts)
        if not prompts:
            h, w = self.low_res_size
            k = (3,) if multimask == "all" else ()
            return torch.zeros((0, *k, h, w), device=self.device), torch.zeros((0, *k), device=self.device)
        check_prompts(prompts, embeddings.original_sizes, self.low_res_size)
        multimask = self.config.multimask if multimask is None else multimask
        hq_only = self.config.hq_token_only if hq_token_only is None else hq_token_only
        emb = embeddings if embeddings.image_embeddings.device == self.device else embeddings.to(self.device)

        # group by structure (same point count / box / mask presence decode together), keep order
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(p.signature(), []).append(i)
        out_logits: list[Optional[torch.Tensor]] = [None] * len(prompts)
        out_scores: list[Optional[torch.Tensor]] = [None] * len(prompts)
        bs = self.config.decode_batch
        for idxs in groups.values():
            for s in range(0, len(idxs), bs):
                chunk = idxs[s:s + bs]
                lg, sc = self._decode_batch(emb, [prompts[i] for i in chunk], multimask, hq_only)
                for j, i in enumerate(chunk):
                    out_logits[i], out_scores[i] = lg[j], sc[j]
        return torch.stack(out_logits), torch.stack(out_scores)

    def _transform_coords(self, coords: np.ndarray, original: tuple[int, int],
                          input_size: tuple[int, int]) -> np.ndarray:
        (oh, ow), (nh, nw) = original, input_size
        c = coords.astype(np.float64).copy()
        c[..., 0] *= nw / ow
        c[..., 1] *= nh / oh
        return c

    def _decode_batch(self, emb: FrameEmbeddings, prompts: list[Prompt], multimask: bool,
                      hq_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.device
        frames = [int(p.frame) for p in prompts]
        points = boxes = masks = None
        if prompts[0].points is not None:
            pts = np.stack([self._transform_coords(p.points.reshape(-1, 2), emb.original_sizes[f], emb.input_sizes[f])
                            for p, f in zip(prompts, frames)])
            lab = np.stack([p.labels.reshape(-1) for p in prompts])
            points = (torch.as_tensor(pts, dtype=torch.float, device=dev),
                      torch.as_tensor(lab, dtype=torch.int, device=dev))
        if prompts[0].box is not None:
            bx = np.stack([self._transform_coords(p.box.reshape(2, 2), emb.original_sizes[f], emb.input_sizes[f]).reshape(4)
                           for p, f in zip(prompts, frames)])
            boxes = torch.as_tensor(bx, dtype=torch.float, device=dev)
        if prompts[0].mask_input is not None:
            mi = np.stack([p.mask_input.reshape(self.low_res_size) for p in prompts])[:, None]
            masks = torch.as_tensor(mi, dtype=torch.float, device=dev)
        if self.single_frame_views and len(set(frames)) == 1:
            # all prompts on one frame (the tracker's case): broadcast views, not B copies
            f = frames[0]
            img, hq_feat = emb.image_embeddings[f:f + 1], emb.hq_features[f:f + 1]
        else:
            fidx = torch.as_tensor(frames, dtype=torch.long, device=dev)
            img, hq_feat = emb.image_embeddings.index_select(0, fidx), emb.hq_features.index_select(0, fidx)
        with self._autocast():
            sparse, dense = self.sam.prompt_encoder(points=points, boxes=boxes, masks=masks)
            logits, iou = self._predict_paired(img, hq_feat, sparse, dense, multimask, hq_only)
        self.stats["decode_calls"] += 1
        self.stats["decoded_prompts"] += len(prompts)
        if multimask == "all":
            return logits.float(), iou.float()
        return logits[:, 0].float(), iou[:, 0].float()

    def _predict_paired(self, img: torch.Tensor, hq_feat: torch.Tensor, sparse: torch.Tensor,
                        dense: torch.Tensor, multimask: bool, hq_only: bool):
        """``MaskDecoderHQ.forward`` for B prompts with B paired images (row i with prompt i), or
        with one image (and its HQ features) shared by all B prompts, broadcast."""
        m_sam, m_hq, iou_pred = paired_decoder_outputs(self.sam, img, hq_feat, sparse, dense, self.dense_pe)
        return select_mask(m_sam, m_hq, iou_pred, multimask, hq_only)

    @torch.inference_mode()
    def postprocess(self, embeddings: FrameEmbeddings, frames: Sequence[int], logits_lr: torch.Tensor,
                    return_logits: bool = False):
        """Low-res logits ``[P, h, w]`` -> masks at each frame's original size (see ``decode``)."""
        p = len(frames)
        if p == 0:
            return np.zeros((0, 0, 0), dtype=np.float32 if return_logits else bool)
        results: list[Optional[np.ndarray]] = [None] * p
        by_frame: dict[int, list[int]] = {}
        for i, f in enumerate(frames):
            by_frame.setdefault(int(f), []).append(i)
        s = self.image_size
        for f, idxs in by_frame.items():
            ih, iw = embeddings.input_sizes[f]
            oh, ow = embeddings.original_sizes[f]
            x = logits_lr[idxs].unsqueeze(1).float()
            x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False)[..., :ih, :iw]
            x = F.interpolate(x, (oh, ow), mode="bilinear", align_corners=False)[:, 0]
            arr = x.cpu().numpy() if return_logits else (x > 0).cpu().numpy()
            for j, i in enumerate(idxs):
                results[i] = arr[j]
        shapes = {r.shape for r in results}
        return np.stack(results) if len(shapes) == 1 else results
