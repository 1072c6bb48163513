"""The attention rules of the model (docs/model.md), checked on the network's real outputs: text is
causal, an image block attends within itself and shares one RoPE position, noisy latents are hidden
from every text token, and padding changes no real token."""

import torch

from unixcxr.model.sequence import (
    IGNORE,
    LATENT,
    TEXT,
    VIT,
    SampleLayout,
    collate,
    generation_layout,
    pack,
    understanding_layout,
)


def _mixed_batch(model):
    s, nv = model.config.tokens, model.config.vision.num_tokens
    layouts = [
        understanding_layout(s, nv, [10, 11, 12], [20, 21, 22, 23]),
        generation_layout(s, [30, 31, 32, 33], 64),
        # text AFTER a noisy block in the same sample must not see it either
        generation_layout(s, [], 64).text([s.bos, 40, 41, 42, s.eos]),
    ]
    return collate(layouts)


def _forward(model, batch, images, x_t, t):
    vit = model.encode_images(images)
    h, _ = model.hidden_states(batch, vit, model.latent_tokens(x_t, t))
    return model.text_logits(h), model.velocity(h[batch.kind == LATENT])


def test_noisy_latents_are_invisible_to_every_text_token(tiny_model):
    torch.manual_seed(1)
    batch = _mixed_batch(tiny_model)
    images, t = torch.randn(1, 3, 32, 32), torch.tensor([0.7, 0.3])
    logits_a, vel_a = _forward(tiny_model, batch, images, torch.randn(2, 4, 8, 8), t)
    logits_b, vel_b = _forward(tiny_model, batch, images, torch.randn(2, 4, 8, 8) * 3, t)
    outside = ~batch.noisy
    assert outside[2, -5:].all()  # the trailing text is among the checked tokens
    assert torch.equal(logits_a[outside], logits_b[outside])
    assert not torch.allclose(vel_a, vel_b)  # the latents themselves did change


def test_changing_the_prompt_changes_the_predicted_velocity(tiny_model):
    s = tiny_model.config.tokens
    x_t, t = torch.randn(1, 4, 8, 8), torch.tensor([0.5])
    velocities = []
    for report in ([30, 31, 32], [40, 41, 42]):
        batch = collate([generation_layout(s, report, 64)])
        h, _ = tiny_model.hidden_states(batch, None, tiny_model.latent_tokens(x_t, t))
        velocities.append(tiny_model.velocity(h[batch.kind == LATENT]))
    assert (velocities[0] - velocities[1]).abs().max() > 1e-3


def test_text_is_causal_and_image_blocks_are_bidirectional(tiny_model):
    s, nv = tiny_model.config.tokens, tiny_model.config.vision.num_tokens
    batch = collate([understanding_layout(s, nv, [10, 11], [20, 21, 22])])
    mask = batch.attention_mask()[0, 0]
    vit_cols = (batch.kind[0] == VIT).nonzero().squeeze(1)
    first_vit, last_vit = int(vit_cols[0]), int(vit_cols[-1])
    assert mask[first_vit, last_vit]  # the first image token sees the last one
    text_rows = (batch.kind[0] == TEXT) & (batch.block[0] == 0)
    rows = text_rows.nonzero().squeeze(1)
    for i in rows.tolist():
        assert mask[i, : i + 1].all() and not mask[i, i + 1:].any()  # text sees exactly its past
    # and the network agrees: changing a later text token leaves earlier logits unchanged
    images = torch.randn(1, 3, 32, 32)
    vit = tiny_model.encode_images(images)
    h1, _ = tiny_model.hidden_states(batch, vit)
    batch.tokens[0, -1] = 99
    h2, _ = tiny_model.hidden_states(batch, vit)
    assert torch.equal(h1[0, :-1], h2[0, :-1])


def test_image_block_shares_one_rope_position():
    from unixcxr.model.config import tiny

    s = tiny().tokens
    layout = SampleLayout(s).text([s.bos, 5, s.eos]).latent_block(16).text([7])
    block = [p for p, b in zip(layout.position, layout.block) if b]
    assert len(set(block)) == 1 and block[0] == 3
    assert layout.position[-1] == 4  # the next text token continues right after the block


def test_loss_labels_cover_the_report_and_its_eos_only():
    from unixcxr.model.config import tiny

    s = tiny().tokens
    layout = understanding_layout(s, 4, [10, 11], [20, 21])
    targets = [x for x in layout.labels() if x != IGNORE]
    assert targets == [20, 21, s.eos]


def test_packed_batch_gives_the_same_losses_as_samples_one_by_one(tiny_model):
    s, nv = tiny_model.config.tokens, tiny_model.config.vision.num_tokens
    torch.manual_seed(2)
    layouts = [
        understanding_layout(s, nv, [10, 11, 12], [20, 21, 22, 23, 24]),
        understanding_layout(s, nv, [10], [25, 26]),
        generation_layout(s, [30, 31, 32], 64),
        generation_layout(s, [33], 64),
    ]
    images = torch.randn(2, 3, 32, 32)
    latents, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([0.2, 0.9])
    packed, order = pack(layouts, row_length=160)
    assert packed.shape[0] < len(layouts)
    img_order = [i for i in order if i < 2]
    lat_order = [i - 2 for i in order if i >= 2]
    with torch.no_grad():
        out = tiny_model(packed, images=images[img_order], latents=latents[lat_order], noise=noise[lat_order],
                         t=t[lat_order])
        ce_one = [tiny_model(collate([layouts[i]]), images=images[i:i + 1])["ce"] for i in range(2)]
        mse_one = [tiny_model(collate([layouts[2 + i]]), latents=latents[i:i + 1], noise=noise[i:i + 1],
                              t=t[i:i + 1])["mse"] for i in range(2)]
    n_tokens = torch.tensor([6.0, 3.0])  # report tokens + eos per sample: the packed CE is token-averaged
    assert torch.allclose(out["ce"], (torch.stack(ce_one) * n_tokens).sum() / n_tokens.sum(), atol=1e-5)
    assert torch.allclose(out["mse"], torch.stack(mse_one).mean(), atol=1e-5)


def _mm_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    counts = counter.get_flop_counts()["Global"]
    return sum(v for op, v in counts.items() if "mm" in str(op))


def test_padding_tokens_skip_the_experts_and_change_no_real_token(tiny_model):
    s, nv = tiny_model.config.tokens, tiny_model.config.vision.num_tokens
    layouts = [understanding_layout(s, nv, [10, 11, 12], list(range(20, 40))),
               understanding_layout(s, nv, [10], [25, 26])]  # 20 tokens shorter: padded in the batch
    images = torch.randn(2, 3, 32, 32)
    batch = collate(layouts)
    assert int((batch.segment < 0).sum()) == 20
    with torch.no_grad():
        vit = tiny_model.encode_images(images)
        padded, _ = tiny_model.hidden_states(batch, vit)
        one = [tiny_model.hidden_states(collate([lay]), vit[i:i + 1])[0][0] for i, lay in enumerate(layouts)]
        for i, h in enumerate(one):
            assert torch.allclose(padded[i, :h.shape[0]], h, atol=1e-5)
        assert padded[1, one[1].shape[0]:].abs().max() == 0  # padding never went through an expert
        # projections and MLPs cost the same as the two samples alone: padding costs attention only
        alone = sum(_mm_flops(lambda i=i, lay=lay: tiny_model.hidden_states(collate([lay]), vit[i:i + 1]))
                    for i, lay in enumerate(layouts))
        together = _mm_flops(lambda: tiny_model.hidden_states(batch, vit))
    assert together == alone
