"""The paper's data path at MIMIC-like size, timed step by step (not run in CI; docs/paper-path.md
records one run):

    synth --raw-noise (N studies)  ->  clean (rules)  ->  prepare --reports (shards)
    ->  the film cache filled from the shards vs from the raw folder
    ->  torchrun: every stage of a recipe (default configs/small.yaml) under FSDP2 on P processes

Each step is the real `unixcxr` command. Writes OUT/rehearsal.json and prints a Markdown table.

    python scripts/rehearse_paper_path.py --out /tmp/rehearsal --n 20000 --size 256
    python scripts/rehearse_paper_path.py --out /tmp/quick --n 300 --size 128 --steps 10   # minutes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from unixcxr.data.sources import DataSource  # noqa: E402
from unixcxr.train.data import film_cache  # noqa: E402
from unixcxr.train.distributed import DistEnv  # noqa: E402

MODEL_STAGES = ("und_sft", "gen_pretrain", "gen_finetune")


def timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - start


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def recipe_for(args: argparse.Namespace, out: Path) -> Path:
    """The recipe with strategy fsdp, micro-batches that split over the processes and, with --steps,
    that many steps per stage."""
    fields = yaml.safe_load(Path(args.recipe).read_text())
    fields.setdefault("runtime", {})["strategy"] = "fsdp"
    for stage in fields["stages"].values():
        if "micro_batch_size" in stage:
            stage["micro_batch_size"] = min(stage["micro_batch_size"], stage["batch_size"] // args.processes)
        if args.steps and "steps" in stage:
            stage["steps"] = args.steps
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def cache_fill_seconds(data: Path, size: int, workers: int) -> tuple[float, int]:
    samples = DataSource(data).samples("train")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        film_cache(samples, size, Path(tmp), DistEnv(), workers=workers, progress=False)
        return time.perf_counter() - start, len(samples)


def _fmt(summary: dict, key: str, spec: str) -> str:
    value = summary.get(key)
    return format(value, spec) if isinstance(value, float | int) else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="new folder for the data, shards and run")
    parser.add_argument("--n", type=int, default=20000, help="studies (default 20000)")
    parser.add_argument("--size", type=int, default=256, help="image side of the raw films and shards (default 256)")
    parser.add_argument("--recipe", default=str(ROOT / "configs" / "small.yaml"))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=0, help="steps per stage (default: the recipe's)")
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty")
    args.out.mkdir(parents=True, exist_ok=True)
    raw, cleaned, shards, run = args.out / "raw", args.out / "cleaned.jsonl", args.out / "shards", args.out / "run"
    cli = [sys.executable, "-m", "unixcxr"]
    result: dict = {"n_studies": args.n, "size": args.size, "processes": args.processes, "workers": args.workers}
    result["synth_s"] = timed([*cli, "synth", str(raw), "--n", str(args.n), "--size", str(args.size), "--raw-noise",
                               "--workers", str(args.workers), "--quiet"])
    result["clean_s"] = timed([*cli, "clean", str(raw / "reports"), str(cleaned), "--workers", str(args.workers),
                               "--no-progress"])
    result["clean_reports_per_s"] = args.n / result["clean_s"]
    result["prepare_s"] = timed([*cli, "prepare", str(raw), str(shards), "--size", str(args.size), "--workers",
                                 str(args.workers), "--reports", str(cleaned)])
    result["raw_bytes"] = folder_bytes(raw / "files")
    result["shard_bytes"] = folder_bytes(shards)
    recipe = recipe_for(args, args.out)
    resolution = yaml.safe_load(recipe.read_text())["stages"]["und_sft"]["resolution"]
    for name, data in (("shards", shards), ("raw", raw)):
        seconds, count = cache_fill_seconds(data, resolution, args.workers)
        result[f"film_cache_{resolution}px_from_{name}_s"] = seconds
        result["train_images"] = count
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.processes))}
    result["train_s"] = timed([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc-per-node={args.processes}", "-m", "unixcxr", "train", str(recipe),
                               "--data", str(shards), "--out", str(run), "--no-progress"], env)
    result["stages"] = {}
    for done in sorted((run / "stages").glob("*/done.json")):
        summary = json.loads(done.read_text())
        result["stages"][done.parent.name] = {k: summary.get(k) for k in (
            "steps", "wall_seconds", "seconds_per_step", "data_fraction", "tokens_per_s", "mfu", "loss", "val_loss")}
    (args.out / "rehearsal.json").write_text(json.dumps(result, indent=2))
    print("\n| stage | steps | wall s | s / step | loader share | MFU |\n|---|---|---|---|---|---|")
    for name, s in result["stages"].items():
        cells = [_fmt(s, "wall_seconds", ".0f"), _fmt(s, "seconds_per_step", ".3f"), _fmt(s, "data_fraction", ".1%"),
                 _fmt(s, "mfu", ".1%")]
        print(f"| {name} | {s.get('steps') or '-'} | " + " | ".join(cells) + " |")
    print(json.dumps({k: v for k, v in result.items() if k != "stages"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
