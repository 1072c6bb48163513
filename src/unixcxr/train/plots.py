"""Loss curves of a stage as a PNG beside its metrics.jsonl: one panel per loss term (training
curve and validation points). Drawn with matplotlib when it is installed, else with PIL alone
(plain axes, ticks and legend), so a run folder always shows how training went."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from unixcxr.files import atomic_output
from unixcxr.train.metrics import read_metrics

PANEL_W, PANEL_H, MARGIN = 480, 300, 48
TRAIN_COLOUR, VAL_COLOUR, AXIS_COLOUR = (31, 119, 180), (214, 39, 40), (60, 60, 60)
SKIP = {"step", "split", "lr", "tokens_per_s", "steps_per_s", "seconds_per_step", "data_fraction", "mfu", "grad_norm"}
TICKS = 5


def loss_series(records: list[dict]) -> dict[str, tuple[list, list]]:
    """name -> (train points, val points), each a list of (step, value); log-scaled names first."""
    names = []
    for r in records:
        names += [k for k, v in r.items() if k not in SKIP and isinstance(v, int | float) and k not in names]
    out = {}
    for name in names:
        train = [(r["step"], r[name]) for r in records if r.get("split") != "val" and _finite(r.get(name))]
        val = [(r["step"], r[name]) for r in records if r.get("split") == "val" and _finite(r.get(name))]
        if train or val:
            out[name] = (train, val)
    return out


def _finite(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def plot_metrics(metrics_file: Path, out_png: Path, title: str = "") -> Path | None:
    """Write out_png (atomically) from metrics_file; None when there is nothing to draw yet."""
    if not Path(metrics_file).is_file():
        return None
    series = loss_series(read_metrics(metrics_file))
    if not series:
        return None
    return plot_series(series, out_png, title)


def plot_series(series: dict[str, tuple[list, list]], out_png: Path, title: str = "", xlabel: str = "step",
                labels: tuple[str, str] = ("train", "val")) -> Path:
    """One panel per name: a line of (x, y) points and a set of marked points (train / val curves by
    default; `labels` names them); written atomically."""
    with atomic_output(out_png) as tmp:
        try:
            _matplotlib(series, tmp, title, xlabel, labels)
        except ImportError:
            _pil(series, title, labels).save(tmp, format="PNG")
    return Path(out_png)


def _matplotlib(series: dict, path: Path, title: str, xlabel: str = "step",
                labels: tuple[str, str] = ("train", "val")) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(4.8 * len(series), 3.2), squeeze=False)
    for ax, (name, (train, val)) in zip(axes[0], series.items()):
        if train:
            ax.plot(*zip(*train), color=[c / 255 for c in TRAIN_COLOUR], label=labels[0])
        if val:
            ax.plot(*zip(*val), "o-", color=[c / 255 for c in VAL_COLOUR], label=labels[1])
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _pil(series: dict, title: str, labels: tuple[str, str] = ("train", "val")) -> Image.Image:
    canvas = Image.new("RGB", (PANEL_W * len(series), PANEL_H + MARGIN // 2), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((MARGIN, 4), title, fill=AXIS_COLOUR, font=font)
    for i, (name, (train, val)) in enumerate(series.items()):
        _panel(draw, font, i * PANEL_W, MARGIN // 2, name, train, val, labels)
    return canvas


def _panel(draw: ImageDraw.ImageDraw, font, x0: int, y0: int, name: str, train: list, val: list,
           labels: tuple[str, str] = ("train", "val")) -> None:
    points = train + val
    steps = [p[0] for p in points]
    values = [p[1] for p in points]
    s_lo = min(steps)
    s_hi = max(steps) if max(steps) > s_lo else s_lo + 1
    v_lo, v_hi = min(values), max(values)
    if v_hi - v_lo < 1e-12:
        v_lo, v_hi = v_lo - 1.0, v_hi + 1.0
    left, top, right, bottom = x0 + MARGIN, y0 + MARGIN // 2, x0 + PANEL_W - MARGIN // 2, y0 + PANEL_H - MARGIN

    def xy(step, value):
        return (left + (step - s_lo) / (s_hi - s_lo) * (right - left),
                bottom - (value - v_lo) / (v_hi - v_lo) * (bottom - top))

    draw.rectangle([left, top, right, bottom], outline=AXIS_COLOUR)
    for k in range(TICKS + 1):
        value = v_lo + (v_hi - v_lo) * k / TICKS
        y = xy(s_lo, value)[1]
        draw.line([left - 3, y, left, y], fill=AXIS_COLOUR)
        draw.text((x0 + 2, y - 5), f"{value:.3g}", fill=AXIS_COLOUR, font=font)
        step = s_lo + (s_hi - s_lo) * k / TICKS
        x = xy(step, v_lo)[0]
        draw.line([x, bottom, x, bottom + 3], fill=AXIS_COLOUR)
        draw.text((x - 10, bottom + 5), f"{step:.4g}", fill=AXIS_COLOUR, font=font)
    draw.text((left + 4, top + 2), name, fill=AXIS_COLOUR, font=font)
    if len(train) > 1:
        draw.line([xy(*p) for p in train], fill=TRAIN_COLOUR, width=2)
    for p in val:
        x, y = xy(*p)
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=VAL_COLOUR)
    draw.text((right - 70, top + 2), labels[0], fill=TRAIN_COLOUR, font=font)
    draw.text((right - 70, top + 14), labels[1], fill=VAL_COLOUR, font=font)
