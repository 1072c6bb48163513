"""The paper's path as a researcher runs it, at toy size on CPU: raw reports with MIMIC-style noise ->
`unixcxr clean` -> `unixcxr prepare --reports` -> `torchrun` with 2 processes (gloo) training every stage
under FSDP2 with REPA on the model's own ViT and centred ViT features (the shipped recipes' settings)
-> kill -9 inside gen_pretrain -> `--resume` -> the weights of the run that was never interrupted;
the same checkpoint resumed by one process instead of two; three fresh launches without a start-up
race; then `unixcxr evaluate` on the shards' test split."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from unixcxr.cli import main
from unixcxr.data.synthcxr import generate_dataset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def _train(recipe: Path, shards: Path, out: Path, *extra: str, processes: int = 2) -> list[str]:
    launcher = TORCHRUN if processes == 2 else [sys.executable]
    return [*launcher, "-m", "unixcxr", "train", str(recipe), "--data", str(shards), "--out", str(out),
            "--no-progress", *extra]


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]


def _kill_inside_gen_pretrain(cmd: list[str], out: Path) -> None:
    """Start the run and kill -9 every process of it once gen_pretrain has written its first checkpoint."""
    checkpoints = out / "stages" / "gen_pretrain" / "checkpoints"
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while proc.poll() is None:
            if checkpoints.is_dir() and any(p.name.startswith("step_") for p in checkpoints.iterdir()):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed inside gen_pretrain"
    assert not (out / "stages" / "gen_pretrain" / "done.json").exists()


def _max_difference(a: Path, b: Path) -> float:
    x, y = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert x.keys() == y.keys()
    return max(float((x[k].float() - y[k].float()).abs().max()) for k in x)


@pytest.mark.slow
def test_raw_reports_to_evaluation_under_torchrun_with_fsdp_repa_and_a_kill(tmp_path):
    raw = tmp_path / "mimic-like"
    generate_dataset(raw, n=90, size=64, seed=5, workers=1, raw_noise=True, progress=False)
    cleaned, shards = tmp_path / "cleaned.jsonl", tmp_path / "shards"
    assert main(["clean", str(raw / "reports"), str(cleaned), "--no-progress"]) == 0
    assert main(["prepare", str(raw), str(shards), "--size", "64", "--shard-size", "16",
                 "--reports", str(cleaned)]) == 0
    rows = [json.loads(line) for line in cleaned.read_text().splitlines()]
    assert sum(r["changed"] for r in rows) > len(rows) // 2

    fields = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    assert fields["model"]["vision"]["center_features"] and fields["stages"]["gen_pretrain"]["repa"]
    assert fields.get("repa_encoder", "vit") == "vit"
    fields["runtime"]["strategy"] = "fsdp"
    fields["stages"]["gen_pretrain"]["steps"] = 24  # room to be killed in the middle
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(fields))

    straight, killed, moved = tmp_path / "straight", tmp_path / "killed", tmp_path / "moved"
    _run(_train(recipe, shards, straight))  # fresh launch 1
    done = json.loads((straight / "stages" / "gen_pretrain" / "done.json").read_text())
    assert done["strategy"] == "fsdp" and done["repa"] < 0  # REPA: a negative cosine similarity
    assert (straight / "stages" / "gen_pretrain" / "checkpoints" / "step_00000024" / "meta.json").is_file()

    _kill_inside_gen_pretrain(_train(recipe, shards, killed), killed)  # fresh launch 2
    shutil.copytree(killed, moved)
    _run(_train(recipe, shards, killed, "--resume"))
    assert _max_difference(straight, killed) <= 1e-5
    _run(_train(recipe, shards, moved, "--resume", processes=1))  # 2 processes -> 1
    assert _max_difference(straight, moved) <= 1e-4

    _run(_train(recipe, shards, tmp_path / "third", "--stage", "tokenizer"))  # fresh launch 3
    assert (tmp_path / "third" / "tokenizer.json").is_file()

    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(straight), "--data", str(shards), "--split", "test", "--limit", "6",
                 "--steps", "3", "--max-new-tokens", "8", "--out", str(out), "--no-baselines"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data_kind"] == "shards" and metrics["n_studies"] == 6
    f1 = metrics["reports"]["model"]["label_f1"]
    assert all(0.0 <= f1[m][k] <= 1.0 for m in f1 for k in ("micro_f1_14", "micro_f1_5", "macro_f1_14", "macro_f1_5"))
    assert torch.isfinite(torch.tensor(metrics["images"]["fd"]))
