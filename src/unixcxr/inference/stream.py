"""Text pieces of a report while it is decoded (the web app shows a report as it is written): the
decoding runs in a thread of its own and hands each token over a queue; the reader turns the ids so
far into text and yields what is new. A reader that stops early stops the decoding too."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import torch

from unixcxr.model.tokenizer import ReportTokenizer

INCOMPLETE_CHARACTER = "\ufffd"  # a byte-level piece that ends inside a multi-byte character


class _StopDecoding(Exception):
    """Raised inside the decoding thread when the stream's reader has gone away."""


def stream_text(decode: Callable[[Callable[[torch.Tensor], None]], None], tokenizer: ReportTokenizer,
                eos: int) -> Iterator[str]:
    """decode(on_token) runs a one-row decoding calling on_token([1] ids) after every step. Yields
    the new text after each token that completes characters; the pieces join to the decoded text."""
    tokens: queue.Queue = queue.Queue()
    stop = threading.Event()
    done = object()

    def on_token(token: torch.Tensor) -> None:
        if stop.is_set():
            raise _StopDecoding
        tokens.put(int(token[0]))

    def run() -> None:
        try:
            decode(on_token)
            tokens.put(done)
        except _StopDecoding:
            pass
        except BaseException as err:  # handed to the reader, raised there
            tokens.put(err)

    worker = threading.Thread(target=run, name="unixcxr-stream", daemon=True)
    worker.start()
    ids, shown = [], ""
    try:
        while (item := tokens.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            if item == eos:
                continue
            ids.append(item)
            text = tokenizer.decode(ids)
            if text.endswith(INCOMPLETE_CHARACTER) or len(text) <= len(shown):
                continue
            yield text[len(shown):]
            shown = text
        text = tokenizer.decode(ids)
        if len(text) > len(shown):
            yield text[len(shown):]
    finally:
        stop.set()
        worker.join()
