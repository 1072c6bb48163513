"""What the server accepts: upload size, batch and queue sizes, token and step caps. Free of torch, so
`unixcxr serve --help` shows the defaults without loading the model code."""

from __future__ import annotations

from dataclasses import dataclass, fields

from unixcxr.data.images import DEFAULT_MAX_PIXELS

MIB = 1024 * 1024


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
    max_pixels: int = DEFAULT_MAX_PIXELS  # uploads larger than this are refused from their header
    decode_workers: int = 2  # uploads decoded at once, beside the model's thread

    def __post_init__(self):
        """Every limit at least 1: a 0 would not mean 'none' but, for a queue, 'unbounded'."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 1:
                raise ValueError(f"{f.name} must be at least 1, got {value!r}")
        if not 1 <= self.default_new_tokens <= self.max_new_tokens:
            raise ValueError(f"default_new_tokens must be between 1 and max_new_tokens ({self.max_new_tokens})")


DEFAULT_LIMITS = ServeLimits()
