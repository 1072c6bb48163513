"""The evaluation's pictures show the numbers they are drawn from: bar lengths are the per-class
F1 of each system, and each real film stands over the film generated from its report."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from unixcxr.evaluate import figures
from unixcxr.labels import OBSERVATIONS


def _block(f1: dict[str, float]) -> dict:
    per_class = {name: f1.get(name, 0.0) for name in OBSERVATIONS}
    return {"label_f1": {"uncertain_as_positive": {"per_class_f1": per_class}}}


def _bar_widths(chart: np.ndarray, colour: tuple[int, int, int]) -> list[int]:
    """Widths of the bars of one colour, top to bottom (the legend swatch left of the bars excluded)."""
    mask = np.all(chart[:, figures.LABEL_W:] == colour, axis=2)
    widths, previous = [], 0
    for row in mask:
        width = int(row.sum())
        if width and not previous:
            widths.append(width)
        previous = width
    return widths


def test_per_class_f1_chart_draws_every_class_of_every_system_to_scale(tmp_path):
    model = {name: (i + 1) / len(OBSERVATIONS) for i, name in enumerate(OBSERVATIONS)}
    baseline = {"Cardiomegaly": 0.5}
    path = figures.per_class_f1_chart({"model": _block(model), "baseline": _block(baseline)}, tmp_path / "f1.png")
    chart = np.asarray(Image.open(path).convert("RGB"))
    model_bars = _bar_widths(chart, figures.SYSTEM_COLOURS[0])
    assert len(model_bars) == len(OBSERVATIONS)
    expected = [max(1, figures.BAR_W * model[name]) for name in OBSERVATIONS]
    assert model_bars == pytest.approx(expected, abs=1.01)  # one bar per class, in order, length = F1
    baseline_bars = _bar_widths(chart, figures.SYSTEM_COLOURS[1])
    assert baseline_bars[1] == pytest.approx(figures.BAR_W * 0.5, abs=1.01)  # Cardiomegaly, second class
    assert len(baseline_bars) == len(OBSERVATIONS) and sorted(baseline_bars)[-2] <= 2  # the rest F1 0: a stub


def test_grid_puts_each_real_film_over_the_film_generated_from_its_report(tmp_path):
    real, fake = [], []
    for i in range(3):  # pair i: real film at grey 40 + 20 i, generated film at grey 200 - 20 i
        real.append(tmp_path / f"real{i}.png")
        fake.append(tmp_path / f"fake{i}.jpg")
        Image.fromarray(np.full((90, 120), 40 + 20 * i, np.uint8)).save(real[-1])
        Image.fromarray(np.full((100, 100), 200 - 20 * i, np.uint8)).save(fake[-1])
    path = figures.real_vs_generated_grid(real, fake, tmp_path / "grid.png", captions=["a", "b", "c"])
    grid = np.asarray(Image.open(path), dtype=float)
    tile, top = figures.GRID_TILE, figures.CAPTION_H
    left = grid.shape[1] - 3 * tile
    for i in range(3):
        x = left + i * tile + tile // 2
        assert grid[top + tile // 2, x] == pytest.approx(40 + 20 * i, abs=2)
        assert grid[top + tile + tile // 2, x] == pytest.approx(200 - 20 * i, abs=2)
    with pytest.raises(ValueError, match="no real / generated pairs"):
        figures.real_vs_generated_grid([], [], tmp_path / "none.png")
