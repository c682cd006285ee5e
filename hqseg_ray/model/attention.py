"""A ``scaled_dot_product_attention`` path for SAM-HQ's ViT encoder.

The package's ``Attention.forward`` materialises ``q @ k^T``, adds the decomposed relative
position terms and applies softmax by hand. Here the relative-position terms become the
``attn_mask`` (an additive float bias) of ``torch.nn.functional.scaled_dot_product_attention``,
which lets torch pick a fused kernel. Results equal the original within float tolerance (tested).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


def _rel_pos_bias(attn_mod, q: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    from segment_anything_hq.modeling.image_encoder import get_rel_pos

    h, w = hw
    rh = get_rel_pos(h, h, attn_mod.rel_pos_h)
    rw = get_rel_pos(w, w, attn_mod.rel_pos_w)
    bh, _, dim = q.shape
    r_q = q.reshape(bh, h, w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
    return (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(bh, h * w, h * w)


def sdpa_attention_forward(self, x: torch.Tensor) -> torch.Tensor:
    """Drop-in for ``segment_anything_hq...image_encoder.Attention.forward``."""
    b, h, w, _ = x.shape
    qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # each [B, heads, HW, head_dim]
    mask = None
    if self.use_rel_pos:
        flat_q = q.reshape(b * self.num_heads, h * w, -1)
        mask = _rel_pos_bias(self, flat_q, (h, w)).view(b, self.num_heads, h * w, h * w).to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
    out = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return self.proj(out)


def enable_sdpa(encoder: torch.nn.Module) -> int:
    """Route every ViT ``Attention`` module of ``encoder`` through SDPA; returns how many."""
    from segment_anything_hq.modeling.image_encoder import Attention

    n = 0
    for mod in encoder.modules():
        if isinstance(mod, Attention):
            mod.forward = types.MethodType(sdpa_attention_forward, mod)
            n += 1
    return n


def disable_sdpa(encoder: torch.nn.Module) -> None:
    from segment_anything_hq.modeling.image_encoder import Attention

    for mod in encoder.modules():
        if isinstance(mod, Attention) and "forward" in mod.__dict__:
            del mod.forward


# ---------------------------------------------------------------------------------------------
# Mask decoder: the per-prompt part of decoding (the two-way transformer and, for HQ-SAM, 3x3
# convolutions with LayerNorm2d at 4x the embedding size: 256x256 for 1024-px models).
# Measured by `hqseg bench` (speed scenario, decoder A/B): about 2x faster per prompt on the
# CPU at 1024 px with all three; results equal within 1e-5.
# ---------------------------------------------------------------------------------------------

def decoder_attention_forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Drop-in for ``segment_anything_hq...transformer.Attention.forward`` (no mask, same scale)."""
    q = self._separate_heads(self.q_proj(q), self.num_heads)
    k = self._separate_heads(self.k_proj(k), self.num_heads)
    v = self._separate_heads(self.v_proj(v), self.num_heads)
    return self.out_proj(self._recombine_heads(F.scaled_dot_product_attention(q, k, v)))


def layer_norm_2d_forward(self, x: torch.Tensor) -> torch.Tensor:
    """Drop-in for ``LayerNorm2d.forward``: one fused ``layer_norm`` over the channels of an NHWC
    view instead of five elementwise passes; the output stays channels-last in memory, which the
    following convolution prefers."""
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


def enable_decoder_fast_path(decoder: torch.nn.Module) -> int:
    """SDPA in the decoder's attention, fused LayerNorm2d, channels-last convolution weights.
    Returns the number of modules patched."""
    from segment_anything_hq.modeling.common import LayerNorm2d
    from segment_anything_hq.modeling.transformer import Attention as DecoderAttention

    n = 0
    for mod in decoder.modules():
        if isinstance(mod, DecoderAttention):
            mod.forward = types.MethodType(decoder_attention_forward, mod)
            n += 1
        elif isinstance(mod, LayerNorm2d):
            mod.forward = types.MethodType(layer_norm_2d_forward, mod)
            n += 1
    decoder.to(memory_format=torch.channels_last)
    return n


def disable_decoder_fast_path(decoder: torch.nn.Module) -> None:
    from segment_anything_hq.modeling.common import LayerNorm2d
    from segment_anything_hq.modeling.transformer import Attention as DecoderAttention

    for mod in decoder.modules():
        if isinstance(mod, (DecoderAttention, LayerNorm2d)) and "forward" in mod.__dict__:
            del mod.forward
    decoder.to(memory_format=torch.contiguous_format)
