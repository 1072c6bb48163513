"""One-shot GPU check of the `unix` preset (random weights, bf16): correctness of the fast paths
against the slow ones on the device (CUDA-graph decoding and sampling vs eager, in bf16 and float32;
bf16 RMSNorm's fused kernel vs the float32 round trip), and the numbers of issues 2 and 9 (decode
cost vs length and batch, graphs vs eager, seconds per 512 px image, images/s vs batch, sampler vs
the released scheme, training MFU vs the measured matmul peak, eager and compiled). Writes JSON to
$OUT (or ./gpu_model_check.json) after every section, so a timeout or a failing section keeps what
was measured (failures are recorded under "errors"); prints it last. About 2 minutes on an H200,
plus ~30 s with --compile. Results of 2026-12-04: benchmarks/results/nvidia-h200.md.

    python scripts/gpu_model_check.py --profile --compile   # on a GPU machine
    python scripts/gpu_model_check.py --preset tiny --device cpu --quick   # the same code path, in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unixcxr.data.batches import GenerationExample, UnderstandingExample, make_batch  # noqa: E402
from unixcxr.flow.sampler import SamplerSettings  # noqa: E402
from unixcxr.inference.continuous import ReportRequest, decode_continuously  # noqa: E402
from unixcxr.inference.images import generate_latents  # noqa: E402
from unixcxr.inference.reference import released_sample  # noqa: E402
from unixcxr.inference.report import DecodingSettings, generate_reports, generate_reports_uncached  # noqa: E402
from unixcxr.model.config import preset  # noqa: E402
from unixcxr.model.sequence import collate, understanding_layout  # noqa: E402
from unixcxr.model.unix import UniX  # noqa: E402
from unixcxr.train.compile import compile_regions  # noqa: E402
from unixcxr.train.flops import step_flops  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat=3, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def matmul_peak(device, dtype, n):
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    t = timed(lambda: a @ b, device, repeat=10, warmup=3)
    return 2 * n ** 3 / t


def build(name, device, dtype):
    torch.manual_seed(0)
    with torch.device(device):
        model = UniX(preset(name))
    with torch.no_grad():
        model.llm2vae.weight.normal_(0, 0.02)
    return model.to(dtype).eval()


def decode_checks(model, device, out, quick):
    S = model.config.vision.image_size
    prompt = list(range(10, 40))
    img = torch.randn(1, 3, S, S, device=device, dtype=model.lm_head.weight.dtype)
    # correctness on the device: the cached decoder's logits vs one full recomputation of the sequence
    s = DecodingSettings(max_new_tokens=16, ignore_eos=True)
    tokens, step_logits = generate_reports(model, img, [prompt], s, return_logits=True)
    layout = understanding_layout(model.config.tokens, model.config.vision.num_tokens, prompt, None)
    start = len(layout)
    layout.text(tokens[0][:-1])
    batch = collate([layout]).to(device)
    with torch.no_grad():
        h, _ = model.hidden_states(batch, model.encode_images(img))
        full = model.text_logits(h[0, start - 1:]).float()
    cached = torch.cat(step_logits)
    out["decode_cached_vs_full_rel_error"] = ((cached - full).norm() / full.norm()).item()
    out["decode_cached_equals_uncached_16_tokens"] = tokens == generate_reports_uncached(model, img, [prompt], s)

    def graphed_vs_eager(prefix):
        # a random model's logits are nearly flat, so bf16 rounding can flip a greedy token and the
        # reports part ways after it: the first decode step (same input token) shows the step's own
        # difference; in float32 (no TF32 for matmuls) every token must agree
        # static=True: on a GPU the graphed decoder (a graph needs the fixed-shape step anyway); on a
        # CPU, where nothing is captured, the fixed-shape step a graph would replay, run eagerly
        graphed, graphed_logits = generate_reports(model, img.to(model.lm_head.weight.dtype), [prompt], s,
                                                   return_logits=True, static=True)
        eager, eager_logits = generate_reports(model, img.to(model.lm_head.weight.dtype), [prompt], s,
                                               return_logits=True, cuda_graphs=False)
        a, b = torch.cat(graphed_logits), torch.cat(eager_logits)
        split = [i for i, (x, y) in enumerate(zip(graphed[0], eager[0])) if x != y]
        out[f"{prefix}_graphed_equals_eager_16_tokens"] = graphed == eager
        out[f"{prefix}_first_different_token"] = split[0] if split else None
        out[f"{prefix}_graphed_vs_eager_rel_difference"] = ((a - b).norm() / b.norm()).item()
        x, y = graphed_logits[1], eager_logits[1]
        out[f"{prefix}_first_decode_step_rel_difference"] = ((x - y).norm() / y.norm()).item()

    graphed_vs_eager("decode")
    if device.type == "cuda":
        dtype = model.lm_head.weight.dtype
        model.float()
        try:
            graphed_vs_eager("decode_fp32")
        finally:
            model.to(dtype)

    def step_times(batch, n, graphs=True):
        """Seconds of each decode step (a synchronised clock at every token), second run of two."""
        stamps = []

        def stamp(_):
            sync(device)
            stamps.append(time.perf_counter())

        imgs = img.expand(batch, -1, -1, -1)
        for _ in range(2):
            stamps.clear()
            generate_reports(model, imgs, [prompt] * batch, DecodingSettings(n, ignore_eos=True), on_token=stamp,
                             cuda_graphs=graphs)
        return [b - a for a, b in zip(stamps, stamps[1:])][1:]  # the first step also captures the graph

    def median(xs):
        return sorted(xs)[len(xs) // 2]

    long = step_times(1, 128 if quick else 512)
    t32, t512 = median(long[:31]), median(long[-32:])
    t32_eager = median(step_times(1, 32, graphs=False))
    per_batch = {b: median(step_times(b, 32)) for b in (4, 16)}
    out.update(decode_ms_per_token_32=1e3 * t32, decode_ms_per_token_512=1e3 * t512, decode_length_ratio=t512 / t32,
               decode_ms_per_token_32_eager=1e3 * t32_eager, decode_graphs_vs_eager=t32_eager / t32,
               decode_tokens_per_second={1: 1 / t32, **{b: b / t for b, t in per_batch.items()}},
               decode_batch16_vs_batch1=16 * t32 / per_batch[16])


def continuous_checks(model, device, out, quick):
    """Continuous batching (serve --batching continuous) on this device: 8 reports of 16-128 tokens
    arriving two steps apart, decoded by the continuous engine (eager steps), against the same reports
    decoded as one grouped batch that waits for the longest (CUDA graphs on a GPU)."""
    S, dtype = model.config.vision.image_size, model.lm_head.weight.dtype
    lengths = [16, 32, 64, 128, 16, 32, 64, 128] if not quick else [4, 8, 12, 16, 4, 8, 12, 16]
    imgs = torch.randn(len(lengths), 3, S, S, device=device, dtype=dtype)
    prompt = list(range(10, 40))

    def engine():
        requests = [ReportRequest(imgs[i], prompt, DecodingSettings(n, ignore_eos=True)) for i, n in enumerate(lengths)]
        decode_continuously(model, requests, arrivals=[2 * i for i in range(len(lengths))], max_rows=8)

    def grouped():
        generate_reports(model, imgs, [prompt] * len(lengths), DecodingSettings(max(lengths), ignore_eos=True))

    t_engine, t_grouped = timed(engine, device), timed(grouped, device)
    out.update(continuous_seconds=t_engine, grouped_seconds=t_grouped,
               continuous_useful_tokens_per_second=sum(lengths) / t_engine,
               grouped_useful_tokens_per_second=sum(lengths) / t_grouped)


def image_checks(model, device, out, quick, profile=False):
    cfg = model.config
    grid = cfg.latent_grid
    C = cfg.vae.latent_channels
    g = torch.Generator().manual_seed(0)
    report = torch.randint(10, cfg.llm.vocab_size - 10, (120,), generator=g).tolist()
    noise = torch.randn(1, C, grid, grid, generator=g).to(device=device, dtype=torch.float32)
    released = SamplerSettings()  # 50 points, text CFG 2.0, interval (0.4, 1.0], shift 1.0: the "unixcxr" preset
    t_one = timed(lambda: generate_latents(model, [report], released, (grid, grid), noise=noise), device,
                  repeat=1 if quick else 3)
    out["seconds_per_image_batch1_50steps_sampler_only"] = t_one
    t_eager = timed(lambda: generate_latents(model, [report], released, (grid, grid), noise=noise,
                                             cuda_graphs=False), device, repeat=1)
    out["seconds_per_image_batch1_50steps_without_cuda_graphs"] = t_eager
    graphed = generate_latents(model, [report], released, (grid, grid), noise=noise)
    eager = generate_latents(model, [report], released, (grid, grid), noise=noise, cuda_graphs=False)
    out["cuda_graph_vs_eager_rel_difference"] = ((graphed - eager).norm() / eager.norm()).item()
    try:  # the VAE decode that turns latents into pixels (diffusers may be absent on a bare GPU image)
        from unixcxr.model.vae import LatentVAE

        with torch.device(device):
            vae = LatentVAE(cfg.vae).to(model.lm_head.weight.dtype).eval()
        lat = noise.to(model.lm_head.weight.dtype)
        with torch.no_grad():
            t_vae = timed(lambda v=vae: v.decode(lat), device)
        out["vae_decode_seconds_512"] = t_vae
        out["seconds_per_image_batch1_50steps"] = t_one + t_vae
    except ImportError as err:
        out["vae_decode_seconds_512"] = f"skipped: {err}"
    per_second = {1: 1 / t_one}
    for n in (4, 8):
        t_n = timed(lambda n=n: generate_latents(model, [report] * n, released, (grid, grid),
                                                 noise=noise.repeat(n, 1, 1, 1)), device, repeat=1)
        per_second[n] = n / t_n
    out["sampler_images_per_second"] = per_second
    short = SamplerSettings(num_points=11)
    ours = generate_latents(model, [report], short, (grid, grid), noise=noise)
    theirs = released_sample(model, [report], short, noise)
    out["sampler_rel_difference_vs_released"] = ((ours - theirs).norm() / theirs.norm()).item()
    t_ours = timed(lambda: generate_latents(model, [report], short, (grid, grid), noise=noise), device, repeat=1)
    t_rel = timed(lambda: released_sample(model, [report], short, noise), device, repeat=1)
    out["sampler_speedup_vs_released"] = t_rel / t_ours
    if profile:  # the eager sampler: launch-bound or FLOP-bound?
        five = SamplerSettings(num_points=6)
        write_profile(profile_table(lambda: generate_latents(model, [report], five, (grid, grid), noise=noise,
                                                             cuda_graphs=False), device, "sampler, eager, 5 steps"))


def kernel_checks(device, out):
    """RMSNorm of bf16 rows: torch's fused kernel on bf16 directly vs through float32 (RMSNorm's
    path): the largest difference, the share of equal outputs, and the time of each."""
    import torch.nn.functional as F

    g = torch.Generator(device=device).manual_seed(0)
    rows = {}
    for shape in ((8192, 2048), (8192 * 16, 128), (1, 2048)):
        x = torch.randn(shape, device=device, generator=g).mul_(3).to(torch.bfloat16)
        w = (1 + 0.1 * torch.randn(shape[-1], device=device, generator=g)).to(torch.bfloat16)
        direct = F.rms_norm(x, shape[-1:], w, 1e-6)
        via = F.rms_norm(x.float(), shape[-1:], w.float(), 1e-6).to(torch.bfloat16)
        t_direct = timed(lambda x=x, w=w: F.rms_norm(x, x.shape[-1:], w, 1e-6), device, repeat=20, warmup=3)
        t_via = timed(lambda x=x, w=w: F.rms_norm(x.float(), x.shape[-1:], w.float(), 1e-6).to(torch.bfloat16),
                      device, repeat=20, warmup=3)
        rows["x".join(map(str, shape))] = {
            "max_abs_difference": (direct.float() - via.float()).abs().max().item(),
            "equal_fraction": (direct == via).float().mean().item(),
            "direct_us": 1e6 * t_direct, "via_float32_us": 1e6 * t_via}
    out["rms_norm_bf16"] = rows


def make_step(model, batch, params, opt, device, freeze_und):
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            losses = model(batch.sequence, images=batch.images, latents=batch.latents, repa_target=batch.repa_target,
                           freeze_und=freeze_und)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def profile_table(fn, device, title, rows=25):
    """One call of fn under torch.profiler: the ops that took the most device (or CPU) time, as text."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    sync(device)
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return f"== {title}\n" + prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60) + "\n"


def write_profile(text):
    path = Path(os.environ.get("OUT", ".")) / "gpu_profile.txt"
    with path.open("a") as f:
        f.write(text)


def train_checks(model, device, out, peak, quick, key="training", profile=False):
    """One optimizer step per stage shape, bf16 autocast over fp32 master weights."""
    cfg = model.config
    model = model.float().train()
    g = torch.Generator().manual_seed(1)
    hi = min(9000, cfg.llm.vocab_size - 10)
    results = {}
    stages = (("und_sft", 8, None), ("gen_pretrain", 16, cfg.gen.image_size // 2),
              ("gen_finetune", 8, cfg.gen.image_size))
    for stage, batch_size, gen_size in stages:
        params = model.und_parameters() if stage == "und_sft" else model.gen_parameters()
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), eps=1e-15, fused=device.type == "cuda")
        S = cfg.vision.image_size
        if stage == "und_sft":
            und = [UnderstandingExample(torch.randn(3, S, S), torch.randint(10, hi, (20,), generator=g).tolist(),
                                        torch.randint(10, hi, (180,), generator=g).tolist())
                   for _ in range(batch_size)]
            batch = make_batch(cfg, und).to(device)
        else:
            grid = gen_size // cfg.vae.downsample
            repa = stage == "gen_pretrain" and cfg.gen.repa_dim > 0  # REPA against 16x16 encoder patches
            gen = [GenerationExample(torch.randn(cfg.vae.latent_channels, grid, grid),
                                     torch.randint(10, hi, (120,), generator=g).tolist(),
                                     repa_target=torch.randn(grid * grid, cfg.gen.repa_dim) if repa else None)
                   for _ in range(batch_size)]
            batch = make_batch(cfg, generation=gen, text_dropout=0.0).to(device)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step = make_step(model, batch, params, opt, device, freeze_und=stage != "und_sft")
        t = timed(step, device, repeat=2 if quick else 5, warmup=2)
        if profile:
            write_profile(profile_table(step, device, f"{key} {stage}: one optimizer step"))
        tokens = batch.num_tokens
        flops = step_flops(model, batch.sequence, freeze_und=stage != "und_sft")
        results[stage] = {
            "tokens_per_step": tokens, "tokens_per_second": tokens / t, "mfu_vs_measured_peak": flops / t / peak,
            "step_seconds": t,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None,
        }
        del opt, step
    out[key] = results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="unix")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip", default="", help="comma list of: kernels,decode,continuous,image,train,compiled")
    parser.add_argument("--profile", action="store_true",
                        help="write torch.profiler tables (one training step per stage, five sampler steps) "
                             "to gpu_profile.txt beside the JSON")
    parser.add_argument("--compile", action="store_true",
                        help="after the eager training steps, time them again under train.compile.compile_regions "
                             "(minutes of inductor compiling)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
           "preset": args.preset}
    t0 = time.time()
    peak = matmul_peak(device, dtype, 8192 if device.type == "cuda" else 512)
    out["matmul_peak_tflops"] = peak / 1e12
    model = build(args.preset, device, dtype)
    skip = set(args.skip.split(","))
    path = Path(os.environ.get("OUT", ".")) / "gpu_model_check.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    sections = [("kernels", lambda: kernel_checks(device, out)),
                ("decode", lambda: decode_checks(model, device, out, args.quick)),
                ("continuous", lambda: continuous_checks(model, device, out, args.quick)),
                ("image", lambda: image_checks(model, device, out, args.quick, args.profile)),
                ("train", lambda: train_checks(model, device, out, peak, args.quick, profile=args.profile))]
    if args.compile:
        def compiled():
            compile_regions(model)
            train_checks(model, device, out, peak, args.quick, key="training_compiled", profile=args.profile)
        sections.append(("compiled", compiled))
    with torch.inference_mode(False):
        for name, run in sections:
            if name in skip:
                continue
            try:  # one failing section (out of memory, say) must not lose the others' numbers
                run()
            except Exception as err:  # noqa: BLE001 - recorded and reported, the next section still runs
                out.setdefault("errors", {})[name] = f"{type(err).__name__}: {err}"
            print(name, "done" if name not in out.get("errors", {}) else "FAILED", round(time.time() - t0), "s",
                  flush=True)
            out["wall_seconds"] = time.time() - t0
            path.write_text(json.dumps(out, indent=2))  # after every section: a timeout keeps what was measured
    print(json.dumps(out, indent=2))
    if out.get("errors"):
        raise SystemExit(f"failed sections: {out['errors']}")


if __name__ == "__main__":
    main()
