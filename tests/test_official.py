"""The authors' released weights: a folder in exactly the released layout (same key names, tiny
shapes, real safetensors / torch.save / YAML / tokenizer.json files) loads strictly, every tensor
lands in its module, the latent-diffusion VAE converts to diffusers faithfully, and any gap is
refused with the key named."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from unixcxr.cli import main
from unixcxr.inference.report import DecodingSettings, generate_reports
from unixcxr.model.io import load_model_folder
from unixcxr.model.official import OfficialCheckpointError, is_official_folder, load_official_folder
from unixcxr.model.official_keys import convert_vae_state_dict
from unixcxr.pipeline import UniXPipeline

# Tiny sizes, released vocabulary and special ids (so the real DeepSeek ids are exercised).
H, LAYERS, HEADS, HEAD_DIM, INTER, VOCAB = 16, 2, 2, 8, 32, 102400
VIT = dict(image_size=32, patch_size=16, width=32, layers=1, heads=2, mlp_ratio=2)
N_VIT = (VIT["image_size"] // VIT["patch_size"]) ** 2
MAX_LATENT, TIME_DIM = 4, 256
VAE = dict(ch=32, ch_mult=[1, 2], num_res_blocks=1, z_channels=4, resolution=32, attn_resolutions=[16])
SPECIAL = {"<|im_start|>": 100000, "<|im_end|>": 100001, "<|vision_start|>": 100003,
           "<|vision_end|>": 100580, "<｜▁pad▁｜>": 100015}


# --- the released layout, as docs/checkpoint-layout.md lists it ------------------------------------------
def official_model_shapes() -> dict[str, tuple]:
    s = {"language_model.model.embed_tokens.weight": (VOCAB, H)}
    q, kv = HEADS * HEAD_DIM, HEADS * HEAD_DIM
    for n in range(LAYERS):
        p = f"language_model.model.layers.{n}."
        for g in ("", "_moe_gen"):
            s[f"{p}input_layernorm{g}.weight"] = s[f"{p}post_attention_layernorm{g}.weight"] = (H,)
            for name, out in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
                s[f"{p}self_attn.{name}{g}.weight"], s[f"{p}self_attn.{name}{g}.bias"] = (out, H), (out,)
            s[f"{p}self_attn.o_proj{g}.weight"] = (H, q)
            s[f"{p}self_attn.q_norm{g}.weight"] = s[f"{p}self_attn.k_norm{g}.weight"] = (HEAD_DIM,)
            s[f"{p}mlp{g}.gate_proj.weight"] = s[f"{p}mlp{g}.up_proj.weight"] = (INTER, H)
            s[f"{p}mlp{g}.down_proj.weight"] = (H, INTER)
    s["language_model.model.norm.weight"] = s["language_model.model.norm_moe_gen.weight"] = (H,)
    s["language_model.lm_head.weight"] = (VOCAB, H)
    siglip = VisionTransformer(img_size=VIT["image_size"], patch_size=VIT["patch_size"], embed_dim=VIT["width"],
                               depth=VIT["layers"], num_heads=VIT["heads"], mlp_ratio=VIT["mlp_ratio"],
                               class_token=False, global_pool="map", num_classes=0)  # SigLIP with its MAP head
    s.update({f"vit_model.vision_tower.{k}": tuple(v.shape) for k, v in siglip.state_dict().items()})
    s.update({"connector.layers.0.weight": (H, VIT["width"]), "connector.layers.0.bias": (H,),
              "connector.layers.2.weight": (H, H), "connector.layers.2.bias": (H,),
              "time_embedder.mlp.0.weight": (H, TIME_DIM), "time_embedder.mlp.0.bias": (H,),
              "time_embedder.mlp.2.weight": (H, H), "time_embedder.mlp.2.bias": (H,),
              "vae2llm.weight": (H, VAE["z_channels"]), "vae2llm.bias": (H,),
              "llm2vae.weight": (VAE["z_channels"], H), "llm2vae.bias": (VAE["z_channels"],),
              "latent_pos_embed.pos_embed": (MAX_LATENT ** 2, H), "vit_pos_embed.pos_embed": (N_VIT, H)})
    return s


def ldm_vae_shapes(attention_in_levels: bool = True) -> dict[str, tuple]:
    """Key names and shapes of latent-diffusion's AutoencoderKL (Encoder/Decoder of ldm's model.py)."""
    s: dict[str, tuple] = {}
    ch, z, blocks = VAE["ch"], VAE["z_channels"], VAE["num_res_blocks"]
    chans, L = [ch * m for m in VAE["ch_mult"]], len(VAE["ch_mult"])

    def conv(name, cin, cout, k):
        s[f"{name}.weight"], s[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        s[f"{name}.weight"] = s[f"{name}.bias"] = (c,)

    def resnet(name, cin, cout):
        norm(f"{name}.norm1", cin), conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout), conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for p in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{p}", c, c, 1)

    def mid(part, c):
        resnet(f"{part}.mid.block_1", c, c), attn(f"{part}.mid.attn_1", c), resnet(f"{part}.mid.block_2", c, c)

    conv("encoder.conv_in", 3, ch, 3)
    c = ch
    for i in range(L):
        for j in range(blocks):
            resnet(f"encoder.down.{i}.block.{j}", c, chans[i])
            c = chans[i]
            if attention_in_levels and i == L - 1:
                attn(f"encoder.down.{i}.attn.{j}", c)
        if i != L - 1:
            conv(f"encoder.down.{i}.downsample.conv", c, c, 3)
    mid("encoder", c)
    norm("encoder.norm_out", c), conv("encoder.conv_out", c, 2 * z, 3)
    conv("quant_conv", 2 * z, 2 * z, 1), conv("post_quant_conv", z, z, 1)
    conv("decoder.conv_in", z, c, 3)
    mid("decoder", c)
    for i in reversed(range(L)):
        for j in range(blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", c, chans[i])
            c = chans[i]
            if attention_in_levels and i == L - 1:
                attn(f"decoder.up.{i}.attn.{j}", c)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", c, c, 3)
    norm("decoder.norm_out", c), conv("decoder.conv_out", c, 3, 3)
    return s


def distinct_tensors(shapes: dict[str, tuple], seed: int) -> dict[str, torch.Tensor]:
    """Random values, so every tensor is distinguishable; norms near 1, weights small."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        t = torch.randn(shape, generator=g)
        is_norm = "norm" in key and len(shape) == 1 and key.endswith("weight")
        out[key] = 1 + 0.1 * t if is_norm else t * (0.3 / math.sqrt(max(1, math.prod(shape[1:]))))
    return out


LOSS_ENTRIES = {"loss.logvar": torch.zeros(()), "loss.perceptual_loss.net.slice1.0.weight": torch.ones(64, 3, 3, 3),
                "loss.discriminator.main.0.weight": torch.ones(7, 7)}


def write_tokenizer(folder):
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))} | SPECIAL
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL))
    tok.save(str(folder / "tokenizer.json"))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<｜▁pad▁｜>"}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 16384}))


def write_official_folder(folder, drop=(), reshape=(), extra=()):
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "language_config": {"hidden_size": H, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
                            "num_key_value_heads": HEADS, "intermediate_size": INTER, "vocab_size": VOCAB,
                            "max_position_embeddings": 16384, "model_type": "llama", "torch_dtype": "bfloat16"},
        "aligner_config": {"cls": "MlpProjector", "params": {"projector_type": "mlp_gelu", "depth": 2,
                                                             "input_dim": VIT["width"], "n_embed": H}},
        "vision_config": {"cls": "CLIPVisionTower", "params": {"model_name": "siglip_tiny", **VIT}},
        "max_latent_size": MAX_LATENT, "model_type": "multi_modality",
    }
    (folder / "config.json").write_text(json.dumps(config))
    weights = distinct_tensors(official_model_shapes(), seed=1)
    for key in drop:
        weights.pop(key, None)
    for key in reshape:
        weights[key] = torch.zeros(weights[key].shape[0] + 1, *weights[key].shape[1:])
    weights.update({key: torch.zeros(2) for key in extra})
    save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, folder / "model.safetensors")
    (folder / "vae").mkdir(exist_ok=True)
    vae = distinct_tensors(ldm_vae_shapes(), seed=2)
    torch.save({"state_dict": {**vae, **LOSS_ENTRIES}, "global_step": 1000}, folder / "vae" / "kl-f16d16.ckpt")
    (folder / "vae" / "config.yaml").write_text(yaml.safe_dump({"model": {
        "target": "ldm.models.autoencoder.AutoencoderKL",
        "params": {"embed_dim": VAE["z_channels"], "monitor": "val/rec_loss",
                   "lossconfig": {"target": "ldm.modules.losses.LPIPSWithDiscriminator"},
                   "ddconfig": {"double_z": True, "in_channels": 3, "out_ch": 3, "dropout": 0.0, **VAE}}}}))
    write_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_official_folder(tmp_path_factory.mktemp("UniX"))


@pytest.fixture(scope="module")
def loaded(release):
    return load_official_folder(release, dtype=torch.float32)


# --- loading ---------------------------------------------------------------------------------------------
def test_release_folder_is_recognised_and_its_config_comes_from_its_files(release, loaded):
    model, vae, tokenizer = loaded
    assert is_official_folder(release)
    cfg = model.config
    assert (cfg.llm.hidden_size, cfg.llm.num_layers, cfg.llm.vocab_size, cfg.llm.head_dim) == (H, LAYERS, VOCAB, 8)
    assert (cfg.vision.width, cfg.vision.depth, cfg.vision.mlp_dim, cfg.vision.num_tokens) == (32, 1, 64, N_VIT)
    assert cfg.vae.block_out_channels == (32, 64) and cfg.vae.attention_at_lowest_level
    assert (cfg.tokens.bos, cfg.tokens.eos, cfg.tokens.start_of_image, cfg.tokens.end_of_image) == \
        (100000, 100001, 100003, 100580)
    assert cfg.tokens.pad == 100015  # the tokenizer's own pad token
    assert (cfg.vision.norm_mean, cfg.vision.norm_std) == (0.555895, 0.336385)
    assert cfg.gen.latent_grid_max == MAX_LATENT and cfg.gen.repa_dim == 0
    assert tokenizer == release / "tokenizer.json"


SPOT_CHECKS = [  # released name -> our module parameter, written from the spec
    ("language_model.model.embed_tokens.weight", "embed_tokens.weight"),
    ("language_model.model.layers.0.input_layernorm.weight", "layers.0.und.attn_norm.weight"),
    ("language_model.model.layers.0.input_layernorm_moe_gen.weight", "layers.0.gen.attn_norm.weight"),
    ("language_model.model.layers.1.post_attention_layernorm.weight", "layers.1.und.mlp_norm.weight"),
    ("language_model.model.layers.1.post_attention_layernorm_moe_gen.weight", "layers.1.gen.mlp_norm.weight"),
    ("language_model.model.layers.1.self_attn.q_proj.bias", "layers.1.und.q_proj.bias"),
    ("language_model.model.layers.1.self_attn.k_proj_moe_gen.weight", "layers.1.gen.k_proj.weight"),
    ("language_model.model.layers.0.self_attn.o_proj_moe_gen.weight", "layers.0.gen.o_proj.weight"),
    ("language_model.model.layers.0.self_attn.q_norm_moe_gen.weight", "layers.0.gen.q_norm.weight"),
    ("language_model.model.layers.0.self_attn.k_norm.weight", "layers.0.und.k_norm.weight"),
    ("language_model.model.layers.1.mlp.gate_proj.weight", "layers.1.und.mlp.gate_proj.weight"),
    ("language_model.model.layers.1.mlp_moe_gen.down_proj.weight", "layers.1.gen.mlp.down_proj.weight"),
    ("language_model.model.norm.weight", "und_norm.weight"),
    ("language_model.model.norm_moe_gen.weight", "gen_norm.weight"),
    ("language_model.lm_head.weight", "lm_head.weight"),
    ("vit_model.vision_tower.patch_embed.proj.weight", "vision.vision_tower.patch_embed.proj.weight"),
    ("vit_model.vision_tower.blocks.0.attn.qkv.weight", "vision.vision_tower.blocks.0.attn.qkv.weight"),
    ("vit_model.vision_tower.norm.bias", "vision.vision_tower.norm.bias"),
    ("connector.layers.2.weight", "connector.layers.2.weight"),
    ("time_embedder.mlp.0.weight", "time_embedder.mlp.0.weight"),
    ("vae2llm.bias", "vae2llm.bias"),
    ("llm2vae.weight", "llm2vae.weight"),
    ("latent_pos_embed.pos_embed", "latent_pos.pos_embed"),
]


@pytest.mark.parametrize("theirs, ours", SPOT_CHECKS)
def test_released_tensor_lands_in_its_module(release, loaded, theirs, ours):
    released = load_file(release / "model.safetensors")[theirs]
    assert torch.equal(loaded[0].state_dict()[ours], released.float())


def test_every_released_tensor_is_used_exactly_once_except_the_documented_unused(release, loaded):
    released = {k: v.float() for k, v in load_file(release / "model.safetensors").items()
                if not k.startswith(("vit_model.vision_tower.attn_pool.", "vit_pos_embed."))}
    ours = loaded[0].state_dict()
    ours.pop("rope.inv_freq", None)
    fingerprint = lambda t: (tuple(t.shape), round(float(t.double().sum()), 4), round(float(t.double().abs().max()), 4))  # noqa: E731
    assert sorted(map(fingerprint, released.values())) == sorted(map(fingerprint, ours.values()))


# --- the VAE: latent-diffusion -> diffusers ----------------------------------------------------------------------
def _ldm_reference(state, x=None, z=None):
    """latent-diffusion's AutoencoderKL computed directly from its own state dict (encode -> posterior
    mean, or decode), independent of diffusers and of our key mapping."""
    gn = lambda h, n: F.group_norm(h, 32, state[f"{n}.weight"], state[f"{n}.bias"], eps=1e-6)  # noqa: E731

    def conv(h, n, stride=1):
        w = state[f"{n}.weight"]
        return F.conv2d(h, w, state[f"{n}.bias"], stride, padding=w.shape[-1] // 2 if stride == 1 else 0)

    def resnet(h, n):
        out = conv(F.silu(gn(conv(F.silu(gn(h, f"{n}.norm1")), f"{n}.conv1"), f"{n}.norm2")), f"{n}.conv2")
        return (conv(h, f"{n}.nin_shortcut") if f"{n}.nin_shortcut.weight" in state else h) + out

    def attn(h, n):
        b, c, hh, ww = h.shape
        q, k, v = (conv(gn(h, f"{n}.norm"), f"{n}.{p}").reshape(b, c, hh * ww) for p in "qkv")
        weights = torch.softmax(q.transpose(1, 2) @ k * c ** -0.5, dim=2)  # [b, query, key]
        return h + conv((v @ weights.transpose(1, 2)).reshape(b, c, hh, ww), f"{n}.proj_out")

    def blocks(h, n, count):
        for j in range(count):
            h = resnet(h, f"{n}.block.{j}")
            h = attn(h, f"{n}.attn.{j}") if f"{n}.attn.{j}.q.weight" in state else h
        return h

    def mid(h, part):
        return resnet(attn(resnet(h, f"{part}.mid.block_1"), f"{part}.mid.attn_1"), f"{part}.mid.block_2")

    L, nb = len(VAE["ch_mult"]), VAE["num_res_blocks"]
    if x is not None:
        h = conv(x, "encoder.conv_in")
        for i in range(L):
            h = blocks(h, f"encoder.down.{i}", nb)
            if i != L - 1:
                h = conv(F.pad(h, (0, 1, 0, 1)), f"encoder.down.{i}.downsample.conv", stride=2)
        h = conv(F.silu(gn(mid(h, "encoder"), "encoder.norm_out")), "encoder.conv_out")
        return conv(h, "quant_conv").chunk(2, dim=1)[0]
    h = mid(conv(conv(z, "post_quant_conv"), "decoder.conv_in"), "decoder")
    for i in reversed(range(L)):
        h = blocks(h, f"decoder.up.{i}", nb + 1)
        if i != 0:
            h = conv(F.interpolate(h, scale_factor=2.0, mode="nearest"), f"decoder.up.{i}.upsample.conv")
    return conv(F.silu(gn(h, "decoder.norm_out")), "decoder.conv_out")


def test_converted_vae_computes_what_latent_diffusion_computes(release, loaded):
    vae = loaded[1]
    state = torch.load(release / "vae" / "kl-f16d16.ckpt", weights_only=True)["state_dict"]
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = torch.randn(2, VAE["z_channels"], 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours_mean = vae.autoencoder.encode(x).latent_dist.mean
        ours_image = vae.autoencoder.decode(z).sample
    torch.testing.assert_close(ours_mean, _ldm_reference(state, x=x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours_image, _ldm_reference(state, z=z), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vae.encode(x), 0.238092 * (ours_mean + 0.201906))  # released normalisation


def test_vae_key_conversion_agrees_with_diffusers_own_converter():
    """diffusers' converter handles ldm VAEs without attention inside levels: on those our rules must
    give exactly its result."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    state = distinct_tensors(ldm_vae_shapes(attention_in_levels=False), seed=3)
    levels = len(VAE["ch_mult"])
    theirs = convert_ldm_vae_checkpoint(dict(state), {"down_block_types": ["DownEncoderBlock2D"] * levels,
                                                      "up_block_types": ["UpDecoderBlock2D"] * levels})
    ours, unknown = convert_vae_state_dict({**state, **LOSS_ENTRIES}, levels)
    assert unknown == [] and sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_vae_loss_entries_are_dropped_unread():
    ours, unknown = convert_vae_state_dict(LOSS_ENTRIES, 2)
    assert ours == {} and unknown == []


# --- refusals -----------------------------------------------------------------------------------------
def test_a_missing_tensor_is_refused_with_the_key_named(tmp_path):
    folder = write_official_folder(tmp_path / "UniX", drop=["language_model.model.layers.1.mlp_moe_gen.up_proj.weight"])
    with pytest.raises(OfficialCheckpointError, match=r"missing: layers\.1\.gen\.mlp\.up_proj\.weight"):
        load_official_folder(folder)


def test_a_misshaped_tensor_is_refused_with_the_key_named(tmp_path):
    folder = write_official_folder(tmp_path / "UniX", reshape=["language_model.model.layers.0.self_attn.v_proj.bias"])
    with pytest.raises(OfficialCheckpointError, match=r"wrong shape: language_model\.model\.layers\.0\.self_attn"
                                                      r"\.v_proj\.bias \[17\] \(expected \[16\]\)"):
        load_official_folder(folder)


def test_an_unknown_tensor_is_refused_with_the_key_named(tmp_path):
    folder = write_official_folder(tmp_path / "UniX", extra=["language_model.model.layers.0.mlp.extra.weight"])
    with pytest.raises(OfficialCheckpointError, match=r"unexpected: language_model\.model\.layers\.0\.mlp\.extra"):
        load_official_folder(folder)


def test_a_vae_checkpoint_with_missing_weights_is_refused_with_the_key_named(tmp_path):
    folder = write_official_folder(tmp_path / "UniX")
    ckpt = folder / "vae" / "kl-f16d16.ckpt"
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    del state["decoder.up.1.attn.0.proj_out.weight"]
    torch.save({"state_dict": state}, ckpt)
    with pytest.raises(OfficialCheckpointError, match=r"kl-f16d16.ckpt.*missing: decoder\.up_blocks\.0\."
                                                      r"attentions\.0\.to_out\.0\.weight"):
        load_official_folder(folder)


# --- use -------------------------------------------------------------------------------------------------
def test_release_folder_writes_reports_and_draws_images(release):
    pipe = UniXPipeline.from_pretrained(release)
    image = np.linspace(0, 1, 40 * 30, dtype=np.float32).reshape(40, 30)
    reports = pipe.report([image, image.T], max_new_tokens=4)
    assert len(reports) == 2 and all(isinstance(r, str) for r in reports)
    images = pipe.generate(["FINDINGS: Clear lungs."], steps=3, seed=0)
    assert images[0].size == (MAX_LATENT * 2, MAX_LATENT * 2)


def test_convert_official_writes_our_folder_with_identical_outputs(release, loaded, tmp_path):
    assert main(["convert-official", str(release), str(tmp_path / "ours")]) == 0
    model, vae, tokenizer = load_model_folder(tmp_path / "ours")
    assert tokenizer.read_bytes() == (release / "tokenizer.json").read_bytes()
    assert model.config.diff(loaded[0].config) == []
    images = torch.randn(1, 3, 32, 32)
    settings = DecodingSettings(max_new_tokens=5)
    expected = generate_reports(loaded[0], images, [[7, 8]], settings)
    assert generate_reports(model, images, [[7, 8]], settings) == expected
    z = torch.randn(1, VAE["z_channels"], 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(z), loaded[1].decode(z))


def test_convert_official_refuses_a_folder_that_is_not_a_release(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"llm": {}}')
    assert main(["convert-official", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "no Janus-style config.json" in capsys.readouterr().err
