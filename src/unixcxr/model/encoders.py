"""The image encoders the understanding branch can read with, one registry entry each: how to build
the network from a VisionConfig, how it turns images into a token grid, and the grid it gives (stride
in pixels, width in channels). Adding an encoder touches this file only. torch and timm load inside
the functions: config.py reads the registry and stays free of torch (fast `unixcxr --help`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn


class VisionConfig(Protocol):
    """The fields of model/config.py's VisionConfig an encoder reads (that module imports this one)."""

    encoder: str
    image_size: int
    patch_size: int
    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    act_layer: str


@dataclass(frozen=True)
class Encoder:
    build: Callable[[VisionConfig, bool], nn.Module]  # (config, frozen_norms) -> network
    tokens: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # images [N, 3, S, S] -> [N, tokens, width]
    grid: tuple[int, int] | None  # (stride, width) fixed by the network; None: the config's patch_size, width


def build_vit(cfg: VisionConfig, frozen_norms: bool = True) -> nn.Module:
    """A timm VisionTransformer laid out like the released SigLIP tower: no class token, learned
    absolute positions, final LayerNorm, no head."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.width, depth=cfg.depth,
        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_dim / cfg.width, qkv_bias=True, class_token=False,
        global_pool="", num_classes=0, act_layer=cfg.act_layer, dynamic_img_size=False,
    )


def build_efficientnet_lite0(cfg: VisionConfig, frozen_norms: bool = True) -> nn.Module:
    """timm's EfficientNet-Lite0 (an ImageNet-pretrained network that fits a CPU budget), its
    BatchNorms frozen (running statistics as buffers) unless frozen_norms is False."""
    import timm
    import torch
    from timm.layers import freeze_batch_norm_2d

    network = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0, global_pool="")
    network = freeze_batch_norm_2d(network) if frozen_norms else network
    return network.to(memory_format=torch.channels_last)  # 1.4-1.6x faster convolutions on a CPU


def vit_tokens(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return network.forward_features(images)


def feature_map_tokens(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The last feature map, flattened row-major: [N, C, h, w] -> [N, h * w, C]."""
    import torch

    features = network.forward_features(images.contiguous(memory_format=torch.channels_last))
    return features.flatten(2).transpose(1, 2)


ENCODERS: dict[str, Encoder] = {
    "vit": Encoder(build_vit, vit_tokens, None),
    "efficientnet-lite0": Encoder(build_efficientnet_lite0, feature_map_tokens, (32, 1280)),
}


def build_encoder(cfg: VisionConfig, frozen_norms: bool = True) -> tuple[nn.Module, int, int]:
    """-> (network, stride, width) for cfg.encoder."""
    encoder = ENCODERS[cfg.encoder]
    stride, width = encoder.grid or (cfg.patch_size, cfg.width)
    return encoder.build(cfg, frozen_norms), stride, width
