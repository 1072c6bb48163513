"""Continuous batching in the server: a report request that arrives while another decodes joins the
running batch between tokens and leaves when it is done, so a short report never waits for a long
one; every answer is the pipeline's own; a bad request fails only itself."""

import threading

import numpy as np
import pytest
import torch

from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.demo_model import write_demo_model_folder
from unixcxr.serve.service import ModelService, ServeLimits


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return UniXPipeline.from_pretrained(write_demo_model_folder(tmp_path_factory.mktemp("m") / "model"))


def film(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((64, 64)).astype(np.float32)


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "batch-at-a-time"])
def test_every_answer_is_the_pipelines_own_report(pipe, continuous):
    service = ModelService(pipe, ServeLimits(max_batch=3), continuous=continuous)
    requests = [(film(i), None if i % 2 else "Describe the film.", 3 + 5 * i) for i in range(6)]
    futures = [service.report(*r) for r in requests]
    for (pixels, prompt, n), future in zip(requests, futures):
        assert future.result(timeout=120) == pipe.report(pixels, prompt, max_new_tokens=n)[0]
    service.close()


def test_a_short_report_arriving_during_a_long_one_is_answered_first(pipe):
    """Batch-at-a-time, the short request waits for the long one's batch to end (this test fails
    with continuous=False); continuous, it joins between tokens and leaves after its own few."""
    service = ModelService(pipe, ServeLimits(max_batch=4, max_new_tokens=1500), continuous=True)
    long = service.report(film(0), None, 1500)
    tick = threading.Event()
    for _ in range(60_000):  # until the long report is decoding (a minute at most)
        if service.batcher.rows.active or long.done():
            break
        tick.wait(0.001)
    assert service.batcher.rows.active == 1, long.exception(timeout=0) if long.done() else "not started"
    short = service.report(film(1), None, 2)
    text = short.result(timeout=120)
    assert not long.done()  # answered while the long report is still being written
    assert text == pipe.report(film(1), max_new_tokens=2)[0]
    assert long.result(timeout=300) == pipe.report(film(0), max_new_tokens=1500)[0]
    service.close()


def test_a_request_that_fails_to_join_answers_only_itself(pipe):
    service = ModelService(pipe, ServeLimits(max_batch=4), continuous=True)
    gate = threading.Event()
    service.batcher.run_alone(gate.wait)  # hold the model thread so the three join together
    good = [service.report(film(i), None, 4) for i in range(2)]
    bad = service.batcher.submit("report", (torch.zeros(3, 5, 5), None, 4))  # an image the model cannot read
    gate.set()
    with pytest.raises(ValueError, match="vision encoder expects"):
        bad.result(timeout=60)
    for i, future in enumerate(good):
        assert future.result(timeout=60) == pipe.report(film(i), max_new_tokens=4)[0]
    service.close()
