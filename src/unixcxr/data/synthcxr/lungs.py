"""Parenchymal findings: opacity, pneumonia, consolidation, atelectasis, edema, lung lesions.

They all act the same physical way: a share of lung air is replaced (`Layers.add_fill`),
which whitens the region and hides the vessels in proportion; what differs is the shape and
texture of the replaced region."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from unixcxr.data.synthcxr import anatomy as geo
from unixcxr.data.synthcxr.raster import F32, Grid, clamp, ramp, segment_distance, smooth_noise, splat, window
from unixcxr.data.synthcxr.thorax import Layers
from unixcxr.data.synthcxr.vessels import segment_points, vessel_segments

PATCH_CELLS = 14  # patchy textures: blobs across the film
MARGIN_CELLS, IRREGULARITY = 40, 0.7  # irregular outlines of air-space disease
BRONCHOGRAM_WIDTH, BRONCHOGRAM_AIR = 0.0045, 0.35
SEPTAL_WIDTH, SEPTAL_DENSITY, SEPTAL_LENGTH = 0.0025, 0.3, (0.01, 0.02)
EDEMA_SIGMA = (0.13, 0.16)  # perihilar haze, x and v
EDEMA_VESSEL_BLUR = 1.6  # pixels at 256 px
LESION_DENSITY = 0.12
LOBAR_GROWTH = 1.8  # a lobar consolidation spans its zone within this many region radii
FISSURE_SOFTNESS = 1.5  # pixels: the minor fissure gives a sharp lower border to the upper lobe


def _blob(grid: Grid, region: dict, softness: float, margins: np.ndarray | None = None) -> tuple[object, np.ndarray]:
    """(window, mask) of an elliptical region with edges `softness` times its radius wide;
    `margins` (a [S, S] field in [0, 1]) makes the outline irregular."""
    (cx, cv), r, aspect = region["centre"], region["radius"], region["aspect"]
    rx, rv = r * aspect, r / aspect
    win = window(grid, cx - 1.4 * rx, cx + 1.4 * rx, cv - 1.4 * rv, cv + 1.4 * rv)
    g = win.grid
    radius = np.sqrt(((g.x - F32(cx)) / F32(rx)) ** 2 + ((g.v - F32(cv)) / F32(rv)) ** 2)
    if margins is not None:
        radius = radius * (F32(1.0 - IRREGULARITY / 2) + F32(IRREGULARITY) * margins[win.rows, win.cols])
    return win, ramp(F32(1.0) - radius, max(softness, g.px / r))


def _apply(layers: Layers, win, mask: np.ndarray, side: str, fill: float, fissure: float | None = None):
    """Replace `fill` of the lung air inside mask (clipped to that lung)."""
    full = np.zeros(layers.grid.shape, dtype=F32)
    if fissure is not None:
        mask = mask * ramp(F32(fissure) - win.grid.v, FISSURE_SOFTNESS * layers.grid.px)
    win.paste(full, mask)
    full *= layers.lungs[side]
    layers.add_fill(full * F32(fill))
    return full


def _fissure(layers: Layers, params: dict, side: str) -> float | None:
    if side == "right" and params["zone"] == "upper":
        return geo.zone_span(layers.anatomy, side, "upper")[1]
    return None


def draw_lung_opacity(layers: Layers, params: dict, rng: np.random.Generator) -> None:
    """Hazy: a soft, faint veil the vessels show through. Patchy: blotches of denser air-space
    disease inside a soft region."""
    patches = smooth_noise(rng, layers.grid, PATCH_CELLS)
    margins = smooth_noise(rng, layers.grid, MARGIN_CELLS)
    for region in params["regions"]:
        win, mask = _blob(layers.grid, region, 0.9 if params["pattern"] == "hazy" else 0.5, margins)
        if params["pattern"] == "patchy":
            mask = mask * ramp(patches[win.rows, win.cols] - F32(0.35), 0.3)
        _apply(layers, win, mask, region["side"], params["fill"])


def draw_pneumonia(layers: Layers, params: dict, rng: np.random.Generator) -> None:
    """Patchy air-space opacity with ill-defined edges."""
    patches = smooth_noise(rng, layers.grid, PATCH_CELLS + 6)
    margins = smooth_noise(rng, layers.grid, MARGIN_CELLS)
    for region in params["regions"]:
        win, mask = _blob(layers.grid, region, 0.6, margins)
        mask = mask * (F32(0.35) + F32(0.65) * ramp(patches[win.rows, win.cols] - F32(0.3), 0.25))
        _apply(layers, win, mask, region["side"], params["fill"], _fissure(layers, params, region["side"]))


def draw_consolidation(layers: Layers, params: dict, rng: np.random.Generator) -> None:
    """Dense, homogeneous opacity; lobar ones fill their zone; optional air bronchograms."""
    grid, anat = layers.grid, layers.anatomy
    margins = smooth_noise(rng, grid, MARGIN_CELLS)
    for region in params["regions"]:
        side = region["side"]
        win, mask = _blob(grid, region, 0.25, margins)
        if params["extent"] == "lobar":  # the whole zone, within a wider ellipse
            top, bottom = geo.zone_span(anat, side, params["zone"])
            win, wide = _blob(grid, {**region, "radius": LOBAR_GROWTH * region["radius"]}, 0.3, margins)
            v = win.grid.v
            mask = wide * ramp(v - F32(top), 0.03) * ramp(F32(bottom + 0.1) - v, 0.03)
        region_mask = _apply(layers, win, mask, side, params["fill"], _fissure(layers, params, side))
        if params["air_bronchograms"]:
            tree = vessel_segments(anat, (side,), rng, trunks=6, generations=4)
            points, weights = segment_points(tree[1:], grid)
            airways = splat(grid, points, weights, BRONCHOGRAM_WIDTH)
            layers.lucent += airways * clamp(region_mask * F32(2.0) - F32(1.0), 0.0, 1.0) * F32(BRONCHOGRAM_AIR)


def draw_atelectasis(layers: Layers, params: dict, rng: np.random.Generator) -> None:
    """Linear / plate-like bands (volume loss is an anatomy change, see findings.modify_anatomy)."""
    grid = layers.grid
    for band in params["bands"]:
        (cx, cv), half, angle = band["centre"], band["length"] / 2, band["angle"]
        dx, dv = half * np.cos(angle), half * np.sin(angle)
        win = window(grid, cx - half - 0.02, cx + half + 0.02, cv - half - 0.02, cv + half + 0.02)
        dist = segment_distance(win.grid, (cx - dx, cv - dv), (cx + dx, cv + dv))
        _apply(layers, win, ramp(F32(band["thickness"] / 2) - dist, grid.px), band["side"], 0.92)


def draw_edema(layers: Layers, params: dict, rng: np.random.Generator) -> None:
    """Bilateral perihilar haze, indistinct vessels and (moderate / severe) septal lines."""
    grid, anat = layers.grid, layers.anatomy
    haze = np.zeros(grid.shape, dtype=F32)
    for side in geo.SIDE_SIGN:
        hx, hv = geo.hilum(anat, side)
        haze = np.maximum(haze, np.exp(-(((grid.x - F32(hx)) / F32(EDEMA_SIGMA[0])) ** 2
                                        + ((grid.v - F32(hv + 0.04)) / F32(EDEMA_SIGMA[1])) ** 2)))  # fmt: skip
    layers.add_fill(haze * (layers.lungs["right"] + layers.lungs["left"]) * F32(params["haze"]))
    blurred = gaussian_filter(layers.vessels, EDEMA_VESSEL_BLUR * grid.size / 256)
    blend = F32(min(1.0, 1.6 * params["haze"] + 0.2))
    layers.vessels = layers.vessels * (F32(1.0) - blend) + blurred * blend * F32(1.3)
    lines = [_septal_lines(anat, side, params["septal_lines"], rng) for side in geo.SIDE_SIGN]
    if params["septal_lines"]:
        points = np.concatenate([p for p in lines if len(p)])
        kerley = splat(grid, points, 1.0, SEPTAL_WIDTH) * (layers.lungs["right"] + layers.lungs["left"])
        layers.dense += kerley * F32(SEPTAL_DENSITY)


def _septal_lines(anat, side: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """Kerley B lines: short horizontal lines touching the lateral pleura at the bases."""
    sign, bottom = geo.SIDE_SIGN[side], geo.sulcus_level(anat, side)
    points = []
    for _ in range(count):
        v = rng.uniform(bottom - 0.16, bottom - 0.03)
        wall = float(geo.chest_wall(anat, np.float32(v), side))
        length = rng.uniform(*SEPTAL_LENGTH)
        d = np.linspace(wall - length, wall - 0.002, 16)
        points.append(np.stack([anat.midline + sign * d, np.full_like(d, v)], axis=1))
    return np.concatenate(points) if points else np.zeros((0, 2))


def draw_lung_lesion(layers: Layers, params: dict, rng: np.random.Generator) -> None:
    """Round nodules or a lobulated mass with well-defined margins."""
    grid = layers.grid
    for lesion in params["lesions"]:
        (cx, cv), r = lesion["centre"], lesion["radius"]
        win = window(grid, cx - 1.3 * r, cx + 1.3 * r, cv - 1.3 * r, cv + 1.3 * r)
        g = win.grid
        dx, dv = g.x - F32(cx), g.v - F32(cv)
        theta = np.arctan2(dv, dx)
        edge = F32(r) * (F32(1.0) + F32(lesion["lobulation"]) * np.cos(F32(3.0) * theta + F32(rng.uniform(0, 6.3))))
        mask = ramp(edge - np.hypot(dx, dv), grid.px)
        full = _apply(layers, win, mask, params["side"], 0.97)
        layers.dense += full * F32(LESION_DENSITY)
