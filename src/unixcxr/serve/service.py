"""The model behind the web app and the HTTP API: uploads checked and decoded, requests batched
through one bounded queue (batcher.py), limits in one dataclass."""

from __future__ import annotations

import base64
import io
import queue
import tempfile
from collections.abc import Hashable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from unixcxr.data.images import DICOM_MAGIC, DICOM_MAGIC_OFFSET, ImageLoadError, load_image
from unixcxr.model.config import SAMPLER_PRESETS
from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.batcher import Batcher

MIB = 1024 * 1024
SIGNATURES = {".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff"}


@dataclass(frozen=True)
class ServeLimits:
    max_upload_bytes: int = 20 * MIB  # a chest DICOM is typically 5-30 MB uncompressed
    max_batch: int = 8  # requests run together in one model call
    image_batch: int = 8  # images sampled together in one batch (2.4x faster than one by one on 2 CPU cores)
    max_queue: int = 64  # requests waiting beyond that are refused with 'busy'
    max_new_tokens: int = 512
    default_new_tokens: int = 256
    max_steps: int = 100
    max_report_chars: int = 4000
    request_timeout_s: float = 600.0


DEFAULT_LIMITS = ServeLimits()


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
            return load_image(path)
        except ImageLoadError as err:
            raise UploadError(str(err).replace(str(path), name)) from err


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class ModelService:
    """Reports and images through one batching queue."""

    def __init__(self, pipe: UniXPipeline, limits: ServeLimits = DEFAULT_LIMITS):
        self.pipe, self.limits = pipe, limits
        self.batcher = Batcher(self._run_batch, limits.max_batch, limits.max_queue)

    def _run_batch(self, key: Hashable, payloads: list) -> list:
        kind, *settings = key
        if kind == "report":
            prompt, max_new_tokens = settings
            return self.pipe.report(payloads, prompt, max_new_tokens=max_new_tokens, batch_size=len(payloads))
        steps, cfg_text, settings_name = settings
        texts, seeds = zip(*payloads)
        return self.pipe.generate(list(texts), steps=steps, cfg_text=cfg_text, seed=list(seeds),
                                  settings=settings_name, batch_size=self.limits.image_batch)

    def check_report_request(self, prompt: str | None, max_new_tokens: int | None) -> tuple[str | None, int]:
        limit = self.limits.max_new_tokens
        n = self.limits.default_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if not 1 <= n <= limit:
            raise UploadError(f"max_new_tokens must be between 1 and {limit}")
        if prompt is not None and not prompt.strip():
            prompt = None  # an empty instruction box means the default instruction
        if prompt is not None and len(prompt) > self.limits.max_report_chars:
            raise UploadError(f"the instruction is longer than {self.limits.max_report_chars} characters")
        return prompt, n

    def report(self, pixels: np.ndarray, prompt: str | None = None, max_new_tokens: int | None = None) -> Future:
        prompt, n = self.check_report_request(prompt, max_new_tokens)
        return self.batcher.submit(("report", prompt, n), pixels)

    def stream_report(self, pixels: np.ndarray, prompt: str | None = None,
                      max_new_tokens: int | None = None) -> Iterator[str]:
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

    def generate(self, report: str, steps: int | None = None, cfg_text: float | None = None, seed: int = 0,
                 settings: str | None = None) -> Future:
        if not report or not report.strip():
            raise UploadError("the report is empty; write the findings the image should show")
        if len(report) > self.limits.max_report_chars:
            raise UploadError(f"the report is longer than {self.limits.max_report_chars} characters")
        if steps is not None and not 2 <= int(steps) <= self.limits.max_steps:
            raise UploadError(f"steps must be between 2 and {self.limits.max_steps}")
        if cfg_text is not None and not 0.0 <= float(cfg_text) <= 20.0:
            raise UploadError("cfg_text must be between 0 and 20")
        if settings is not None and settings not in SAMPLER_PRESETS:
            raise UploadError(f"settings must be one of {', '.join(SAMPLER_PRESETS)} (or left out: the model's own)")
        key = ("generate", None if steps is None else int(steps), None if cfg_text is None else float(cfg_text),
               settings)
        return self.batcher.submit(key, (report, int(seed)))

    def close(self) -> None:
        self.batcher.close()
