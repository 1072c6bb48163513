"""Training batches: the same losses whether samples are padded, packed or run alone."""

import random

import torch

from unixcxr.data.batches import GenerationExample, UnderstandingExample, make_batch
from unixcxr.model.sequence import IGNORE


def _examples(model):
    torch.manual_seed(0)
    und = [UnderstandingExample(torch.randn(3, 32, 32), [10, 11, 12], list(range(20, 20 + n)), f"u{n}")
           for n in (7, 3, 5)]
    gen = [GenerationExample(torch.randn(4, 8, 8), list(range(30, 30 + n)), f"g{n}") for n in (4, 9)]
    return und, gen


def test_packed_mixed_batch_matches_padded_batch(tiny_model):
    und, gen = _examples(tiny_model)
    cfg = tiny_model.config
    padded = make_batch(cfg, und, gen, text_dropout=0.0)
    packed = make_batch(cfg, und, gen, text_dropout=0.0, pack_to=256)
    assert packed.sequence.shape[0] < padded.sequence.shape[0]
    assert sorted(packed.ids) == sorted(padded.ids)
    t_by_id = {"g4": 0.25, "g9": 0.75}
    noise_by_id = {ex.id: torch.randn(4, 8, 8) for ex in gen}
    losses = []
    with torch.no_grad():
        for b in (padded, packed):
            gen_ids = [i for i in b.ids if i.startswith("g")]
            out = tiny_model(b.sequence, images=b.images, latents=b.latents,
                             noise=torch.stack([noise_by_id[i] for i in gen_ids]),
                             t=torch.tensor([t_by_id[i] for i in gen_ids]))
            losses.append(out)
    assert torch.allclose(losses[0]["ce"], losses[1]["ce"], atol=1e-5)
    assert torch.allclose(losses[0]["mse"], losses[1]["mse"], atol=1e-5)


def test_text_dropout_empties_the_prompt_at_the_configured_rate(tiny_model):
    _, gen = _examples(tiny_model)
    cfg = tiny_model.config
    rng = random.Random(0)
    dropped = 0
    for _ in range(500):
        b = make_batch(cfg, generation=gen[:1], rng=rng)  # config default: 0.1
        dropped += int(b.sequence.shape[1] == 2 + 64 + 2)  # [bos][eos][soi] 64 latents [eoi]
    assert 30 <= dropped <= 75


def test_understanding_loss_targets_are_exactly_the_report(tiny_model):
    und, _ = _examples(tiny_model)
    b = make_batch(tiny_model.config, und[:1])
    targets = b.sequence.labels[b.sequence.labels != IGNORE].tolist()
    assert targets == und[0].report + [tiny_model.config.tokens.eos]
