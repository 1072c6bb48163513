"""Training batches for the three tasks: understanding (image + instruction -> report), generation
(report -> latent, text dropped for classifier-free guidance) and mixed batches of both, padded
(one sample per row) or packed (several per row, block-diagonal attention)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from unixcxr.model.config import UniXConfig
from unixcxr.model.sequence import SampleLayout, SequenceBatch, collate, generation_layout, pack, understanding_layout


@dataclass
class UnderstandingExample:
    image: torch.Tensor  # [3, S, S], normalised for the ViT
    prompt: list[int]  # instruction token ids
    report: list[int]  # answer token ids (eos is added by the layout)
    id: str = ""


@dataclass
class GenerationExample:
    latents: torch.Tensor  # [C, h, w], normalised VAE latents of the target image
    report: list[int]  # findings token ids
    id: str = ""
    repa_target: torch.Tensor | None = None  # [n, D] frozen encoder features, for REPA


@dataclass
class TrainingBatch:
    """Everything UniX.forward needs; images and latents in the row-major order of their blocks."""

    sequence: SequenceBatch
    images: torch.Tensor | None
    latents: torch.Tensor | None
    repa_target: torch.Tensor | None
    ids: list[str]

    def to(self, device) -> TrainingBatch:
        def move(t):
            return t.to(device, non_blocking=True) if t is not None else None

        return TrainingBatch(self.sequence.to(device), move(self.images), move(self.latents),
                             move(self.repa_target), self.ids)

    @property
    def num_tokens(self) -> int:
        return int((self.sequence.segment >= 0).sum())


def make_batch(config: UniXConfig, understanding: list[UnderstandingExample] = (),
               generation: list[GenerationExample] = (), text_dropout: float | None = None,
               pack_to: int | None = None, rng: random.Random | None = None) -> TrainingBatch:
    """Build a batch of any mix of the two tasks. text_dropout (default: config.gen.text_dropout)
    replaces a generation example's report by the empty prompt, as classifier-free guidance needs."""
    s = config.tokens
    rng = rng or random.Random()
    p_drop = config.gen.text_dropout if text_dropout is None else text_dropout
    layouts: list[SampleLayout] = []
    for ex in understanding:
        layouts.append(understanding_layout(s, config.vision.num_tokens, ex.prompt, ex.report))
    for ex in generation:
        h, w = ex.latents.shape[-2:]
        report = [] if rng.random() < p_drop else ex.report
        layouts.append(generation_layout(s, report, h * w))
    if not layouts:
        raise ValueError("a batch needs at least one example")
    n_und = len(understanding)
    if pack_to:
        sequence, order = pack(layouts, pack_to)
    else:
        # generation alone pads on the left: every row's latent block then sits at the same columns
        # and reaches the gen expert as a slice (Routing.block), not by index gathers
        sequence, order = collate(layouts, left_pad=n_und == 0), list(range(len(layouts)))
    und_order = [i for i in order if i < n_und]
    gen_order = [i - n_und for i in order if i >= n_und]
    images = torch.stack([understanding[i].image for i in und_order]) if und_order else None
    latents = torch.stack([generation[i].latents for i in gen_order]) if gen_order else None
    targets = [generation[i].repa_target for i in gen_order]
    repa = torch.stack(targets) if targets and all(t is not None for t in targets) else None
    examples = [*understanding, *generation]
    return TrainingBatch(sequence, images, latents, repa, [examples[i].id for i in order])
