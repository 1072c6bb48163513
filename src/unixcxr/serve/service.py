"""The model behind the web app and the HTTP API: uploads checked and decoded, requests batched
through one bounded queue (batcher.py), limits in one dataclass.

Uploads are decoded and preprocessed in a small pool of their own, never on the event loop (a
large image would stall every other request, /api/health included) and never in the model's
thread; an image over the pixel limit is refused from its header before any pixel is decoded.
Every number a request carries goes through unixcxr.validation before it joins a batch."""

from __future__ import annotations

import base64
import io
import queue
import tempfile
import threading
from collections.abc import Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unixcxr.data.images import DICOM_MAGIC, DICOM_MAGIC_OFFSET, ImageLoadError, load_image
from unixcxr.inference.field_names import grid_points, text_guidance
from unixcxr.model.config import SAMPLER_PRESETS
from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.batcher import Batcher, QueueFull
from unixcxr.serve.limits import DEFAULT_LIMITS, MIB, ServeLimits
from unixcxr.serve.rows import REPORT, ReportRows
from unixcxr.validation import check, check_optional

IMAGES = "images"  # the batch key's kind of image requests that carry their own guidance scale
SIGNATURES = {".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff"}


class UploadError(ValueError):
    """An upload we refuse; the message is safe to show to the user."""


def image_kind(data: bytes) -> str | None:
    """File suffix from the content itself (a name or a content-type header can lie)."""
    for suffix, signature in SIGNATURES.items():
        if data.startswith(signature):
            return suffix
    if data[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + len(DICOM_MAGIC)] == DICOM_MAGIC:
        return ".dcm"
    return None


def decode_upload(data: bytes, name: str, limits: ServeLimits) -> np.ndarray:
    """Uploaded bytes -> grayscale [H, W] in [0, 1], or UploadError naming the upload."""
    if not data:
        raise UploadError(f"{name}: the file is empty")
    if len(data) > limits.max_upload_bytes:
        raise UploadError(f"{name}: {len(data) / MIB:.1f} MiB is over the upload limit of "
                          f"{limits.max_upload_bytes / MIB:.0f} MiB")
    suffix = image_kind(data)
    if suffix is None:
        raise UploadError(f"{name}: not a PNG, JPEG or DICOM file")
    with tempfile.TemporaryDirectory(prefix="unixcxr-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return load_image(path, max_pixels=limits.max_pixels)
        except ImageLoadError as err:
            raise UploadError(str(err).replace(str(path), name)) from err


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class ModelService:
    """Reports and images through one batching queue; uploads decoded in a pool beside it.
    continuous: report requests join a running decode batch between tokens (serve/rows.py; the
    default on a CPU); False: requests that arrive together with equal settings run as one batch,
    which on a GPU replays a CUDA graph per token (the continuous decoder runs eagerly)."""

    def __init__(self, pipe: UniXPipeline, limits: ServeLimits = DEFAULT_LIMITS, continuous: bool | None = None):
        self.pipe, self.limits = pipe, limits
        self.continuous = pipe.device.type == "cpu" if continuous is None else continuous
        rows = ReportRows(pipe, limits.max_batch) if self.continuous else None
        self.batcher = Batcher(self._run_batch, limits.max_batch, limits.max_queue, rows)
        self._decoder = ThreadPoolExecutor(limits.decode_workers, thread_name_prefix="unixcxr-decode")
        self._decoding = threading.BoundedSemaphore(limits.max_queue)  # uploads decoding or waiting to

    def _run_batch(self, key: Hashable, payloads: list) -> list:
        kind, *settings = key
        if kind == "report":
            prompt, max_new_tokens = settings
            return self.pipe.report_preprocessed(torch.stack(payloads), prompt, max_new_tokens=max_new_tokens)
        if kind == IMAGES:  # one guidance scale per request: requests of other scales share the steps
            steps, settings_name = settings
            texts, seeds, cfg_text = (list(x) for x in zip(*payloads))
        else:  # ("generate", steps, cfg_text, settings): one scale for the batch
            steps, cfg_text, settings_name = settings
            texts, seeds = (list(x) for x in zip(*payloads))
        return self.pipe.generate(texts, steps=steps, cfg_text=cfg_text, seed=seeds,
                                  settings=settings_name, batch_size=self.limits.image_batch)

    def read_upload(self, data: bytes, name: str) -> Future:
        """Future of the model's input tensor [3, S, S] for uploaded bytes, decoded and preprocessed in
        the decode pool; QueueFull when max_queue uploads are already being decoded or waiting."""
        if not self._decoding.acquire(blocking=False):
            raise QueueFull(f"{self.limits.max_queue} uploads are already being decoded")
        try:
            future = self._decoder.submit(lambda: self.prepare(decode_upload(data, name, self.limits)))
        except BaseException:
            self._decoding.release()
            raise
        future.add_done_callback(lambda _: self._decoding.release())
        return future

    def prepare(self, pixels: np.ndarray) -> torch.Tensor:
        """An image as the model reads it, [3, S, S] (kept in the queue instead of the whole film)."""
        return self.pipe.preprocess([pixels])[0]

    def check_report_request(self, prompt: str | None, max_new_tokens: object) -> tuple[str | None, int]:
        limit = self.limits.max_new_tokens
        n = check_optional("max_new_tokens", max_new_tokens, hi=limit)
        n = self.limits.default_new_tokens if n is None else n
        if prompt is not None and not isinstance(prompt, str):
            raise UploadError("prompt must be text")
        if prompt is not None and not prompt.strip():
            prompt = None  # an empty instruction box means the default instruction
        if prompt is not None and len(prompt) > self.limits.max_report_chars:
            raise UploadError(f"the instruction is longer than {self.limits.max_report_chars} characters")
        return prompt, n

    def report(self, image: np.ndarray | torch.Tensor, prompt: str | None = None,
               max_new_tokens: object = None) -> Future:
        """image: decoded pixels [H, W] (preprocessed here, in the caller's thread) or read_upload's tensor."""
        prompt, n = self.check_report_request(prompt, max_new_tokens)
        pixels = image if isinstance(image, torch.Tensor) else self.prepare(image)
        if self.continuous:
            return self.batcher.submit(REPORT, (pixels, prompt, n))
        return self.batcher.submit(("report", prompt, n), pixels)

    def stream_report(self, pixels: np.ndarray, prompt: str | None = None,
                      max_new_tokens: object = None) -> Iterator[str]:
        """Text pieces of one report as they are decoded; the decoding holds the model alone."""
        prompt, n = self.check_report_request(prompt, max_new_tokens)
        pieces: queue.Queue = queue.Queue()
        end = object()

        def decode():
            try:
                for piece in self.pipe.stream_report(pixels, prompt, max_new_tokens=n):
                    pieces.put(piece)
            finally:
                pieces.put(end)

        done = self.batcher.run_alone(decode)
        while (piece := pieces.get(timeout=self.limits.request_timeout_s)) is not end:
            yield piece
        done.result()  # raises what the decoding raised

    def check_generate_request(self, report: object, steps: object = None, cfg_text: object = None,
                               seed: object = 0, settings: object = None, *, num_inference_steps: object = None,
                               guidance_scale: object = None) -> tuple[str, int, tuple]:
        """(report, seed, batch key) of a valid request, or UploadError / InvalidValue naming the
        field: checked here, before the request joins a batch, by the same rules as the CLI's.
        num_inference_steps and guidance_scale are diffusers' names of steps - 1 and cfg_text."""
        if not isinstance(report, str) or not report.strip():
            raise UploadError("the report is empty; write the findings the image should show")
        if len(report) > self.limits.max_report_chars:
            raise UploadError(f"the report is longer than {self.limits.max_report_chars} characters")
        if settings is not None and settings not in SAMPLER_PRESETS:
            raise UploadError(f"settings must be one of {', '.join(SAMPLER_PRESETS)} (or left out: the model's own)")
        steps = grid_points(None if steps == "" else steps, None if num_inference_steps == "" else num_inference_steps,
                            max_points=self.limits.max_steps)
        cfg_text = text_guidance(None if cfg_text == "" else cfg_text,
                                 None if guidance_scale == "" else guidance_scale)
        seed = check("seed", 0 if seed is None or seed == "" else seed)
        self.pipe.sampler_settings(settings, steps=steps, cfg_text=cfg_text)  # the combination is valid
        return report, seed, ("generate", steps, cfg_text, settings)

    def sampler_settings(self, key: tuple):
        """The SamplerSettings a generate batch key stands for."""
        _, steps, cfg_text, settings = key
        return self.pipe.sampler_settings(settings, steps=steps, cfg_text=cfg_text)

    def submit_generate(self, report: str, seed: int, key: tuple) -> Future:
        """Queue a checked request (check_generate_request's answer). Requests that differ only in
        their prompt, seed or text guidance scale share a batch and every sampler step."""
        _, steps, cfg_text, settings = key
        if cfg_text is None:  # the preset's scale
            cfg_text = self.sampler_settings(key).cfg_text
        return self.batcher.submit((IMAGES, steps, settings), (report, seed, cfg_text))

    def generate(self, report: object, steps: object = None, cfg_text: object = None, seed: object = 0,
                 settings: object = None) -> Future:
        report, seed, key = self.check_generate_request(report, steps, cfg_text, seed, settings)
        return self.submit_generate(report, seed, key)

    def close(self) -> None:
        self.batcher.close()
        self._decoder.shutdown(wait=True, cancel_futures=True)
