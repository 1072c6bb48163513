"""One-shot GPU check of training at the paper's scale: a few optimizer steps of each UniX stage
(und_sft at 384 px, gen_pretrain at 256 px with REPA, gen_finetune at 512 px) on the `unix`
preset with random weights, through the same trainer, freezing and loss code as `unixcxr train`
(bf16 autocast, AdamW, clipping, EMA). Reports per stage: peak GPU memory, tokens/s, step time
and MFU against a measured bf16 matmul peak. Needs only torch, timm, diffusers and safetensors
(no data, no tokenizer); finishes in a few minutes on one H100. Writes JSON to $OUT (or ./).

    python scripts/gpu_train_check.py                                   # on a GPU machine
    python scripts/gpu_train_check.py --preset tiny --device cpu --steps 1   # same code path, seconds
    torchrun --nproc-per-node 8 scripts/gpu_train_check.py --strategy fsdp  # FSDP2 across 8 GPUs
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unixcxr.data.batches import GenerationExample, UnderstandingExample, make_batch  # noqa: E402
from unixcxr.model.config import preset  # noqa: E402
from unixcxr.model.unix import UniX  # noqa: E402
from unixcxr.train.distributed import close_distributed, init_distributed, wrap  # noqa: E402
from unixcxr.train.loop import LoopSettings, MicroBatch, Trainer  # noqa: E402
from unixcxr.train.mfu import measure_peak_flops, mfu  # noqa: E402
from unixcxr.train.stages import (  # noqa: E402
    SPECS,
    ModelInputs,
    ModelLoss,
    VitRepaEncoder,
    set_trainable,
    with_flops,
)

PROMPT_TOKENS, REPORT_TOKENS, FINDINGS_TOKENS = 20, 120, 80  # typical lengths of cleaned MIMIC text
MICRO_BATCH = {"und_sft": 16, "gen_pretrain": 32, "gen_finetune": 8}  # paper.yaml's micro-batches


def stage_resolutions(config) -> dict[str, int]:
    """Paper: ViT input for und_sft, half the generation size for pre-training, full for fine-tuning."""
    return {"und_sft": config.vision.image_size, "gen_pretrain": config.gen.image_size // 2,
            "gen_finetune": config.gen.image_size}


def synthetic_micro_batch(config, stage: str, n: int, resolution: int, k: int) -> MicroBatch:
    """Random ids and pixels with the shapes of real data (the network cannot tell)."""
    g = torch.Generator().manual_seed(k)
    vocab = config.llm.vocab_size

    def ids(length):
        return torch.randint(5, vocab, (length,), generator=g).tolist()

    if stage == "und_sft":
        s = config.vision.image_size
        examples = [UnderstandingExample(torch.randn(3, s, s, generator=g), ids(PROMPT_TOKENS), ids(REPORT_TOKENS),
                                         f"u{k}.{i}") for i in range(n)]
        batch = make_batch(config, understanding=examples)
        return MicroBatch(ModelInputs(batch), batch.ids, batch.num_tokens)
    side = resolution // config.vae.downsample
    examples = [GenerationExample(torch.randn(config.vae.latent_channels, side, side, generator=g),
                                  ids(FINDINGS_TOKENS), f"g{k}.{i}") for i in range(n)]
    batch = make_batch(config, generation=examples, text_dropout=0.1)
    s = config.vision.image_size
    films = torch.rand(n, s, s, generator=g) if stage == "gen_pretrain" else None
    return MicroBatch(ModelInputs(batch, noise_seed=k, repa_images=films), batch.ids, batch.num_tokens)


def run_stage(model: UniX, stage: str, args, env, peak: float, folder: Path) -> dict:
    config, spec = model.config, SPECS[stage]
    repa = stage == "gen_pretrain"
    resolution = stage_resolutions(config)[stage]
    n = args.micro_batch or MICRO_BATCH[stage]
    params = set_trainable(model, spec, repa)
    wrapped = model if args.strategy == "fsdp" else wrap(model, args.strategy, env)  # FSDP: sharded once in main
    params = {name: p for name, p in model.named_parameters() if name in params}
    loss = ModelLoss(wrapped, spec, env.device, VitRepaEncoder(model) if repa else None)
    total = args.warmup + args.steps
    settings = LoopSettings(steps=total, lr=1e-5, warmup=0, accumulation=1, ema=0.9999, log_every=total,
                            progress=False, description=stage)
    trainer = Trainer(wrapped, params, loss, settings, env, folder / stage, {"config": config.to_dict()},
                      peak_flops=peak)
    micros = list(with_flops((synthetic_micro_batch(config, stage, n, resolution, k) for k in range(total)), model,
                             spec.freeze_und))
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(env.device)
    times = []
    for k, micro in enumerate(micros):
        _sync(env.device)
        start = time.perf_counter()
        out = trainer.train_step([micro])
        _sync(env.device)
        if k >= args.warmup:
            times.append(time.perf_counter() - start)
    seconds = sum(times)
    tokens = sum(m.num_tokens for m in micros[args.warmup:])
    flops = sum(m.flops for m in micros[args.warmup:])
    result = {
        "stage": stage, "resolution": resolution, "micro_batch": n, "sequence": micros[0].data.batch.sequence.shape[1],
        "trainable_params": sum(p.numel() for p in params.values()), "loss": float(out["loss"]),
        "step_s": seconds / len(times), "tokens_per_s": tokens / seconds, "mfu": mfu(flops, seconds, peak),
        "peak_memory_gib": torch.cuda.max_memory_allocated(env.device) / 2**30 if env.device.type == "cuda" else None,
    }
    del trainer, micros, loss, wrapped
    gc.collect()
    if env.device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="unix", help="model preset (default unix; tiny for a CPU dry run)")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu (default auto)")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per stage (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--micro-batch", type=int, default=0, help="samples per step (default: paper.yaml's)")
    parser.add_argument("--strategy", default="single", choices=("single", "ddp", "fsdp"),
                        help="under torchrun: ddp or fsdp (default single)")
    parser.add_argument("--stages", default="und_sft,gen_pretrain,gen_finetune", help="comma-separated subset")
    args = parser.parse_args()

    env = init_distributed(args.device)
    started = time.perf_counter()
    config = preset(args.preset)
    config.gen.repa_dim = config.vision.width  # REPA target: the frozen ViT (the offline default)
    torch.manual_seed(0)
    with torch.device(env.device):
        model = UniX(config).to(env.device)  # random weights, built on the device
    if args.strategy == "fsdp":
        wrap(model, "fsdp", env, [*model.layers, *model.vision.vision_tower.blocks, model.vision])
    peak = measure_peak_flops(env.device)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage in args.stages.split(","):
            if stage == "gen_pretrain" and args.strategy != "fsdp":
                model.init_gen_from_und()
            results.append(run_stage(model, stage, args, env, peak, Path(tmp)))
            if env.is_main:
                print(json.dumps(results[-1]), flush=True)
    summary = {"device": torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else "cpu",
               "preset": args.preset, "world_size": env.world_size, "peak_tflops": peak / 1e12,
               "total_params": model.parameter_counts()["total"], "seconds": time.perf_counter() - started,
               "stages": results}
    if env.is_main:
        out = Path(os.environ.get("OUT", ".")) / "gpu_train_check.json"
        out.write_text(json.dumps(summary, indent=2))
        print(f"\n{summary['device']}, preset {args.preset}, matmul peak {peak / 1e12:.3g} TFLOP/s, "
              f"{summary['seconds']:.0f} s")
        print(f"{'stage':<14}{'res':>5}{'batch':>6}{'seq':>6}{'step s':>9}{'tok/s':>10}{'MFU':>7}{'mem GiB':>9}")
        for r in results:
            mem = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
            print(f"{r['stage']:<14}{r['resolution']:>5}{r['micro_batch']:>6}{r['sequence']:>6}{r['step_s']:>9.3f}"
                  f"{r['tokens_per_s']:>10.0f}{r['mfu']:>7.1%}{mem:>9}")
        print(f"wrote {out}")
    close_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
