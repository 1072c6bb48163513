"""What generation compute buys on the demo's data: the demo recipe's generator (configs/small.yaml's
gen_pretrain + gen_finetune) trained at 1x, 3x, 10x and 30x its steps from the same understanding
model, each evaluated like the demo (100 test studies, 9 sampler points): the round trip (report ->
image -> report, Micro-F1-14) beside its VAE ceiling, val_text_gain (the validation MSE another
film's prompt adds) and FD. Factor 0 is the same model with the generator untrained. Hours on 2 CPU
cores for 30x; every step is a real `unixcxr` command and every run resumes.

    python scripts/generation_curve.py --out /tmp/curve --factors 0 1 3 10 30
    python scripts/generation_curve.py --out /tmp/curve --factors 0 1 --studies 300   # minutes
    # an A/B from the same understanding model: a tag and recipe overrides (dotted keys, YAML values)
    python scripts/generation_curve.py --out /tmp/curve --factors 1 --tag batch8 \
        --set stages.gen_pretrain.batch_size=8 stages.gen_pretrain.micro_batch_size=8

Writes OUT/curve.json and OUT/curve.png (also copy it into docs/)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from unixcxr.train.recipe import GENERATION_STAGES  # noqa: E402

BASE_STAGES = ("tokenizer", "vision", "vae", "und_sft")


def unixcxr(*args: str) -> None:
    print("$ unixcxr", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "unixcxr", *args], check=True)


def recipe_with(factor: float, out: Path, tag: str = "", overrides: tuple[str, ...] = ()) -> Path:
    """configs/small.yaml with the generation stages' steps (not their warm-ups) times `factor`, then
    the overrides (KEY=VALUE, dotted keys, YAML values; steps given there are scaled too)."""
    fields = yaml.safe_load((ROOT / "configs" / "small.yaml").read_text())
    for item in overrides:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = fields
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    for name in GENERATION_STAGES:
        fields["stages"][name]["steps"] = max(1, round(fields["stages"][name]["steps"] * factor))
    path = out / f"recipe_{tag}{factor:g}x.yaml"
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def last_validation(run: Path, stage: str) -> dict:
    path = run / "stages" / stage / "metrics.jsonl"
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if '"val"' in line]
    return rows[-1] if rows else {}


def point(out: Path, data: Path, base: Path, factor: float, args) -> dict:
    tag = f"{args.tag}_" if args.tag else ""
    run, evaluation = out / f"run_{tag}{factor:g}x", out / f"eval_{tag}{factor:g}x"
    start = time.perf_counter()
    if factor > 0 and not (run / "stages" / "gen_finetune" / "done.json").is_file():
        recipe = recipe_with(factor, out, tag, tuple(args.set))
        if not run.exists():  # the base's stages, then this variant's recipe as the run's own (its
            shutil.copytree(base, run)  # generation stages have not started, so nothing trained differs)
            shutil.copy(recipe, run / "recipe.yaml")
        unixcxr("train", str(recipe), "--data", str(data), "--out", str(run), "--resume", "--no-progress")
    model = run if factor > 0 else base
    train_seconds = time.perf_counter() - start
    unixcxr("evaluate", "--model", str(model), "--data", str(data), "--limit", str(args.eval_limit), "--steps",
            str(args.eval_steps), "--max-new-tokens", "160", "--out", str(evaluation), "--no-baselines")
    metrics = json.loads((evaluation / "metrics.json").read_text())
    trip = metrics["round_trip"]
    gen = {name: last_validation(run, name) for name in GENERATION_STAGES} if factor > 0 else {}
    done = {name: json.loads((run / "stages" / name / "done.json").read_text()) for name in GENERATION_STAGES} \
        if factor > 0 else {}
    return {"factor": factor, "tag": args.tag, "overrides": list(args.set),
            "gen_steps": {name: done[name]["steps"] for name in done},
            "gen_seconds": sum(d.get("wall_seconds", 0.0) for d in done.values()),
            "round_trip": trip["label_f1_vs_prompt"]["uncertain_as_positive"]["micro_f1_14"],
            "round_trip_other_prompt": trip.get("label_f1_vs_other_prompt", {}).get("uncertain_as_positive", {})
            .get("micro_f1_14"),
            "vae_ceiling": trip["vae_ceiling_vs_prompt"]["uncertain_as_positive"]["micro_f1_14"],
            "fd": metrics["images"]["fd"],
            "val_mse": gen.get("gen_finetune", {}).get("mse"),
            "val_text_gain": gen.get("gen_finetune", {}).get("text_gain"),
            "pretrain_val_text_gain": gen.get("gen_pretrain", {}).get("text_gain"),
            "wall_seconds": train_seconds}


def plot(points: list[dict], path: Path) -> None:
    """Per measure, the trained points as a line against log10 of the generation steps (untrained
    generator and the VAE ceiling as marked points)."""
    import math

    from unixcxr.train.plots import plot_series

    trained = [p for p in points if p["factor"] > 0]

    def x(p):
        return math.log10(sum(p["gen_steps"].values()))

    first = x(trained[0]) if trained else 0.0
    series = {
        "round trip; ref.: VAE ceiling": ([(x(p), p["round_trip"]) for p in trained],
                                                  [(x(p), p["vae_ceiling"]) for p in trained]),
        "val_text_gain, % of val MSE": ([(x(p), 100 * p["val_text_gain"] / p["val_mse"]) for p in trained], []),
        "FD; ref.: untrained generator": ([(x(p), p["fd"]) for p in trained],
                                                 [(first, p["fd"]) for p in points if p["factor"] == 0]),
    }
    plot_series(series, path, "the demo's generator at 1x-30x its steps (x: log10 of its gen steps)",
                "log10 generation steps", labels=("trained", "ref."))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--factors", type=float, nargs="+", default=[0, 1, 3, 10, 30])
    parser.add_argument("--studies", type=int, default=2500, help="SynthCXR studies (the demo's 2,500)")
    parser.add_argument("--eval-limit", type=int, default=100)
    parser.add_argument("--eval-steps", type=int, default=9)
    parser.add_argument("--tag", default="", help="name of an A/B variant (its runs: run_TAG_<factor>x)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides of the variant")
    args = parser.parse_args()
    out, data, base = args.out, args.out / "data", args.out / "base"
    out.mkdir(parents=True, exist_ok=True)
    if not (data / "synthcxr-truth.jsonl").is_file():
        unixcxr("synth", str(data), "--n", str(args.studies), "--size", "128", "--seed", "0", "--quiet", "--overwrite")
    recipe = recipe_with(1, out)
    for name in BASE_STAGES:
        if not (base / "stages" / name / "done.json").is_file():
            unixcxr("train", str(recipe), "--data", str(data), "--out", str(base), "--stage", name, "--no-progress")
    points, name = [], f"curve_{args.tag}" if args.tag else "curve"
    for factor in args.factors:
        points.append(point(out, data, base, factor, args))
        (out / f"{name}.json").write_text(json.dumps(points, indent=2))
        print(json.dumps(points[-1]), flush=True)
    if any(p["factor"] > 0 for p in points):
        plot(points, out / f"{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
