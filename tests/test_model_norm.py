"""RMSNorm: float32 arithmetic whatever the input; its CPU inference path (one vector_norm reduction)
must be torch's rms_norm; under autocast it hands the projections their compute dtype."""

import pytest
import torch
import torch.nn.functional as F

from unixcxr.model.mot import RMSNorm


@pytest.mark.parametrize("eps", [1e-6, None])
def test_cpu_rms_norm_without_autograd_equals_torch_rms_norm(eps):
    torch.manual_seed(0)
    norm = RMSNorm(64, eps=eps)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(5, 7, 64) * 4
    with torch.no_grad():
        fast = norm(x)
    assert torch.allclose(fast, F.rms_norm(x, (64,), norm.weight.detach(), eps), atol=1e-5)
    assert torch.allclose(fast, norm(x).detach(), atol=1e-5)  # the autograd path (F.rms_norm) agrees


def test_cpu_rms_norm_of_a_zero_row_is_zero():
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        out = norm(torch.zeros(2, 8))
    assert torch.equal(out, torch.zeros_like(out))


def test_bf16_input_is_normalised_in_float32_and_returned_in_bf16():
    norm = RMSNorm(16)
    x = torch.randn(3, 16) * 100
    with torch.no_grad():
        out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), F.rms_norm(x.bfloat16().float(), (16,), norm.weight, None), atol=2e-2)


def test_under_autocast_the_output_is_in_the_autocast_dtype_with_the_float32_values():
    torch.manual_seed(1)
    norm = RMSNorm(16)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(4, 16) * 10
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, F.rms_norm(x, (16,), norm.weight, None).bfloat16())  # one rounding, at the end
    assert norm(x).dtype == torch.float32  # outside autocast: the input's dtype


def test_every_decoder_projection_gets_its_input_in_the_autocast_dtype(tiny_model):
    # under bf16 autocast no projection of the MoT layers should see a float32 activation: autocast
    # would then cast it once per projection (q, k, v read one norm output; the attention output would
    # make a round trip through float32), forward and backward
    from unixcxr.data.batches import GenerationExample, UnderstandingExample, make_batch

    cfg = tiny_model.config
    S, grid = cfg.vision.image_size, cfg.gen.image_size // cfg.vae.downsample
    und = [UnderstandingExample(torch.randn(3, S, S), [10, 11, 12], [20 + i for i in range(k)]) for k in (5, 9)]
    gen = [GenerationExample(torch.randn(cfg.vae.latent_channels, grid, grid), [10, 11, 12, 13])] * 2
    batch = make_batch(cfg, und, gen, text_dropout=0.0)
    seen = {}

    def record(name):
        return lambda module, args: seen.setdefault(name, set()).add(args[0].dtype)

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in tiny_model.layers.named_modules()
             if isinstance(m, torch.nn.Linear)]
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = tiny_model.train()(batch.sequence, images=batch.images, latents=batch.latents)
    finally:
        for h in hooks:
            h.remove()
    losses["loss"].backward()
    assert len(seen) == 2 * 7 * cfg.llm.num_layers  # both experts' seven projections in every layer ran
    assert all(dtypes == {torch.bfloat16} for dtypes in seen.values()), {n: d for n, d in seen.items()
                                                                        if d != {torch.bfloat16}}
    assert torch.isfinite(losses["loss"])
