"""The pretrained CNN reader (vision.encoder: efficientnet-lite0): its tokens, its frozen norms inside
UniX, the vision stage that fine-tunes it on the reports' labels, and the stages that use it."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

from unixcxr.data.synthcxr import generate_dataset
from unixcxr.labels import OBSERVATIONS
from unixcxr.model.config import UniXConfig, tiny
from unixcxr.model.unix import UniX
from unixcxr.model.vision import VisionEncoder
from unixcxr.train.distributed import DistEnv
from unixcxr.train.flops import encoder_flops
from unixcxr.train.recipe import Recipe
from unixcxr.train.runner import RunContext, RunFolder, TrainError, train
from unixcxr.train.vae import PerceptualLoss, build_perceptual
from unixcxr.train.vision import FROZEN_CNN_BLOCKS, LabelNet, report_labels, save_vit

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CNN = {"encoder": "efficientnet-lite0", "patch_size": 32, "width": 1280, "image_size": 64,
       "norm_mean": 0.5, "norm_std": 0.5}


def _config(**vision) -> UniXConfig:
    cfg = tiny()
    return dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, **{**CNN, **vision})).validate()


def test_a_cnn_encoder_with_vit_token_sizes_is_refused_naming_the_fix():
    with pytest.raises(ValueError, match="patch_size: 32"):
        _config(patch_size=16)
    with pytest.raises(ValueError, match="not one of"):
        _config(encoder="resnet")


def test_cnn_tokens_are_its_last_feature_map_whatever_the_mode():
    torch.manual_seed(0)
    enc = VisionEncoder(_config().vision)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        enc.vision_tower.bn2.running_mean.normal_()  # statistics that batch statistics would not match
        trained = enc.train()(x)
        evaluated = enc.eval()(x)
        grid = enc.vision_tower.forward_features(x)
    assert trained.shape == (2, 4, 1280)  # 64 px / stride 32 = 2 x 2 tokens of 1280 channels
    assert torch.equal(trained, evaluated)  # frozen BatchNorm: train mode changes nothing
    assert torch.allclose(trained, grid.flatten(2).transpose(1, 2))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        enc(x[:1])
    assert encoder_flops(enc) == counter.get_total_flops() > 0


def test_label_net_starts_from_imagenet_and_hands_its_tower_to_unix():
    from unixcxr.evaluate.image_features import effnet_lite0

    net = LabelNet(_config().vision)
    imagenet = effnet_lite0().network.state_dict()
    tower = net.vision.vision_tower
    assert all(torch.equal(v, imagenet[k]) for k, v in tower.state_dict().items() if k in imagenet)
    early = [*tower.conv_stem.parameters(), *tower.blocks[:FROZEN_CNN_BLOCKS].parameters()]
    late = [*tower.blocks[FROZEN_CNN_BLOCKS:].parameters(), *tower.conv_head.parameters()]
    assert not any(p.requires_grad for p in early) and all(p.requires_grad for p in late)
    x = torch.randn(4, 3, 64, 64)
    before = tower.blocks[0][0].bn1.running_mean.clone()
    net.train()(x)
    assert torch.equal(tower.blocks[0][0].bn1.running_mean, before)  # frozen stages keep ImageNet statistics
    model = UniX(_config())
    model.vision.load_state_dict(net.vision.state_dict())  # strict: same keys with frozen norms
    with torch.no_grad():
        a, b = net.eval().vision(x), model.vision(x)
    assert (a - b).abs().max() < 1e-4 * a.abs().max()  # BatchNorm folded differently: float rounding only


def test_report_labels_count_uncertain_as_positive():
    targets = report_labels(["FINDINGS: Small right pleural effusion. Possible pneumonia. IMPRESSION: Effusion.",
                             "FINDINGS: The lungs are clear. IMPRESSION: No acute cardiopulmonary process."])
    col = {name: i for i, name in enumerate(OBSERVATIONS)}
    assert targets.shape == (2, 14)
    assert targets[0, col["Pleural Effusion"]] == 1 and targets[0, col["Pneumonia"]] == 1
    assert targets[0, col["No Finding"]] == 0 and targets[1, col["No Finding"]] == 1
    assert targets[1].sum() == 1


def _context(tmp_path, vision: dict) -> RunContext:
    recipe = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    recipe["model"]["vision"] = vision
    recipe["stages"]["vae"].update(perceptual="reader", perceptual_weight=1.0)
    return RunContext(Recipe.from_dict(recipe, source="cnn.yaml"), tmp_path / "data", RunFolder(tmp_path / "run"),
                      DistEnv())


def test_the_reader_perceptual_term_sees_films_through_the_fine_tuned_reader(tmp_path):
    ctx = _context(tmp_path, {**CNN, "norm_mean": 0.4, "norm_std": 0.25})
    with pytest.raises(TrainError, match="run the vision stage first"):
        build_perceptual(ctx, "reader")
    torch.manual_seed(0)
    net = LabelNet(ctx.config().vision)
    with torch.no_grad():
        net.vision.vision_tower.conv_head.weight.mul_(-1)  # a "fine-tuned" reader: unlike ImageNet's
    save_vit(net.vision, ctx.run.vision_weights)
    reader = build_perceptual(ctx, "reader")
    imagenet = build_perceptual(ctx, "efficientnet-lite0")
    assert torch.equal(reader.net.conv_head.weight, net.vision.vision_tower.conv_head.weight)
    assert not torch.equal(reader.net.conv_head.weight, imagenet.net.conv_head.weight)
    assert not any(p.requires_grad for p in reader.parameters())
    # VAE images in [-1, 1] reach the reader normalised as the reader reads films: (x01 - 0.4) / 0.25
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    want = net.eval().vision.vision_tower.forward_intermediates(((x + 1) / 2 - 0.4) / 0.25, indices=[4],
                                                               intermediates_only=True)[0]
    got = reader.features(x)[-1]
    assert torch.allclose(got, want, atol=1e-5)
    assert float(reader(x, x)) == 0.0 and float(reader(x.flip(-1), x)) > 0
    assert isinstance(imagenet, PerceptualLoss) and imagenet.mean == imagenet.std == 0.5


def test_a_reader_perceptual_term_needs_the_cnn_reader_and_the_vision_stage(tmp_path):
    with pytest.raises(TrainError, match="needs the CNN reader"):
        build_perceptual(_context(tmp_path, {"center_features": True}), "reader")
    recipe = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    recipe["stages"]["vae"]["perceptual"] = "reader"
    recipe["stages"].pop("vision")
    with pytest.raises(ValueError, match="perceptual: reader needs the vision stage"):
        Recipe.from_dict(recipe, source="r.yaml")


@pytest.mark.slow
def test_the_stages_train_and_use_a_fine_tuned_cnn_reader(tmp_path):
    data = tmp_path / "data"
    generate_dataset(data, n=24, size=64, seed=0, workers=1, progress=False)
    recipe = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    recipe["model"]["vision"] = {**CNN, "center_features": True}
    recipe["stages"]["und_sft"]["resolution"] = 64
    recipe["stages"]["vae"].update(perceptual="reader", perceptual_weight=1.0, clip_grad=0.0)
    recipe["stages"].pop("gen_finetune")
    path = tmp_path / "cnn.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    summaries = train(path, data, out, progress=False)
    assert list(summaries) == ["tokenizer", "vision", "vae", "und_sft", "gen_pretrain"]

    vals = [json.loads(line) for line in (out / "stages/vision/metrics.jsonl").read_text().splitlines()]
    assert any(0.0 <= v.get("micro_f1_14", -1) <= 1.0 for v in vals if v.get("split") == "val")
    vae_rows = [json.loads(line) for line in (out / "stages/vae/metrics.jsonl").read_text().splitlines()]
    assert all(r["perceptual"] > 0 for r in vae_rows if "grad_norm" in r)  # the reader's term was trained on
    tower = load_file(out / "vision/vit.safetensors")
    model_state = load_file(out / "model/model.safetensors")
    for key, value in tower.items():  # und_sft and gen_pretrain kept the fine-tuned encoder frozen
        assert torch.equal(model_state[f"vision.{key}"], value), key
    assert model_state["connector.feature_mean"].shape == (4, 1280)
    assert model_state["connector.feature_mean"].abs().sum() > 0
    config = json.loads((out / "model/config.json").read_text())
    assert config["vision"]["encoder"] == "efficientnet-lite0" and config["gen"]["repa_dim"] == 1280
