"""Report requests as rows of one running decode batch (continuous batching, for the Batcher).

A request joins between two decode steps with its own instruction, token limit and image, and
leaves with its text the step it writes its end-of-sequence token or reaches its limit: a short
report never waits for a long one, and a request that arrives while others decode starts at once
(up to max_rows together) instead of waiting for the running batch to end."""

from __future__ import annotations

from collections.abc import Hashable
from concurrent.futures import Future

from unixcxr.inference.continuous import ContinuousDecoder, ReportRequest
from unixcxr.pipeline import UniXPipeline

REPORT = "report"  # the batch key of every report request (settings travel with each row)


class ReportRows:
    def __init__(self, pipe: UniXPipeline, max_rows: int):
        self.pipe, self.max_rows = pipe, max_rows
        self.decoder = ContinuousDecoder(pipe.model)

    @property
    def active(self) -> int:
        return self.decoder.active

    def accepts(self, key: Hashable) -> bool:
        return key == REPORT

    def admit(self, payloads: list, futures: list[Future]) -> None:
        """payloads: (pixels [3, S, S], instruction or None, max_new_tokens), checked by the service."""
        requests = [ReportRequest(pixels, self.pipe._prompt_ids(prompt, 1)[0], self.pipe._decoding(n, 0.0, 1.0),
                                  handle=future) for (pixels, prompt, n), future in zip(payloads, futures)]
        self.decoder.admit(requests)

    def step(self) -> list[tuple[Future, str]]:
        finished = self.decoder.step()
        texts = self.pipe.tokenizer.decode_batch([r.tokens for r in finished]) if finished else []
        return [(r.handle, text) for r, text in zip(finished, texts)]

    def abort(self) -> list[Future]:
        futures = [r.handle for r in self.decoder.requests]
        self.decoder = ContinuousDecoder(self.pipe.model)
        return futures
