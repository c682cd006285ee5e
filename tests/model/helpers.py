"""Small random-weight SAM-HQ models for engine tests (fast on a 2-core CPU)."""

import torch

from hqseg_ray.model.registry import ViTSpec, build_vit_sam

SMALL_SPEC = ViTSpec(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,), image_size=256,
                     patch_size=16, window_size=4, prompt_embed_dim=64, decoder_mlp_dim=128,
                     decoder_num_heads=4, iou_head_hidden_dim=64)


def small_sam(seed: int = 0, spec: ViTSpec = SMALL_SPEC):
    """A randomly initialised small ViT SAM-HQ, with non-zero relative positions."""
    torch.manual_seed(seed)
    sam = build_vit_sam(spec)
    with torch.no_grad():
        for name, p in sam.named_parameters():
            if "rel_pos" in name:
                p.normal_(0, 0.5)
    return sam.eval()
