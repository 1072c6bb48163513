"""A release folder runs the authors' way (their code was run side by side: docs/released-code.md):
prompts open with two BOS, the text-CFG context is empty with the latent block at RoPE position 0,
the image-CFG pass of a text-only run is the conditional prediction (folded into the guidance: an
effective text scale of 1 + s_img (s_text - 1), no third forward), renorm is on, the grid is shifted
by 3.0, 8-bit outputs are truncated and 8-bit inputs are resized as 8 bits. Our own folders keep
their conventions, and a folder records which it has. Tiny folders in the released layout."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from test_official import write_official_folder
from unixcxr.cli import main
from unixcxr.flow.matching import timestep_grid
from unixcxr.flow.sampler import COND, NO_IMAGE, NO_TEXT, PRESETS, SamplerSettings, euler_sample, guide
from unixcxr.inference.images import VelocityStep, encode_prompts, generate_latents, prefix_layout
from unixcxr.inference.reference import released_sample
from unixcxr.inference.report import _layouts
from unixcxr.model.config import RELEASED_CONVENTIONS, ConventionsConfig
from unixcxr.model.io import load_model_folder
from unixcxr.model.sequence import LATENT, SampleLayout, collate
from unixcxr.model.unix import unpatchify
from unixcxr.model.vae import to_uint8_truncated
from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.demo_model import write_demo_model_folder

BOS, EOS, SOI, EOI = 100000, 100001, 100003, 100580


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_official_folder(tmp_path_factory.mktemp("UniX"))


@pytest.fixture(scope="module")
def pipe(release):
    return UniXPipeline.from_pretrained(release)


# --- D1: two BOS ---------------------------------------------------------------------------------------
def test_released_prompts_open_with_two_bos(pipe):
    ids = pipe.tokenizer.encode("FINDINGS: Clear.")
    model = pipe.model
    n_vit = model.config.vision.num_tokens
    assert _layouts(model, [ids])[0].tokens == [SOI] + [0] * n_vit + [EOI, BOS, BOS, *ids, EOS, BOS]
    assert prefix_layout(model, ids, with_image=False).tokens == [BOS, BOS, *ids, EOS]


def test_the_bos_count_follows_the_release_tokenizer(tmp_path):
    folder = write_official_folder(tmp_path / "UniX")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": False}))
    assert UniXPipeline.from_pretrained(folder).config.conventions.prompt_bos == 1


# --- D2: the empty unconditional context -----------------------------------------------------------------
def _block_alone(model, x_t, t):
    """[soi][x_t][eoi] with nothing before it: one RoPE position, 0."""
    _, _, h, w = x_t.shape
    layout = SampleLayout(model.config.tokens).latent_block(h * w)
    assert set(layout.position) == {0}
    batch = collate([layout])
    hidden, _ = model.hidden_states(batch, None, model.latent_tokens(x_t, torch.full((1,), t)))
    return unpatchify(model.velocity(hidden[batch.kind == LATENT])[None], h, w)


def test_released_unconditional_branch_sees_no_token_and_sits_at_position_zero(pipe):
    model = pipe.model
    assert prefix_layout(model, None, with_image=False).tokens == []
    x_t = torch.randn(1, model.config.vae.latent_channels, 4, 4, generator=torch.Generator().manual_seed(0))
    report = pipe.tokenizer.encode("FINDINGS: Small effusion.")
    cache = encode_prompts(model, [report], 16, branches=(COND, NO_TEXT))
    step = VelocityStep(model, cache, 1, (4, 4), (COND, NO_TEXT))  # the sampler's step, both branches at once
    with torch.no_grad():
        preds = dict(zip((COND, NO_TEXT), step(x_t, torch.tensor([0.7])).chunk(2)))
    expected = _block_alone(model, x_t, 0.7)
    torch.testing.assert_close(preds[NO_TEXT], expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(preds[COND], expected, atol=1e-4)  # the report does change the prediction


def test_our_models_keep_the_bos_eos_unconditional_context(tiny_model):
    s = tiny_model.config.tokens
    assert prefix_layout(tiny_model, None, with_image=False).tokens == [s.bos, s.eos]


# --- D3: the image-CFG pass of a text-only run, folded ---------------------------------------------------
def test_image_guidance_without_an_image_is_an_effective_text_scale_with_no_third_pass():
    c, u = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    demo = SamplerSettings(cfg_text=3.0, cfg_img=1.5, guidance="released")
    assert demo.branches(0.9, has_image=False) == (COND, NO_TEXT)  # two forwards, not three
    assert demo.effective_text_scale(has_image=False) == 4.0
    torch.testing.assert_close(guide({COND: c, NO_TEXT: u}, demo), u + 4.0 * (c - u))
    # their third pass runs the text context, which computes c again: the same arithmetic, bit for bit
    assert torch.equal(guide({COND: c, NO_TEXT: u}, demo), guide({COND: c, NO_TEXT: u, NO_IMAGE: c.clone()}, demo))
    ours = SamplerSettings(cfg_text=3.0, cfg_img=1.5)  # our rule: image guidance needs an image
    torch.testing.assert_close(guide({COND: c, NO_TEXT: u}, ours), u + 3.0 * (c - u))


def test_released_rule_counts_only_scales_above_one():
    weaker = SamplerSettings(cfg_text=1.0, cfg_img=1.5, guidance="released")
    assert weaker.guided_branches(has_image=True) == (COND,)  # no text guidance: no guidance at all
    assert SamplerSettings(cfg_text=0.5, guidance="released").guided_branches(False) == (COND,)
    assert SamplerSettings(cfg_text=0.5).guided_branches(False) == (COND, NO_TEXT)


def test_folded_sampler_equals_the_scheme_that_runs_the_third_pass(pipe):
    reports = [pipe.tokenizer.encode("FINDINGS: Small effusion.")]
    noise = torch.randn(1, pipe.config.vae.latent_channels, 4, 4, generator=torch.Generator().manual_seed(1))
    settings = pipe.sampler_settings("demo", steps=6)
    fast = generate_latents(pipe.model, reports, settings, (4, 4), noise=noise)
    slow = released_sample(pipe.model, reports, settings, noise)  # cond, empty context, text context again
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)
    unfolded = generate_latents(pipe.model, reports, SamplerSettings(**{**settings.__dict__, "guidance": "unixcxr"}),
                                (4, 4), noise=noise)
    assert not torch.allclose(fast, unfolded, atol=1e-5)  # the image scale does act without an image


# --- D4, D5: renorm and the shifted grid ------------------------------------------------------------------
def test_release_folder_samples_with_their_evaluation_settings_by_default(pipe):
    s = pipe.sampler_settings()
    assert (s.num_points, s.cfg_text, s.cfg_img, s.cfg_interval, s.shift) == (50, 2.0, 1.0, (0.4, 1.0), 3.0)
    assert (s.renorm, s.renorm_min, s.guidance) == (True, 0.0, "released")
    demo = pipe.sampler_settings("demo")
    assert (demo.cfg_text, demo.cfg_img, demo.shift, demo.renorm) == (3.0, 1.5, 3.0, True)


def test_renorm_caps_the_guided_norm_at_the_conditional_one():
    c, u = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    raw = u + 2.0 * (c - u)
    v = guide({COND: c, NO_TEXT: u}, PRESETS["released"])
    ratio = min(1.0, float(c.norm() / (raw.norm() + 1e-8)))
    torch.testing.assert_close(v, raw * ratio)
    assert float(v.norm()) <= float(c.norm()) * (1 + 1e-6)
    shorter = guide({COND: c, NO_TEXT: 1.5 * c}, PRESETS["released"])  # 1.5c + 2 (c - 1.5c) = 0.5c
    torch.testing.assert_close(shorter, 0.5 * c)  # a cap, never a stretch


def test_the_grid_is_shifted_by_three_and_the_sampler_visits_it():
    settings = PRESETS["released"]
    t = torch.linspace(1, 0, 50)
    expected = 3 * t / (1 + 2 * t)
    assert torch.equal(timestep_grid(50, settings.shift), expected)
    visited = []

    def velocity_fn(x, t, branches):
        visited.append(t)
        return {b: torch.zeros_like(x) for b in branches}

    euler_sample(velocity_fn, torch.zeros(1, 1, 1, 1), settings)
    assert visited == expected[:-1].tolist()
    assert abs(visited[1] - 48 / 49) > 0.01  # not the unshifted grid


# --- D6: truncation to 8 bits ------------------------------------------------------------------------------
def test_uint8_levels_are_truncated_not_rounded():
    x = torch.tensor([-1.5, -1.0, 127.9 / 127.5 - 1, 0.0, 254.99 / 127.5 - 1, 1.0, 1.2])
    assert to_uint8_truncated(x).tolist() == [0, 0, 127, 127, 254, 255, 255]


def test_release_folder_writes_truncated_images(pipe):
    images = pipe.generate("FINDINGS: Clear.", steps=3, seed=0)
    noise = pipe.initial_noise([0], pipe.latent_grid(None))
    latents = generate_latents(pipe.model, [pipe.tokenizer.encode("FINDINGS: Clear.")], pipe.sampler_settings(steps=3),
                               (noise.shape[-1],) * 2, noise=noise)
    with torch.no_grad():
        decoded = pipe.vae.decode(latents)
    expected = to_uint8_truncated(decoded)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(images[0]), expected)


def _float64_decode(vae, latents):
    exact = copy.deepcopy(vae.autoencoder).double().to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        return exact.decode(vae.denormalise(latents.double())).sample.clamp(-1, 1)


def test_release_folder_decodes_in_the_default_layout_within_float32_rounding_of_float64(release, pipe, tmp_path):
    """Their latent-diffusion decoder runs in the default layout throughout; diffusers' attention block
    hands back a channels-last view, after which PyTorch's CPU group norm sums far less exactly (1.7e-5
    here at 64 px, 5e-4 at 128 px for the real depth): enough to move truncated levels. A release
    folder, loaded directly or converted, decodes like theirs: about 1e-6 from a float64 decode."""
    latents = torch.randn(2, pipe.config.vae.latent_channels, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        decoded = pipe.vae.decode(latents)
    assert (decoded.double() - _float64_decode(pipe.vae, latents)).abs().max() < 5e-6
    assert pipe.vae.autoencoder.decoder.conv_in.weight.is_contiguous()
    assert main(["convert-official", str(release), str(tmp_path / "ours")]) == 0
    _, converted, _ = load_model_folder(tmp_path / "ours")
    with torch.no_grad():
        assert torch.equal(converted.decode(latents), decoded)


def test_our_folders_keep_the_faster_channels_last_vae_on_a_cpu(tmp_path):
    _, vae, _ = load_model_folder(write_demo_model_folder(tmp_path / "model"))
    assert not vae.exact
    assert vae.autoencoder.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


# --- D7: 8-bit preprocessing --------------------------------------------------------------------------------
def _levels(pixels, pipe):
    """Normalised pixels back to 0..255 (floats)."""
    v = pipe.config.vision
    return pixels.double() * v.norm_std * 255 + v.norm_mean * 255


def test_evaluation_preprocessing_centres_a_small_non_square_image_on_white_without_enlarging(pipe):
    size = pipe.config.vision.image_size  # 32 in the test folder
    img = np.random.default_rng(0).integers(0, 250, (28, 20), dtype=np.uint8)  # H 28, W 20
    levels = _levels(pipe.preprocess([img])[0], pipe)
    torch.testing.assert_close(levels[:, 2:30, 6:26], torch.from_numpy(img).double().expand(3, 28, 20),
                               rtol=0, atol=1e-3)
    assert float(levels[:, :2].min()) > 254.99 and float(levels[:, :, :6].min()) > 254.99  # white bars
    assert levels.shape == (3, size, size)


def test_evaluation_preprocessing_shrinks_a_large_non_square_image_in_8_bits(pipe):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 250, (96, 64), dtype=np.uint8))
    levels = _levels(pipe.preprocess([img])[0], pipe)
    thumb = img.convert("RGB").copy()
    thumb.thumbnail((32, 32), Image.Resampling.LANCZOS)
    assert thumb.size == (21, 32)
    left = (32 - 21) // 2
    expected = torch.from_numpy(np.array(thumb)).double().permute(2, 0, 1)
    torch.testing.assert_close(levels[:, :, left:left + 21], expected, rtol=0, atol=1e-3)
    assert torch.allclose(levels, levels.round(), atol=1e-3)  # resized as 8 bits: whole levels only


def test_demo_preprocessing_resizes_a_square_image_bicubically_in_8_bits(pipe):
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (45, 45), dtype=np.uint8))
    levels = _levels(pipe.preprocess([img], settings="demo")[0], pipe)
    expected = np.array(img.convert("RGB").resize((32, 32), Image.Resampling.BICUBIC))
    torch.testing.assert_close(levels, torch.from_numpy(expected).double().permute(2, 0, 1), rtol=0, atol=1e-3)


def test_demo_preprocessing_keeps_a_non_square_image_non_square_which_their_vit_cannot_read(pipe):
    from unixcxr.data.images import released_demo_size

    assert released_demo_size(380, 460, 384, 16) == (320, 384)  # their transform's size (measured)
    assert released_demo_size(2544, 2792, 384, 16) == (352, 384)  # their demo image
    assert released_demo_size(420, 420, 384, 16) == (384, 384)
    with pytest.raises(ValueError, match=r"demo preprocessing turns this 20x28 image into 16x32"):
        pipe.preprocess([np.zeros((28, 20), np.uint8)], settings="demo")


def test_release_vit_uses_exact_gelu(pipe):
    act = pipe.model.vision.vision_tower.blocks[0].mlp.act
    x = torch.tensor([1.0, -0.5, 2.0])
    torch.testing.assert_close(act(x), 0.5 * x * (1 + torch.erf(x / 2 ** 0.5)))  # erf, not the tanh form


# --- the record -----------------------------------------------------------------------------------------------
def test_converted_folders_record_the_authors_conventions_and_old_ones_are_recognised(release, tmp_path):
    assert main(["convert-official", str(release), str(tmp_path / "ours")]) == 0
    raw = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert raw["conventions"] == {**RELEASED_CONVENTIONS.__dict__}
    del raw["conventions"]  # a folder converted before conventions were recorded
    (tmp_path / "ours" / "config.json").write_text(json.dumps(raw))
    assert load_model_folder(tmp_path / "ours", with_vae=False)[0].config.conventions == RELEASED_CONVENTIONS


def test_our_folders_without_a_record_keep_our_conventions(tmp_path):
    folder = write_demo_model_folder(tmp_path / "model")
    raw = json.loads((folder / "config.json").read_text())
    del raw["conventions"]
    (folder / "config.json").write_text(json.dumps(raw))
    pipe = UniXPipeline.from_pretrained(folder)
    assert pipe.config.conventions == ConventionsConfig()
    assert (pipe.sampler_settings().shift, pipe.sampler_settings().renorm) == (1.0, False)
