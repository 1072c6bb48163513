"""UniXPipeline: what a user holds once a model exists. Built from a folder, called with plain
arguments (as a diffusers pipeline): images -> reports, reports -> images.

    pipe = UniXPipeline.from_pretrained("runs/small", torch_dtype=torch.bfloat16).to("cuda")
    pipe.report(["cxr.png", "study.dcm"]).reports    # -> ["FINDINGS: ...", ...]
    out = pipe.generate("FINDINGS: Small left effusion.", num_inference_steps=49, guidance_scale=2.0,
                        generator=torch.Generator().manual_seed(0))
    out.images[0].save("cxr.png")
    pipe.save_pretrained("models/mine")              # a folder diffusers / transformers read in part

The folder is ours (`unixcxr train` output, or `unixcxr convert-official` output, in either layout
of model/io.py) or the authors' release folder as downloaded (model/official.py). The field's
argument names (inference/field_names.py) and ours are both accepted; report() and generate()
return lists that carry the settings used (inference/outputs.py)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unixcxr.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageNorm,
    released_demo_image,
    released_evaluation_square,
    released_tensor,
    to_understanding_tensor,
    to_vae_tensor,
)
from unixcxr.data.prompts import DEFAULT_REPORT_PROMPT
from unixcxr.flow.sampler import PRESETS, SamplerSettings
from unixcxr.inference.field_names import Generators, generator_noise, grid_points, text_guidance, weights_dtype
from unixcxr.inference.images import generate_latents
from unixcxr.inference.inputs import EIGHT_BIT_MODES, ImageInput, to_pil_image8, to_unit_image  # noqa: F401
from unixcxr.inference.outputs import ImagePipelineOutput, ReportPipelineOutput
from unixcxr.inference.report import DecodingSettings, generate_reports
from unixcxr.inference.stream import stream_text
from unixcxr.model.card import read_card_facts, read_front_matter
from unixcxr.model.config import TokenConfig
from unixcxr.model.io import ModelFolderError, load_model_folder, resolve_model_folder, save_model_folder
from unixcxr.model.official import is_official_folder, load_official_folder
from unixcxr.model.tokenizer import ReportTokenizer, SpecialTokens
from unixcxr.model.unix import UniX
from unixcxr.model.vae import LatentVAE, to_uint8, to_uint8_truncated
from unixcxr.validation import check, check_interval, check_seeds

REPORT_BATCH, IMAGE_BATCH = 8, 4  # rows per forward: bounded memory whatever the list length


def load_tokenizer(path: str | os.PathLike, tokens: TokenConfig) -> ReportTokenizer:
    """The folder's tokenizer.json with the special ids of the model's config (the one source of truth:
    the released DeepSeek tokenizer does not even name all of them)."""
    return ReportTokenizer.load(path, special=SpecialTokens(**dataclasses.asdict(tokens)))


def _chunks(items: Sequence, size: int) -> Iterator[tuple[int, Sequence]]:
    for start in range(0, len(items), size):
        yield start, items[start:start + size]


class UniXPipeline:
    """Model, VAE, tokenizer and preprocessing of one model folder, on one device and dtype."""

    def __init__(self, model: UniX, vae: LatentVAE | None, tokenizer: ReportTokenizer,
                 source: Path | None = None):
        self.model, self.vae, self.tokenizer = model, vae, tokenizer
        self.config = model.config
        self.source = source  # the folder it was loaded from: save_pretrained keeps its card and tokenizer files
        if tokenizer.vocab_size > self.config.llm.vocab_size:
            raise ModelFolderError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
                                   f"{self.config.llm.vocab_size}: the tokenizer.json belongs to another model")

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu",
                        dtype: torch.dtype | str | None = None, *,
                        torch_dtype: torch.dtype | str | None = None) -> UniXPipeline:
        """Our model/run folder (either layout), or the authors' release folder (Janus-style config.json).
        dtype / torch_dtype (transformers' and diffusers' name): the weights' dtype, float32 unless given."""
        folder, dtype = Path(folder), weights_dtype(dtype, torch_dtype)
        if is_official_folder(folder):
            model, vae, tokenizer_file = load_official_folder(folder, device, dtype)
        else:
            model, vae, tokenizer_file = load_model_folder(folder, device, dtype)
            folder = resolve_model_folder(folder)
        if tokenizer_file is None:
            raise ModelFolderError(f"{folder}: no tokenizer.json; copy the tokenizer the model was trained with "
                                   "into the folder")
        return cls(model, vae, load_tokenizer(tokenizer_file, model.config.tokens), source=folder)

    def to(self, *args, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> UniXPipeline:
        """Move the model and the VAE, as diffusers' pipe.to(): to("cuda"), to(torch.bfloat16),
        to("cuda", torch.bfloat16) or to(device=..., dtype=...). Returns the pipeline."""
        for arg in args:
            if isinstance(arg, torch.dtype):
                dtype = arg
            elif isinstance(arg, str | torch.device):
                device = arg
            else:
                raise TypeError(f"to() takes a device and/or a dtype, got {arg!r}")
        self.model.to(device=device, dtype=dtype)
        if self.vae is not None:
            self.vae.to(device=device, dtype=dtype)
        return self

    def save_pretrained(self, save_directory: str | os.PathLike, *, license: str | None = None,
                        training: dict | None = None, evaluation: dict | None = None) -> Path:
        """Write a model folder (model/io.py's layout, written atomically) that from_pretrained, diffusers'
        AutoencoderKL.from_pretrained(dir, subfolder="vae") and transformers' AutoTokenizer read. The
        weights are saved in their current dtype. The card keeps what the source folder's card said
        (training, evaluation, licence) unless given here."""
        import tempfile

        facts = read_card_facts(self.source) if self.source is not None else {}
        official = self.source is not None and is_official_folder(self.source)
        source = f"converted from the authors' release ({self.source.name})" if official else \
            facts.get("source", "saved by UniXPipeline.save_pretrained")
        if official and license is None:
            license = read_front_matter(self.source).get("license")
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer_file = self.source / "tokenizer.json" if self.source is not None else None
            if tokenizer_file is None or not tokenizer_file.is_file():
                tokenizer_file = self.tokenizer.save(Path(tmp) / "tokenizer.json")
            return save_model_folder(save_directory, self.model, self.vae, tokenizer_file, source=source,
                                     license=license or facts.get("license"),
                                     training=training or facts.get("training"),
                                     evaluation=evaluation or facts.get("evaluation"))

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    # --- understanding: image -> report ---------------------------------------------------------
    @property
    def conventions(self):
        return self.config.conventions

    def _settings_name(self, settings: str | None) -> str:
        name = self.conventions.settings if settings is None else settings
        if name not in PRESETS:
            raise ValueError(f"unknown sampler settings {name!r}; choose one of {sorted(PRESETS)}")
        return name

    def read_image(self, image: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray | Image.Image:
        """An image as preprocess() will read it (a file is read once, and a bad one fails here, a
        file over max_pixels from its header alone): 8-bit Pillow for the authors' preprocessing,
        grayscale [0, 1] floats for ours."""
        if self.conventions.preprocess == "released":
            return to_pil_image8(image, max_pixels)
        return to_unit_image(image, self.config.vision.image_size, max_pixels)

    def preprocess(self, images: Sequence[ImageInput], settings: str | None = None) -> torch.Tensor:
        """[B, 3, S, S] on the model's device and dtype, read as the model's conventions say: our
        letterbox (in float, padded with the film's own black) or the authors' 8-bit path (their
        evaluation's white letterbox; with settings="demo" their demo's resize)."""
        vision = self.config.vision
        norm = ImageNorm(vision.norm_mean, vision.norm_std)
        size = vision.image_size
        if self.conventions.preprocess == "letterbox":
            batch = [to_understanding_tensor(to_unit_image(img, size), size, norm) for img in images]
        elif self._settings_name(settings) == "demo":
            batch = [self._demo_tensor(img, size, norm) for img in images]
        else:
            batch = [released_tensor(released_evaluation_square(to_pil_image8(img), size), norm) for img in images]
        return torch.stack(batch).to(device=self.device, dtype=self.dtype)

    def _demo_tensor(self, image: ImageInput, size: int, norm: ImageNorm) -> torch.Tensor:
        rgb = released_demo_image(to_pil_image8(image), size, self.config.vision.patch_size)
        if rgb.size != (size, size):
            w, h = to_pil_image8(image).size
            raise ValueError(f"the authors' demo preprocessing turns this {w}x{h} image into {rgb.size[0]}x"
                             f"{rgb.size[1]}, which the released ViT ({size}x{size} positions) cannot read; "
                             "crop it square or use settings='released' (their evaluation's letterbox)")
        return released_tensor(rgb, norm)

    def _prompt_ids(self, prompt: str | None, n: int) -> list[list[int]]:
        ids = self.tokenizer.encode(DEFAULT_REPORT_PROMPT if prompt is None else prompt)
        if not ids:
            raise ValueError("the instruction is empty; leave it out to use the default one")
        return [ids] * n

    @staticmethod
    def _generator(seed: int | None, generator: torch.Generator | None = None) -> torch.Generator | None:
        if generator is not None:
            if seed is not None:
                raise ValueError("give seed or generator, not both")
            if not isinstance(generator, torch.Generator):
                raise ValueError("report() samples with one torch.Generator (a batch shares it), got "
                                 f"{type(generator).__name__}")
            return generator
        return None if seed is None else torch.Generator().manual_seed(check("seed", seed))

    def _decoding(self, max_new_tokens: int | None, temperature: float, top_p: float) -> DecodingSettings:
        """A report cannot be longer than the model's positions (its RoPE table and KV cache)."""
        n = self.conventions.max_new_tokens if max_new_tokens is None else max_new_tokens
        n = check("max_new_tokens", n, hi=self.config.llm.max_position)
        return DecodingSettings(max_new_tokens=n, temperature=temperature, top_p=top_p)

    def report(self, images: ImageInput | Sequence[ImageInput], prompt: str | None = None, *,
               max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float = 1.0,
               seed: int | None = None, generator: torch.Generator | None = None, batch_size: int = REPORT_BATCH,
               settings: str | None = None, progress: bool = False) -> ReportPipelineOutput:
        """One report per image, greedy by default (the released evaluation setting). prompt None =
        the released instruction; max_new_tokens None = the model's cap (the release's: 499).
        settings picks the authors' evaluation or demo preprocessing for a model with their
        conventions (None: the model's default). Images run in batches of batch_size; progress
        shows a bar of decoded tokens per batch. When sampling (temperature > 0), seed or a
        torch.Generator (transformers' generator) makes it repeatable."""
        if isinstance(images, ImageInput.__args__):  # one image (an array is always one image)
            images = [images]
        batch_size = check("batch_size", batch_size)
        decoding = self._decoding(max_new_tokens, temperature, top_p)
        rng = self._generator(seed, generator)
        reports, images = [], list(images)
        for start, chunk in _chunks(images, batch_size):
            bar = _progress_bar(decoding.max_new_tokens, "report" if len(images) <= batch_size else
                                f"reports {start + 1}-{start + len(chunk)} of {len(images)}", "token") \
                if progress else None
            reports += self._decode(self.preprocess(chunk, settings), prompt, decoding, rng,
                                    (lambda token, bar=bar: bar.update(1)) if bar else None)
            if bar:
                bar.close()
        return self._report_output(reports, prompt, decoding, settings, seed)

    def report_preprocessed(self, pixels: torch.Tensor, prompt: str | None = None, *,
                            max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float = 1.0,
                            seed: int | None = None, generator: torch.Generator | None = None) -> ReportPipelineOutput:
        """report() of images preprocess() has already made ([B, 3, S, S]), as one batch: a server
        preprocesses each upload where it is decoded, so the model thread only decodes tokens."""
        decoding = self._decoding(max_new_tokens, temperature, top_p)
        reports = self._decode(pixels, prompt, decoding, self._generator(seed, generator))
        return self._report_output(reports, prompt, decoding, None, seed)

    def _report_output(self, reports: list[str], prompt: str | None, decoding: DecodingSettings,
                       settings: str | None, seed: int | None) -> ReportPipelineOutput:
        preset = self._settings_name(settings) if self.conventions.preprocess == "released" else None
        return ReportPipelineOutput(reports, decoding=decoding, prompt=DEFAULT_REPORT_PROMPT if prompt is None
                                    else prompt, preset=preset, seed=seed if decoding.temperature > 0 else None)

    def _decode(self, pixels: torch.Tensor, prompt: str | None, decoding: DecodingSettings,
                generator: torch.Generator | None, on_token=None) -> list[str]:
        ids = generate_reports(self.model, pixels.to(device=self.device, dtype=self.dtype),
                               self._prompt_ids(prompt, pixels.shape[0]), decoding, generator, on_token=on_token)
        return self.tokenizer.decode_batch(ids)

    def stream_report(self, image: ImageInput, prompt: str | None = None, *, max_new_tokens: int | None = None,
                      temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                      generator: torch.Generator | None = None, settings: str | None = None) -> Iterator[str]:
        """Yield the report of one image piece by piece as tokens are decoded (for the web app).
        The pieces join to exactly report(image)[0]."""
        pixels, prompts = self.preprocess([image], settings), self._prompt_ids(prompt, 1)
        decoding = self._decoding(max_new_tokens, temperature, top_p)
        rng = self._generator(seed, generator)

        def decode(on_token) -> None:
            generate_reports(self.model, pixels, prompts, decoding, rng, on_token=on_token)

        yield from stream_text(decode, self.tokenizer, self.config.tokens.eos)

    # --- generation: report -> image --------------------------------------------------------------
    def sampler_settings(self, settings: str | None = None, **overrides) -> SamplerSettings:
        """A named preset (the authors' "released" evaluation or "demo" settings, or our "unixcxr"
        ones; None: the model's default) under the model's guidance rule, with the given values
        (not None) replacing the preset's."""
        names = {"steps": "num_points"}
        values = {names.get(k, k): check_interval(k, v) if k == "cfg_interval" else check(k, v)
                  for k, v in overrides.items() if v is not None}
        preset = PRESETS[self._settings_name(settings)]
        return dataclasses.replace(preset, guidance=self.conventions.guidance, **values)

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor:
        """Decoded images in [-1, 1] -> uint8 by the model's rule (rounded, or truncated as the release)."""
        return to_uint8_truncated(images) if self.conventions.to_uint8 == "truncate" else to_uint8(images)

    def latent_grid(self, size: int | None) -> int:
        size = self.config.gen.image_size if size is None else check("size", size)
        f, grid_max = self.config.vae.downsample, self.config.gen.latent_grid_max
        if size % f or not 0 < size // f <= grid_max:
            raise ValueError(f"image size {size} must be a multiple of {f} up to {grid_max * f} for this model")
        return size // f

    def initial_noise(self, seeds: Sequence[int], grid: int) -> torch.Tensor:
        """[n, C, grid, grid] noise, image i drawn from seeds[i] alone, so an image is the same
        whether it is generated alone, in a batch, or in a resumed job."""
        C = self.config.vae.latent_channels
        return torch.cat([torch.randn((1, C, grid, grid), generator=torch.Generator().manual_seed(s))
                          for s in seeds])

    def generate(self, reports: str | Sequence[str], steps: int | None = None, cfg_text: float | None = None,
                 cfg_img: float | None = None, cfg_interval: tuple[float, float] | None = None,
                 shift: float | None = None, seed: int | Sequence[int] | None = None, size: int | None = None,
                 settings: str | None = None, batch_size: int = IMAGE_BATCH, progress: bool = False, *,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 generator: Generators | None = None) -> ImagePipelineOutput:
        """One image per report text. Unset values come from `settings` (None: the model's default,
        "released" for the authors' weights): "released" = their evaluation, 50 steps, text CFG 2.0,
        image CFG 1.0, interval (0.4, 1.0], shift 3.0, renorm; "demo" = their demo (text 3.0, image
        1.5: an effective text scale of 4.0 without an input image); "unixcxr" = ours (shift 1.0, no renorm).
        steps counts grid points, as the release does (50 -> 49 Euler steps); num_inference_steps
        counts Euler steps, as diffusers does (49 = steps 50). guidance_scale is cfg_text.
        seed: one int (image i uses seed + i) or one seed per report; or generator: a torch.Generator
        (drawing the whole batch's noise) or one per report, as in diffusers. size: pixels (default:
        the model's generation size). progress: a bar of sampler steps."""
        if self.vae is None:
            raise ModelFolderError("this model folder has no VAE weights (vae/), so it cannot draw images")
        reports = [reports] if isinstance(reports, str) else list(reports)
        for i, text in enumerate(reports):
            if not text or not text.strip():
                raise ValueError(f"report {i} is empty; write the findings the image should show")
        preset = self._settings_name(settings)
        scales = None
        if isinstance(cfg_text, Sequence):  # one text scale per report: the rows still share every step
            scales = [check("cfg_text", s) for s in cfg_text]
            if len(scales) != len(reports) or guidance_scale is not None:
                raise ValueError(f"{len(reports)} reports take {len(reports)} cfg_text values (and no guidance_scale), "
                                 f"got {len(scales)}")
            cfg_text = scales[0]
        sampler = self.sampler_settings(preset, steps=grid_points(steps, num_inference_steps),
                                        cfg_text=text_guidance(cfg_text, guidance_scale), cfg_img=cfg_img,
                                        cfg_interval=cfg_interval, shift=shift)
        for scale in set(scales or ()):
            dataclasses.replace(sampler, cfg_text=scale)  # each scale is valid with the rest of the settings
        grid = self.latent_grid(size)
        batch_size = check("batch_size", batch_size)
        seeds, noise = self._seeds(seed, generator, len(reports), grid)
        chunks = -(-len(reports) // batch_size)
        bar = _progress_bar(chunks * (sampler.num_points - 1), "sampling", "step") if progress else None
        images = []
        for start, chunk in _chunks(reports, batch_size):
            x = noise[start:start + len(chunk)] if noise is not None else \
                self.initial_noise(seeds[start:start + len(chunk)], grid)
            latents = generate_latents(self.model, self.tokenizer.encode_batch(chunk), sampler, (grid, grid),
                                       noise=x.to(self.device), progress=(lambda i, n: bar.update(1)) if bar else None,
                                       text_scales=scales[start:start + len(chunk)] if scales else None)
            pixels = self.to_uint8(self.vae.decode(latents.to(self.vae.autoencoder.dtype))).cpu()  # [B, 3, S, S]
            images += [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]
        if bar:
            bar.close()
        return ImagePipelineOutput(images, sampler=sampler, preset=preset,
                                   size=grid * self.config.vae.downsample, seeds=seeds, text_scales=scales)

    def _seeds(self, seed, generator, n: int, grid: int) -> tuple[list[int] | None, torch.Tensor | None]:
        """(seeds, None) for integer seeds (drawn when none is given), or (None, noise) for generators."""
        if generator is not None:
            if seed is not None:
                raise ValueError("give seed or generator, not both")
            return None, generator_noise(generator, n, (self.config.vae.latent_channels, grid, grid))
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()))
        seeds = [seed + i for i in range(n)] if isinstance(seed, int) else list(seed)
        if len(seeds) != n:
            raise ValueError(f"{n} reports but {len(seeds)} seeds")
        return check_seeds(seeds), None

    @torch.no_grad()
    def reconstruct(self, images: ImageInput | Sequence[ImageInput], size: int | None = None,
                    batch_size: int = IMAGE_BATCH) -> list[Image.Image]:
        """Each image through the VAE and back (letterboxed to `size`, default the generation size):
        what the VAE keeps of an image, and so the best any generated image can show."""
        if self.vae is None:
            raise ModelFolderError("this model folder has no VAE weights (vae/), so it cannot reconstruct images")
        images = [images] if isinstance(images, ImageInput.__args__) else list(images)  # an array is one image
        size = self.latent_grid(size) * self.config.vae.downsample
        dtype = self.vae.autoencoder.dtype
        out = []
        for _, chunk in _chunks(images, batch_size):
            x = torch.stack([to_vae_tensor(to_unit_image(img, size), size) for img in chunk])
            pixels = self.to_uint8(self.vae.decode(self.vae.encode(x.to(self.device, dtype)))).cpu()
            out += [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]
        return out


def _progress_bar(total: int, desc: str, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
