"""Model folders the field's tools read: UniXPipeline.save_pretrained writes a folder whose vae/ diffusers'
AutoencoderKL.from_pretrained loads and whose tokenizer transformers' AutoTokenizer loads, both
computing what the pipeline computes; the folder carries its unixcxr version and a model card;
folders of the earlier layout and the authors' release still load; .to() moves and casts as
from_pretrained would have."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from diffusers import AutoencoderKL
from PIL import Image

import unixcxr
from test_official import write_official_folder
from unixcxr.model.card import evaluation_facts, read_card_facts
from unixcxr.model.io import ModelFolderError, update_model_card
from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.demo_model import write_demo_model_folder

TOKENS = 10
TEXTS = ["FINDINGS: Small left pleural effusion.  IMPRESSION: No pneumothorax.",
         "typed <|eos|> and <|bos|> are text here", "Ödem, 5 mm nodule — résumé ✓", ""]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    pipe = UniXPipeline.from_pretrained(write_demo_model_folder(tmp_path_factory.mktemp("src") / "model"))
    pipe.vae.cfg.scale, pipe.vae.cfg.shift = 0.5, 0.25  # a normalisation diffusers has to carry
    return pipe


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    return pipe.save_pretrained(tmp_path_factory.mktemp("saved") / "mine")


@pytest.fixture(scope="module")
def radiograph():
    return np.random.default_rng(0).integers(0, 255, (40, 32), dtype=np.uint8)


def test_the_vae_folder_is_loaded_by_diffusers_and_computes_the_same_latents(pipe, saved):
    vae = AutoencoderKL.from_pretrained(saved, subfolder="vae").eval()
    assert (vae.config.scaling_factor, vae.config.shift_factor) == (0.5, -0.25)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z_raw = vae.encode(x).latent_dist.mean
        ours = pipe.vae.encode(x)  # scale * (z_raw + shift)
        torch.testing.assert_close(vae.config.scaling_factor * (z_raw - vae.config.shift_factor), ours,
                                   rtol=1e-4, atol=1e-5)
        drawn = vae.decode(ours / vae.config.scaling_factor + vae.config.shift_factor).sample.clamp(-1, 1)
        torch.testing.assert_close(drawn, pipe.vae.decode(ours), rtol=1e-4, atol=1e-5)


def test_the_tokenizer_is_loaded_by_transformers_and_encodes_and_decodes_as_ours(pipe, saved):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(saved)
    for text in TEXTS:
        ids = pipe.tokenizer.encode(text)
        assert tokenizer(text)["input_ids"] == ids, text
        assert tokenizer.decode(ids, skip_special_tokens=True) == pipe.tokenizer.decode(ids)
    tokens = pipe.config.tokens
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == \
        (tokens.bos, tokens.eos, tokens.pad)
    assert tokenizer.model_max_length == pipe.config.llm.max_position


def test_a_saved_folder_reloads_to_the_same_reports_and_images(pipe, saved, radiograph):
    again = UniXPipeline.from_pretrained(saved)
    assert again.config.diff(pipe.config) == []
    assert again.report(radiograph, max_new_tokens=TOKENS) == pipe.report(radiograph, max_new_tokens=TOKENS)
    a, b = (p.generate("FINDINGS: Clear.", steps=3, seed=1).images[0] for p in (pipe, again))
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_the_folder_records_its_version_and_a_model_card(saved):
    config = json.loads((saved / "config.json").read_text())
    assert config["unixcxr_version"] == unixcxr.__version__
    card = (saved / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "unknown" and meta["library_name"] == "unixcxr"
    assert meta["unixcxr"]["version"] == unixcxr.__version__
    assert 'AutoencoderKL.from_pretrained("' + str(saved) + '", subfolder="vae")' in card


METRICS = {  # the shape of a `unixcxr evaluate` metrics.json (evaluate/suite.py), numbers made up
    "data": "/data/synth", "settings": {"split": "test"}, "n_studies": 60,
    "reports": {"model": {"label_f1": {"uncertain_as_positive": {"micro_f1_14": 0.412, "macro_f1_14": 0.25,
                                                                 "micro_f1_5": 0.5}},
                          "text": {"bleu_4": 0.1, "rouge_l": 0.3}}},
    "images": {"fd": 12.5, "kd": {"mean": 0.01}, "prdc": {"precision": 0.7, "recall": 0.6, "density": 0.9,
                                                          "coverage": 0.8},
               "features": {"name": "effnet-lite0", "network": "EfficientNet-Lite0 (ImageNet)"},
               "n_real": 60, "n_fake": 60},
}


def test_the_card_names_licence_training_evaluation_labeler_and_feature_network(pipe, tmp_path):
    training = {"recipe": "configs/tiny.yaml", "preset": "tiny", "data": "/data/synth", "data_kind": "folder",
                "studies": {"train": 100}, "stages": {"und_sft": 40}}
    folder = pipe.save_pretrained(tmp_path / "m", license="apache-2.0", training=training)
    update_model_card(folder, evaluation=evaluation_facts(METRICS))
    facts = read_card_facts(folder)
    assert facts["license"] == "apache-2.0" and facts["training"] == training
    card = (folder / "README.md").read_text()
    assert "license: apache-2.0" in card and "| und_sft | 40 |" in card
    assert "rule-based CheXpert-style labeler" in card and "EfficientNet-Lite0 (ImageNet)" in card
    assert "0.412" in card and "12.500" in card
    again = UniXPipeline.from_pretrained(folder).save_pretrained(tmp_path / "copy")  # the card travels
    assert read_card_facts(again)["evaluation"] == facts["evaluation"]


def earlier_layout(folder, dst):
    """The folder as `unixcxr train` wrote it before this layout: vae.safetensors at the top, no
    tokenizer config, no card, no version."""
    shutil.copytree(folder, dst)
    shutil.move(dst / "vae" / "diffusion_pytorch_model.safetensors", dst / "vae.safetensors")
    shutil.rmtree(dst / "vae")
    for name in ("tokenizer_config.json", "special_tokens_map.json", "README.md"):
        (dst / name).unlink()
    config = json.loads((dst / "config.json").read_text())
    del config["unixcxr_version"]
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_a_folder_of_the_earlier_layout_still_loads_and_saves_in_the_new_one(pipe, saved, radiograph, tmp_path):
    old = UniXPipeline.from_pretrained(earlier_layout(saved, tmp_path / "old"))
    assert old.report(radiograph, max_new_tokens=TOKENS) == pipe.report(radiograph, max_new_tokens=TOKENS)
    a, b = (p.generate("FINDINGS: Clear.", steps=3, seed=2)[0] for p in (pipe, old))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    new = old.save_pretrained(tmp_path / "new")
    assert (new / "vae" / "config.json").is_file() and (new / "tokenizer_config.json").is_file()


def test_a_vae_config_that_disagrees_with_config_json_is_refused_with_the_field_named(saved, tmp_path):
    folder = shutil.copytree(saved, tmp_path / "edited")
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    vae_config["latent_channels"] = 16
    (folder / "vae" / "config.json").write_text(json.dumps(vae_config))
    with pytest.raises(ModelFolderError, match=r"vae/config.json describes another autoencoder.*latent_channels 16"):
        UniXPipeline.from_pretrained(folder)


def test_to_moves_and_casts_as_loading_in_that_dtype_would(saved, radiograph):
    loaded = UniXPipeline.from_pretrained(saved, torch_dtype=torch.bfloat16)
    moved = UniXPipeline.from_pretrained(saved).to("cpu", torch.bfloat16)
    assert moved.dtype == torch.bfloat16 and moved.vae.autoencoder.dtype == torch.bfloat16
    assert moved.report(radiograph, max_new_tokens=TOKENS) == loaded.report(radiograph, max_new_tokens=TOKENS)
    a, b = (p.generate("FINDINGS: Clear.", steps=3, seed=0)[0] for p in (moved, loaded))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert moved.to(torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="dtype 'fp8' is not a torch dtype"):
        UniXPipeline.from_pretrained(saved, torch_dtype="fp8")


def test_the_authors_release_saves_a_folder_the_field_reads_with_their_tokenizer_files(tmp_path):
    from transformers import AutoTokenizer

    release = write_official_folder(tmp_path / "UniX")
    (release / "README.md").write_text("---\nlicense: mit\n---\n# UniX\n")
    pipe = UniXPipeline.from_pretrained(release)
    folder = pipe.save_pretrained(tmp_path / "converted")
    assert json.loads((folder / "tokenizer_config.json").read_text()) == \
        json.loads((release / "tokenizer_config.json").read_text())  # their class and flags, as released
    assert AutoTokenizer.from_pretrained(folder).eos_token == "<|im_end|>"
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    assert vae.config.scaling_factor == pytest.approx(pipe.config.vae.scale)
    facts = read_card_facts(folder)
    assert facts["license"] == "mit" and "authors' release" in facts["source"]
    again = UniXPipeline.from_pretrained(folder)
    assert again.config.conventions == pipe.config.conventions
    image = Image.fromarray(np.full((32, 32), 128, np.uint8))
    assert again.report(image, max_new_tokens=4) == pipe.report(image, max_new_tokens=4)


def test_saving_in_another_dtype_keeps_that_dtype_on_disk(pipe, tmp_path):
    from safetensors import safe_open

    folder = UniXPipeline.from_pretrained(pipe.source).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.bfloat16
