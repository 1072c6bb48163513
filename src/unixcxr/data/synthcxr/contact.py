"""A contact sheet: a grid of studies with their drawn findings written under each film, to
look at what the generator makes (and check that each finding is where the report says)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from unixcxr.data.synthcxr.study import render_study
from unixcxr.data.synthcxr.writer import write_atomic

CAPTION_COLOUR, INDEX_COLOUR = (255, 80, 80), (255, 230, 0)
SIDE_MARK = {"right": "R", "left": "L", "bilateral": "B"}


def caption(study) -> list[str]:
    """One short line per drawn finding: name, side, '?' when the report hedges it."""
    lines = []
    for finding in study.spec.findings:
        side = SIDE_MARK.get(finding.params.get("side", ""), "")
        lines.append(f"{finding.observation}{' ' + side if side else ''}{'?' if finding.hedged else ''}")
    return lines or ["normal"]


def contact_sheet(path: str | os.PathLike, seed: int = 0, size: int = 256, count: int = 16, start: int = 0,
                  columns: int = 4) -> Path:
    """Render studies start .. start+count-1 into one PNG grid at `path`; returns the path."""
    tiles = []
    for index in range(start, start + count):
        study = render_study(index, seed, size)
        tile = Image.fromarray(study.image).convert("RGB")
        draw = ImageDraw.Draw(tile)
        lines = caption(study)
        draw.text((3, 2), str(index), fill=INDEX_COLOUR)
        text = "\n".join(lines)
        height = draw.multiline_textbbox((0, 0), text)[3]
        draw.multiline_text((3, size - height - 3), text, fill=CAPTION_COLOUR)
        tiles.append(np.asarray(tile))
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r : r + columns], axis=1) for r in range(0, len(tiles), columns)]
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(rows, axis=0)).save(buffer, format="PNG")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())
    return path
