"""Training data: which samples each micro-batch holds across steps, ranks and workers; caches;
instruction/answer pairs and text dropout built from a real SynthCXR folder."""

import numpy as np
import pytest
import torch

from unixcxr.data.images import letterbox
from unixcxr.data.prompts import REPORT_INSTRUCTIONS, asks_findings_only
from unixcxr.data.synthcxr import generate_dataset
from unixcxr.model.config import tiny
from unixcxr.model.sequence import IGNORE, TEXT
from unixcxr.model.tokenizer import ReportTokenizer
from unixcxr.model.vae import LatentVAE
from unixcxr.train.builders import GenerationBuilder, UnderstandingBuilder
from unixcxr.train.data import BatchPlan, film_cache, latent_cache, load_items, micro_batches, tokenize
from unixcxr.train.distributed import DistEnv


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, n=24, size=64, seed=0, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def items(data_dir):
    return load_items(data_dir, "train")


@pytest.fixture(scope="module")
def tokenizer(items):
    return ReportTokenizer.train([it.report for it in items] + list(REPORT_INSTRUCTIONS) * 2, vocab_size=400)


def _positions(plan: BatchPlan, step: int) -> list[int]:
    return [i for chunk in plan.chunks(step) for i in plan.indices(step, chunk)]


def test_ranks_split_each_global_batch_into_disjoint_parts_that_match_one_process():
    one = BatchPlan(num_items=48, global_batch=8, micro_batch=2, world_size=1, seed=3)
    ranks = [BatchPlan(48, 8, 2, world_size=2, rank=r, seed=3) for r in range(2)]
    assert one.accumulation == 4 and ranks[0].accumulation == 2
    for step in range(12):  # crosses epoch boundaries
        parts = [_positions(p, step) for p in ranks]
        assert not set(parts[0]) & set(parts[1])
        assert sorted(parts[0] + parts[1]) == sorted(_positions(one, step))
        one_chunks = {c: one.indices(step, c) for c in one.chunks(step)}
        for p in ranks:
            for c in p.chunks(step):
                assert p.indices(step, c) == one_chunks[c]  # the same micro-batches, not just the same samples


def test_an_epoch_visits_every_item_exactly_once_in_a_seeded_order():
    plan = BatchPlan(num_items=48, global_batch=8, micro_batch=4, seed=1)
    epoch = [i for step in range(6) for i in _positions(plan, step)]
    assert sorted(epoch) == list(range(48))
    assert epoch != list(range(48))
    assert epoch == [i for step in range(6) for i in _positions(BatchPlan(48, 8, 4, seed=1), step)]
    assert epoch != [i for step in range(6) for i in _positions(BatchPlan(48, 8, 4, seed=2), step)]


def _build(step, chunk, indices):
    return step, chunk, tuple(indices)


def test_dataloader_workers_build_whole_micro_batches_without_duplicates_and_in_order():
    plan = BatchPlan(num_items=40, global_batch=8, micro_batch=2, world_size=2, rank=1, seed=0)
    serial = list(micro_batches(plan, _build, start_step=0, end_step=5, num_workers=0))
    parallel = list(micro_batches(plan, _build, start_step=0, end_step=5, num_workers=2))
    assert parallel == serial and len(serial) == 5 * plan.accumulation
    seen = [i for _, _, idx in serial for i in idx]
    assert len(seen) == len(set(seen)) == 20  # half of one epoch, no sample twice
    resumed = list(micro_batches(plan, _build, start_step=3, end_step=5))
    assert resumed == serial[3 * plan.accumulation:]


def test_findings_only_instructions_are_answered_with_the_findings_section_alone(items, tokenizer):
    config = tiny(vocab_size=tokenizer.vocab_size)
    films = np.zeros((len(items), 32, 32), np.uint8)
    tokens = tokenize(tokenizer, items, max_tokens=512)
    build = UnderstandingBuilder(config, films, tokens, [it.id for it in items], seed=0)
    instructions = {tokenizer.decode(ids): text for ids, text in zip(tokens.instructions, REPORT_INSTRUCTIONS)}
    kinds = set()
    for chunk in range(6):
        indices = list(range(chunk * 3, chunk * 3 + 3))
        seq = build(0, chunk, indices).data.batch.sequence
        for row, i in enumerate(indices):
            text_ids = seq.tokens[row][seq.kind[row] == TEXT].tolist()
            bos = config.tokens.bos
            prompt = text_ids[text_ids.index(bos) + 1: text_ids.index(config.tokens.eos)]
            answer = tokenizer.decode(seq.labels[row][seq.labels[row] != IGNORE].tolist())
            findings_only = asks_findings_only(instructions[tokenizer.decode(prompt)])
            kinds.add(findings_only)
            expected = f"FINDINGS: {items[i].findings}" if findings_only else items[i].report
            assert answer == expected
    assert kinds == {True, False}


def test_generation_prompts_are_the_findings_and_dropout_one_drops_them_all(items, tokenizer):
    config = tiny(vocab_size=tokenizer.vocab_size)
    latents = np.random.default_rng(0).normal(size=(len(items), 4, 4, 4)).astype(np.float16)
    tokens = tokenize(tokenizer, items, max_tokens=512)
    ids = [it.id for it in items]
    kept = GenerationBuilder(config, latents, tokens, ids, seed=0, text_dropout=0.0)(0, 0, [0, 1])
    seq = kept.data.batch.sequence
    first = seq.tokens[0][(seq.kind[0] == TEXT)].tolist()
    assert tokenizer.decode(first) == items[0].findings
    dropped = GenerationBuilder(config, latents, tokens, ids, seed=0, text_dropout=1.0)(0, 0, [0, 1])
    text = dropped.data.batch.sequence.tokens[dropped.data.batch.sequence.kind == TEXT]
    assert set(text.tolist()) <= {config.tokens.bos, config.tokens.eos, config.tokens.start_of_image,
                                  config.tokens.end_of_image}
    again = GenerationBuilder(config, latents, tokens, ids, seed=0, text_dropout=0.0)(0, 0, [0, 1])
    assert again.data.noise_seed == kept.data.noise_seed
    assert torch.equal(again.data.batch.latents, kept.data.batch.latents)


def test_film_cache_is_built_once_from_the_letterboxed_files(items, tmp_path):
    env = DistEnv()
    films = film_cache(items, 32, tmp_path, env, workers=0, progress=False)
    (path,) = tmp_path.glob("films_32_*.npy")
    stamp = path.stat().st_mtime_ns
    expected = np.round(letterbox(items[5].image.read(min_size=32), 32) * 255).astype(np.uint8)
    assert np.abs(films[5].astype(int) - expected.astype(int)).max() <= 1
    again = film_cache(items, 32, tmp_path, env, workers=0, progress=False)
    assert path.stat().st_mtime_ns == stamp and np.array_equal(again, films)


def test_latent_cache_is_tied_to_the_vae_weights(items, tmp_path):
    env = DistEnv()
    films = film_cache(items, 16, tmp_path, env, workers=0, progress=False)
    torch.manual_seed(0)
    vae_a = LatentVAE(tiny().vae).eval()
    a = latent_cache(films, "k", vae_a, tmp_path, env, torch.device("cpu"), progress=False)
    assert a.shape == (len(items), 4, 8, 8)
    with torch.no_grad():
        direct = vae_a.autoencoder.encode(torch.from_numpy(films[:2].astype(np.float32) / 127.5 - 1)[:, None]
                                          .expand(-1, 3, -1, -1)).latent_dist.mean
    assert torch.allclose(torch.from_numpy(a[:2].astype(np.float32)), direct, atol=2e-3)
    vae_b = LatentVAE(tiny().vae).eval()
    latent_cache(films, "k", vae_b, tmp_path, env, torch.device("cpu"), progress=False)
    assert len(list(tmp_path.glob("latents_16_*.npy"))) == 2


def test_packed_understanding_batches_give_the_padded_loss(items, tokenizer):
    from unixcxr.model.unix import UniX

    config = tiny(vocab_size=tokenizer.vocab_size)
    films = np.random.default_rng(1).integers(0, 256, size=(len(items), 32, 32), dtype=np.uint8)
    tokens = tokenize(tokenizer, items, max_tokens=512)
    ids = [it.id for it in items]
    indices = list(range(8))
    padded = UnderstandingBuilder(config, films, tokens, ids, seed=0)(3, 1, indices).data.batch
    row = max(int((padded.sequence.segment[r] >= 0).sum()) for r in range(len(indices))) * 3
    packed = UnderstandingBuilder(config, films, tokens, ids, seed=0, pack_to=row)(3, 1, indices).data.batch
    assert packed.sequence.tokens.shape[0] < len(indices)  # several samples share a row
    assert sorted(packed.ids) == sorted(padded.ids) and packed.ids != padded.ids  # placed longest first
    torch.manual_seed(0)
    model = UniX(config).eval()
    with torch.no_grad():
        a = model(padded.sequence, images=padded.images)["ce"]
        b = model(packed.sequence, images=packed.images)["ce"]
    assert torch.allclose(a, b, atol=1e-5)


def test_packed_generation_batches_keep_each_repa_film_with_its_latents(items, tokenizer):
    config = tiny(vocab_size=tokenizer.vocab_size)
    latents = np.random.default_rng(0).normal(size=(len(items), 4, 4, 4)).astype(np.float16)
    films = np.random.default_rng(2).integers(0, 256, size=(len(items), 32, 32), dtype=np.uint8)
    tokens = tokenize(tokenizer, items, max_tokens=512)
    ids = [it.id for it in items]
    build = GenerationBuilder(config, latents, tokens, ids, seed=0, text_dropout=0.0, repa_films=films, pack_to=256)
    micro = build(0, 0, list(range(6)))
    batch = micro.data.batch
    assert batch.sequence.tokens.shape[0] < 6
    for k, sample in enumerate(batch.ids):
        i = ids.index(sample)
        z = torch.from_numpy(latents[i].astype(np.float32))
        assert torch.allclose(batch.latents[k], config.vae.scale * (z + config.vae.shift))
        assert torch.allclose(micro.data.repa_images[k], torch.from_numpy(films[i]).float() / 255.0)
