"""Report decoding with the KV cache: per-token cost along the report (32 .. 512 tokens), tokens/s
against batch size (1, 4, 8, 16), and cached against uncached decoding.

Every decode step is timed where it happens (generate_reports' on_token hook), so one long report
gives the cost of a token at every length; the element-wise fastest of a few runs filters a shared
machine's noise, and a token's cost at length n is the mean over the 8 steps ending there.
Targets (issue 9): per-token time at 512 vs 32 tokens <= 1.3x; batch 16 >= 8x batch 1 throughput.
Batch 16 also runs with every product through F.linear (unixcxr.model.linear.SKINNY_ROWS = None), in
alternation with the default path, for the swapped-product gain on this machine.

    python -m benchmarks.bench_decode            # lengths to 512, three runs each
    python -m benchmarks.bench_decode --quick    # lengths to 256, one run
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import machine, print_table, random_model, timed
from unixcxr.inference.report import DecodingSettings, generate_reports, generate_reports_uncached
from unixcxr.model import linear

PROMPT = list(range(10, 40))  # a 30-token instruction
WINDOW = 8  # steps averaged for the cost at one length


def step_seconds(model, batch: int, new_tokens: int, repeat: int) -> list[float]:
    """Seconds of decode step k (k = 1 .. new_tokens - 1: the forward of token k and the sampling of
    token k + 1), fastest over `repeat` runs, for a batch of `batch` images."""
    size = model.config.vision.image_size
    images = torch.randn(batch, 3, size, size, dtype=next(model.parameters()).dtype)
    settings = DecodingSettings(max_new_tokens=new_tokens, ignore_eos=True)
    best = None
    for _ in range(repeat + 1):  # the first run warms the allocator up
        stamps: list[float] = []
        generate_reports(model, images, [PROMPT] * batch, settings, on_token=_stamp(stamps))
        steps = [b - a for a, b in zip(stamps, stamps[1:])]
        best = steps if best is None else [min(x, y) for x, y in zip(best, steps)]
    return best


def batch_steps(model, repeat: int) -> tuple[dict[int, float], float]:
    """Seconds of a decode step over a 64-token report (past the first WINDOW steps) at batch 1, 4, 8
    and 16, and at 16 with F.linear products. The cases alternate within every round, so a shared
    machine's slow minutes fall on all of them; each keeps its element-wise fastest steps."""
    cases = [(b, True) for b in (1, 4, 8, 16)] + [(16, False)]
    best: dict[tuple[int, bool], list[float]] = {}
    saved = linear.SKINNY_ROWS
    try:
        for _ in range(repeat):
            for b, skinny in cases:
                linear.SKINNY_ROWS = saved if skinny else None
                steps = step_seconds(model, b, 64, 1)
                old = best.get((b, skinny))
                best[(b, skinny)] = steps if old is None else [min(x, y) for x, y in zip(old, steps)]
    finally:
        linear.SKINNY_ROWS = saved
    mean = {case: sum(steps[WINDOW:]) / len(steps[WINDOW:]) for case, steps in best.items()}
    return {b: mean[(b, True)] for b in (1, 4, 8, 16)}, mean[(16, False)]


def _stamp(stamps: list[float]):
    return lambda _token: stamps.append(time.perf_counter())


def at_length(steps: list[float], n: int) -> float:
    """Mean seconds of the WINDOW steps that end at generated token n."""
    window = steps[max(0, n - 1 - WINDOW):n - 1]
    return sum(window) / len(window)


def main(quick: bool = False, preset: str = "small") -> dict:
    model = random_model(preset)
    repeat = 1 if quick else 3
    lengths = [32, 64, 128, 256] + ([] if quick else [512])
    along = step_seconds(model, 1, lengths[-1], repeat)
    per_length = {n: at_length(along, n) for n in lengths}
    per_batch, plain16 = batch_steps(model, repeat)

    n_uncached = 64 if quick else 256
    images = torch.randn(1, 3, model.config.vision.image_size, model.config.vision.image_size)
    settings = DecodingSettings(max_new_tokens=n_uncached, ignore_eos=True)
    cached = timed(lambda: generate_reports(model, images, [PROMPT], settings))
    uncached = timed(lambda: generate_reports_uncached(model, images, [PROMPT], settings))

    first, last = lengths[0], lengths[-1]
    ratio = per_length[last] / per_length[first]
    results = {
        "preset": preset, "machine": machine(),
        "ms_per_token_by_length": {n: 1e3 * s for n, s in per_length.items()},
        "length_ratio": ratio, "length_ratio_span": [first, last],
        "tokens_per_s_by_batch": {b: b / s for b, s in per_batch.items()},
        **{f"batch{b}_vs_batch1_throughput": b * per_batch[1] / per_batch[b] for b in (4, 8, 16)},
        "batch16_swapped_vs_f_linear_step": plain16 / per_batch[16],
        f"cached_vs_uncached_speedup_at_{n_uncached}": uncached / cached,
    }
    rows = [(f"per token at {n} tokens (batch 1)", f"{1e3 * s:6.2f} ms  {1 / s:6.1f} tokens/s") for n, s in
            per_length.items()]
    rows.append((f"{last} vs {first} tokens", f"{ratio:.2f}x the time per token  (target <= 1.3 from 32 to 512)"))
    rows += [(f"batch {b}, 64 tokens", f"{1e3 * s:6.2f} ms a step  {b / s:6.1f} tokens/s  "
                                       f"({b * per_batch[1] / s:.2f}x batch 1)") for b, s in per_batch.items()]
    rows.append(("batch 16 vs batch 1 throughput", f"{16 * per_batch[1] / per_batch[16]:.2f}x  (target >= 8x)"))
    rows.append(("batch 16, F.linear products", f"{1e3 * plain16:6.2f} ms a step; (W x^T)^T products "
                                                f"{1e3 * per_batch[16]:.2f} ms: {plain16 / per_batch[16]:.2f}x"))
    rows.append((f"cached vs uncached, {n_uncached} tokens",
                 f"{uncached / cached:.1f}x faster ({cached:.2f} s vs {uncached:.2f} s)"))
    print_table(f"report decoding ({preset} preset, {machine()}; every step timed, fastest of {repeat} runs)", rows)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="lengths to 256, one run (CI smoke run)")
    parser.add_argument("--preset", default="small", help="model preset (default small)")
    args = parser.parse_args()
    main(args.quick, args.preset)
