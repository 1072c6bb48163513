"""The understanding encoder: a timm VisionTransformer laid out like the released SigLIP tower
(`vit_model.vision_tower.*`): no class token, learned absolute positions, final LayerNorm, no head.
CPU recipes may use timm's EfficientNet-Lite0 instead (an ImageNet-pretrained network that fits a
CPU budget): its last feature map, flattened, is the token grid; its BatchNorms are frozen inside
UniX (running statistics as buffers), so train/eval mode never changes what it computes."""

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


def build_cnn(cfg: VisionConfig, frozen_norms: bool = True) -> nn.Module:
    import timm
    from timm.layers import freeze_batch_norm_2d

    network = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0, global_pool="")
    network = freeze_batch_norm_2d(network) if frozen_norms else network
    return network.to(memory_format=torch.channels_last)  # 1.4-1.6x faster convolutions on a CPU


class VisionEncoder(nn.Module):
    """images [N, 3, S, S] (normalised with the config's mean/std) -> patch features [N, (S/p)^2, width].
    frozen_norms=False keeps a CNN's BatchNorms trainable (the vision stage fine-tunes it so)."""

    def __init__(self, cfg: VisionConfig, frozen_norms: bool = True):
        super().__init__()
        self.cfg = cfg
        self.vision_tower = build_vit(cfg) if cfg.encoder == "vit" else build_cnn(cfg, frozen_norms)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        expected = (3, self.cfg.image_size, self.cfg.image_size)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(f"vision encoder expects images of shape [N, {expected}], got {list(images.shape)}")
        if self.cfg.encoder == "vit":
            return self.vision_tower.forward_features(images)
        features = self.vision_tower.forward_features(images.contiguous(memory_format=torch.channels_last))
        return features.flatten(2).transpose(1, 2)

    def flops_per_image(self) -> float:
        """Forward FLOPs for one image, counted by torch's FlopCounterMode on a meta-device twin
        (no real compute, and the module itself, maybe sharded, is never called); cached."""
        if getattr(self, "_flops", None) is None:
            from torch.utils.flop_counter import FlopCounterMode

            with torch.device("meta"):
                twin = VisionEncoder(self.cfg)
                x = torch.zeros(1, 3, self.cfg.image_size, self.cfg.image_size)
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                twin(x)
            self._flops = float(counter.get_total_flops())
        return self._flops
