"""DeiT / ViT: timm's vision transformer (never pretrained, nothing is downloaded) plus a tiny variant.

``deit_tiny_patch16_224`` is timm's DeiT-tiny (patch 16, 192-dim, 12 blocks, 3 heads) built with
``pretrained=False``. ``tiny_deit`` is the same :class:`timm.models.vision_transformer.VisionTransformer`
class with patch size 8 on 64 px inputs (64 patches + class token), 4 blocks of width 96: linear patch
embedding, learned position embedding, pre-norm blocks (LayerNorm, multi-head softmax attention, GELU MLP),
class-token head. timm models already expose ``forward_features`` / ``forward_head(pre_logits=...)``.
"""

from __future__ import annotations

import timm
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ovdiv.models._registry import register_model

__all__ = ["VisionTransformer"]


@register_model(family="deit", description="DeiT-tiny patch 16 at 224 px (timm, never pretrained)")
def deit_tiny_patch16_224(*, num_classes: int = 1000, dropout: float = 0.0, drop_path: float = 0.1) -> nn.Module:
    """DeiT-tiny, patch 16, 224 px (timm; ``pretrained=False`` always, so nothing is downloaded).

    Args:
        num_classes: Number of logits.
        dropout: Dropout before the head (timm ``drop_rate``).
        drop_path: Stochastic depth rate (DeiT uses 0.1).
    """
    model: nn.Module = timm.create_model(
        "deit_tiny_patch16_224",
        pretrained=False,
        num_classes=num_classes,
        drop_rate=float(dropout),
        drop_path_rate=float(drop_path),
    )
    return model


@register_model(family="deit", input_size=(64, 64), tiny=True, description="tiny ViT (patch 8 at 64 px, 4 blocks)")
def tiny_deit(
    *,
    num_classes: int = 10,
    img_size: int = 64,
    patch_size: int = 8,
    embed_dim: int = 96,
    depth: int = 4,
    num_heads: int = 3,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
) -> VisionTransformer:
    """Tiny DeiT/ViT: patch 8 on 64 px, 4 pre-norm blocks of width 96 with 3 heads, class-token head."""
    if int(img_size) % int(patch_size):
        raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
    if int(embed_dim) % int(num_heads):
        raise ValueError(f"embed_dim {embed_dim} must be a multiple of num_heads {num_heads}")
    return VisionTransformer(
        img_size=int(img_size),
        patch_size=int(patch_size),
        num_classes=num_classes,
        embed_dim=int(embed_dim),
        depth=int(depth),
        num_heads=int(num_heads),
        mlp_ratio=float(mlp_ratio),
        drop_rate=float(dropout),
    )
