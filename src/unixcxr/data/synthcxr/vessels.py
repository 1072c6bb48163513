"""Pulmonary vessels: branching trees grown from the hila, drawn as lines that thin and fade
towards the periphery. The same tree generator gives the air bronchograms of a consolidation."""

from __future__ import annotations

import numpy as np

from unixcxr.data.synthcxr import anatomy as geo
from unixcxr.data.synthcxr.anatomy import Anatomy
from unixcxr.data.synthcxr.config import DENSITY, RASTER, TREE
from unixcxr.data.synthcxr.raster import F32, Grid, local_layer, splat

TRUNK_GENERATIONS, TRUNK_OFFSET = 2, 0.003  # lobar trunks: three parallel lines this far apart
HILUM_SPREAD = np.array([0.01, 0.03])  # trunks leave from anywhere in a tall, narrow hilum
HILUM_SIZE = (0.03, 0.05)  # Gaussian radii of the hilar shadow, x and v


def vessel_segments(anat: Anatomy, sides: tuple[str, ...], rng: np.random.Generator, trunks: int | None = None,
                    generations: int | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Branching trees from the hila of `sides`, grown together one generation at a time:
    per generation (starts [N, 2], ends [N, 2], weights [N]). Also used for air bronchograms."""
    trunks, generations = trunks or TREE.trunks, generations or TREE.generations
    sign = np.repeat([geo.SIDE_SIGN[s] for s in sides], trunks)
    lateral_angles = np.tile(np.linspace(-1.25, 1.6, trunks), len(sides)) + rng.normal(0, 0.08, sign.size)
    angles = np.where(sign > 0, lateral_angles, np.pi - lateral_angles)  # lateral_angles > 0 point down
    hila = np.repeat([geo.hilum(anat, s) for s in sides], trunks, axis=0)
    starts = hila + rng.normal(0, 1, (sign.size, 2)) * HILUM_SPREAD
    lengths = rng.uniform(*TREE.trunk_length, sign.size)
    weights = np.ones(sign.size)
    out = []
    for _ in range(generations):
        ends = starts + lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        out.append((starts, ends, weights))
        n = len(angles)
        spread = rng.uniform(*TREE.spread, n)[:, None] * np.array([-0.5, 0.5])
        angles = (angles[:, None] + spread + rng.normal(0, TREE.jitter, (n, 2))).ravel()
        starts = np.repeat(ends, 2, axis=0)
        lengths = np.repeat(lengths, 2) * rng.uniform(*TREE.length_decay, 2 * n)
        weights = np.repeat(weights, 2) * TREE.weight_decay
    return out


def segment_points(segments, grid: Grid, thick: int = 0, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Dense samples along every segment (one vectorised step per generation). The first
    `thick` generations are drawn as three parallel lines `offset` apart (wider vessels)."""
    points, weights = [], []
    for g, (starts, ends, w) in enumerate(segments):
        delta = ends - starts
        lengths = np.hypot(delta[:, 0], delta[:, 1])
        count = max(2, int(np.ceil(lengths.max() / (grid.px * RASTER.line_step_px))))
        t = np.linspace(0.0, 1.0, count)[None, :, None]
        line = starts[:, None, :] + t * delta[:, None, :]  # [N, count, 2]
        weight = np.repeat(w * lengths / (count - 1) / (grid.px * RASTER.line_step_px), count)
        if g < thick:
            normal = np.stack([-delta[:, 1], delta[:, 0]], axis=1) / np.maximum(lengths, 1e-9)[:, None]
            line = np.concatenate([line + k * offset * normal[:, None, :] for k in (-1, 0, 1)])
            weight = np.tile(weight, 3)
        points.append(line.reshape(-1, 2))
        weights.append(weight)
    return np.concatenate(points), np.concatenate(weights)


def vessel_tree(anat: Anatomy, grid: Grid) -> np.ndarray:
    """Both vessel trees in one splat; the lobar trunks drawn wider."""
    rng = np.random.default_rng(anat.tree_seed)
    segments = vessel_segments(anat, tuple(geo.SIDE_SIGN), rng)
    points, weights = segment_points(segments, grid, TRUNK_GENERATIONS, TRUNK_OFFSET)
    return splat(grid, points, weights, TREE.width) * F32(DENSITY.vessel)


def hila(anat: Anatomy, grid: Grid) -> np.ndarray:
    out = np.zeros(grid.shape, dtype=F32)
    for side in geo.SIDE_SIGN:
        hx, hv = geo.hilum(anat, side)

        def draw(g: Grid, hx=hx, hv=hv) -> np.ndarray:
            rx, rv = HILUM_SIZE
            return np.exp(-(((g.x - F32(hx)) / F32(rx)) ** 2 + ((g.v - F32(hv)) / F32(rv)) ** 2))

        out += local_layer(grid, (hx - 0.07, hx + 0.07, hv - 0.11, hv + 0.11), draw)
    return out * F32(DENSITY.hilum)
