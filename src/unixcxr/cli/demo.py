"""`unixcxr demo`: train a real unified model on the embedded default and show what it does.

SynthCXR (train/validate/test, MIMIC-CXR-JPG layout) -> tokenizer -> vision (fine-tunes the reader)
-> VAE -> understanding SFT -> generation pre-training (with REPA) -> generation fine-tuning, then
`evaluate` of the trained model, its untrained twin and two report baselines, written to
OUT/report.html (open it in a browser) and OUT/report.md. The trained model lands in OUT/run,
usable at once by `unixcxr report`, `generate` and `serve`. Rerun the same command to continue an
interrupted demo.

With --device cuda the demo runs configs/gpu.yaml as written (the same stages at ~20x the CPU
recipe's steps, on 10,000 studies), sized for about ten minutes of training on one H100 (an
estimate from `unixcxr train configs/gpu.yaml --dry-run`, not yet measured on a GPU).

examples:
  unixcxr demo                          # ~20 minutes on 2 CPU cores
  unixcxr demo --budget-minutes 5       # a smaller but complete run
  unixcxr demo --device cuda --out demo-gpu"""

from __future__ import annotations

import argparse
from pathlib import Path

from unixcxr.cli import CliError
from unixcxr.demo.budget import DEFAULT_BUDGET_MINUTES


def register(sub) -> None:
    p = sub.add_parser("demo", help="train on SynthCXR and write report.html (~20 min on 2 CPU cores)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default: %(default)s)")
    p.add_argument("--budget-minutes", type=float, default=DEFAULT_BUDGET_MINUTES,
                   help="time budget; training steps and set sizes scale to fit (default: %(default)s)")
    p.add_argument("--studies", type=int, default=None, help="SynthCXR studies (default: from the budget)")
    p.add_argument("--workers", type=int, default=2, help="processes for data synthesis (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cpu: configs/small.yaml scaled to the budget (default); cuda: configs/gpu.yaml as written")
    p.add_argument("--recipe", default=None, metavar="YAML",
                   help="another recipe (a file in configs/ or a path); the CPU demo scales its steps to the budget")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from unixcxr.demo.run import gpu_plan, missing_modules, plan_for_budget, recipe_path, run_demo

    if not 0 < args.budget_minutes < float("inf"):
        raise CliError(f"--budget-minutes must be a positive number, got {args.budget_minutes}")
    if (args.studies is not None and args.studies < 1) or args.workers < 1:
        raise CliError("--studies and --workers must be at least 1")
    if args.out.exists() and not args.out.is_dir():
        raise CliError(f"--out {args.out} is a file; choose a folder for --out")
    missing = missing_modules()
    if missing:
        extras = ",".join(sorted(set(missing.values())))
        raise CliError(f"the demo needs {', '.join(sorted(missing))}, not installed here; install them with: "
                       f"pip install 'unixcxr[{extras}]'")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: torch sees no GPU here; run the CPU demo (--device cpu)")
    if args.recipe is not None:
        try:
            recipe_path(args.recipe)
        except FileNotFoundError as err:
            raise CliError(str(err)) from err
    if args.device == "cuda":
        plan = gpu_plan(args.out, studies=args.studies, seed=args.seed, recipe=args.recipe)
    else:
        plan = plan_for_budget(args.out, args.budget_minutes, studies=args.studies, workers=args.workers,
                               seed=args.seed, recipe=args.recipe)
    report = run_demo(plan)
    print(f"\nopen {report} in a browser (also {report.with_suffix('.md')}); the trained model is in {plan.run}")
    return 0
