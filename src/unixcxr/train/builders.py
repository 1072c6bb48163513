"""Micro-batch builders: (step, chunk, item indices) -> MicroBatch, for each kind of stage. Every
random choice (instruction template, text dropout, flow noise) is drawn from a stream seeded by
(seed, step, chunk), so a micro-batch is the same whichever rank, worker or restart builds it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unixcxr.data.batches import GenerationExample, UnderstandingExample, make_batch
from unixcxr.model.config import UniXConfig
from unixcxr.train.data import TextTokens, example_rng, films_to_unit, films_to_vae, seed_for
from unixcxr.train.loop import MicroBatch
from unixcxr.train.stages import ModelInputs

VAE_TOKEN_PIXELS = 256  # a VAE "token" for throughput: one 16 x 16 pixel patch


def vit_images(films: np.ndarray, config: UniXConfig) -> torch.Tensor:
    """uint8 [N, S, S] -> the ViT's input [N, 3, S, S], normalised with the config's mean/std."""
    x = (films_to_unit(films) - config.vision.norm_mean) / config.vision.norm_std
    return x[:, None].expand(-1, 3, -1, -1)


@dataclass
class UnderstandingBuilder:
    """Image + instruction -> report. The instruction is one of the 20 templates (or the item's
    own); a findings-only instruction gets the FINDINGS section alone as its answer."""

    config: UniXConfig
    films: np.ndarray  # uint8 [N, S, S] at the ViT resolution
    tokens: TextTokens
    ids: list[str]
    seed: int
    pack_to: int | None = None  # tokens per row when samples are packed; None = one padded sample per row

    def __call__(self, step: int, chunk: int, indices: list[int]) -> MicroBatch:
        rng = example_rng(self.seed, step, chunk)
        images = vit_images(np.stack([self.films[i] for i in indices]), self.config)
        examples = []
        for row, i in enumerate(indices):
            k = rng.randrange(len(self.tokens.instructions))
            prompt, report = self.tokens.instructions[k], self.tokens.findings[i] if self.tokens.findings_only[k] \
                else self.tokens.reports[i]
            if self.tokens.own_instructions[i] is not None:
                prompt, report = self.tokens.own_instructions[i], self.tokens.reports[i]
            examples.append(UnderstandingExample(images[row], prompt, report, self.ids[i]))
        batch = make_batch(self.config, understanding=examples, pack_to=self.pack_to)
        return MicroBatch(ModelInputs(batch), batch.ids, batch.num_tokens)


@dataclass
class GenerationBuilder:
    """Findings text -> latent. The prompt is dropped with probability text_dropout (CFG); the
    REPA encoder's input films travel along when the stage uses REPA."""

    config: UniXConfig
    latents: np.ndarray  # raw VAE posterior means [N, C, h, w]
    tokens: TextTokens
    ids: list[str]
    seed: int
    text_dropout: float
    repa_films: np.ndarray | None = None  # uint8 [N, S, S]
    pack_to: int | None = None  # tokens per row when samples are packed; None = one padded sample per row

    def __call__(self, step: int, chunk: int, indices: list[int]) -> MicroBatch:
        rng = example_rng(self.seed, step, chunk)
        vae = self.config.vae
        examples = []
        for i in indices:
            z = torch.from_numpy(self.latents[i].astype(np.float32))
            examples.append(GenerationExample(vae.scale * (z + vae.shift), self.tokens.prompts[i], self.ids[i]))
        batch = make_batch(self.config, generation=examples, text_dropout=self.text_dropout, rng=rng,
                           pack_to=self.pack_to)
        repa = None
        if self.repa_films is not None:
            row = {self.ids[i]: i for i in indices}  # packing may reorder samples: follow the batch's order
            repa = films_to_unit(np.stack([self.repa_films[row[sample]] for sample in batch.ids]))
        inputs = ModelInputs(batch, noise_seed=seed_for(self.seed, step, chunk, 1), repa_images=repa)
        return MicroBatch(inputs, batch.ids, batch.num_tokens)


@dataclass
class VAEInputs:
    images: torch.Tensor  # [N, 3, S, S] in [-1, 1]
    noise_seed: int  # the posterior sample


@dataclass
class VAEBuilder:
    films: np.ndarray  # uint8 [N, S, S] at the VAE training resolution
    ids: list[str]
    seed: int
    crop: int | None = None  # random square crops of this side

    def __call__(self, step: int, chunk: int, indices: list[int]) -> MicroBatch:
        films = [self.films[i] for i in indices]
        if self.crop is not None:
            rng, c, side = example_rng(self.seed, step, chunk), self.crop, self.films.shape[-1]
            corners = [(rng.randrange(side - c + 1), rng.randrange(side - c + 1)) for _ in films]
            films = [f[y:y + c, x:x + c] for f, (y, x) in zip(films, corners)]
        images = films_to_vae(np.stack(films))
        tokens = images.shape[0] * images.shape[-1] * images.shape[-2] // VAE_TOKEN_PIXELS
        return MicroBatch(VAEInputs(images, seed_for(self.seed, step, chunk, 2)), [self.ids[i] for i in indices],
                          tokens)
