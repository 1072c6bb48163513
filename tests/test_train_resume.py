"""`unixcxr train --resume`: a run killed with SIGKILL in the middle of a stage and resumed ends
with exactly the weights of a run that was never interrupted (real subprocesses, tiny recipe)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from unixcxr.data.synthcxr import generate_dataset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KILL_AFTER = "stages/gen_pretrain/checkpoints/step_00000004.safetensors"
TIMEOUT = 600


def _recipe(tmp_path: Path, **gen_pretrain) -> Path:
    recipe = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    recipe["stages"]["gen_pretrain"].update(steps=30, **gen_pretrain)  # long enough to be killed inside
    path = tmp_path / f"recipe_{len(gen_pretrain)}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _command(recipe: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "unixcxr", "train", str(recipe), "--data", str(data), "--out", str(out),
            "--no-progress", *extra]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # bitwise-reproducible CPU kernels, fast on a busy machine


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)


@pytest.mark.slow
def test_a_run_killed_mid_stage_and_resumed_reaches_the_same_weights(tmp_path):
    data = tmp_path / "data"
    generate_dataset(data, n=40, size=64, seed=0, workers=1, progress=False)
    recipe = _recipe(tmp_path)

    done = _run(_command(recipe, data, tmp_path / "straight"))
    assert done.returncode == 0, done.stderr[-3000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_command(recipe, data, killed), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + TIMEOUT
    while not (killed / KILL_AFTER).is_file():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "stages/gen_pretrain/done.json").exists(), "killed too late: the stage had finished"
    assert (killed / "stages/und_sft/done.json").exists()

    again = _run(_command(recipe, data, killed))
    assert again.returncode == 2 and "--resume" in again.stderr  # never silently restarts
    changed = _run(_command(_recipe(tmp_path, lr=5e-4), data, killed, "--resume"))
    assert changed.returncode == 2 and "stages.gen_pretrain.lr" in changed.stderr

    resumed = _run(_command(recipe, data, killed, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_file(tmp_path / "straight/model/model.safetensors")
    b = load_file(killed / "model/model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=1e-6), name
    steps = [json.loads(line)["step"] for line in (killed / "stages/gen_pretrain/metrics.jsonl").read_text()
             .splitlines() if "split" not in line]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # no step logged twice after the resume
