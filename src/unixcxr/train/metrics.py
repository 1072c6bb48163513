"""Where training numbers go: one JSON object per line (metrics.jsonl, the source of truth that
plots and reports read), and TensorBoard event files as well when the `tensorboard` package is
installed. Only rank 0 writes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from unixcxr.train.distributed import DistEnv


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(folder))


class MetricsLog:
    def __init__(self, path: Path, env: DistEnv, tensorboard: bool = True):
        self.path, self.env = Path(path), env
        self.tb = None
        if env.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                self.tb = _tensorboard_writer(self.path.parent / "tensorboard")

    def write(self, record: dict) -> None:
        if not self.env.is_main:
            return
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in record.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean) + "\n")
        if self.tb is not None:
            prefix = "val/" if record.get("split") == "val" else "train/"
            for key, value in record.items():
                if isinstance(value, int | float) and key != "step":
                    self.tb.add_scalar(prefix + key, value, record["step"])
            self.tb.flush()

    def truncate_after(self, step: int) -> None:
        """On resume: drop records of steps the resumed run will do again."""
        if not self.env.is_main or not self.path.is_file():
            return
        kept = [line for line in read_metrics(self.path, raw=True) if json.loads(line)["step"] <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)


def read_metrics(path: Path, raw: bool = False) -> list:
    """Records of a metrics.jsonl (a line cut by a killed run is skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append(line if raw else record)
    return out
