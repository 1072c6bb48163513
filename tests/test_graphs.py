"""The CUDA-graph fallback (inference/graphs.py), driven on the CPU: where a capture fails, the
decoder and the sampler go on with the eager step, warn that they do, and give the same numbers."""

import warnings

import pytest
import torch

from unixcxr.flow.sampler import SamplerSettings
from unixcxr.inference import images, report
from unixcxr.inference.graphs import graphed_or_eager
from unixcxr.inference.report import DecodingSettings, generate_reports


class CaptureFails:
    """Stands in for GraphedDecodeStep / GraphedStep: building it fails as an unsupported capture does."""

    built = 0

    def __init__(self, *args, **kwargs):
        CaptureFails.built += 1
        raise RuntimeError("operation not permitted when stream is capturing")


@pytest.fixture
def failing_capture(monkeypatch):
    """Capture attempted on the CPU (as on a GPU), and every capture fails."""
    CaptureFails.built = 0
    for module, graphed in ((report, "GraphedDecodeStep"), (images, "GraphedStep")):
        monkeypatch.setattr(module, "can_capture", lambda device: True)
        monkeypatch.setattr(module, graphed, CaptureFails)
    return CaptureFails


def test_a_failed_capture_gives_the_eager_step_and_says_so():
    def build():
        raise RuntimeError("capture unsupported")

    eager = object()
    with pytest.warns(UserWarning, match=r"CUDA graph capture failed \(capture unsupported\); decoding without graphs"):
        assert graphed_or_eager(build, eager, "decoding") is eager


def test_a_capture_that_works_is_used_and_a_bug_in_the_builder_is_not_hidden():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert graphed_or_eager(lambda: "graphed", "eager", "sampling") == "graphed"

    def broken():
        raise TypeError("a bug, not an unsupported capture")

    with pytest.raises(TypeError):
        graphed_or_eager(broken, "eager", "sampling")


def test_the_decoder_falls_back_to_its_eager_fixed_shape_step(tiny_model, failing_capture):
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, tiny_model.config.vision.image_size, tiny_model.config.vision.image_size)
    prompts, settings = [[10, 11, 12], [13, 14]], DecodingSettings(max_new_tokens=report.GRAPH_MIN_TOKENS + 4,
                                                                   ignore_eos=True)
    eager, eager_logits = generate_reports(tiny_model, pixels, prompts, settings, return_logits=True,
                                           cuda_graphs=False)
    with pytest.warns(UserWarning, match="decoding without graphs"):
        fallback, fallback_logits = generate_reports(tiny_model, pixels, prompts, settings, return_logits=True)
    assert failing_capture.built == 1 and fallback == eager
    assert len(eager[0]) == settings.max_new_tokens
    torch.testing.assert_close(torch.stack(fallback_logits), torch.stack(eager_logits), rtol=1e-5, atol=1e-5)


def test_the_sampler_falls_back_to_its_eager_step(tiny_model, failing_capture):
    settings = SamplerSettings(num_points=4, cfg_text=2.0, cfg_interval=(0.0, 1.0))
    noise = torch.randn(2, tiny_model.config.vae.latent_channels, 4, 4, generator=torch.Generator().manual_seed(1))
    reports = [[20, 21, 22], [23]]
    eager = images.generate_latents(tiny_model, reports, settings, (4, 4), noise=noise, cuda_graphs=False)
    with pytest.warns(UserWarning, match="sampling without graphs"):
        fallback = images.generate_latents(tiny_model, reports, settings, (4, 4), noise=noise)
    assert failing_capture.built >= 1
    torch.testing.assert_close(fallback, eager, rtol=0, atol=0)
