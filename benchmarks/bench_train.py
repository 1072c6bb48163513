"""Training hot paths, measured from one run: micro-batch building (samples/s, must be far above
what a step consumes), optimizer steps of each stage through the real trainer (tokens/s and MFU
against the measured matmul peak), and checkpoint save/load time.

    python -m benchmarks.bench_train                 # small preset (the CPU recipe's sizes)
    python -m benchmarks.bench_train --preset tiny --quick
    python -m benchmarks.bench_train --compile       # also eager vs regional torch.compile (~1 min compiling)
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine, print_table
from unixcxr.model.config import preset as make_preset
from unixcxr.model.unix import UniX
from unixcxr.train.builders import GenerationBuilder, UnderstandingBuilder
from unixcxr.train.checkpoint import latest_checkpoint, load_checkpoint
from unixcxr.train.data import TextTokens
from unixcxr.train.distributed import DistEnv
from unixcxr.train.loop import LoopSettings, Trainer
from unixcxr.train.mfu import measure_peak_flops
from unixcxr.train.stages import SPECS, ModelLoss, VitRepaEncoder, set_trainable, with_flops

ITEMS, REPORT, PROMPT, FINDINGS = 64, 50, 15, 32  # SynthCXR-like token counts (small.yaml's tokenizer)


def builders(config, seed: int = 0) -> dict:
    """The real builders over random films, latents and token ids of realistic lengths."""
    rng = np.random.default_rng(seed)
    vocab, s = config.llm.vocab_size, config.vision.image_size
    films = rng.integers(0, 256, size=(ITEMS, s, s), dtype=np.uint8)
    side = config.gen.image_size // config.vae.downsample
    latents = rng.normal(size=(ITEMS, config.vae.latent_channels, side, side)).astype(np.float16)
    small = rng.normal(size=(ITEMS, config.vae.latent_channels, side // 2, side // 2)).astype(np.float16)

    def ids(n):  # lengths vary as real reports do (half to twice the typical), which is what packing exploits
        return [rng.integers(5, vocab, size=int(rng.integers(n // 2, 2 * n))).tolist() for _ in range(ITEMS)]

    tokens = TextTokens(ids(REPORT), ids(REPORT // 2), ids(FINDINGS), [None] * ITEMS, ids(PROMPT)[:20],
                        [k < 10 for k in range(20)])
    names = [f"i{k}" for k in range(ITEMS)]
    return {"und_sft": UnderstandingBuilder(config, films, tokens, names, seed),
            "gen_pretrain": GenerationBuilder(config, small, tokens, names, seed, 0.1, films),
            "gen_finetune": GenerationBuilder(config, latents, tokens, names, seed, 0.1)}


def bench_building(build, micro: int, repeat: int) -> float:
    start = time.perf_counter()
    for k in range(repeat):
        build(0, k, list(range(k % 8 * micro // 2, k % 8 * micro // 2 + micro)))
    return repeat * micro / (time.perf_counter() - start)


def bench_stage(model: UniX, stage: str, build, micro: int, steps: int, folder: Path) -> dict:
    """Time `steps` optimizer steps one by one, sampling the matmul peak between them: on a shared
    machine the speed moves by +-15% within seconds, so MFU is the best step's FLOP/s over the best
    peak sample of the same stretch of time (the peak gets more tries: a conservative ratio)."""
    spec, repa = SPECS[stage], stage == "gen_pretrain"
    params = set_trainable(model, spec, repa)
    encoder = VitRepaEncoder(model) if repa else None
    loss = ModelLoss(model, spec, torch.device("cpu"), encoder)
    settings = LoopSettings(steps=steps + 1, lr=1e-4, ema=0.99, progress=False, log_every=10**9,
                            checkpoint_every=0)
    trainer = Trainer(model, params, loss, settings, DistEnv(), folder / stage, {"config": model.config.to_dict(),
                                                                                 "stage": stage, "recipe": {}})
    micros = list(with_flops((build(0, k, list(range(k * micro % ITEMS, k * micro % ITEMS + micro)))
                              for k in range(steps + 1)), model, spec.freeze_und, encoder))
    trainer.train_step([micros[0]])  # warm-up
    peaks, seconds = [peak_sample()], []
    for m in micros[1:]:
        start = time.perf_counter()
        trainer.train_step([m])
        seconds.append(time.perf_counter() - start)
        peaks.append(peak_sample())
    tokens, flops = sum(m.num_tokens for m in micros[1:]), sum(m.flops for m in micros[1:])
    best = max(m.flops / s for m, s in zip(micros[1:], seconds))
    start = time.perf_counter()
    trainer.save()
    saved = time.perf_counter() - start
    start = time.perf_counter()
    load_checkpoint(latest_checkpoint(trainer.checkpoint_dir), trainer.state)
    loaded = time.perf_counter() - start
    return {"tokens_per_s": tokens / sum(seconds), "step_s": sorted(seconds)[len(seconds) // 2],
            "mfu": best / max(peaks), "mean_mfu": flops / sum(seconds) / (sum(peaks) / len(peaks)),
            "peak_flops": max(peaks), "save_s": saved, "load_s": loaded,
            "trainable": sum(p.numel() for p in params.values())}


def peak_sample() -> float:
    """The fp32 matmul peak right now (best of a few 1024-square matmuls, ~0.1 s)."""
    return measure_peak_flops(torch.device("cpu"), min_seconds=0.1, repeats=4)


def packed(build, micro: int):
    """The same builder packing its samples into rows of twice the longest sample it makes."""
    longest = max(int((build(0, k, list(range(k * micro % ITEMS, k * micro % ITEMS + micro))).data.batch.sequence
                       .segment >= 0).sum(1).max()) for k in range(4))
    return dataclasses.replace(build, pack_to=2 * longest)


def main(quick: bool = False, preset: str = "small", compile: bool = False) -> dict:
    config = make_preset(preset)
    config.gen.repa_dim = config.vision.width
    torch.manual_seed(0)
    model = UniX(config)
    micro, steps = (4, 2) if quick else (8, 6)
    rows, results = [("machine", machine())], {}
    with tempfile.TemporaryDirectory() as tmp:
        for stage, build in builders(config).items():
            if stage == "gen_pretrain":
                model.init_gen_from_und()
            rate = bench_building(build, micro, repeat=8 if quick else 32)
            r = bench_stage(model, stage, build, micro, steps, Path(tmp))
            results[stage] = {**r, "build_samples_per_s": rate}
            rows.append((f"{stage} build", f"{rate:,.0f} samples/s"))
            rows.append((f"{stage} step (micro {micro})", f"{r['step_s']:.3f} s, {r['tokens_per_s']:,.0f} tokens/s, "
                                                       f"MFU {r['mfu']:.1%} (mean {r['mean_mfu']:.1%}; peak "
                                                       f"{r['peak_flops'] / 1e9:.0f} GFLOP/s)"))
            rows.append((f"{stage} checkpoint", f"save {r['save_s']:.2f} s, load {r['load_s']:.2f} s "
                                                f"({r['trainable'] / 1e6:.1f}M trainable)"))
            if stage != "gen_pretrain":  # one generation stage is enough to show what packing does there
                p = bench_stage(model, stage, packed(build, micro), micro, steps, Path(tmp))
                results[stage]["packed"] = p
                rows.append((f"{stage} packed rows", f"{p['step_s']:.3f} s, {p['tokens_per_s']:,.0f} tokens/s, "
                                                     f"MFU {p['mfu']:.1%}, packed/padded step time "
                                                     f"{p['step_s'] / r['step_s']:.2f}"))
        if compile:  # regional torch.compile (inductor, dynamic shapes) against the eager steps above
            model.compile_regions()
            for stage, build in builders(config).items():
                if stage == "gen_pretrain":
                    model.init_gen_from_und()
                c = bench_stage(model, stage, build, micro, steps, Path(tmp))
                results[stage]["compiled"] = c
                rows.append((f"{stage} compiled", f"{c['step_s']:.3f} s, MFU {c['mfu']:.1%}, eager/compiled step "
                                                  f"time {results[stage]['step_s'] / c['step_s']:.2f}x"))
    print_table(f"training, preset {preset}", rows)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps (CI smoke run)")
    parser.add_argument("--preset", default="small", help="model preset (default small)")
    parser.add_argument("--compile", action="store_true",
                        help="also time every stage with each expert's token-wise regions under torch.compile "
                             "(UniX.compile_regions; about a minute of compiling on 2 CPU cores)")
    args = parser.parse_args()
    main(quick=args.quick, preset=args.preset, compile=args.compile)
