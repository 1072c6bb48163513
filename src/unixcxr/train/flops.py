"""The model FLOPs of a training step (the numerator of MFU): what a step of the network really
computes, counted from its parameter sizes and the batch's tokens, the image encoder's forward counted
by torch's FlopCounterMode."""

from __future__ import annotations

import weakref

import torch
from torch.utils.flop_counter import FlopCounterMode

from unixcxr.model.sequence import IGNORE, LATENT, VIT, SequenceBatch
from unixcxr.model.unix import UniX
from unixcxr.model.vision import VisionEncoder

_ENCODER_FLOPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def encoder_flops(encoder: VisionEncoder) -> float:
    """Forward FLOPs of one image, counted by FlopCounterMode on a meta-device twin (no real compute,
    and the encoder itself, maybe sharded, is never called); cached per encoder."""
    if encoder not in _ENCODER_FLOPS:
        cfg = encoder.cfg
        with torch.device("meta"):
            twin = VisionEncoder(cfg)
            x = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            twin(x)
        _ENCODER_FLOPS[encoder] = float(counter.get_total_flops())
    return _ENCODER_FLOPS[encoder]


def expert_parameters(model: UniX) -> int:
    """Parameters one token meets in the decoder: one expert per layer."""
    return sum(p.numel() for p in model.layers[0].und.parameters()) * model.config.llm.num_layers


def step_flops(model: UniX, batch: SequenceBatch, freeze_und: bool) -> float:
    """Model FLOPs of one training step on `batch`: 2 per parameter per token forward, 4 more backward
    where gradients flow. With freeze_und the und tokens and the image encoder run forward only and
    lm_head is not computed; an encoder whose parameters take no gradient (a centred one) runs forward
    only; attention counts each query against its row's context (masks ignored, as nanoGPT)."""
    llm, vis = model.config.llm, model.config.vision
    valid = batch.segment >= 0
    n_gen = int((batch.kind == LATENT).sum())
    n_und = int(valid.sum()) - n_gen
    n_labels = int((batch.labels != IGNORE).sum())
    n_images = int((batch.kind == VIT).sum()) // vis.num_tokens
    und_mult = 2 if freeze_und else 6
    connector = sum(p.numel() for p in model.connector.parameters())
    flops = expert_parameters(model) * (und_mult * n_und + 6 * n_gen)
    flops += 6 * model.lm_head.weight.numel() * n_labels
    vision_mult = 3 if not freeze_und and any(p.requires_grad for p in model.vision.parameters()) else 1
    flops += vision_mult * encoder_flops(model.vision) * n_images
    flops += und_mult * connector * n_images * vis.num_tokens
    row_len = valid.sum(dim=1).float()
    attn_pairs = float((row_len ** 2).sum())
    flops += 6 * 2 * llm.num_layers * llm.num_heads * llm.head_dim * attn_pairs
    return float(flops)
