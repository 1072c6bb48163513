"""The understanding encoder: one of the registered image encoders (model/encoders.py), a timm
VisionTransformer laid out like the released SigLIP tower (`vit_model.vision_tower.*`) by default.
CPU recipes may use EfficientNet-Lite0, whose BatchNorms are frozen inside UniX (running statistics as
buffers), so train/eval mode never changes what it computes."""

from __future__ import annotations

import torch
from torch import nn

from unixcxr.model.config import VisionConfig
from unixcxr.model.encoders import ENCODERS, build_encoder


class VisionEncoder(nn.Module):
    """images [N, 3, S, S] (normalised with the config's mean/std) -> patch features [N, (S/p)^2, width].
    frozen_norms=False keeps a CNN's BatchNorms trainable (the vision stage fine-tunes it so)."""

    def __init__(self, cfg: VisionConfig, frozen_norms: bool = True):
        super().__init__()
        self.cfg = cfg
        self.vision_tower, self.stride, self.width = build_encoder(cfg, frozen_norms)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        expected = (3, self.cfg.image_size, self.cfg.image_size)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(f"vision encoder expects images of shape [N, {expected}], got {list(images.shape)}")
        return ENCODERS[self.cfg.encoder].tokens(self.vision_tower, images)
