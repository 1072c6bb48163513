"""Training hot paths, measured from one run: micro-batch building (samples/s, must be far above
what a step consumes), optimizer steps of each stage through the real trainer (tokens/s and MFU
against the measured matmul peak), and checkpoint save/load time.

    python -m benchmarks.bench_train                 # small preset (the CPU recipe's sizes), eager and compiled
    python -m benchmarks.bench_train --preset tiny --quick      # eager only
    python -m benchmarks.bench_train --quick --compile          # also eager vs regional torch.compile

Every MFU is also given as a fraction of a plain PyTorch transformer stack's of the same width and
depth, timed in the same run (benchmarks/plain_stack.py): the host's share of the loss cancels there.
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
from benchmarks.plain_stack import bench_plain_stack
from unixcxr.model.config import preset as make_preset
from unixcxr.model.unix import UniX
from unixcxr.train.builders import GenerationBuilder, UnderstandingBuilder
from unixcxr.train.checkpoint import latest_checkpoint, load_checkpoint
from unixcxr.train.compile import compile_regions
from unixcxr.train.data import TextTokens
from unixcxr.train.distributed import DistEnv
from unixcxr.train.loop import LoopSettings, Trainer
from unixcxr.train.mfu import measure_peak_flops
from unixcxr.train.recipe import Recipe
from unixcxr.train.stages import SPECS, ModelLoss, VitRepaEncoder, set_trainable, with_flops

ITEMS, REPORT, PROMPT, FINDINGS = 64, 50, 15, 32  # SynthCXR-like token counts (small.yaml's tokenizer)
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "small.yaml"  # the CPU recipe: its micro-batch sizes


def recipe_micro_batches() -> dict[str, int]:
    stages = Recipe.load(RECIPE).stages
    return {name: getattr(stages, name).micro_batch_size for name in ("und_sft", "gen_pretrain", "gen_finetune")}


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
        first = k * micro // 2 % (ITEMS - micro + 1)
        build(0, k, list(range(first, first + micro)))
    return repeat * micro / (time.perf_counter() - start)


def bench_stage(model: UniX, stage: str, build, micro: int, steps: int, folder: Path, variants=None) -> dict:
    """Time `steps` optimizer steps one by one, sampling the matmul peak between them: on a shared
    machine the speed moves by +-15% within seconds, so MFU is the best step's FLOP/s over the best
    peak sample of the same stretch of time (the peak gets more tries: a conservative ratio).
    variants {name: switch()}: every micro-batch is stepped under each in turn (an interleaved A/B);
    returns {name: result}, checkpoint timings in the first."""
    spec, repa = SPECS[stage], stage == "gen_pretrain"
    params = set_trainable(model, spec, repa)
    encoder = VitRepaEncoder(model) if repa else None
    loss = ModelLoss(model, spec, torch.device("cpu"), encoder)
    variants = variants or {"eager": lambda: None}
    settings = LoopSettings(steps=len(variants) * (steps + 1), lr=1e-4, ema=0.99, progress=False, log_every=10**9,
                            checkpoint_every=0)
    trainer = Trainer(model, params, loss, settings, DistEnv(), folder / stage, {"config": model.config.to_dict(),
                                                                                 "stage": stage, "recipe": {}})
    micros = list(with_flops((build(0, k, list(range(k * micro % ITEMS, k * micro % ITEMS + micro)))
                              for k in range(steps + 1)), model, spec.freeze_und, encoder))
    for switch in variants.values():
        switch()
        trainer.train_step([micros[0]])  # warm-up (compiles where a variant compiles)
    peaks, seconds = [peak_sample()], {name: [] for name in variants}
    for m in micros[1:]:
        for name, switch in variants.items():
            switch()
            start = time.perf_counter()
            trainer.train_step([m])
            seconds[name].append(time.perf_counter() - start)
        peaks.append(peak_sample())
    tokens, flops = sum(m.num_tokens for m in micros[1:]), sum(m.flops for m in micros[1:])
    out = {}
    for name, secs in seconds.items():
        best = max(m.flops / s for m, s in zip(micros[1:], secs))
        out[name] = {"tokens_per_s": tokens / sum(secs), "step_s": sorted(secs)[len(secs) // 2],
                     "best_step_s": min(secs), "mfu": best / max(peaks),
                     "mean_mfu": flops / sum(secs) / (sum(peaks) / len(peaks)), "peak_flops": max(peaks),
                     "trainable": sum(p.numel() for p in params.values())}
    start = time.perf_counter()
    trainer.save()
    saved = time.perf_counter() - start
    start = time.perf_counter()
    load_checkpoint(latest_checkpoint(trainer.checkpoint_dir), trainer.state)
    out[next(iter(variants))].update(save_s=saved, load_s=time.perf_counter() - start)
    return out


def regional_compile_switches(model: UniX) -> dict:
    """{"eager": ..., "compiled": ...}: train.compile.compile_regions once, then its compiled regions put in
    place or taken away (they are instance attributes over the Expert methods)."""
    experts = [e for layer in model.layers for e in (layer.und, layer.gen)]
    compile_regions(model)
    compiled = [(e.qkv, e.update) for e in experts]

    def eager():
        for e in experts:
            e.__dict__.pop("qkv", None)
            e.__dict__.pop("update", None)

    def on():
        for e, (qkv, update) in zip(experts, compiled):
            e.qkv, e.update = qkv, update

    return {"eager": eager, "compiled": on}


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
    steps = 2 if quick else 6
    micros = {stage: 4 for stage in SPECS} if quick else recipe_micro_batches()
    rows, results = [("machine", machine())], {}
    llm = config.llm
    plain = bench_plain_stack(llm.hidden_size, llm.num_heads, llm.num_layers, 4 if quick else 8, 128 if quick else 256,
                              steps, peak_sample)
    results["plain_stack"] = plain
    rows.append(("plain transformer stack", f"{plain['step_s']:.3f} s, MFU {plain['mfu']:.1%} ({plain['shape']}; "
                                            f"the reference for the rows below)"))
    switches = regional_compile_switches(model) if compile else None  # eager and compiled steps interleaved
    with tempfile.TemporaryDirectory() as tmp:
        for stage, build in builders(config).items():
            micro = micros[stage]
            if stage == "gen_pretrain":
                model.init_gen_from_und()
            rate = bench_building(build, micro, repeat=8 if quick else 32)
            r = bench_stage(model, stage, build, micro, steps, Path(tmp), switches)
            results[stage] = {**r["eager"], "build_samples_per_s": rate}
            rows.append((f"{stage} build", f"{rate:,.0f} samples/s"))
            for name, v in r.items():
                label = f"{stage} step (micro {micro})" if name == "eager" else f"{stage} {name}"
                rows.append((label, f"{v['step_s']:.3f} s, {v['tokens_per_s']:,.0f} tokens/s, MFU {v['mfu']:.1%} "
                                    f"(mean {v['mean_mfu']:.1%}; peak {v['peak_flops'] / 1e9:.0f} GFLOP/s; "
                                    f"{v['mfu'] / plain['mfu']:.2f} of the plain stack's)"))
            if switches:
                c = results[stage]["compiled"] = r["compiled"]
                rows.append((f"{stage} eager/compiled", f"{r['eager']['best_step_s'] / c['best_step_s']:.2f}x "
                                                        "(best steps, interleaved)"))
            rows.append((f"{stage} checkpoint", f"save {r['eager']['save_s']:.2f} s, load {r['eager']['load_s']:.2f} s "
                                                f"({r['eager']['trainable'] / 1e6:.1f}M trainable)"))
            if stage != "gen_pretrain":  # one generation stage is enough to show what packing does there
                if switches:
                    switches["eager"]()
                p = bench_stage(model, stage, packed(build, micro), micro, steps, Path(tmp))["eager"]
                results[stage]["packed"] = p
                rows.append((f"{stage} packed rows", f"{p['step_s']:.3f} s, {p['tokens_per_s']:,.0f} tokens/s, "
                                                     f"MFU {p['mfu']:.1%}, packed/padded step time "
                                                     f"{p['step_s'] / r['eager']['step_s']:.2f}"))
    print_table(f"training, preset {preset}", rows)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps (CI smoke run)")
    parser.add_argument("--preset", default="small", help="model preset (default small)")
    parser.add_argument("--compile", action="store_true",
                        help="also time every stage with each expert's token-wise regions under torch.compile "
                             "(train.compile.compile_regions; about a minute of compiling on 2 CPU cores); "
                             "on by default without --quick")
    args = parser.parse_args()
    main(quick=args.quick, preset=args.preset, compile=args.compile or not args.quick)
