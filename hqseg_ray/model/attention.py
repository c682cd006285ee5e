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
