"""Images drawn with different text guidance scales share every sampler step: each row gets exactly
the branches and the arithmetic it would get alone (the released guidance rule and ours), in the
sampler, in the pipeline and in the server's batches."""

import dataclasses
import threading

import numpy as np
import pytest
import torch

from unixcxr.flow.sampler import COND, NO_TEXT, PRESETS, SamplerSettings, guide, guide_rows
from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.demo_model import write_demo_model_folder
from unixcxr.serve.service import ModelService, ServeLimits

REPORTS = ["FINDINGS: Large right pleural effusion.", "FINDINGS: No acute findings.", "FINDINGS: Cardiomegaly."]


@pytest.mark.parametrize("base", [SamplerSettings(), PRESETS["released"], PRESETS["demo"]],
                         ids=["unixcxr", "released", "demo"])
def test_each_row_is_guided_as_it_would_be_alone(base):
    torch.manual_seed(0)
    scales = [1.0, 2.5, 4.0, 2.5, 0.5]
    preds = {COND: torch.randn(5, 4, 3, 3), NO_TEXT: torch.randn(5, 4, 3, 3)}
    got = guide_rows(preds, base, scales, has_image=False)
    for i, scale in enumerate(scales):
        own = dataclasses.replace(base, cfg_text=scale)
        alone = {b: preds[b][i:i + 1] for b in own.guided_branches(False)}
        assert torch.equal(got[i:i + 1], guide(alone, own)), (i, scale)
    assert torch.equal(got[0], preds[COND][0])  # scale 1 counts under neither rule: the conditional prediction


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return UniXPipeline.from_pretrained(write_demo_model_folder(tmp_path_factory.mktemp("m") / "model"))


def test_a_batch_of_scales_draws_what_each_scale_draws_alone(pipe):
    scales = [1.0, 3.0, 6.0]
    batch = pipe.generate(REPORTS, steps=4, cfg_text=scales, seed=[5, 6, 7])
    assert batch.guidance_scale == scales and batch.settings_used()["guidance_scale"] == scales
    for i, scale in enumerate(scales):
        alone = pipe.generate(REPORTS[i], steps=4, cfg_text=scale, seed=5 + i)[0]
        assert np.array_equal(np.asarray(batch[i]), np.asarray(alone)), scale
    assert not np.array_equal(np.asarray(batch[0]), np.asarray(pipe.generate(REPORTS[0], steps=4, cfg_text=6.0,
                                                                            seed=5)[0]))  # the scale matters


def test_one_scale_per_report_is_checked(pipe):
    with pytest.raises(ValueError, match="3 reports take 3 cfg_text values"):
        pipe.generate(REPORTS, steps=2, cfg_text=[1.0, 2.0])
    with pytest.raises(ValueError, match="cfg_text"):
        pipe.generate(REPORTS, steps=2, cfg_text=[1.0, float("nan"), 2.0])


class CountingService(ModelService):
    """The real service, counting the model calls its batches make."""

    calls: list

    def _run_batch(self, key, payloads):
        self.calls.append((key, len(payloads)))
        return super()._run_batch(key, payloads)


def test_requests_with_other_prompts_seeds_and_scales_share_one_batch(pipe):
    service = CountingService(pipe, ServeLimits(max_batch=8))
    service.calls = []
    gate = threading.Event()
    service.batcher.run_alone(gate.wait)  # hold the model thread so the three arrive together
    futures = [service.generate(REPORTS[i], steps=3, cfg_text=[1.0, 2.0, 5.0][i], seed=i) for i in range(3)]
    gate.set()
    images = [f.result(timeout=120) for f in futures]
    assert [n for _, n in service.calls] == [3]  # one model call drew all three
    for i, image in enumerate(images):
        alone = pipe.generate(REPORTS[i], steps=3, cfg_text=[1.0, 2.0, 5.0][i], seed=i)[0]
        assert np.array_equal(np.asarray(image), np.asarray(alone))
    service.close()
