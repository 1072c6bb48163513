"""The understanding encoder: a timm VisionTransformer laid out like the released SigLIP tower
(`vit_model.vision_tower.*`): no class token, learned absolute positions, final LayerNorm, no head."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from unixcxr.model.config import VisionConfig


def build_vit(cfg: VisionConfig) -> VisionTransformer:
    return VisionTransformer(
        img_size=cfg.image_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.width,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_dim / cfg.width,
        qkv_bias=True,
        class_token=False,
        global_pool="",
        num_classes=0,
        act_layer=cfg.act_layer,
        dynamic_img_size=False,
    )


class VisionEncoder(nn.Module):
    """images [N, 3, S, S] (normalised with the UniX mean/std) -> patch features [N, (S/p)^2, width]."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.vision_tower = build_vit(cfg)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        expected = (3, self.cfg.image_size, self.cfg.image_size)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(f"vision encoder expects images of shape [N, {expected}], got {list(images.shape)}")
        return self.vision_tower.forward_features(images)
