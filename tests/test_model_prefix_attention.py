"""The prefix split of attention (attention.causal_prefix, attention.prefix_attention): a generation batch's
text queries run over the text keys alone, and the result is the full attention's."""

import torch
import torch.nn.functional as F

from unixcxr.model.attention import Mask, causal_prefix, prefix_attention
from unixcxr.model.routing import Routing
from unixcxr.model.sequence import LATENT, collate, generation_layout, understanding_layout


def _generation_batch(model):
    s = model.config.tokens
    layouts = [generation_layout(s, list(range(30, 42)), 64), generation_layout(s, [30, 31], 64)]
    return collate(layouts, left_pad=True)  # as a generation stage builds them: the blocks share columns


def test_the_prefix_of_a_generation_batch_ends_where_its_image_blocks_start(tiny_model):
    batch = _generation_batch(tiny_model)
    soi = int((batch.block[0] > 0).nonzero()[0])  # [soi] opens the block: it sees the latents after it
    assert soi == 1 + 12 + 1 and int((batch.segment[1] < 0).sum()) == 10  # [bos] report [eos]; row 2 padded
    assert causal_prefix(batch.attention_mask(), batch.kind == LATENT) == soi


def test_layouts_without_a_causal_text_prefix_give_none():
    from unixcxr.model.config import tiny

    cfg = tiny()
    s, nv = cfg.tokens, cfg.vision.num_tokens
    und = collate([understanding_layout(s, nv, [10, 11], [20, 21, 22])])  # opens with its ViT block
    assert causal_prefix(und.attention_mask(), und.kind == LATENT) == 0
    text = collate([generation_layout(s, [30, 31, 32], None), generation_layout(s, [30], None)])
    L = text.shape[1]  # text only: every column is causal, so the split has nothing to skip
    assert causal_prefix(text.attention_mask(), text.kind == LATENT) == L
    gen = text.kind == LATENT
    gen[1, 2] = True  # a gen token inside the prefix ends it: it must never run without autograd
    assert causal_prefix(text.attention_mask(), gen) == 2


def test_prefix_attention_equals_full_attention_with_gradients(tiny_model):
    batch = _generation_batch(tiny_model)
    mask = batch.attention_mask()
    c = causal_prefix(mask, batch.kind == LATENT)
    B, L = batch.shape
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, n, L, 16, requires_grad=True) for n in (4, 2, 2))  # grouped heads
    dy = torch.randn(B, 4, L, 16)
    full = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    grads_full = torch.autograd.grad(full, (q, k, v), dy)
    split = prefix_attention(q, k, v, mask, c, freeze_und=False)
    grads_split = torch.autograd.grad(split, (q, k, v), dy)
    torch.testing.assert_close(split, full, atol=1e-6, rtol=1e-5)
    for a, b in zip(grads_split, grads_full):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_frozen_prefix_gives_the_generation_loss_gradients_of_the_full_attention(tiny_model):
    """A generation stage's step (freeze_und): the text queries run without autograd, and the gen
    expert's gradients are those of the unsplit layers."""
    model = tiny_model.train()
    batch = _generation_batch(model)
    mask, is_gen = batch.attention_mask(), batch.kind == LATENT
    assert causal_prefix(mask, is_gen) > 0
    torch.manual_seed(3)
    x_t, t = torch.randn(2, 4, 8, 8), torch.tensor([0.3, 0.8])
    params = model.gen_parameters()

    def velocity_and_grads(prefix: int | None):
        h = model.embed(batch, None, model.latent_tokens(x_t, t), freeze_und=True)
        routing = Routing.from_mask(is_gen, batch.segment >= 0)
        layout = Mask.of_layout(mask, is_gen) if prefix is None else Mask.explicit(mask, prefix)
        h, _ = model.run_layers(h, routing, batch.position, layout, None, True)  # None: the layout's own prefix
        vel = model.velocity(h[is_gen])
        grads = torch.autograd.grad(vel.square().mean(), [p for p in params if p.requires_grad], allow_unused=True)
        return vel.detach(), grads

    vel_split, grads_split = velocity_and_grads(None)
    vel_full, grads_full = velocity_and_grads(0)
    torch.testing.assert_close(vel_split, vel_full, atol=1e-5, rtol=1e-5)
    assert sum(g is not None for g in grads_full) > 10  # the gen experts' weights take gradients
    for a, b in zip(grads_split, grads_full):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
