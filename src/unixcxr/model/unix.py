"""The UniX network: a ViT + connector for reading images, a Mixture-of-Transformers decoder with
an understanding and a generation expert, and the generation adapters (timestep embedder, vae2llm,
llm2vae, fixed latent positions). The VAE is separate (model/vae.py), as in diffusers."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from unixcxr.flow import matching
from unixcxr.model.attention import Mask
from unixcxr.model.cache import CacheView, KVCache
from unixcxr.model.config import UniXConfig
from unixcxr.model.embedders import (
    Connector,
    LatentPositionTable,
    RepaProjector,
    RotaryEmbedding,
    TimestepEmbedder,
)
from unixcxr.model.linear import Linear
from unixcxr.model.mot import LayerContext, MoTLayer, RMSNorm
from unixcxr.model.routing import Routing
from unixcxr.model.sequence import IGNORE, LATENT, VIT, SequenceBatch
from unixcxr.model.vision import VisionEncoder

# parameter-name prefixes of the generation branch (everything else belongs to understanding)
GEN_PREFIXES = ("gen_norm.", "time_embedder.", "vae2llm.", "llm2vae.", "repa_projector.")


def is_gen_parameter(name: str) -> bool:
    return name.startswith(GEN_PREFIXES) or (name.startswith("layers.") and ".gen." in name)


def select_rows(h: torch.Tensor, mask: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
    """h[mask] for h [B, L, D] and mask [B, L] bool (or its flat indices `rows`), as an index_select:
    its backward is an index_add, faster than the index_put of boolean indexing (docs/performance.md)."""
    if rows is None:
        rows = mask.reshape(-1).nonzero().squeeze(1)
    return h.reshape(-1, h.shape[-1]).index_select(0, rows)


def patchify(latents: torch.Tensor) -> torch.Tensor:
    # [N, C, h, w] -> [N, h * w, C] (row-major: token index = row * w + col); latent patch size 1
    return latents.flatten(2).transpose(1, 2)


def unpatchify(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    # [N, h * w, C] -> [N, C, h, w]
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)


class UniX(nn.Module):
    def __init__(self, config: UniXConfig):
        super().__init__()
        self.config = cfg = config.validate()
        llm, H = cfg.llm, cfg.llm.hidden_size
        # understanding: image reader
        self.vision = VisionEncoder(cfg.vision)
        self.connector = Connector(cfg.vision.width, H, cfg.vision.connector_act,
                                   cfg.vision.num_tokens if cfg.vision.center_features else None)
        # shared decoder: embeddings and RoPE shared, two experts per layer
        self.embed_tokens = nn.Embedding(llm.vocab_size, H)
        self.rope = RotaryEmbedding(llm.head_dim, llm.rope_theta)
        self.layers = nn.ModuleList(MoTLayer(llm) for _ in range(llm.num_layers))
        self.und_norm = RMSNorm(H, eps=llm.rms_norm_eps)
        self.gen_norm = RMSNorm(H, eps=llm.rms_norm_eps)
        self.lm_head = Linear(H, llm.vocab_size, bias=False)
        # generation adapters
        C = cfg.vae.latent_channels
        self.time_embedder = TimestepEmbedder(H, cfg.gen.timestep_dim)
        self.vae2llm = nn.Linear(C, H)
        self.llm2vae = nn.Linear(H, C)
        self.latent_pos = LatentPositionTable(H, cfg.gen.latent_grid_max)
        self.repa_projector = RepaProjector(H, cfg.gen.repa_dim) if cfg.gen.repa_dim else None
        self.reset_parameters()
        self._register_load_state_dict_pre_hook(_renamed_vision_keys, with_module=True)

    @property
    def vit(self) -> VisionEncoder:
        """The image encoder's former name (it need not be a ViT)."""
        return self.vision

    # --- initialisation and parameter groups ---------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """Decoder weights N(0, std), biases 0, llm2vae zero (the model starts by predicting zero
        velocity), gen expert a copy of und. The timm ViT keeps its own initialisation."""
        for name, module in self.named_modules():
            if name.startswith("vision") or name == "latent_pos":
                continue
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        nn.init.zeros_(self.llm2vae.weight)
        nn.init.zeros_(self.llm2vae.bias)
        self.init_gen_from_und()

    @torch.no_grad()
    def init_gen_from_und(self) -> None:
        """Copy every und weight into its gen twin (stage 2 starts from the trained reader)."""
        for layer in self.layers:
            layer.gen.load_state_dict(layer.und.state_dict())
        self.gen_norm.load_state_dict(self.und_norm.state_dict())

    def gen_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if is_gen_parameter(n)]

    def und_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not is_gen_parameter(n)]

    def parameter_counts(self) -> dict[str, int]:
        """Per-part counts; 'total' is the inference model (the REPA projector is training-only)."""
        def count(module):
            return sum(p.numel() for p in module.parameters()) if module is not None else 0

        counts = {
            "und_expert": sum(count(layer.und) for layer in self.layers),
            "gen_expert": sum(count(layer.gen) for layer in self.layers),
            "embed_tokens": count(self.embed_tokens),
            "lm_head": count(self.lm_head),
            "vision": count(self.vision),
            "connector": count(self.connector),
            "time_embedder": count(self.time_embedder),
            "latent_adapters": count(self.vae2llm) + count(self.llm2vae),
            "final_norms": count(self.und_norm) + count(self.gen_norm),
        }
        counts["total"] = sum(counts.values())
        counts["repa_projector"] = count(self.repa_projector)
        return counts

    # --- inputs -> decoder tokens ----------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        # images: [N, 3, S, S] normalised -> [N, n_vit, H]
        return self.connector(self.vision(images))

    @torch.no_grad()
    def fit_feature_mean(self, images: Iterable[torch.Tensor]) -> None:
        """Set the connector's per-position mean ViT feature from batches of normalised images
        [N, 3, S, S] (VisionConfig.center_features), with the ViT in eval mode. Deterministic, so a
        resumed stage or another rank fits the same values."""
        if self.connector.feature_mean is None:
            raise ValueError("fit_feature_mean needs config.vision.center_features = true")
        was_training = self.vision.training
        self.vision.eval()
        total, count = torch.zeros_like(self.connector.feature_mean, dtype=torch.float64), 0
        for batch in images:
            total += self.vision(batch.to(self.connector.feature_mean.device)).double().sum(0)
            count += batch.shape[0]
        self.vision.train(was_training)
        if count == 0:
            raise ValueError("fit_feature_mean got no images")
        self.connector.feature_mean.copy_((total / count).to(self.connector.feature_mean.dtype))

    def latent_tokens(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # x_t: [N, C, h, w], t: [N] -> [N, h * w, H]; the time embedding is simply added (no adaLN)
        h, w = x_t.shape[-2:]
        tokens = self.vae2llm(patchify(x_t).to(self.vae2llm.weight.dtype))
        return tokens + self.time_embedder(t)[:, None] + self.latent_pos(h, w)[None].to(tokens.dtype)

    def embed(self, batch: SequenceBatch, vit_tokens=None, latent_tokens=None, freeze_und=False):
        # -> [B, L, H]; image slots are filled in row-major order of the batch
        with torch.no_grad() if freeze_und else nullcontext():
            h = self.embed_tokens(batch.tokens.clamp(0, self.config.llm.vocab_size - 1))
            if vit_tokens is not None:
                h = h.masked_scatter((batch.kind == VIT)[..., None], vit_tokens.to(h.dtype))
        if latent_tokens is not None:
            h = h.masked_scatter((batch.kind == LATENT)[..., None], latent_tokens.to(h.dtype))
        return h

    # --- the decoder -------------------------------------------------------------------------------
    def run_layers(self, h: torch.Tensor, routing: Routing, positions: torch.Tensor | None, mask: Mask,
                   cache: KVCache | CacheView | None = None, freeze_und: bool = False,
                   capture_layer: int | None = None, shared: int = 1):
        """h: [B, L, H] through every MoT layer. Returns the last hidden state and, if asked, the one
        after `capture_layer` layers (REPA). positions: [B, L] RoPE positions, or None for no rotation.
        shared: h holds one guidance branch's rows, the same input for `shared` branches: the first
        layer's projections run once for all of them and the output has shared * B rows (the routing
        must be a block one). Between layers the stream stays split by expert (Routing.split / merge)."""
        if shared > 1 and routing.und is not None:  # index routing: its indices fit B * L tokens only
            raise ValueError("shared rows need a routing that does not index tokens (a block layout)")
        rope = self.rope(positions, h.dtype) if positions is not None else None
        B, L = h.shape[:2]
        ctx = LayerContext((B, L), routing, rope, mask, cache, freeze_und, shared)
        x, captured = routing.split(h, freeze_und), None
        for i, layer in enumerate(self.layers):
            x = layer(x, ctx, i)
            if i == 0 and shared > 1:  # the first layer turned one guidance branch's rows into all of them
                ctx = dataclasses.replace(ctx, shape=(B * shared, L), shared=1)
            if capture_layer == i + 1:
                captured = routing.merge(*x, ctx.shape)
        return routing.merge(*x, ctx.shape), captured

    def hidden_states(self, batch: SequenceBatch, vit_tokens=None, latent_tokens=None, freeze_und=False,
                      capture_layer=None):
        h = self.embed(batch, vit_tokens, latent_tokens, freeze_und)
        is_gen = batch.kind == LATENT
        mask = Mask.causal() if batch.is_plain_causal() else Mask.of_layout(batch.attention_mask(), is_gen)
        routing = Routing.from_mask(is_gen, batch.segment >= 0)
        return self.run_layers(h, routing, batch.position, mask, None, freeze_und, capture_layer)

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.und_norm(hidden))

    def velocity(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.llm2vae(self.gen_norm(hidden))

    # --- training forward ----------------------------------------------------------------------------
    def forward(self, batch: SequenceBatch, images: torch.Tensor | None = None,
                latents: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                t: torch.Tensor | None = None, repa_target: torch.Tensor | None = None,
                freeze_und: bool = False, generator: torch.Generator | None = None,
                repa_weight: float | None = None) -> dict[str, torch.Tensor]:
        """Losses of a mixed batch. images: [N_vit, 3, S, S] for the ViT blocks; latents: clean
        normalised VAE latents x0 [N_lat, C, h, w] for the latent blocks; repa_target: frozen encoder
        features [N_lat, n, D]; repa_weight: REPA's weight in 'loss' (None: config.gen.repa_weight).
        Returns 'loss' and its parts ('ce', 'mse', 'repa')."""
        vit_tokens = None
        if images is not None:
            with torch.no_grad() if freeze_und else nullcontext():
                vit_tokens = self.encode_images(images)
        latent_tokens = target = None
        if latents is not None:
            n = latents.shape[0]
            t = matching.sample_timesteps(n, self.config.gen.timestep_shift, generator, latents.device) \
                if t is None else t
            if noise is None:
                noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
            latent_tokens = self.latent_tokens(matching.interpolate(latents, noise, t), t)
            target = patchify(matching.velocity_target(latents, noise))  # [N, h*w, C]
        capture = self.config.gen.repa_layer if repa_target is not None else None
        h, captured = self.hidden_states(batch, vit_tokens, latent_tokens, freeze_und, capture)

        losses = {}
        has_labels = batch.labels != IGNORE
        if has_labels.any():
            logits = self.text_logits(select_rows(h, has_labels))
            losses["ce"] = F.cross_entropy(logits.float(), batch.labels[has_labels])
        if latents is not None:
            latent_rows = (batch.kind == LATENT).reshape(-1).nonzero().squeeze(1)
            pred = self.velocity(select_rows(h, rows=latent_rows)).float()
            losses["mse"] = F.mse_loss(pred, target.reshape(-1, target.shape[-1]).float())
            if repa_target is not None:
                hidden = select_rows(captured, rows=latent_rows)
                losses["repa"] = self.repa_loss(hidden, repa_target, latents.shape[-2:])
        weight = self.config.gen.repa_weight if repa_weight is None else repa_weight
        total = sum(v * (weight if k == "repa" else 1.0) for k, v in losses.items())
        losses["loss"] = total
        return losses

    def repa_loss(self, hidden: torch.Tensor, target: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Negative cosine between projected gen hidden states [N * h * w, H] and encoder features
        [N, n, D] (resampled to the latent grid when n != h * w), averaged once over tokens and batch."""
        if self.repa_projector is None:
            raise ValueError("REPA needs config.gen.repa_dim > 0")
        h, w = grid
        N, n, D = target.shape
        if n != h * w:
            side = int(round(n ** 0.5))
            if side * side != n:
                raise ValueError(f"REPA target has {n} tokens, not a square grid")
            grid_feats = target.transpose(1, 2).reshape(N, D, side, side)
            target = F.interpolate(grid_feats.float(), size=(h, w), mode="bilinear", align_corners=False)
            target = target.flatten(2).transpose(1, 2)
        pred = F.normalize(self.repa_projector(hidden).float(), dim=-1)
        target = F.normalize(target.reshape(-1, D).float(), dim=-1)
        return -(pred * target).sum(-1).mean()

    # --- utilities ---------------------------------------------------------------------------------
    def new_cache(self, batch: int, max_len: int) -> KVCache:
        llm = self.config.llm
        p = self.embed_tokens.weight
        return KVCache(llm.num_layers, batch, llm.num_kv_heads, max_len, llm.head_dim, p.dtype, p.device)


def upgraded_key(key: str, prefix: str = "") -> str:
    """A weight's name written by an earlier version under today's name: the image encoder was `vit`."""
    old = prefix + "vit."
    return prefix + "vision." + key[len(old):] if key.startswith(old) else key


def upgrade_state_dict(state: dict) -> dict:
    return {upgraded_key(k): v for k, v in state.items()}


def _renamed_vision_keys(module, state_dict, prefix, *args) -> None:
    """load_state_dict of an earlier version's weights, under any prefix: keys renamed in place."""
    for key in [k for k in state_dict if upgraded_key(k, prefix) != k]:
        state_dict[upgraded_key(key, prefix)] = state_dict.pop(key)
