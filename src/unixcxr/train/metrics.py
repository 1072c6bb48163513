"""Where training numbers go: one JSON object per line (metrics.jsonl, the source of truth that
plots and reports read), and, when installed, the trackers people watch a run in:

- TensorBoard (pip install 'unixcxr[track]'): every scalar, and each validation's sample sheet and
  generated reports (the validators' STAGE_DIR/samples/step_N.png / .txt), under STAGE_DIR/tensorboard.
  On unless the recipe sets runtime.tensorboard: false.
- Weights & Biases, only when asked (runtime.wandb: true, or UNIXCXR_WANDB=1) and installed, and only
  ever in offline mode: the run is written under STAGE_DIR/wandb and never sent anywhere (`wandb
  sync` uploads it later, if its owner wants to).

Only rank 0 writes."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from unixcxr.files import write_text
from unixcxr.train.distributed import DistEnv

log = logging.getLogger("unixcxr.train")
WANDB_ENV = "UNIXCXR_WANDB"  # "1" / "offline" / "true": an offline W&B run beside metrics.jsonl
WANDB_PROJECT = "unixcxr"


def wandb_requested(recipe_flag: bool) -> bool:
    return recipe_flag or os.environ.get(WANDB_ENV, "").strip().lower() in ("1", "true", "yes", "offline")


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional (the `track` extra)
        return None
    return SummaryWriter(log_dir=str(folder))


def _wandb_run(folder: Path, name: str):
    """An offline W&B run, or None when wandb is not installed (said once in the log)."""
    try:
        import wandb
    except ImportError:
        log.warning("W&B asked for but the wandb package is not installed; logging to metrics.jsonl only")
        return None
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_MODE"] = "offline"  # belt and braces: nothing the run does may reach the network
    return wandb.init(project=WANDB_PROJECT, name=name, dir=str(folder), mode="offline")


class MetricsLog:
    def __init__(self, path: Path, env: DistEnv, tensorboard: bool = True, wandb: bool = False,
                 name: str = "train"):
        self.path, self.env = Path(path), env
        self.tb = self.wandb = None
        if env.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                self.tb = _tensorboard_writer(self.path.parent / "tensorboard")
            if wandb:
                self.wandb = _wandb_run(self.path.parent, name)

    @property
    def samples(self) -> Path:
        return self.path.parent / "samples"

    def write(self, record: dict) -> None:
        if not self.env.is_main:
            return
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in record.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean) + "\n")
        prefix = "val/" if record.get("split") == "val" else "train/"
        scalars = {prefix + k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
        step = record["step"]
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)
        if record.get("split") == "val":
            self._log_samples(step)
        if self.tb is not None:
            self.tb.flush()

    def _log_samples(self, step: int) -> None:
        """What the validator wrote for this step: a sample sheet (generated films above real ones, or
        reconstructions) and generated reports beside their references."""
        sheet, text = (self.samples / f"step_{step:08d}{suffix}" for suffix in (".png", ".txt"))
        if sheet.is_file():
            import numpy as np
            from PIL import Image

            with Image.open(sheet) as image:
                pixels = np.asarray(image.convert("L"))  # [H, W]
            if self.tb is not None:
                self.tb.add_image("val/samples", pixels, step, dataformats="HW")
            if self.wandb is not None:
                import wandb

                self.wandb.log({"val/samples": wandb.Image(pixels)}, step=step)
        if text.is_file():
            body = text.read_text(encoding="utf-8")
            if self.tb is not None:
                self.tb.add_text("val/reports", "    " + body.replace("\n", "\n    "), step)  # preformatted
            if self.wandb is not None:
                import wandb

                self.wandb.log({"val/reports": wandb.Html(f"<pre>{body}</pre>")}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None

    def truncate_after(self, step: int) -> None:
        """On resume: drop records of steps the resumed run will do again."""
        if not self.env.is_main or not self.path.is_file():
            return
        kept = [line for line in read_metrics(self.path, raw=True) if json.loads(line)["step"] <= step]
        write_text(self.path, "".join(line + "\n" for line in kept))


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
