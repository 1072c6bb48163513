"""Training-side behaviours of the network: decoupling, sizes, config, learning."""

import pytest
import torch

from unixcxr.model.config import UniXConfig, preset, small, tiny, unix
from unixcxr.model.sequence import collate, generation_layout, understanding_layout
from unixcxr.model.unix import UniX, is_gen_parameter
from unixcxr.model.vae import LatentVAE


def _gen_batch(model):
    s = model.config.tokens
    return collate([generation_layout(s, [30, 31, 32], 64), generation_layout(s, [], 64)])


def _und_batch(model):
    s, nv = model.config.tokens, model.config.vision.num_tokens
    return collate([understanding_layout(s, nv, [10, 11], [20, 21, 22])])


def test_frozen_understanding_gets_exactly_zero_gradient_from_the_generation_loss(tiny_model):
    tiny_model.train()
    out = tiny_model(_gen_batch(tiny_model), latents=torch.randn(2, 4, 8, 8),
                     repa_target=torch.randn(2, 64, 24), freeze_und=True)
    out["loss"].backward()
    for name, p in tiny_model.named_parameters():
        if is_gen_parameter(name):
            continue
        assert p.grad is None or not p.grad.any(), name
    assert any(p.grad is not None and p.grad.any() for p in tiny_model.gen_parameters())


def test_without_freezing_the_generation_loss_does_reach_understanding(tiny_model):
    out = tiny_model(_gen_batch(tiny_model), latents=torch.randn(2, 4, 8, 8))
    out["loss"].backward()
    und_k = tiny_model.layers[0].und.k_proj.weight.grad  # gen tokens attend to und keys
    assert und_k is not None and und_k.any()


def test_report_loss_leaves_every_generation_parameter_untouched(tiny_model):
    out = tiny_model(_und_batch(tiny_model), images=torch.randn(1, 3, 32, 32))
    out["ce"].backward()
    for name, p in tiny_model.named_parameters():
        if is_gen_parameter(name):
            assert p.grad is None or not p.grad.any(), name


def test_init_gen_from_und_copies_every_weight(tiny_model):
    tiny_model.init_gen_from_und()
    for layer in tiny_model.layers:
        for (n_und, p_und), (n_gen, p_gen) in zip(layer.und.named_parameters(), layer.gen.named_parameters()):
            assert n_und == n_gen and torch.equal(p_und, p_gen)
    assert torch.equal(tiny_model.und_norm.weight, tiny_model.gen_norm.weight)


def test_llm2vae_starts_at_zero_so_the_untrained_model_predicts_zero_velocity():
    model = UniX(tiny())
    assert not model.llm2vae.weight.any() and not model.llm2vae.bias.any()


def test_released_preset_has_3_22b_parameters_with_the_documented_parts():
    with torch.device("meta"):
        model = UniX(unix())
    counts = model.parameter_counts()
    assert abs(counts["total"] - 3.22e9) / 3.22e9 < 0.01
    assert abs(counts["und_expert"] - 1.233e9) / 1.233e9 < 0.002
    assert counts["gen_expert"] == counts["und_expert"]
    assert abs(counts["embed_tokens"] - 0.21e9) / 0.21e9 < 0.01
    assert counts["lm_head"] == counts["embed_tokens"]  # untied
    assert abs(counts["vision"] - 0.304e9) / 0.304e9 < 0.01
    assert abs(counts["connector"] - 6.3e6) / 6.3e6 < 0.01
    assert abs(counts["time_embedder"] - 4.7e6) / 4.7e6 < 0.02
    layer = model.layers[0].und
    assert tuple(layer.q_proj.weight.shape) == (2048, 2048) and layer.q_proj.bias is not None
    assert layer.o_proj.bias is None and tuple(layer.q_norm.weight.shape) == (128,)
    assert tuple(model.vision.vision_tower.pos_embed.shape) == (1, 576, 1024)
    assert tuple(model.latent_pos.pos_embed.shape) == (1024, 2048)


def test_config_round_trips_through_json_and_names_its_differences(tmp_path):
    cfg = small()
    cfg.save(tmp_path / "config.json")
    loaded = UniXConfig.load(tmp_path / "config.json")
    assert loaded == cfg
    other = small()
    other.llm.num_layers = 7
    assert cfg.diff(other) == ["llm.num_layers"]
    with pytest.raises(ValueError, match=r"unknown field\(s\) llm.depth"):
        UniXConfig.from_dict({"llm": {"depth": 3}})
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_vae_normalisation_is_inverted_exactly_and_sizes_are_checked():
    vae = LatentVAE(unix().vae.__class__(block_out_channels=(8, 16), norm_num_groups=4, latent_channels=4))
    z = torch.randn(2, 4, 3, 3)
    assert torch.allclose(vae.normalise(vae.denormalise(z)), z, atol=1e-6)
    assert tuple(vae.encode(torch.zeros(1, 3, 16, 16)).shape) == (1, 4, 8, 8)
    with pytest.raises(ValueError, match="multiples of 2"):
        vae.encode(torch.zeros(1, 3, 15, 15))


@pytest.mark.slow
def test_tiny_model_overfits_one_batch_in_both_tasks():
    torch.manual_seed(0)
    model = UniX(tiny())
    s, nv = model.config.tokens, model.config.vision.num_tokens
    und = collate([understanding_layout(s, nv, [10, 11], list(range(20, 36))),
                   understanding_layout(s, nv, [12], list(range(40, 52)))])
    gen = collate([generation_layout(s, [30, 31, 32], 64), generation_layout(s, [33, 34], 64)])
    images, latents = torch.randn(2, 3, 32, 32), torch.randn(2, 4, 8, 8)
    noise, t = torch.randn(2, 4, 8, 8), torch.tensor([0.3, 0.8])  # one fixed batch
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    first = last = None
    for _ in range(300):
        ce = model(und, images=images)["ce"]
        mse = model(gen, latents=latents, noise=noise, t=t)["mse"]
        opt.zero_grad()
        (ce + mse).backward()
        opt.step()
        first = first or (ce.item(), mse.item())
        last = (ce.item(), mse.item())
    assert last[0] < 0.1 * first[0], (first, last)
    assert last[1] < 0.1 * first[1], (first, last)


def test_centred_connector_subtracts_the_fitted_position_mean_and_survives_save_and_load(tmp_path):
    from unixcxr.model.io import load_model_folder, save_model_folder
    from unixcxr.train.stages import SPECS, set_trainable

    config = tiny()
    config.vision.center_features = True
    torch.manual_seed(0)
    model = UniX(config).eval()
    S = config.vision.image_size
    images = torch.randn(12, 3, S, S)
    model.fit_feature_mean([images[:5], images[5:]])
    with torch.no_grad():
        feats = model.vision(images)
    assert torch.allclose(model.connector.feature_mean, feats.mean(0), atol=1e-5)
    with torch.no_grad():  # what reaches the connector's first layer is centred per position
        assert torch.allclose(model.connector.layers(feats - feats.mean(0)), model.encode_images(images), atol=1e-6)
    save_model_folder(tmp_path / "m", model)
    loaded, _, _ = load_model_folder(tmp_path / "m", with_vae=False)
    assert torch.equal(loaded.connector.feature_mean, model.connector.feature_mean)
    trained = set_trainable(model, SPECS["und_sft"], repa=False)  # the mean stays valid: ViT frozen
    assert "connector.layers.0.weight" in trained and not any(n.startswith("vision.") for n in trained)


def test_released_layout_has_no_feature_mean_buffer():
    model = UniX(tiny())
    assert model.connector.feature_mean is None
    assert not any("feature_mean" in k for k in model.state_dict())
    with pytest.raises(ValueError, match="center_features"):
        model.fit_feature_mean([torch.zeros(1, 3, 32, 32)])
