"""Continuous batching: a report decoded in a batch that rows join and leave between tokens is the
report decoded alone (greedy, float32), whatever its batch-mates, their prompt lengths, their
limits, their sampling settings and when they arrived."""

import pytest
import torch

from unixcxr.inference.continuous import ContinuousDecoder, ReportRequest, decode_continuously
from unixcxr.inference.report import DecodingSettings, generate_reports

PROMPTS = [[10, 11, 12], [13], [14, 15, 16, 17, 18, 19, 20], [21, 22], [23, 24, 25, 26], [27]]


def alone(model, image, prompt, settings, generator=None):
    return generate_reports(model, image[None], [prompt], settings, generator)[0]


def test_rows_that_join_and_leave_between_tokens_write_the_reports_they_write_alone(tiny_model):
    torch.manual_seed(1)
    images = torch.randn(len(PROMPTS), 3, 32, 32)
    limits = [9, 4, 12, 6, 1, 7]
    requests = [ReportRequest(images[i], PROMPTS[i], DecodingSettings(max_new_tokens=n)) for i, n in enumerate(limits)]
    got = decode_continuously(tiny_model, requests, arrivals=[0, 0, 2, 3, 3, 10], max_rows=3)
    want = [alone(tiny_model, images[i], PROMPTS[i], r.settings) for i, r in enumerate(requests)]
    assert got == want
    assert [len(t) for t in got] == limits  # random weights never write eos here: each runs to its limit


def test_a_row_that_writes_its_end_of_sequence_leaves_and_the_others_go_on(tiny_model):
    torch.manual_seed(2)
    images = torch.randn(3, 3, 32, 32)
    settings = DecodingSettings(max_new_tokens=10, temperature=1.0)  # sampled: varied tokens
    rng = lambda i: torch.Generator().manual_seed(i)  # noqa: E731
    free = [alone(tiny_model, images[i], PROMPTS[i], settings, rng(i)) for i in range(3)]
    stop = next(t for t in free[0][2:] if t not in free[1] and t not in free[2])
    tiny_model.config.tokens.eos = stop
    requests = [ReportRequest(images[i], PROMPTS[i], settings, rng(i)) for i in range(3)]
    engine = ContinuousDecoder(tiny_model)
    engine.admit(requests)
    finished_at = {}
    for step in range(12):
        for r in engine.step():
            finished_at[requests.index(r)] = step
    assert requests[0].tokens == free[0][: free[0].index(stop)]
    assert finished_at[0] == free[0].index(stop)  # it left at the step that wrote its eos
    assert [r.tokens for r in requests[1:]] == free[1:]
    assert engine.active == 0 and engine.cache is None


def test_each_row_samples_with_its_own_settings_and_generator(tiny_model):
    torch.manual_seed(3)
    images = torch.randn(2, 3, 32, 32)
    sampled = DecodingSettings(max_new_tokens=8, temperature=1.0)
    greedy = DecodingSettings(max_new_tokens=8)
    requests = [ReportRequest(images[0], PROMPTS[0], sampled, torch.Generator().manual_seed(5)),
                ReportRequest(images[1], PROMPTS[1], greedy)]
    got = decode_continuously(tiny_model, requests, arrivals=[0, 1])
    assert got[1] == alone(tiny_model, images[1], PROMPTS[1], greedy)
    assert got[0] == alone(tiny_model, images[0], PROMPTS[0], sampled, torch.Generator().manual_seed(5))


def test_the_cache_keeps_only_the_columns_running_rows_still_need(tiny_model):
    torch.manual_seed(4)
    images = torch.randn(2, 3, 32, 32)
    first = ReportRequest(images[0], PROMPTS[0], DecodingSettings(max_new_tokens=30))
    engine = ContinuousDecoder(tiny_model)
    engine.admit([first])
    for _ in range(20):
        engine.step()
    engine.admit([ReportRequest(images[1], PROMPTS[1], DecodingSettings(max_new_tokens=5))])
    prompt_len = (engine.key_valid[0, :engine.length]).sum().item()
    assert engine.length == prompt_len  # no leading column is empty for every row
    while engine.active:
        engine.step()
    assert len(first.tokens) == 30


@pytest.mark.parametrize("max_rows", [1, 2, 6])
def test_any_row_limit_gives_the_same_reports(tiny_model, max_rows):
    torch.manual_seed(5)
    images = torch.randn(len(PROMPTS), 3, 32, 32)
    make = lambda: [ReportRequest(images[i], PROMPTS[i], DecodingSettings(max_new_tokens=5 + i)) for i in range(6)]  # noqa: E731
    want = decode_continuously(tiny_model, make(), max_rows=6)
    assert decode_continuously(tiny_model, make(), max_rows=max_rows) == want


def test_every_row_sees_the_logits_it_sees_alone_at_every_step(tiny_model):
    """Stronger than equal greedy tokens: the next-token logits of each row, at every step, equal
    those of decoding it alone, while rows with other prompt lengths join at other steps."""
    torch.manual_seed(6)
    images = torch.randn(4, 3, 32, 32)
    prompts, arrivals, limits = [PROMPTS[2], PROMPTS[1], PROMPTS[0], PROMPTS[3]], [0, 1, 3, 4], [8, 3, 6, 5]
    requests = [ReportRequest(images[i], prompts[i], DecodingSettings(max_new_tokens=limits[i])) for i in range(4)]
    seen = {i: [] for i in range(4)}
    engine, step, waiting = ContinuousDecoder(tiny_model), 0, [0, 1, 2, 3]
    while waiting or engine.active:
        ready = [i for i in waiting if arrivals[i] <= step]
        engine.admit([requests[i] for i in ready])
        waiting = [i for i in waiting if i not in ready]
        for row, r in enumerate(engine.requests):
            seen[requests.index(r)].append(engine.logits[row])
        engine.step()
        step += 1
    for i, r in enumerate(requests):
        _, want = generate_reports(tiny_model, images[i][None], [prompts[i]], r.settings, return_logits=True)
        assert len(seen[i]) == len(want) == limits[i]
        for got, expected in zip(seen[i], want):
            torch.testing.assert_close(got, expected[0], atol=2e-5, rtol=1e-5)
