"""Periodic validation of a UniX stage, run with the EMA weights (what inference will load):
the loss on fixed validation micro-batches (fixed noise and t; for generation also with the
prompts moved one film on, whose extra MSE, text_gain, says whether the text is used at all), and
a look at what the model makes: a few generated reports scored against their references (label
Micro-F1, next to the most-common-report baseline), or a few generated images beside the real
ones. Samples are written to STAGE_DIR/samples/step_<N>.{txt,png}."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unixcxr.evaluate.report_metrics import label_f1
from unixcxr.flow.sampler import SamplerSettings
from unixcxr.inference.images import generate_latents
from unixcxr.inference.report import DecodingSettings, generate_reports
from unixcxr.labeler import label_reports
from unixcxr.model.unix import UniX
from unixcxr.model.vae import to_uint8
from unixcxr.train.distributed import DistEnv
from unixcxr.train.loop import LossFn, MicroBatch

GRID_GAP = 2  # pixels between thumbnails in a sample sheet


@contextlib.contextmanager
def unsharded(model: UniX):
    """FSDP2 gathers a layer's weights when the layer is called; inference also calls the root's
    own methods (embed, lm_head, ...), so gather the root's weights for the duration."""
    if hasattr(model, "unshard"):
        model.unshard()
        try:
            yield
        finally:
            model.reshard()
    else:
        yield


def label_micro_f1(generated: list[str], references: list[str]) -> float:
    """Micro-F1 over the 14 observations (uncertain as negative), both sides labelled by our
    rule-based labeler."""
    scores = label_f1(label_reports(generated), label_reports(references))
    return scores["uncertain_as_negative"]["micro_f1_14"]


def sample_sheet(rows: list[np.ndarray]) -> Image.Image:
    """Rows of uint8 [N, S, S] films -> one grayscale PNG (generated above, real below)."""
    n, s = max(len(r) for r in rows), rows[0].shape[-1]
    sheet = np.full((len(rows) * (s + GRID_GAP), n * (s + GRID_GAP)), 255, np.uint8)
    for r, films in enumerate(rows):
        for c, film in enumerate(films):
            y, x = r * (s + GRID_GAP), c * (s + GRID_GAP)
            sheet[y:y + s, x:x + s] = film
    return Image.fromarray(sheet, mode="L")


@dataclass
class Validator:
    model: UniX  # the raw (unwrapped) network
    loss_fn: LossFn  # the stage's loss (through the wrapped network)
    batches: list[MicroBatch]  # fixed validation micro-batches
    folder: Path  # stage folder
    env: DistEnv
    tokenizer: object
    task: str  # "understanding" | "generation"
    # understanding: images [n, 3, S, S] normalised, the instruction ids, reference texts
    images: torch.Tensor | None = None
    prompt: list[int] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    baseline_report: str | None = None
    max_new_tokens: int = 256
    # generation: prompt ids per image, real films uint8 [n, S, S], VAE, latent grid, sampler points
    prompts: list[list[int]] = field(default_factory=list)
    real_films: np.ndarray | None = None
    vae: object = None
    grid: tuple[int, int] | None = None
    sample_points: int = 25
    seed: int = 0
    # generation: the same micro-batches with every film given another film's prompt; the MSE they add
    # (text_gain) is how much the generator uses the text
    other_prompt_batches: list[MicroBatch] = field(default_factory=list)

    def __call__(self, step: int) -> dict[str, float]:
        self.model.eval()
        autocast = torch.autocast("cuda", torch.bfloat16) if self.env.device.type == "cuda" \
            else contextlib.nullcontext()
        try:
            with torch.no_grad(), autocast:
                metrics = self.losses()
                with unsharded(self.model):
                    if self.task == "understanding" and self.images is not None:
                        metrics.update(self.reports(step))
                    elif self.task == "generation" and self.prompts:
                        self.pictures(step)
        finally:
            self.model.train()
        return metrics

    def losses(self) -> dict[str, float]:
        totals = self.mean_losses(self.batches)
        if self.other_prompt_batches:
            other = self.mean_losses(self.other_prompt_batches)["mse"]
            totals.update(mse_other_prompt=other, text_gain=other - totals["mse"])
        return totals

    def mean_losses(self, batches: list[MicroBatch]) -> dict[str, float]:
        totals: dict[str, float] = {}
        for micro in batches:
            for key, value in self.loss_fn(micro).items():
                totals[key] = totals.get(key, 0.0) + float(value) / len(batches)
        return totals

    def reports(self, step: int) -> dict[str, float]:
        n = self.images.shape[0]
        ids = generate_reports(self.model, self.images, [self.prompt] * n,
                               DecodingSettings(max_new_tokens=self.max_new_tokens))
        texts = self.tokenizer.decode_batch(ids)
        out = {}
        out["micro_f1"] = label_micro_f1(texts, self.references)
        if self.baseline_report is not None:
            out["micro_f1_baseline"] = label_micro_f1([self.baseline_report] * n, self.references)
        if self.env.is_main:
            lines = [f"# step {step}: {n} validation images, greedy decoding; Micro-F1 {out.get('micro_f1')}"]
            for i, (gen, ref) in enumerate(zip(texts, self.references)):
                lines += [f"\n[{i}] generated: {gen}", f"[{i}] reference: {ref}"]
            self._write(f"step_{step:08d}.txt", "\n".join(lines) + "\n")
        return out

    def pictures(self, step: int) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        settings = SamplerSettings(num_points=self.sample_points)
        latents = generate_latents(self.model, self.prompts, settings, self.grid, generator=generator)
        images = self.vae.decode(latents.to(next(self.vae.parameters()).dtype))
        films = to_uint8(images).float().mean(1).round().to(torch.uint8).cpu().numpy()  # [n, S, S]
        if self.env.is_main:
            real = np.stack([np.asarray(Image.fromarray(f).resize(films.shape[1:][::-1])) for f in self.real_films])
            path = self.folder / "samples" / f"step_{step:08d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            sample_sheet([films, real]).save(path)

    def _write(self, name: str, text: str) -> None:
        path = self.folder / "samples" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
