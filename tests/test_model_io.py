"""The model folder: complete or absent, loaded strictly, refused with the file named."""

import pytest
import torch

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
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.allclose(vae.encode(x), vae2.encode(x))


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
