"""What more generation training buys: the demo recipe's generator measured at 0x-10x its steps on the
demo's data (scripts/generation_curve.py; docs/conditioning.md), with this run's own point beside
them, so a demo report says what a larger budget would change."""

from __future__ import annotations

import json
from pathlib import Path

from unixcxr.train.plots import plot_series

GEN_STAGES = ("gen_pretrain", "gen_finetune")
# Measured on a 2-core VM with the demo's data (2,500 SynthCXR studies at 128 px), 100 test studies,
# 9 sampler points; factor x the demo recipe's 300 generation steps; val_text_gain in % of the val MSE.
MEASURED = [
    {"factor": 0, "gen_steps": 0, "round_trip": 0.189, "vae_ceiling": 0.405, "fd": 377.7, "text_gain_pct": None},
    {"factor": 1, "gen_steps": 300, "round_trip": 0.153, "vae_ceiling": 0.405, "fd": 209.4, "text_gain_pct": 0.18},
    {"factor": 3, "gen_steps": 900, "round_trip": 0.172, "vae_ceiling": 0.405, "fd": 181.7, "text_gain_pct": 0.6},
]


def run_point(run: Path, trained: dict) -> dict | None:
    """This run's generation steps, round trip and FD (None when it trained no generator)."""
    steps = 0
    for name in GEN_STAGES:
        done = run / "stages" / name / "done.json"
        if done.is_file():
            steps += int(json.loads(done.read_text()).get("steps", 0))
    trip = trained.get("round_trip", {}).get("label_f1_vs_prompt", {}).get("uncertain_as_positive", {})
    if not steps or "micro_f1_14" not in trip:
        return None
    return {"gen_steps": steps, "round_trip": trip["micro_f1_14"], "fd": trained.get("images", {}).get("fd")}


def curve_rows(this: dict | None) -> list[list[str]]:
    rows = [[f"{p['factor']:g}x (measured)", str(p["gen_steps"]), f"{p['round_trip']:.3f}", f"{p['vae_ceiling']:.3f}",
             f"{p['fd']:.1f}", "-" if p["text_gain_pct"] is None else f"{p['text_gain_pct']:.2f}%"] for p in MEASURED]
    if this is not None:
        fd = this["fd"]
        rows.append(["this run", str(this["gen_steps"]), f"{this['round_trip']:.3f}", "-",
                     f"{fd:.1f}" if isinstance(fd, int | float) else "-", "-"])
    return rows


CURVE_HEADER = ["generator", "gen steps", "round trip", "VAE ceiling", "FD", "val_text_gain"]


def curve_figure(this: dict | None, path: Path) -> Path:
    """Round trip and FD against generation steps: the measured curve, this run marked."""
    trained = [p for p in MEASURED if p["gen_steps"]]
    mine = [this] if this is not None else []
    series = {
        "round trip; marked: this run": ([(p["gen_steps"], p["round_trip"]) for p in trained],
                                         [(p["gen_steps"], p["round_trip"]) for p in mine]),
        "FD; marked: this run": ([(p["gen_steps"], p["fd"]) for p in trained],
                                 [(p["gen_steps"], p["fd"]) for p in mine if isinstance(p["fd"], int | float)]),
    }
    return plot_series(series, path, "what more generation training buys (the demo recipe's generator)",
                       "generation steps", labels=("measured", "this run"))


def curve_note() -> str:
    best = max(MEASURED, key=lambda p: p["gen_steps"])
    return (f"The demo recipe's generator trained longer on the same data and evaluated the same way: up to "
            f"{best['factor']:g}x its steps the films improve (FD {MEASURED[0]['fd']:.0f} untrained -> "
            f"{best['fd']:.0f}) while the round trip stays far below its VAE ceiling ({best['round_trip']:.3f} "
            f"against {best['vae_ceiling']:.3f}): at this compute the generator learns the text slowly. "
            "Measured with scripts/generation_curve.py; docs/conditioning.md has the details.")
