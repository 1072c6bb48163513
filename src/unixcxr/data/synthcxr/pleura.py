"""Pleural findings: effusion, pneumothorax, pleural thickening and calcified plaques.

All are measured from the pleural surface: `wall_distance` is how deep a pixel lies inside
its lung, from the chest wall (and, for the apex, from the lung top)."""

from __future__ import annotations

import numpy as np

from unixcxr.data.synthcxr import anatomy as geo
from unixcxr.data.synthcxr.config import DENSITY
from unixcxr.data.synthcxr.raster import F32, clamp, ellipse, ramp, smooth_noise, window
from unixcxr.data.synthcxr.thorax import Layers

EFFUSION_FILL = 0.97
MENISCUS_MEDIAL = 0.45  # the fluid surface is this share of its lateral height at the midline
PLEURAL_LINE_DENSITY = 0.35
PNEUMOTHORAX_AIR = 0.12
APICAL_REACH = 0.22  # an apical pneumothorax tapers out this far below the apex
PLAQUE_WIDTH = 0.005
THICKENING_DENSITY = 0.2  # fibrous pleura is a little denser than the soft tissue it replaces air with


def _hemithorax_window(layers: Layers, side: str):
    anat = layers.anatomy
    inner, outer = anat.midline, anat.midline + geo.SIDE_SIGN[side] * (anat.lung_half_width + 0.03)
    return window(layers.grid, min(inner, outer), max(inner, outer), anat.apex - 0.03,
                  geo.sulcus_level(anat, side) + 0.02)  # fmt: skip


def wall_distance(layers: Layers, g, side: str, apical: bool = True) -> np.ndarray:
    """Depth inside the lung from the lateral chest wall (and the apex, when `apical`)."""
    anat = layers.anatomy
    d = geo.lateral(anat, g.x, side)
    depth = geo.chest_wall(anat, g.v, side) - d
    return np.minimum(depth, g.v - geo.lung_top(anat, d)) if apical else depth


def _sides(params: dict) -> tuple[str, ...]:
    return ("right", "left") if params["side"] == "bilateral" else (params["side"],)


def draw_pleural_effusion(layers: Layers, params: dict, rng: np.random.Generator) -> None:
    """Dependent fluid with a meniscus climbing the lateral wall; it blunts the costophrenic
    angle and hides the hemidiaphragm."""
    anat = layers.anatomy
    for side in _sides(params):
        height = params["heights"][side]
        win = _hemithorax_window(layers, side)
        g = win.grid
        q = clamp(geo.lateral(anat, g.x, side) / F32(anat.lung_half_width), 0.0, 1.0)
        climb = F32(MENISCUS_MEDIAL) + F32(1 - MENISCUS_MEDIAL) * q * q  # fluid climbs the lateral wall
        surface = F32(geo.sulcus_level(anat, side)) - F32(height) * climb
        fluid = ramp(g.v - surface, 0.015 + 0.2 * height)
        full = win.paste(np.zeros(layers.grid.shape, dtype=F32), fluid) * layers.lungs[side]
        layers.add_fill(full * F32(EFFUSION_FILL))


def draw_pneumothorax(layers: Layers, params: dict, rng: np.random.Generator) -> None:
    """A visceral pleural line separated from the chest wall by lucent space without vessels."""
    anat, grid = layers.anatomy, layers.grid
    side, gap = params["side"], params["gap"]
    win = _hemithorax_window(layers, side)
    g = win.grid
    depth = wall_distance(layers, g, side)
    if params["location"] == "apical":
        reach = clamp((F32(anat.apex + APICAL_REACH) - g.v) / F32(APICAL_REACH), 0.0, 1.0)
    else:  # along the lateral wall, fading only near the costophrenic angle
        reach = clamp((F32(geo.sulcus_level(anat, side) - 0.02) - g.v) / F32(0.12), 0.0, 1.0)
    width = F32(gap) * np.sqrt(reach)
    space = ramp(width - depth, grid.px) * (width > grid.px)
    line = np.exp(-(((depth - width) / F32(0.8 * grid.px)) ** 2)) * (width > 2 * grid.px)
    lung = layers.lungs[side]
    space_full = win.paste(np.zeros(grid.shape, dtype=F32), space) * lung
    line_full = win.paste(np.zeros(grid.shape, dtype=F32), line) * lung
    layers.vessels = layers.vessels * (F32(1.0) - space_full)
    layers.lucent += space_full * F32(PNEUMOTHORAX_AIR)
    layers.dense += line_full * F32(PLEURAL_LINE_DENSITY)


def draw_pleural_other(layers: Layers, params: dict, rng: np.random.Generator) -> None:
    """Smooth or nodular pleural thickening along the wall, an apical cap, or calcified plaques."""
    if params["kind"] == "plaques":
        _draw_plaques(layers, params)
        return
    anat, grid = layers.anatomy, layers.grid
    wobble = smooth_noise(rng, grid, 10)
    for side in _sides(params):
        win = _hemithorax_window(layers, side)
        g = win.grid
        thickness = F32(params["thickness"]) * (F32(0.6) + F32(0.8) * wobble[win.rows, win.cols])
        if params["kind"] == "apical_cap":
            d = geo.lateral(anat, g.x, side)
            band = ramp(thickness * F32(1.5) - (g.v - geo.lung_top(anat, d)), grid.px)
            band = band * ramp(F32(anat.apex + 0.1) - g.v, 0.04)
        else:
            top, bottom = geo.zone_span(anat, side, "upper")[0], geo.sulcus_level(anat, side)
            lo, hi = (top + f * (bottom - top) for f in params["span"])
            band = ramp(thickness - wall_distance(layers, g, side, apical=False), grid.px)
            band = band * ramp(g.v - F32(lo), 0.03) * ramp(F32(hi) - g.v, 0.03)
        full = win.paste(np.zeros(grid.shape, dtype=F32), band) * layers.lungs[side]
        layers.add_fill(full * F32(0.95))
        layers.dense += full * F32(THICKENING_DENSITY)


def _draw_plaques(layers: Layers, params: dict) -> None:
    """Calcified plaques: thin bright streaks along the lateral wall, or on the diaphragm when
    placed low."""
    anat, grid = layers.anatomy, layers.grid
    for plaque in params["plaques"]:
        side, sign = plaque["side"], geo.SIDE_SIGN[plaque["side"]]
        top, bottom = anat.apex + 0.08, geo.sulcus_level(anat, side)
        length = plaque["length"]
        if plaque["height"] > 0.9:  # on the hemidiaphragm: a horizontal streak
            d = (0.35 + 0.4 * (plaque["height"] - 0.9) / 0.1) * anat.lung_half_width
            cx, cv = anat.midline + sign * d, float(geo.dome(anat, np.float32(d), side)) - 0.004
            rx, rv = length / 2, PLAQUE_WIDTH / 2
        else:
            cv = top + plaque["height"] * (bottom - top)
            cx = anat.midline + sign * (float(geo.chest_wall(anat, np.float32(cv), side)) - 0.006)
            rx, rv = PLAQUE_WIDTH / 2, length / 2
        win = window(grid, cx - rx - 0.01, cx + rx + 0.01, cv - rv - 0.01, cv + rv + 0.01)
        win.paste(layers.dense, ellipse(win.grid, cx, cv, rx, rv) * F32(DENSITY.calcium))
