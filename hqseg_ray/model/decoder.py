"""SAM-HQ computations shared by the engine and the toy model's training.

Image preprocessing as ``Sam.preprocess`` does it, HQ-SAM's per-frame feature fusion, and the mask
decoder with each prompt paired to its own frame.

``MaskDecoderHQ.forward`` assumes one image per call. These functions are the same computation
with row ``i`` of the image embeddings / HQ features belonging to prompt ``i``, so prompts on
different frames share one call (tested equal to ``SamPredictor`` in tests/model/test_engine.py).
"""

from __future__ import annotations

import torch


def preprocess(sam, images: torch.Tensor, sizes) -> torch.Tensor:
    """uint8 ``[B, S, S, 3]`` (content top-left, ``sizes`` = its (h, w) per image) -> the encoder's
    float ``[B, 3, S, S]`` input: normalised, then padding zeroed exactly as ``Sam.preprocess``."""
    x = images.permute(0, 3, 1, 2).float()
    x = (x - sam.pixel_mean) / sam.pixel_std
    for j, (h, w) in enumerate(sizes):
        x[j, :, h:, :] = 0
        x[j, :, :, w:] = 0
    return x


def hq_features(sam, image_embeddings: torch.Tensor, interm0: torch.Tensor) -> torch.Tensor:
    """HQ-SAM's fused feature map ``[B, C/8, 4h, 4w]`` from the encoder output ``[B, C, h, w]`` and the
    first global-attention block's output ``[B, h, w, Cvit]``. Depends only on the frame."""
    dec = sam.mask_decoder
    return dec.embedding_encoder(image_embeddings) + dec.compress_vit_feat(interm0.permute(0, 3, 1, 2))


def paired_decoder_outputs(sam, img: torch.Tensor, hq_feat: torch.Tensor, sparse: torch.Tensor,
                           dense: torch.Tensor, dense_pe: torch.Tensor):
    """All decoder outputs for B prompts, row i of ``img`` / ``hq_feat`` paired with prompt i.

    Args:
        img: ``[B, C, h, w]`` image embeddings; hq_feat: ``[B, C/8, 4h, 4w]`` (or batch 1 each: one
            frame shared by all B prompts, broadcast);
        sparse / dense: the prompt encoder's outputs for the B prompts; dense_pe: ``[1, C, h, w]``.

    Returns:
        sam_logits ``[B, 4, 4h, 4w]`` (SAM's single-mask token, then its three multimask tokens),
        hq_logits ``[B, 1, 4h, 4w]``, iou_pred ``[B, 4]`` (for SAM's four tokens; the HQ token has none).
    """
    dec = sam.mask_decoder
    b = sparse.shape[0]
    out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight, dec.hf_token.weight], dim=0)
    tokens = torch.cat((out_tokens.unsqueeze(0).expand(b, -1, -1), sparse.to(out_tokens.dtype)), dim=1)
    src = img + dense
    pos = dense_pe.expand(b, -1, -1, -1)
    _, c, h, w = src.shape
    hs, src = dec.transformer(src, pos, tokens)
    n_tok = dec.num_mask_tokens  # SAM's 4 + the HQ token
    mask_out = hs[:, 1:1 + n_tok, :]
    src = src.transpose(1, 2).reshape(b, c, h, w)
    up_sam = dec.output_upscaling(src)
    up_hq = dec.embedding_maskfeature(up_sam) + hq_feat
    hyper = [dec.output_hypernetworks_mlps[i](mask_out[:, i, :]) for i in range(n_tok - 1)]
    hyper.append(dec.hf_mlp(mask_out[:, n_tok - 1, :]))
    hyper_in = torch.stack(hyper, dim=1)
    _, c2, h2, w2 = up_sam.shape
    m_sam = (hyper_in[:, : n_tok - 1] @ up_sam.view(b, c2, h2 * w2)).view(b, -1, h2, w2)
    m_hq = (hyper_in[:, n_tok - 1:] @ up_hq.view(b, c2, h2 * w2)).view(b, -1, h2, w2)
    return m_sam, m_hq, dec.iou_prediction_head(hs[:, 0, :])


def select_mask(m_sam: torch.Tensor, m_hq: torch.Tensor, iou_pred: torch.Tensor, multimask,
                hq_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``MaskDecoderHQ.forward``'s output selection -> (logits ``[B, 1, H, W]``, iou ``[B, 1]``).

    multimask: True: SAM's best of its three masks by predicted IoU (still one mask); ``"all"``:
    all three (logits ``[B, 3, H, W]``, iou ``[B, 3]``), as SAM's automatic mask generator keeps
    them; hq_only: the HQ token's mask alone, else SAM's mask plus the HQ mask."""
    b = m_sam.shape[0]
    if multimask == "all":
        return (m_hq.expand(-1, 3, -1, -1) if hq_only else m_sam[:, 1:] + m_hq), iou_pred[:, 1:]
    if multimask:
        best_iou, best = torch.max(iou_pred[:, 1:], dim=1)
        iou_sel = best_iou.unsqueeze(1)
        sam_sel = m_sam[:, 1:][torch.arange(b, device=m_sam.device), best].unsqueeze(1)
    else:
        iou_sel = iou_pred[:, 0:1]
        sam_sel = m_sam[:, 0:1]
    return (m_hq if hq_only else sam_sel + m_hq), iou_sel
