"""Regional torch.compile (train.compile.compile_regions) computes what eager does: training loss and every
gradient, with one graph per region for all layers, experts and batch shapes (no recompiling per
batch); a generation stage's frozen und expert gets graphs of its own; eval-mode calls (decoding,
sampling) stay eager and compile nothing."""

import pytest
import torch

from unixcxr.data.batches import GenerationExample, make_batch
from unixcxr.flow.sampler import SamplerSettings
from unixcxr.inference.images import generate_latents
from unixcxr.inference.report import DecodingSettings, generate_reports
from unixcxr.model.config import tiny
from unixcxr.model.sequence import collate, generation_layout, understanding_layout
from unixcxr.model.unix import UniX
from unixcxr.train.compile import compile_regions

pytestmark = pytest.mark.slow  # ~1 min of inductor compiling on 2 cores


def _mixed_batch(model, n_text):
    """An und sample and a gen sample in one padded batch (index routing, padding skipped)."""
    s, nv = model.config.tokens, model.config.vision.num_tokens
    return collate([understanding_layout(s, nv, [10, 11], list(range(20, 20 + n_text))),
                    generation_layout(s, [30, 31, 32], 64)])


def _step(model, batch, seed):
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    out = model(batch, images=torch.randn(1, 3, 32, 32), latents=torch.randn(1, 4, 8, 8))
    out["loss"].backward()
    return out["loss"].detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _gen_step(model, n_text, seed):
    """A generation-stage step: und frozen (no autograd), prompts of two lengths (left padding)."""
    s = model.config.tokens
    examples = [GenerationExample(torch.zeros(4, 8, 8), list(range(20, 20 + n)), f"{n}") for n in (3, n_text)]
    batch = make_batch(model.config, generation=examples, text_dropout=0.0).sequence
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    out = model(batch, latents=torch.randn(2, 4, 8, 8), freeze_und=True)
    out["loss"].backward()
    assert s.pad in batch.tokens[:, 0].tolist()  # padded on the left
    return out["loss"].detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_compiled_regions_match_eager_in_training_and_inference():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = UniX(tiny())
    torch.nn.init.normal_(model.llm2vae.weight, std=0.02)  # a non-zero velocity head: its gradients flow back
    images, prompts = torch.randn(2, 3, 32, 32), [[5, 6], [7]]
    eager = [_step(model, _mixed_batch(model, n), n) for n in (5, 9, 14)]
    eager_gen = [_gen_step(model, n, n) for n in (7, 12)]
    model.eval()
    with torch.no_grad():
        reports = generate_reports(model, images, prompts, DecodingSettings(max_new_tokens=6, ignore_eos=True))
        latents = generate_latents(model, [[30, 31], [32]], SamplerSettings(num_points=4), (8, 8),
                                   noise=torch.randn(2, 4, 8, 8))

    model.train()
    compile_regions(model)
    compiled = [_step(model, _mixed_batch(model, n), n) for n in (5, 9, 14)]  # three batch shapes
    compiled_gen = [_gen_step(model, n, n) for n in (7, 12)]
    for (loss_e, grads_e), (loss_c, grads_c) in zip(eager + eager_gen, compiled + compiled_gen):
        assert torch.allclose(loss_e, loss_c, rtol=1e-5, atol=1e-6)
        assert grads_e.keys() == grads_c.keys()
        for name in grads_e:
            assert torch.allclose(grads_e[name], grads_c[name], rtol=1e-4, atol=1e-6), name
    frames = torch._dynamo.utils.counters["frames"]
    assert len(model.layers) * 2 == 4
    graphs = frames["ok"]
    assert 0 < graphs <= 8, dict(frames)  # compiled (not silently eager); a graph per expert would be >= 16
    for _, grads in compiled_gen:
        assert grads and not any(".und." in n for n in grads)  # the und expert stayed frozen
    model.eval()
    with torch.no_grad():
        assert generate_reports(model, images, prompts, DecodingSettings(max_new_tokens=6, ignore_eos=True)) == reports
        again = generate_latents(model, [[30, 31], [32]], SamplerSettings(num_points=4), (8, 8),
                                 noise=torch.randn(2, 4, 8, 8))
    assert torch.allclose(again, latents, atol=1e-5)
    assert frames["ok"] == graphs  # inference compiled nothing
