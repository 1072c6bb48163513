"""Key names of the authors' released checkpoint -> our module names.

Two tables of (pattern, replacement) rules, read top to bottom, first match wins:
- MODEL_RULES map model.safetensors (Janus/BAGEL names, MoT twins suffixed `_moe_gen`) onto UniX;
- VAE_RULES map the latent-diffusion autoencoder (vae/kl-f16d16.ckpt) onto diffusers' AutoencoderKL.
The VAE rules follow diffusers' own converter (`diffusers.loaders.single_file_utils.
convert_ldm_vae_checkpoint`) and add what it lacks: attention blocks inside a resolution level
(`down.N.attn.M` / `up.N.attn.M`), which kl-f16d16 has at its lowest level."""

from __future__ import annotations

import re

import torch

# Released tensors that inference never uses (see docs/checkpoint-layout.md): the SigLIP
# attention-pool head and a ViT position table of the BAGEL code path.
UNUSED_MODEL_PREFIXES = ("vit_model.vision_tower.attn_pool.", "vit_pos_embed.")
# Perceptual/discriminator loss weights stored in the VAE training checkpoint: never loaded.
VAE_LOSS_PREFIX = "loss."

_LAYER = r"language_model\.model\.layers\.(\d+)\."
_BRANCH = r"(_moe_gen)?"  # suffix of the generation expert's twin


def _expert(match: re.Match, group: int = 2) -> str:
    return "gen" if match.group(group) else "und"


MODEL_RULES: list[tuple[str, object]] = [
    (r"language_model\.model\.embed_tokens\.weight", "embed_tokens.weight"),
    (_LAYER + r"input_layernorm" + _BRANCH + r"\.weight",
     lambda m: f"layers.{m[1]}.{_expert(m)}.attn_norm.weight"),
    (_LAYER + r"post_attention_layernorm" + _BRANCH + r"\.weight",
     lambda m: f"layers.{m[1]}.{_expert(m)}.mlp_norm.weight"),
    (_LAYER + r"self_attn\.(q_proj|k_proj|v_proj|o_proj|q_norm|k_norm)" + _BRANCH + r"\.(weight|bias)",
     lambda m: f"layers.{m[1]}.{_expert(m, 3)}.{m[2]}.{m[4]}"),
    (_LAYER + r"mlp" + _BRANCH + r"\.(gate_proj|up_proj|down_proj)\.weight",
     lambda m: f"layers.{m[1]}.{_expert(m)}.mlp.{m[3]}.weight"),
    (r"language_model\.model\.norm\.weight", "und_norm.weight"),
    (r"language_model\.model\.norm_moe_gen\.weight", "gen_norm.weight"),
    (r"language_model\.lm_head\.weight", "lm_head.weight"),
    (r"vit_model\.vision_tower\.(.+)", lambda m: f"vision.vision_tower.{m[1]}"),
    (r"connector\.layers\.([02])\.(weight|bias)", lambda m: f"connector.layers.{m[1]}.{m[2]}"),
    (r"time_embedder\.mlp\.([02])\.(weight|bias)", lambda m: f"time_embedder.mlp.{m[1]}.{m[2]}"),
    (r"(vae2llm|llm2vae)\.(weight|bias)", lambda m: f"{m[1]}.{m[2]}"),
    (r"latent_pos_embed\.pos_embed", "latent_pos.pos_embed"),
]


def _resnet(name: str) -> str:
    return name.replace("nin_shortcut", "conv_shortcut")


def _attention(name: str) -> str:
    names = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
    layer, param = name.rsplit(".", 1)
    return f"{names[layer]}.{param}"


def vae_rules(num_levels: int) -> list[tuple[str, object]]:
    """latent-diffusion -> diffusers. The decoder's `up.N` is diffusers' up_blocks[L-1-N]: ldm
    indexes levels by resolution, diffusers by execution order."""
    up = lambda n: num_levels - 1 - int(n)  # noqa: E731
    return [
        (r"(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)", lambda m: f"{m[1]}.{m[2]}.{m[3]}"),
        (r"(encoder|decoder)\.norm_out\.(weight|bias)", lambda m: f"{m[1]}.conv_norm_out.{m[2]}"),
        (r"(quant_conv|post_quant_conv)\.(weight|bias)", lambda m: f"{m[1]}.{m[2]}"),
        (r"encoder\.down\.(\d+)\.block\.(\d+)\.(.+)",
         lambda m: f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{_resnet(m[3])}"),
        (r"encoder\.down\.(\d+)\.attn\.(\d+)\.(.+)",
         lambda m: f"encoder.down_blocks.{m[1]}.attentions.{m[2]}.{_attention(m[3])}"),
        (r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)",
         lambda m: f"encoder.down_blocks.{m[1]}.downsamplers.0.conv.{m[2]}"),
        (r"decoder\.up\.(\d+)\.block\.(\d+)\.(.+)",
         lambda m: f"decoder.up_blocks.{up(m[1])}.resnets.{m[2]}.{_resnet(m[3])}"),
        (r"decoder\.up\.(\d+)\.attn\.(\d+)\.(.+)",
         lambda m: f"decoder.up_blocks.{up(m[1])}.attentions.{m[2]}.{_attention(m[3])}"),
        (r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)",
         lambda m: f"decoder.up_blocks.{up(m[1])}.upsamplers.0.conv.{m[2]}"),
        (r"(encoder|decoder)\.mid\.block_([12])\.(.+)",
         lambda m: f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.{_resnet(m[3])}"),
        (r"(encoder|decoder)\.mid\.attn_1\.(.+)",
         lambda m: f"{m[1]}.mid_block.attentions.0.{_attention(m[2])}"),
    ]


def rename(key: str, rules: list[tuple[str, object]]) -> str | None:
    """The new name of `key` under the first rule whose pattern matches all of it; None if none does."""
    for pattern, target in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return target(match) if callable(target) else target
    return None


def is_unused_model_key(key: str) -> bool:
    return key.startswith(UNUSED_MODEL_PREFIXES)


def convert_vae_state_dict(ldm_state: dict[str, torch.Tensor], num_levels: int) -> tuple[dict, list[str]]:
    """latent-diffusion VAE weights -> (diffusers AutoencoderKL state dict, keys no rule knows).
    loss.* entries are dropped unread. Attention q/k/v/proj_out are 1x1 convolutions in ldm and
    linear layers in diffusers: [C, C, 1, 1] -> [C, C]."""
    rules = vae_rules(num_levels)
    out, unknown = {}, []
    for key, tensor in ldm_state.items():
        if key.startswith(VAE_LOSS_PREFIX):
            continue
        new = rename(key, rules)
        if new is None:
            unknown.append(key)
            continue
        is_attention_matrix = ".attentions." in new and new.endswith(".weight") and tensor.dim() == 4
        out[new] = tensor[:, :, 0, 0] if is_attention_matrix else tensor
    return out, unknown
