"""The model folder: complete or absent, loaded strictly, refused with the file named."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from unixcxr.inference.report import DecodingSettings, generate_reports
from unixcxr.model.io import ModelFolderError, load_model_folder, save_model_folder
from unixcxr.model.vae import LatentVAE


def test_saved_folder_reloads_to_identical_outputs(tiny_model, tmp_path):
    vae = LatentVAE(tiny_model.config.vae)
    save_model_folder(tmp_path / "run" / "model", tiny_model, vae)
    model, vae2, tok = load_model_folder(tmp_path / "run")  # a run folder is accepted too
    assert tok is None and vae2 is not None
    images = torch.randn(2, 3, 32, 32)
    settings = DecodingSettings(max_new_tokens=6)
    assert generate_reports(model, images, [[10], [11, 12]], settings) == \
        generate_reports(tiny_model, images, [[10], [11, 12]], settings)
    for key, value in vae.state_dict().items():
        assert torch.equal(value, vae2.state_dict()[key]), key
    x = torch.rand(1, 3, 16, 16) * 2 - 1  # the loaded VAE runs channels-last on a CPU: other rounding
    assert torch.allclose(vae.encode(x), vae2.encode(x), atol=1e-5)


def test_a_folder_written_when_the_image_encoder_was_called_vit_loads_unchanged(tiny_model, tmp_path):
    """Folders and checkpoints of earlier versions keep the encoder's weights under `vit.`."""
    folder = save_model_folder(tmp_path / "m", tiny_model)
    state = load_file(folder / "model.safetensors")
    assert any(k.startswith("vision.") for k in state)
    save_file({("vit." + k[7:] if k.startswith("vision.") else k): v for k, v in state.items()},
              folder / "model.safetensors")
    model, _, _ = load_model_folder(folder)
    images = torch.randn(1, 3, 32, 32)
    assert torch.equal(model.encode_images(images), tiny_model.encode_images(images))
    model.load_state_dict({("vit." + k[7:] if k.startswith("vision.") else k): v  # a raw checkpoint too
                           for k, v in tiny_model.state_dict().items()})
    assert model.vit is model.vision


def test_truncated_weights_are_refused_with_the_file_named(tiny_model, tmp_path):
    folder = save_model_folder(tmp_path / "m", tiny_model)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFolderError, match="model.safetensors.*truncated or corrupt"):
        load_model_folder(folder)


def test_weights_of_another_config_are_refused_with_the_keys_named(tiny_model, tmp_path):
    folder = save_model_folder(tmp_path / "m", tiny_model)
    cfg = tiny_model.config
    cfg.llm.intermediate_size = 96
    cfg.save(folder / "config.json")
    with pytest.raises(ModelFolderError, match="wrong shape.*mlp"):
        load_model_folder(folder)


def test_a_folder_without_config_explains_what_to_pass(tmp_path):
    with pytest.raises(ModelFolderError, match="not a unixcxr model folder"):
        load_model_folder(tmp_path)


def test_a_vae_for_inference_is_frozen_channels_last_and_draws_the_same_films(tiny_model, tmp_path):
    torch.manual_seed(0)
    vae = LatentVAE(tiny_model.config.vae).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z, films = vae.encode(x), vae.decode(torch.randn(2, tiny_model.config.vae.latent_channels, 4, 4,
                                                         generator=torch.Generator().manual_seed(1)))
    fast = vae.for_inference()
    assert not fast.training and not any(p.requires_grad for p in fast.parameters())
    conv = fast.autoencoder.encoder.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    with torch.no_grad():
        assert torch.allclose(fast.encode(x), z, atol=1e-5)
        again = fast.decode(torch.randn(2, tiny_model.config.vae.latent_channels, 4, 4,
                                        generator=torch.Generator().manual_seed(1)))
    assert torch.allclose(again, films, atol=1e-5)
    folder = save_model_folder(tmp_path / "m", tiny_model, fast)  # channels-last weights save as usual
    _, reloaded, _ = load_model_folder(folder)
    assert torch.equal(reloaded.autoencoder.encoder.conv_in.weight, conv)
