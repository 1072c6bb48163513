"""Scale-out on CPU with gloo, through torchrun: two DDP processes keep identical weights and
reach those of one process with the same global batch (accumulating what the other rank did).
This file is also the worker script that torchrun launches (see the __main__ block)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unixcxr.model.config import tiny
from unixcxr.model.unix import UniX

STEPS, GLOBAL_BATCH, MICRO_BATCH, ITEMS = 3, 8, 2, 24


def train_und_sft(out: Path) -> None:
    """One und_sft run of the real loop on this process's share of each global batch."""
    from unixcxr.train.builders import UnderstandingBuilder
    from unixcxr.train.data import BatchPlan, TextTokens, micro_batches
    from unixcxr.train.distributed import close_distributed, init_distributed, wrap
    from unixcxr.train.loop import LoopSettings, Trainer
    from unixcxr.train.stages import SPECS, ModelLoss, set_trainable

    torch.set_num_threads(1)
    env = init_distributed("cpu")
    torch.manual_seed(0)
    config = tiny()
    model = UniX(config)
    params = set_trainable(model, SPECS["und_sft"], repa=False)
    wrapped = wrap(model, "ddp", env)
    rng = np.random.default_rng(0)
    films = rng.integers(0, 256, size=(ITEMS, 32, 32), dtype=np.uint8)
    reports = [rng.integers(5, 250, size=int(rng.integers(3, 12))).tolist() for _ in range(ITEMS)]
    tokens = TextTokens(reports, [r[:2] for r in reports], reports, [None] * ITEMS, [[5, 6, 7], [8, 9]],
                        [False, True])
    build = UnderstandingBuilder(config, films, tokens, [f"i{k}" for k in range(ITEMS)], seed=0)
    plan = BatchPlan(ITEMS, GLOBAL_BATCH, MICRO_BATCH, env.world_size, env.rank, seed=0)
    # eps 1e-6, not the paper's 1e-15: some gradients are exactly zero in exact arithmetic (a key bias
    # cannot change a softmax), and Adam with a tiny eps turns their rounding noise into full-size steps
    settings = LoopSettings(steps=STEPS, lr=1e-2, warmup=1, accumulation=plan.accumulation, eps=1e-6, ema=0.5,
                            log_every=1, progress=False)
    trainer = Trainer(wrapped, params, ModelLoss(wrapped, SPECS["und_sft"], env.device), settings, env,
                      out / f"stage_{env.world_size}", {"config": config.to_dict()})
    trainer.fit(micro_batches(plan, build, 0, STEPS))
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.save(weights, out / f"world{env.world_size}_rank{env.rank}.pt")
    close_distributed()


def _torchrun(nproc: int, out: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           __file__, str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.slow
def test_two_gloo_ranks_stay_identical_and_match_one_process_with_the_same_global_batch(tmp_path):
    _torchrun(2, tmp_path)
    _torchrun(1, tmp_path)
    rank0, rank1 = (torch.load(tmp_path / f"world2_rank{r}.pt") for r in range(2))
    single = torch.load(tmp_path / "world1_rank0.pt")
    torch.manual_seed(0)
    start = dict(UniX(tiny()).named_parameters())
    moved = 0
    for name, value in single.items():
        assert torch.equal(rank0[name], rank1[name]), name
        assert torch.allclose(rank0[name], value, rtol=1e-4, atol=1e-5), name
        moved += not torch.equal(value, start[name])
    assert moved > len(single) // 3  # the runs did train


@pytest.mark.slow
def test_unixcxr_train_under_torchrun_runs_every_stage_like_one_process(tmp_path):
    from unixcxr.data.synthcxr import generate_dataset
    from unixcxr.model.io import load_model_folder

    data = tmp_path / "data"
    generate_dataset(data, n=40, size=64, seed=0, workers=1, progress=False)
    recipe = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train = ["-m", "unixcxr", "train", str(recipe), "--data", str(data), "--no-progress", "--out"]
    runs = {"two": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                    *train, str(tmp_path / "two")],
            "one": [sys.executable, *train, str(tmp_path / "one")]}
    for cmd in runs.values():
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-4000:]
    for stage, key in (("vae", "val_l1"), ("vision", "val_loss"), ("und_sft", "val_loss"),
                       ("gen_pretrain", "val_loss"), ("gen_finetune", "val_loss")):
        one, two = (json.loads((tmp_path / r / "stages" / stage / "done.json").read_text()) for r in ("one", "two"))
        assert one[key] == pytest.approx(two[key], rel=0.05), stage
    for stage in ("gen_pretrain", "gen_finetune"):  # the same films with other films' prompts
        done = json.loads((tmp_path / "one" / "stages" / stage / "done.json").read_text())
        assert done["val_text_gain"] == pytest.approx(done["val_mse_other_prompt"] - done["val_mse"], abs=1e-9)
        assert done["val_mse_other_prompt"] != done["val_mse"], stage
    model, vae, tokenizer = load_model_folder(tmp_path / "two")
    assert vae is not None and tokenizer is not None and model.config.tokens.bos == 0


@pytest.mark.slow
def test_the_cpu_recipes_cnn_reader_trains_under_fsdp_with_two_processes(tmp_path):
    """small.yaml reads with EfficientNet-Lite0, whose channels-last weights FSDP2 cannot shard as they
    are: the vision stage and und_sft (centred features) run sharded on 2 processes."""
    import yaml

    from unixcxr.data.synthcxr import generate_dataset

    data = tmp_path / "data"
    generate_dataset(data, n=24, size=64, seed=0, workers=1, progress=False)
    fields = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml").read_text())
    fields["model"]["vision"] = {"encoder": "efficientnet-lite0", "image_size": 64, "patch_size": 32, "width": 1280,
                                 "norm_mean": 0.5, "norm_std": 0.5, "center_features": True}
    fields["runtime"]["strategy"] = "fsdp"
    fields["stages"] = {k: v for k, v in fields["stages"].items() if k in ("tokenizer", "vision", "und_sft")}
    fields["stages"]["und_sft"]["resolution"] = 64
    recipe = tmp_path / "cnn.yaml"
    recipe.write_text(yaml.safe_dump(fields))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "unixcxr",
           "train", str(recipe), "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress"]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((tmp_path / "run" / "stages" / "und_sft" / "done.json").read_text())
    assert summary["strategy"] == "fsdp" and summary["steps"] == fields["stages"]["und_sft"]["steps"]


if __name__ == "__main__":
    train_und_sft(Path(sys.argv[1]))
