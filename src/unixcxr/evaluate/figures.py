"""The two pictures an evaluation leaves beside metrics.json: a per-class F1 chart (which
observations the reports get right, against the baselines) and a grid of real films over the
films generated from their reports (what the FD number is about). Drawn with PIL alone, so they
appear on every installation, and written atomically like every other output."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from unixcxr.data.images import letterbox, load_image, to_uint8
from unixcxr.files import atomic_output
from unixcxr.labels import OBSERVATIONS

F1_CHART, GRID = "per_class_f1.png", "real_vs_generated.png"
PAIRS, UTILITY_CHART = "privacy_closest_pairs.png", "utility_auroc.png"
CHART_MAPPING = "uncertain_as_positive"  # the mapping of the paper's headline numbers
SYSTEM_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))
INK, GRIDLINE = (40, 40, 40), (225, 225, 225)
LABEL_W, BAR_W, BAR_H, ROW_GAP, MARGIN = 190, 420, 7, 6, 12
GRID_TILE, GRID_COLUMNS, CAPTION_H = 160, 8, 14


def _save(image: Image.Image, path: Path) -> Path:
    path = Path(path)
    with atomic_output(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def per_class_f1_chart(blocks: dict[str, dict], path: str | Path, mapping: str = CHART_MAPPING) -> Path:
    """Horizontal bars of per-class F1, one group per observation, one bar per system.

    `blocks` maps a system name to a report-metrics result (report_metrics / benchmark "reports").
    """
    values = {system: block["label_f1"][mapping]["per_class_f1"] for system, block in blocks.items()}
    return per_class_chart(values, path, f"per-class F1 ({mapping.replace('_', ' ')})")


def per_class_chart(values: dict[str, dict[str, float | None]], path: str | Path, title: str) -> Path:
    """Horizontal bars of a [0, 1] score per observation, one bar per system ({system: {observation:
    value}}; a missing or None value draws no bar)."""
    font = ImageFont.load_default()
    systems = list(values)[: len(SYSTEM_COLOURS)]
    group_h = len(systems) * BAR_H + ROW_GAP
    legend_h = 14 * len(systems) + MARGIN
    height = 2 * MARGIN + 16 + legend_h + group_h * len(OBSERVATIONS) + 16
    width = LABEL_W + BAR_W + 60
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, MARGIN), title, fill=INK, font=font)
    for i, system in enumerate(systems):
        y = MARGIN + 18 + 14 * i
        draw.rectangle([MARGIN, y + 2, MARGIN + 10, y + 10], fill=SYSTEM_COLOURS[i])
        draw.text((MARGIN + 16, y), system, fill=INK, font=font)
    top = MARGIN + 16 + legend_h
    bottom = top + group_h * len(OBSERVATIONS)
    for tick in range(0, 11, 2):  # gridlines at 0, 0.2, ..., 1
        x = LABEL_W + BAR_W * tick / 10
        draw.line([x, top, x, bottom], fill=GRIDLINE)
        draw.text((x - 8, bottom + 2), f"{tick / 10:.1f}", fill=INK, font=font)
    for row, name in enumerate(OBSERVATIONS):
        y0 = top + row * group_h
        draw.text((MARGIN, y0 + group_h / 2 - 7), name, fill=INK, font=font)
        present = [values[s].get(name) for s in systems if values[s].get(name) is not None]
        for i, system in enumerate(systems):
            value = values[system].get(name)
            if value is None:
                continue
            y = y0 + i * BAR_H
            draw.rectangle([LABEL_W, y, LABEL_W + max(1, BAR_W * value), y + BAR_H - 1], fill=SYSTEM_COLOURS[i])
        if present:
            best = max(present)
            draw.text((LABEL_W + BAR_W * best + 4, y0 + group_h / 2 - 7), f"{best:.2f}", fill=INK, font=font)
    return _save(canvas, path)


def _tile(path: str | Path) -> Image.Image:
    """A film letterboxed into a GRID_TILE square, as 8-bit grayscale."""
    return Image.fromarray(to_uint8(letterbox(load_image(path, min_size=GRID_TILE), GRID_TILE)))


def real_vs_generated_grid(real: Sequence[str | Path], generated: Sequence[str | Path], path: str | Path,
                           captions: Sequence[str] = (), columns: int = GRID_COLUMNS,
                           row_labels: tuple[str, str] = ("real", "generated")) -> Path:
    """Real films (top row of each pair) over the films generated from their reports (bottom row),
    the first `columns` pairs; a caption (study id, or a similarity) above each pair."""
    pairs = list(zip(real, generated))[:columns]
    if not pairs:
        raise ValueError("no real / generated pairs to draw")
    captions = list(captions)[: len(pairs)] + [""] * (len(pairs) - len(captions))
    font = ImageFont.load_default()
    label_w = 70
    canvas = Image.new("L", (label_w + GRID_TILE * len(pairs), CAPTION_H + 2 * GRID_TILE), 255)
    draw = ImageDraw.Draw(canvas)
    draw.text((4, CAPTION_H + GRID_TILE // 2), row_labels[0][:11], fill=0, font=font)
    draw.text((4, CAPTION_H + 3 * GRID_TILE // 2), row_labels[1][:11], fill=0, font=font)
    for column, ((real_path, fake_path), caption) in enumerate(zip(pairs, captions)):
        x = label_w + column * GRID_TILE
        draw.text((x + 2, 1), caption[:24], fill=0, font=font)
        canvas.paste(_tile(real_path), (x, CAPTION_H))
        canvas.paste(_tile(fake_path), (x, CAPTION_H + GRID_TILE))
    return _save(canvas, path)
