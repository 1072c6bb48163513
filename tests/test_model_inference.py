"""Fast inference must compute exactly what the slow, obvious computation computes."""

import pytest
import torch

from unixcxr.flow.sampler import COND, NO_TEXT, SamplerSettings, euler_sample, guide
from unixcxr.inference.images import generate_latents
from unixcxr.inference.reference import released_sample
from unixcxr.inference.report import (
    DecodingSettings,
    generate_reports,
    generate_reports_uncached,
    sample_next,
)
from unixcxr.model.sequence import collate, understanding_layout


def test_cached_decoding_gives_the_logits_of_full_recomputation_for_ragged_prompts(tiny_model):
    torch.manual_seed(3)
    images = torch.randn(3, 3, 32, 32)
    prompts = [[10, 11, 12, 13, 14, 15], [10], [20, 21, 22]]  # different lengths -> left padding
    reports, step_logits = generate_reports(tiny_model, images, prompts, DecodingSettings(max_new_tokens=10),
                                            return_logits=True)
    s, nv = tiny_model.config.tokens, tiny_model.config.vision.num_tokens
    for i, prompt in enumerate(prompts):  # each sample alone, no padding, no cache, whole sequence
        layout = understanding_layout(s, nv, prompt, None)
        start = len(layout)
        generated = [int(step[i].argmax()) for step in step_logits]
        layout.text(generated[:-1])
        batch = collate([layout])
        h, _ = tiny_model.hidden_states(batch, tiny_model.encode_images(images[i:i + 1]))
        full = tiny_model.text_logits(h[0, start - 1:])
        cached = torch.stack([step[i] for step in step_logits])
        rows = len(reports[i]) + 1 if len(reports[i]) < len(step_logits) else len(step_logits)
        assert torch.allclose(full[:rows], cached[:rows], atol=1e-4), f"sample {i}"


def test_cached_and_uncached_decoders_write_the_same_reports(tiny_model):
    torch.manual_seed(4)
    images = torch.randn(2, 3, 32, 32)
    prompts = [[10, 11, 12], [13]]
    settings = DecodingSettings(max_new_tokens=12)
    assert generate_reports(tiny_model, images, prompts, settings) == \
        generate_reports_uncached(tiny_model, images, prompts, settings)


@pytest.mark.parametrize("prompts", [[[10, 11, 12, 13, 14, 15], [10], [20, 21, 22]], [[10, 11], [12, 13]]],
                         ids=["ragged", "equal"])
def test_fixed_shape_decode_step_gives_the_growing_caches_logits(tiny_model, prompts):
    # the step a CUDA graph replays (one column written at a device index, attention over the whole
    # capacity under a mask) must compute what the growing cache computes, with and without padding
    torch.manual_seed(5)
    images = torch.randn(len(prompts), 3, 32, 32)
    settings = DecodingSettings(max_new_tokens=9, ignore_eos=True)
    grown, grown_logits = generate_reports(tiny_model, images, prompts, settings, return_logits=True)
    fixed, fixed_logits = generate_reports(tiny_model, images, prompts, settings, return_logits=True, static=True)
    assert fixed == grown
    for a, b in zip(fixed_logits, grown_logits):
        assert torch.allclose(a, b, atol=1e-5)
    # the logits returned are the step's own, not one buffer overwritten by the next step
    assert not torch.equal(fixed_logits[1], fixed_logits[2])


def test_fixed_shape_decode_step_writes_only_its_slot_column(tiny_model):
    from unixcxr.inference.report import DecodeStep

    images, prompts = torch.randn(1, 3, 32, 32), [[10, 11]]
    grown = generate_reports(tiny_model, images, prompts, DecodingSettings(max_new_tokens=4, ignore_eos=True))
    cache = tiny_model.new_cache(1, 3)
    step = DecodeStep(tiny_model, cache, torch.ones(1, 3, dtype=torch.bool))
    step.set(torch.tensor([grown[0][0]]), torch.zeros(1, 1, dtype=torch.long), 2)
    step()  # writes the last column of every layer, nothing before it
    assert torch.count_nonzero(cache.k[:, :, :, 2]) > 0 and torch.count_nonzero(cache.k[:, :, :, :2]) == 0


@pytest.mark.parametrize("static", [False, True], ids=["growing-cache", "fixed-shape-step"])
def test_each_row_stops_at_its_own_end_of_sequence(tiny_model, static):
    torch.manual_seed(7)
    images, prompts = torch.randn(2, 3, 32, 32), [[10, 11], [12]]
    settings = DecodingSettings(max_new_tokens=12, temperature=1.0)  # sampled: varied tokens
    free = generate_reports(tiny_model, images, prompts, settings, torch.Generator().manual_seed(0), static=static)
    # declare as end-of-sequence a token that row 0 writes and row 1 never does
    stop = next(t for t in free[0][1:] if t not in free[1])
    tiny_model.config.tokens.eos = stop
    reports = generate_reports(tiny_model, images, prompts, settings, torch.Generator().manual_seed(0),
                               static=static)
    assert reports[0] == free[0][: free[0].index(stop)]  # row 0 ends at its eos
    assert reports[1] == free[1]  # row 1 goes on to the length limit


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    settings = DecodingSettings(temperature=1.0, top_p=0.7)
    g = torch.Generator().manual_seed(0)
    drawn = {int(sample_next(logits, settings, g)) for _ in range(200)}
    assert drawn == {0, 1}


def test_prefix_cached_batched_sampler_matches_the_released_scheme(tiny_model):
    torch.manual_seed(5)
    reports = [[30, 31, 32, 33], [34]]
    noise = torch.randn(2, 4, 8, 8)
    for settings in (SamplerSettings(num_points=6), SamplerSettings(num_points=5, cfg_text=3.0, shift=3.0,
                                                                    renorm=True)):
        fast = generate_latents(tiny_model, reports, settings, (8, 8), noise=noise)
        slow = released_sample(tiny_model, reports, settings, noise)
        assert torch.allclose(fast, slow, atol=1e-5)
        assert fast.abs().mean() > 0.1


def test_image_conditioned_guidance_matches_the_released_scheme(tiny_model):
    torch.manual_seed(6)
    reports, images, noise = [[30, 31], [32, 33, 34]], torch.randn(2, 3, 32, 32), torch.randn(2, 4, 8, 8)
    settings = SamplerSettings(num_points=4, cfg_text=2.0, cfg_img=1.5, renorm=True)
    fast = generate_latents(tiny_model, reports, settings, (8, 8), images=images, noise=noise)
    slow = released_sample(tiny_model, reports, settings, noise, images=images)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_guidance_scale_one_equals_the_conditional_prediction():
    v, u = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    settings = SamplerSettings(cfg_text=1.0)
    assert settings.branches(0.9, has_image=False) == (COND,)  # no wasted pass
    assert torch.allclose(guide({COND: v, NO_TEXT: u}, settings), v)
    assert torch.allclose(guide({COND: v, NO_TEXT: u}, SamplerSettings(cfg_text=2.0)), 2 * v - u)


def test_guidance_runs_only_inside_the_cfg_interval():
    settings = SamplerSettings(num_points=11, cfg_text=2.0, cfg_interval=(0.4, 1.0))
    asked = []

    def velocity_fn(x, t, branches):
        asked.append((t, branches))
        return {b: torch.zeros_like(x) for b in branches}

    euler_sample(velocity_fn, torch.zeros(1, 1, 2, 2), settings)
    for t, branches in asked:
        assert (NO_TEXT in branches) == (0.4 < t <= 1.0), (t, branches)
    assert len(asked) == 10


def test_renorm_caps_the_guided_norm_per_sample():
    cond = torch.stack([torch.ones(1, 2, 2), 10 * torch.ones(1, 2, 2)])
    uncond = torch.zeros_like(cond)
    v = guide({COND: cond, NO_TEXT: uncond}, SamplerSettings(cfg_text=4.0, renorm=True))
    norms = torch.linalg.vector_norm(v, dim=(1, 2, 3))
    assert torch.allclose(norms, torch.linalg.vector_norm(cond, dim=(1, 2, 3)))  # each sample capped alone


@pytest.mark.parametrize("num_points", [1, 0])
def test_sampler_grid_needs_two_points(num_points):
    with pytest.raises(ValueError, match="steps must be an integer from 2"):
        euler_sample(lambda x, t, b: {}, torch.zeros(1, 1, 1, 1), SamplerSettings(num_points=num_points))


def test_unpadded_prompts_take_the_maskless_path_and_still_match(tiny_model):
    torch.manual_seed(8)
    reports, noise = [[30, 31, 32]], torch.randn(1, 4, 8, 8)
    settings = SamplerSettings(num_points=4, cfg_text=1.0)  # one branch, one prompt: no padding at all
    fast = generate_latents(tiny_model, reports, settings, (8, 8), noise=noise)
    assert torch.allclose(fast, released_sample(tiny_model, reports, settings, noise), atol=1e-5)
