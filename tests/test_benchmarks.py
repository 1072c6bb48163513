"""The benchmark harness: each entry of the results file says which mode (quick or full) its own run
used, so a table refreshed entry by entry (--only) never passes quick numbers off as full ones."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.run import markdown

ROOT = Path(__file__).resolve().parents[1]


def test_every_markdown_entry_names_its_own_mode():
    meta = {"machine": "m", "date": "2026-12-03 08:00"}
    results = [{"name": "decode", "command": "-m benchmarks.bench_decode --quick", "status": "ok", "seconds": 1.0,
                "output": "a"},
               {"name": "train", "command": "-m benchmarks.bench_train", "mode": "full", "status": "ok",
                "seconds": 2.0, "output": "b"}]
    md = markdown(meta, results)
    assert md.startswith("# Benchmarks on m (full and quick, 2026-12-03 08:00)")
    assert "## decode (quick, ok, 1.0 s)" in md and "## train (full, ok, 2.0 s)" in md
    assert "both modes" in md
    single = markdown(meta, results[1:])
    assert single.startswith("# Benchmarks on m (full, ") and "both modes" not in single


@pytest.mark.slow
def test_the_harness_runs_a_benchmark_and_writes_both_files(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--only", "vae", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = tmp_path.glob("*.json")
    data = json.loads(result.read_text())
    assert data["mode"] == "quick" and [r["name"] for r in data["benchmarks"]] == ["vae"]
    entry = data["benchmarks"][0]
    assert entry["status"] == "ok" and entry["mode"] == "quick" and "channels-last" in entry["output"]
    md = result.with_suffix(".md").read_text()
    assert "## vae (quick, ok," in md and "channels-last" in md


@pytest.mark.slow
def test_the_gpu_check_script_runs_its_whole_path_on_a_cpu(tmp_path):
    """scripts/gpu_model_check.py is run on a lent GPU with minutes to spare: its code path (tiny preset
    on the CPU) must work before it gets there, and its fast paths must equal the slow ones."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "scripts/gpu_model_check.py", "--preset", "tiny", "--device", "cpu",
                           "--quick", "--profile"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OUT": str(out)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "gpu_model_check.json").read_text())
    assert "errors" not in result
    assert result["decode_cached_equals_uncached_16_tokens"] is True
    assert result["decode_cached_vs_full_rel_error"] < 1e-4
    assert result["sampler_rel_difference_vs_released"] < 1e-5
    assert set(result["training"]) == {"und_sft", "gen_pretrain", "gen_finetune"}
    # MFU is a ratio of times: recorded, never bounded here (a CPU's peak sampled in a slow phase can
    # put a later step above 1)
    assert all(math.isfinite(r["mfu_vs_measured_peak"]) for r in result["training"].values())
    assert result["continuous_useful_tokens_per_second"] > 0 and result["grouped_useful_tokens_per_second"] > 0
    # on a CPU the "graphed" side is the fixed-shape step a graph replays, run eagerly (the growing
    # cache on the other side): a broken DecodeStep shows here before a GPU run
    assert result["decode_graphed_equals_eager_16_tokens"] is True
    assert result["decode_graphed_vs_eager_rel_difference"] < 1e-5  # float32: the same logits, not only tokens
    assert result["decode_first_different_token"] is None
    assert set(result["sampler_images_per_second"]) == {"1", "4", "8"}
    assert set(result["rms_norm_bf16"]) == {"8192x2048", "131072x128", "1x2048"}
    profile = (out / "gpu_profile.txt").read_text()
    assert "== sampler, eager, 5 steps" in profile and "== training gen_finetune: one optimizer step" in profile
