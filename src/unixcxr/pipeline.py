"""UniXPipeline: what a user holds once a model exists. Built from a folder, called with plain
arguments (as a diffusers pipeline): images -> reports, reports -> images.

    pipe = UniXPipeline.from_pretrained("runs/small", device="cuda", dtype=torch.bfloat16)
    pipe.report(["cxr.png", "study.dcm"])            # -> ["FINDINGS: ...", ...]
    pipe.generate(["FINDINGS: Small left effusion."], seed=0)[0].save("cxr.png")

The folder is ours (`unixcxr train` output, or `unixcxr convert-official` output) or the authors'
release folder as downloaded (model/official.py)."""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unixcxr.data.images import (
    DEFAULT_MAX_PIXELS,
    EIGHT_BIT_MAX,
    LUMA_WEIGHTS,
    ImageLoadError,
    ImageNorm,
    is_dicom,
    load_image,
    open_pillow,
    pil_to_unit,
    released_demo_image,
    released_evaluation_square,
    released_tensor,
    to_understanding_tensor,
    to_vae_tensor,
)
from unixcxr.data.prompts import DEFAULT_REPORT_PROMPT
from unixcxr.data.tokenizer import ReportTokenizer, SpecialTokens
from unixcxr.flow.sampler import PRESETS, SamplerSettings
from unixcxr.inference.images import generate_latents
from unixcxr.inference.report import DecodingSettings, generate_reports
from unixcxr.model.config import TokenConfig
from unixcxr.model.io import ModelFolderError, load_model_folder
from unixcxr.model.official import is_official_folder, load_official_folder
from unixcxr.model.unix import UniX
from unixcxr.model.vae import LatentVAE, to_uint8, to_uint8_truncated
from unixcxr.validation import check, check_interval, check_seeds

ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
REPORT_BATCH, IMAGE_BATCH = 8, 4  # rows per forward: bounded memory whatever the list length
INCOMPLETE_CHARACTER = "\ufffd"  # a byte-level piece that ends inside a multi-byte character


def load_tokenizer(path: str | os.PathLike, tokens: TokenConfig) -> ReportTokenizer:
    """The folder's tokenizer.json with the special ids of the model's config (the one source of truth:
    the released DeepSeek tokenizer does not even name all of them)."""
    return ReportTokenizer.load(path, special=SpecialTokens(**dataclasses.asdict(tokens)))


def to_unit_image(image: ImageInput, size: int | None = None,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any image a user hands us -> grayscale float32 [H, W] in [0, 1]. Paths go through
    data.images (PNG, JPEG, DICOM; files over max_pixels refused from their header); arrays may be
    [H, W] or [H, W, 3|4], integer or in [0, 1]."""
    if isinstance(image, str | os.PathLike):
        return load_image(image, min_size=size, max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        return pil_to_unit(image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a path, PIL image or array, got {type(image).__name__}")
    arr = image
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / np.iinfo(arr.dtype).max
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3] @ LUMA_WEIGHTS
    if arr.ndim != 2 or min(arr.shape) == 0:
        raise ValueError(f"expected a grayscale [H, W] or colour [H, W, 3] image array, got shape {image.shape}")
    if arr.min() >= 0.0 and arr.max() <= 1.0:  # a decoded film already is: no 100 MB copy of a large one
        return arr
    return np.clip(arr, 0.0, 1.0)


EIGHT_BIT_MODES = ("L", "RGB", "RGBA", "LA", "P")


def to_pil_image8(image: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Any image a user hands us -> an 8-bit Pillow image, for the authors' preprocessing, which
    reads 8-bit files as they are (colour kept, no EXIF rotation). What they cannot read (DICOM,
    16-bit or float pixels) is scaled to [0, 1] by data.images and rounded to 8 bits."""
    if isinstance(image, str | os.PathLike) and Path(image).is_file() and not is_dicom(image):
        try:
            with open_pillow(Path(image), max_pixels) as img:
                img.load()
                if img.mode in EIGHT_BIT_MODES:
                    return img.copy()
        except (OSError, ImageLoadError):
            pass  # load_image below names the file and the problem
    elif isinstance(image, Image.Image) and image.mode in EIGHT_BIT_MODES:
        return image
    elif isinstance(image, np.ndarray | torch.Tensor):
        arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image
        if arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
            return Image.fromarray(arr)
    unit = to_unit_image(image, max_pixels=max_pixels)
    return Image.fromarray(np.round(unit * EIGHT_BIT_MAX).astype(np.uint8))


def _chunks(items: Sequence, size: int) -> Iterator[tuple[int, Sequence]]:
    for start in range(0, len(items), size):
        yield start, items[start:start + size]


class _StopDecoding(Exception):
    """Raised inside the decoding thread when the stream's reader has gone away."""


class UniXPipeline:
    """Model, VAE, tokenizer and preprocessing of one model folder, on one device and dtype."""

    def __init__(self, model: UniX, vae: LatentVAE | None, tokenizer: ReportTokenizer):
        self.model, self.vae, self.tokenizer = model, vae, tokenizer
        self.config = model.config
        if tokenizer.vocab_size > self.config.llm.vocab_size:
            raise ModelFolderError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
                                   f"{self.config.llm.vocab_size}: the tokenizer.json belongs to another model")

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> UniXPipeline:
        """Our model/run folder, or the authors' release folder (Janus-style config.json)."""
        folder = Path(folder)
        if is_official_folder(folder):
            model, vae, tokenizer_file = load_official_folder(folder, device, dtype)
        else:
            model, vae, tokenizer_file = load_model_folder(folder, device, dtype)
        if tokenizer_file is None:
            raise ModelFolderError(f"{folder}: no tokenizer.json; copy the tokenizer the model was trained with "
                                   "into the folder")
        return cls(model, vae, load_tokenizer(tokenizer_file, model.config.tokens))

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
    def _generator(seed: int | None) -> torch.Generator | None:
        return None if seed is None else torch.Generator().manual_seed(check("seed", seed))

    def _decoding(self, max_new_tokens: int | None, temperature: float, top_p: float) -> DecodingSettings:
        """A report cannot be longer than the model's positions (its RoPE table and KV cache)."""
        n = self.conventions.max_new_tokens if max_new_tokens is None else max_new_tokens
        n = check("max_new_tokens", n, hi=self.config.llm.max_position)
        return DecodingSettings(max_new_tokens=n, temperature=temperature, top_p=top_p)

    def report(self, images: ImageInput | Sequence[ImageInput], prompt: str | None = None, *,
               max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float = 1.0,
               seed: int | None = None, batch_size: int = REPORT_BATCH, settings: str | None = None) -> list[str]:
        """One report per image, greedy by default (the released evaluation setting). prompt None =
        the released instruction; max_new_tokens None = the model's cap (the release's: 499).
        settings picks the authors' evaluation or demo preprocessing for a model with their
        conventions (None: the model's default). Images run in batches of batch_size."""
        if isinstance(images, ImageInput.__args__):  # one image (an array is always one image)
            images = [images]
        batch_size = check("batch_size", batch_size)
        decoding = self._decoding(max_new_tokens, temperature, top_p)
        generator = self._generator(seed)
        reports = []
        for _, chunk in _chunks(list(images), batch_size):
            reports += self._decode(self.preprocess(chunk, settings), prompt, decoding, generator)
        return reports

    def report_preprocessed(self, pixels: torch.Tensor, prompt: str | None = None, *,
                            max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float = 1.0,
                            seed: int | None = None) -> list[str]:
        """report() of images preprocess() has already made ([B, 3, S, S]), as one batch: a server
        preprocesses each upload where it is decoded, so the model thread only decodes tokens."""
        return self._decode(pixels, prompt, self._decoding(max_new_tokens, temperature, top_p), self._generator(seed))

    def _decode(self, pixels: torch.Tensor, prompt: str | None, decoding: DecodingSettings,
                generator: torch.Generator | None) -> list[str]:
        ids = generate_reports(self.model, pixels.to(device=self.device, dtype=self.dtype),
                               self._prompt_ids(prompt, pixels.shape[0]), decoding, generator)
        return self.tokenizer.decode_batch(ids)

    def stream_report(self, image: ImageInput, prompt: str | None = None, *, max_new_tokens: int | None = None,
                      temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                      settings: str | None = None) -> Iterator[str]:
        """Yield the report of one image piece by piece as tokens are decoded (for the web app).
        The pieces join to exactly report(image)[0]."""
        pixels, prompts = self.preprocess([image], settings), self._prompt_ids(prompt, 1)
        decoding = self._decoding(max_new_tokens, temperature, top_p)
        tokens: queue.Queue = queue.Queue()
        stop = threading.Event()
        done = object()

        def on_token(token: torch.Tensor) -> None:
            if stop.is_set():
                raise _StopDecoding
            tokens.put(int(token[0]))

        def decode() -> None:
            try:
                generate_reports(self.model, pixels, prompts, decoding, self._generator(seed), on_token=on_token)
                tokens.put(done)
            except _StopDecoding:
                pass
            except BaseException as err:  # handed to the reader, raised there
                tokens.put(err)

        worker = threading.Thread(target=decode, name="unixcxr-stream", daemon=True)
        worker.start()
        ids, shown = [], ""
        try:
            while (item := tokens.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                if item == self.config.tokens.eos:
                    continue
                ids.append(item)
                text = self.tokenizer.decode(ids)
                if text.endswith(INCOMPLETE_CHARACTER) or len(text) <= len(shown):
                    continue
                yield text[len(shown):]
                shown = text
            text = self.tokenizer.decode(ids)
            if len(text) > len(shown):
                yield text[len(shown):]
        finally:
            stop.set()
            worker.join()

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
                 settings: str | None = None, batch_size: int = IMAGE_BATCH,
                 progress: bool = False) -> list[Image.Image]:
        """One image per report text. Unset values come from `settings` (None: the model's default,
        "released" for the authors' weights): "released" = their evaluation, 50 steps, text CFG 2.0,
        image CFG 1.0, interval (0.4, 1.0], shift 3.0, renorm; "demo" = their demo (text 3.0, image
        1.5: an effective text scale of 4.0 without an input image); "unixcxr" = ours (shift 1.0, no renorm).
        steps counts grid points, as the release does (50 -> 49 Euler steps). seed: one int (image i
        uses seed + i) or one seed per report; size: pixels (default: the model's generation size)."""
        if self.vae is None:
            raise ModelFolderError("this model folder has no VAE weights (vae.safetensors), so it cannot draw images")
        reports = [reports] if isinstance(reports, str) else list(reports)
        for i, text in enumerate(reports):
            if not text or not text.strip():
                raise ValueError(f"report {i} is empty; write the findings the image should show")
        sampler = self.sampler_settings(settings, steps=steps, cfg_text=cfg_text, cfg_img=cfg_img,
                                        cfg_interval=cfg_interval, shift=shift)
        grid = self.latent_grid(size)
        batch_size = check("batch_size", batch_size)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()))
        seeds = [seed + i for i in range(len(reports))] if isinstance(seed, int) else list(seed)
        if len(seeds) != len(reports):
            raise ValueError(f"{len(reports)} reports but {len(seeds)} seeds")
        seeds = check_seeds(seeds)
        bar = _progress_bar(len(reports) * (sampler.num_points - 1)) if progress else None
        images = []
        for start, chunk in _chunks(reports, batch_size):
            noise = self.initial_noise(seeds[start:start + len(chunk)], grid).to(self.device)
            latents = generate_latents(self.model, self.tokenizer.encode_batch(chunk), sampler, (grid, grid),
                                       noise=noise, progress=(lambda i, n: bar.update(1)) if bar else None)
            pixels = self.to_uint8(self.vae.decode(latents.to(self.vae.autoencoder.dtype))).cpu()  # [B, 3, S, S]
            images += [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]
        if bar:
            bar.close()
        return images

    @torch.no_grad()
    def reconstruct(self, images: ImageInput | Sequence[ImageInput], size: int | None = None,
                    batch_size: int = IMAGE_BATCH) -> list[Image.Image]:
        """Each image through the VAE and back (letterboxed to `size`, default the generation size):
        what the VAE keeps of an image, and so the best any generated image can show."""
        if self.vae is None:
            raise ModelFolderError("this model folder has no VAE weights (vae.safetensors), so it cannot "
                                   "reconstruct images")
        images = [images] if isinstance(images, ImageInput.__args__) else list(images)  # an array is one image
        size = self.latent_grid(size) * self.config.vae.downsample
        dtype = self.vae.autoencoder.dtype
        out = []
        for _, chunk in _chunks(images, batch_size):
            x = torch.stack([to_vae_tensor(to_unit_image(img, size), size) for img in chunk])
            pixels = self.to_uint8(self.vae.decode(self.vae.encode(x.to(self.device, dtype)))).cpu()
            out += [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]
        return out


def _progress_bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sampling", unit="step")
