"""Report decoding: per-token cost vs length with the KV cache, cached vs uncached, batch scaling.
Targets (issue 2 / 9): per-token time at 512 vs 32 tokens <= 1.3x; batch 8 >= 4x batch 1 throughput."""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import machine, print_table, random_model, timed
from unixcxr.inference.report import DecodingSettings, generate_reports, generate_reports_uncached

PROMPT = list(range(10, 40))  # a 30-token instruction


def per_token_seconds(model, batch: int, new_tokens: int, repeat: int) -> float:
    """Decode time per generated token (prefill subtracted), for a batch of `batch` images."""
    images = torch.randn(batch, 3, model.config.vision.image_size, model.config.vision.image_size)
    prompts = [PROMPT] * batch

    def run(n):
        settings = DecodingSettings(max_new_tokens=n, ignore_eos=True)
        return lambda: generate_reports(model, images, prompts, settings)

    prefill = timed(run(1), repeat=repeat, warmup=1)
    total = timed(run(new_tokens), repeat=repeat)
    return (total - prefill) / (new_tokens - 1)


def main(quick: bool = False, preset: str = "small") -> dict:
    model = random_model(preset)
    repeat = 1 if quick else 3
    short, long = 32, (256 if quick else 512)
    t_short = per_token_seconds(model, 1, short, repeat)
    t_long = per_token_seconds(model, 1, long, repeat)
    t_b1 = t_short
    t_b8 = per_token_seconds(model, 8, short, repeat)
    t_b16 = per_token_seconds(model, 16, short, repeat)

    n_uncached = 64 if quick else 256
    images = torch.randn(1, 3, model.config.vision.image_size, model.config.vision.image_size)
    settings = DecodingSettings(max_new_tokens=n_uncached, ignore_eos=True)
    cached = timed(lambda: generate_reports(model, images, [PROMPT], settings))
    uncached = timed(lambda: generate_reports_uncached(model, images, [PROMPT], settings))

    results = {
        "preset": preset,
        "machine": machine(),
        "ms_per_token_at_32": 1e3 * t_short,
        f"ms_per_token_at_{long}": 1e3 * t_long,
        "length_ratio": t_long / t_short,
        "batch8_vs_batch1_throughput": 8 * t_b1 / t_b8,
        "batch16_vs_batch1_throughput": 16 * t_b1 / t_b16,
        f"cached_vs_uncached_speedup_at_{n_uncached}": uncached / cached,
    }
    print_table(f"report decoding ({preset} preset, {machine()})", [
        ("per-token time at 32 tokens", f"{1e3 * t_short:.2f} ms"),
        (f"per-token time at {long} tokens", f"{1e3 * t_long:.2f} ms  (ratio {t_long / t_short:.2f}, target <= 1.3)"),
        ("batch 8 / batch 1 throughput", f"{8 * t_b1 / t_b8:.2f}x  (target >= 4x)"),
        ("batch 16 / batch 1 throughput", f"{16 * t_b1 / t_b16:.2f}x  (target >= 8x)"),
        (f"cached vs uncached, {n_uncached} tokens",
         f"{uncached / cached:.1f}x faster ({cached:.2f} s vs {uncached:.2f} s)"),
    ])
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--preset", default="small")
    args = parser.parse_args()
    main(args.quick, args.preset)
