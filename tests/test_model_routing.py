"""Routing of tokens to the two experts: the block fast path (slices) must give exactly what the
index gather-scatter gives, in outputs and gradients; shared guidance rows and the sampler's folded
rotation must change no number."""

import pytest
import torch

from unixcxr.inference.images import encode_prompts, fold_block_rotation
from unixcxr.model.attention import Mask
from unixcxr.model.embedders import apply_rotary
from unixcxr.model.routing import Routing
from unixcxr.model.sequence import LATENT, collate, generation_layout


def _index_routing(is_gen: torch.Tensor) -> Routing:
    flat = is_gen.reshape(-1)
    return Routing(und=(~flat).nonzero().squeeze(1), gen=flat.nonzero().squeeze(1))


def test_a_latent_block_at_the_same_columns_is_routed_by_slices():
    is_gen = torch.zeros(3, 10, dtype=torch.bool)
    is_gen[:, 4:9] = True
    assert Routing.from_mask(is_gen).block == (4, 9)
    ragged = is_gen.clone()
    ragged[1, 8] = False  # rows differ: the index path
    assert Routing.from_mask(ragged).block is None and Routing.from_mask(ragged).gen is not None
    holed = is_gen.clone()
    holed[:, 6] = False  # two runs in a row: the index path
    assert Routing.from_mask(holed).block is None
    padded = torch.ones(3, 10, dtype=torch.bool)
    padded[0, 0] = False  # padding outside the block: the block stays, und rows are indexed without it
    routing = Routing.from_mask(is_gen, valid=padded)
    assert routing.block == (4, 9) and routing.gen is None
    assert routing.und.tolist() == [r * 10 + c for r in range(3) for c in (0, 1, 2, 3, 9) if (r, c) != (0, 0)]


def _routings() -> dict[str, tuple[Routing, torch.Tensor, torch.Tensor]]:
    """Every kind of routing with its is_gen and valid masks ([3, 10])."""
    none = torch.zeros(3, 10, dtype=torch.bool)
    block = none.clone()
    block[:, 4:9] = True
    ragged = block.clone()
    ragged[1, 8] = False
    all_real, padded = ~none, ~none
    padded[0, :2] = padded[2, 0] = False
    cases = {"all und": (none, all_real), "all gen": (~none, all_real), "block": (block, all_real),
             "block, padded": (block, padded), "index": (ragged, all_real), "index, padded": (ragged, padded),
             "und, padded": (none, padded)}
    return {name: (Routing.from_mask(g, v), g, v) for name, (g, v) in cases.items()}


@pytest.mark.parametrize("name", list(_routings()))
def test_split_then_merge_gives_back_the_grid_with_zeros_at_padding(name):
    routing, is_gen, valid = _routings()[name]
    x = torch.randn(3, 10, 4, requires_grad=True)
    und, gen = routing.split(x)
    n_und, n_gen = int((~is_gen & valid).sum()), int((is_gen & valid).sum())
    assert (0 if und is None else und.numel() // 4) == n_und and (0 if gen is None else gen.numel() // 4) == n_gen
    expected = x * valid[..., None]
    merged = routing.merge(und, gen, (3, 10))
    assert merged.shape == x.shape and torch.equal(merged, expected)
    weights = torch.randn(3, 10, 4)  # gradients flow back to exactly the routed tokens
    (grad,) = torch.autograd.grad((merged * weights).sum(), x)
    assert torch.equal(grad, weights * valid[..., None])


def test_a_frozen_split_gives_und_rows_without_autograd():
    routing, _, _ = _routings()["block, padded"]
    und, gen = routing.split(torch.randn(3, 10, 4, requires_grad=True), freeze_und=True)
    assert not und.requires_grad and gen.requires_grad


def _index_routing_of(is_gen: torch.Tensor, valid: torch.Tensor) -> Routing:
    flat, keep = is_gen.reshape(-1), valid.reshape(-1)
    return Routing(und=(~flat & keep).nonzero().squeeze(1), gen=(flat & keep).nonzero().squeeze(1))


@pytest.mark.parametrize("prompts", [([30, 31, 32], [33, 34, 35]), ([30, 31, 32, 36, 37], [33])],
                         ids=["same-length", "left-padded"])
def test_block_routing_equals_index_routing_in_outputs_and_gradients(tiny_model, prompts):
    torch.manual_seed(3)
    s = tiny_model.config.tokens
    batch = collate([generation_layout(s, p, 16) for p in prompts], left_pad=True)
    is_gen, valid = batch.kind == LATENT, batch.segment >= 0
    block = Routing.from_mask(is_gen, valid)
    assert block.block is not None and (block.und is None) == bool(valid.all())
    latents = torch.randn(2, 16, tiny_model.config.llm.hidden_size)
    mask = batch.attention_mask()
    results = []
    for routing in (block, _index_routing_of(is_gen, valid)):
        tiny_model.zero_grad()
        h0 = tiny_model.embed(batch, latent_tokens=latents, freeze_und=True)
        out, _ = tiny_model.run_layers(h0, routing, batch.position, Mask.of_layout(mask, is_gen), freeze_und=True)
        out[is_gen].square().sum().backward()
        grads = {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}
        results.append((out.detach(), grads))
    (out_a, grads_a), (out_b, grads_b) = results
    assert torch.allclose(out_a, out_b, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and grads_a
    assert not any(".und." in n for n in grads_a)  # the frozen und expert gets no gradient either way
    for n in grads_a:
        assert torch.allclose(grads_a[n], grads_b[n], atol=1e-5), n
    tiny_model.zero_grad()


def test_shared_first_layer_rows_equal_repeated_rows(tiny_model):
    torch.manual_seed(4)
    s = tiny_model.config.tokens
    batch = collate([generation_layout(s, [30, 31], 16)] * 2)
    routing = Routing.from_mask(batch.kind == LATENT)
    h = torch.randn(2, batch.shape[1], tiny_model.config.llm.hidden_size)
    mask = Mask.explicit(batch.attention_mask().repeat(3, 1, 1, 1))
    positions = batch.position.repeat(3, 1)
    with torch.no_grad():
        shared, _ = tiny_model.run_layers(h, routing, positions, mask, shared=3)
        repeated, _ = tiny_model.run_layers(h.repeat(3, 1, 1), routing, positions, mask)
    assert shared.shape == repeated.shape == (6, batch.shape[1], h.shape[-1])
    assert torch.allclose(shared, repeated, atol=1e-6)
    with pytest.raises(ValueError, match="block layout"):
        tiny_model.run_layers(h, _index_routing(batch.kind == LATENT), positions, mask, shared=3)


def test_folded_rotation_gives_the_attention_scores_of_rotated_queries_and_keys(tiny_model):
    torch.manual_seed(5)
    cache = encode_prompts(tiny_model, [[30, 31, 32, 33], [34]], 16)
    d = tiny_model.config.llm.head_dim
    L = cache.kv.length
    # undo the fold to get the keys as the prompt run wrote them (R_j k_j), then compare scores
    folded = cache.kv.k[0, :, :, :L].clone()
    fold_block_rotation(tiny_model, cache.kv, -cache.next_position)  # turns them back by R_{+p}
    original = cache.kv.k[0, :, :, :L]
    q = torch.randn(folded.shape[0], folded.shape[1], 5, d)  # block queries, before any rotation
    cos, sin = tiny_model.rope(cache.next_position[:, None].expand(-1, 5), torch.float32)
    q_rotated = apply_rotary(q.transpose(1, 2), cos, sin).transpose(1, 2)  # R_p q
    assert torch.allclose(q @ folded.transpose(-1, -2), q_rotated @ original.transpose(-1, -2), atol=1e-5)
    assert not torch.allclose(folded, original, atol=1e-3)  # the fold did turn the keys
