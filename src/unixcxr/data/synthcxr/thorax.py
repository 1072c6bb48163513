"""Rendering the normal chest into density layers.

A film is a map of X-ray attenuation. We keep it as separate layers (soft tissue, lung air,
bone, vessels, ...) because findings act on them differently: fluid and consolidation replace
lung air and hide the vessels, a pneumothorax removes the vessels and adds air, devices add
metal. `Layers.density` composes them; acquisition.develop turns density into a film."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unixcxr.data.synthcxr import anatomy as geo
from unixcxr.data.synthcxr.anatomy import Anatomy
from unixcxr.data.synthcxr.config import DENSITY
from unixcxr.data.synthcxr.raster import (
    F32,
    Grid,
    chord,
    clamp,
    ellipse,
    fraction,
    local_layer,
    ramp,
    segment_distance,
    smooth_noise,
)
from unixcxr.data.synthcxr.vessels import hila, vessel_tree

SHOULDER_RISE = 0.22  # extra body half-width at the top of the film (shoulders, arms) ...
SHOULDER_HEIGHT, AXILLA_BELOW_CLAVICLE = 0.24, 0.1  # ... reached over this height above the axillae
HUMERAL_HEAD = (0.5, -0.015, 0.06)  # lateral offset, height below the clavicles, radius
NECK_HALF_WIDTH, NECK_ABOVE_CLAVICLE, SHOULDER_SLOPE = 0.075, 0.2, 0.6
SPINE_HALF_WIDTH = 0.03
PEDICLE_OFFSET, PEDICLE_RADIUS = 0.021, 0.0065
RIB_STRETCH = 0.5  # lower ribs are further apart: period grows by this much per film height
RIB_COUNT = 11
RIB_WIDTH_JITTER = 0.15
FRACTURE_REACH = 0.8  # rib periods around a broken rib that its displaced fragment drags along
RIB_EXTENT = 0.02  # ribs run this far beyond the lung edge
ANTERIOR_SLOPE, ANTERIOR_PERIOD, ANTERIOR_START, ANTERIOR_CONTRAST = 0.16, 1.25, 0.3, 0.45
CLAVICLE_THICKNESS = 0.022
BORDER_SAMPLES = 2048  # the cardiac borders are tabulated over the film's height, then looked up
PARENCHYMA_MOTTLE, PARENCHYMA_CELLS = 0.14, 44
ABDOMEN_RIB_FADE = 0.85  # lower ribs behind the upper abdomen barely show
BASE_THINNING, BASE_DEPTH = 0.08, 0.75  # lungs hold less air over the domes' last 0.08
CORTEX_WIDTH = 0.12  # share of a bone's width drawn as bright cortex


@dataclass
class Layers:
    """Density layers of one film, each [S, S] float32."""

    grid: Grid
    anatomy: Anatomy
    soft: np.ndarray
    air: np.ndarray  # lung air depth (positive, subtracted)
    lungs: dict[str, np.ndarray]  # side -> soft lung mask
    vessels: np.ndarray
    bone: np.ndarray
    fill: np.ndarray = field(init=False)  # share of lung air replaced by fluid / tissue
    dense: np.ndarray = field(init=False)  # extra tissue density (nodules, plaques, lines)
    lucent: np.ndarray = field(init=False)  # extra air (pneumothorax, bronchograms)
    metal: np.ndarray = field(init=False)

    def __post_init__(self):
        zeros = np.zeros_like(self.soft)
        self.fill, self.dense, self.lucent, self.metal = zeros, zeros.copy(), zeros.copy(), zeros.copy()

    def add_fill(self, amount: np.ndarray) -> None:
        """Replace a share of the remaining lung air (independent processes combine)."""
        self.fill = F32(1.0) - (F32(1.0) - self.fill) * (F32(1.0) - clamp(amount, 0.0, 1.0))

    def density(self) -> np.ndarray:
        lung = (self.vessels - self.air) * (F32(1.0) - self.fill)
        return self.soft + self.bone + self.dense + self.metal + lung - self.lucent


def render_anatomy(anat: Anatomy, grid: Grid, fracture: dict | None = None) -> Layers:
    """All normal structures; `fracture` (side, rib, position, step, gap) breaks one rib."""
    central = _mediastinum_and_heart(anat, grid)
    lungs = {side: _lung_mask(anat, grid, side) * (F32(1.0) - central) for side in geo.SIDE_SIGN}
    lung_any = lungs["right"] + lungs["left"]
    texture = np.random.default_rng(anat.tree_seed + 1)
    mottle = F32(1.0) - F32(PARENCHYMA_MOTTLE) * smooth_noise(texture, grid, PARENCHYMA_CELLS)
    air = (_lung_depth(anat, grid, lungs, "right") + _lung_depth(anat, grid, lungs, "left")) * (
        F32(anat.lung_air) * mottle)
    air = air + _trachea(anat, grid) * F32(DENSITY.trachea_air) + _gastric_bubble(anat, grid)
    bone = _spine(anat, grid) + _clavicles(anat, grid) + _humeral_heads(anat, grid)
    below = ramp(grid.v - F32(geo.dome_peak(anat, "left")), 0.08)  # ribs fade over the abdomen
    for side in geo.SIDE_SIGN:
        broken = fracture if fracture and fracture["side"] == side else None
        bone = bone + _ribs(anat, grid, side, broken) * (F32(1.0) - F32(ABDOMEN_RIB_FADE) * below)
    vessels = vessel_tree(anat, grid) * lung_any + hila(anat, grid)
    return Layers(grid, anat, _soft_tissue(anat, grid), air, lungs, vessels, bone * F32(anat.bone))


def _hemithorax(anat: Anatomy, side: str, below: float = 0.02) -> tuple[float, float, float, float]:
    inner, outer = anat.midline, anat.midline + geo.SIDE_SIGN[side] * (anat.lung_half_width + 0.04)
    return min(inner, outer), max(inner, outer), anat.apex - 0.05, geo.sulcus_level(anat, side) + below


def _lung_mask(anat: Anatomy, grid: Grid, side: str) -> np.ndarray:
    def draw(g: Grid) -> np.ndarray:
        d, v, px = geo.lateral(anat, g.x, side), g.v, g.px
        mask = ramp(geo.chest_wall(anat, v, side) - d, px) * ramp(v - geo.lung_top(anat, d), px)
        return mask * ramp(geo.dome(anat, d, side) - v, px) * ramp(d - F32(0.01), px)

    return local_layer(grid, _hemithorax(anat, side), draw)


def _lung_depth(anat: Anatomy, grid: Grid, lungs: dict[str, np.ndarray], side: str) -> np.ndarray:
    """Air path length in one lung: thickest mid-lung, thin at the apex, edges and bases."""
    w = anat.lung_half_width

    def draw(g: Grid) -> np.ndarray:
        d = geo.lateral(anat, g.x, side)
        across = F32(0.45) + F32(0.55) * chord(d - F32(0.55 * w), 0.6 * w)
        apex = clamp((g.v - F32(anat.apex)) * F32(1.0 / 0.12), 0.35, 1.0)
        base = clamp((geo.dome(anat, d, side) - g.v) * F32(1.0 / BASE_THINNING), BASE_DEPTH, 1.0)
        return across * apex * base

    return local_layer(grid, _hemithorax(anat, side), draw) * lungs[side]


def _mediastinum_and_heart(anat: Anatomy, grid: Grid) -> np.ndarray:
    """Soft mask of the cardiomediastinal silhouette (see anatomy.cardiac_borders)."""
    heights = np.linspace(0.0, 1.0, BORDER_SAMPLES, dtype=F32)
    right_table, left_table = geo.cardiac_borders(anat, heights)  # [BORDER_SAMPLES] each
    x0, x1 = anat.midline - float(right_table.max()) - 0.01, anat.midline + float(left_table.max()) + 0.01

    def draw(g: Grid) -> np.ndarray:
        row = (clamp(g.v, 0.0, 1.0) * F32(BORDER_SAMPLES - 1) + F32(0.5)).astype(np.int32)
        off = g.x - F32(anat.midline)
        return ramp(off + right_table[row], g.px) * ramp(left_table[row] - off, g.px)

    return local_layer(grid, (x0, x1, 0.0, 1.0), draw)


def _soft_tissue(anat: Anatomy, grid: Grid) -> np.ndarray:
    x, v = grid.x, grid.v
    axilla = F32(anat.clavicle_level + AXILLA_BELOW_CLAVICLE)
    half = geo.chest_wall(anat, np.maximum(v, axilla), "left") + F32(anat.body_margin)
    rise = clamp((axilla - v) * F32(1.0 / SHOULDER_HEIGHT), 0.0, 1.0)
    half = half + F32(SHOULDER_RISE) * rise * rise * (F32(3.0) - F32(2.0) * rise)  # smooth shoulders
    off = np.abs(x - F32(anat.midline))
    shoulder_line = F32(anat.clavicle_level - NECK_ABOVE_CLAVICLE) + F32(SHOULDER_SLOPE) * np.maximum(
        off - F32(NECK_HALF_WIDTH), F32(0.0)) ** 2  # the trapezius slopes from the neck to the shoulder
    body = ramp(half - off, grid.px) * ramp(v - shoulder_line, 2 * grid.px)
    soft = body * (F32(0.35) + F32(0.65) * chord(off, half * 1.02))
    if anat.female:
        for side in geo.SIDE_SIGN:
            cx = anat.midline + geo.SIDE_SIGN[side] * anat.lung_half_width * 0.72
            cv = geo.dome_peak(anat, side) - 0.03

            def breast(g: Grid, cx=cx, cv=cv) -> np.ndarray:
                return ellipse(g, cx, cv, 0.17, 0.12) * ramp(g.v - F32(cv - 0.03), 0.08)

            body = ramp(half - off, 0.03)
            soft = soft + local_layer(grid, (cx - 0.17, cx + 0.17, cv - 0.12, cv + 0.12), breast) * body * F32(
                DENSITY.breast)
    return soft * F32(anat.soft_tissue)


def _trachea(anat: Anatomy, grid: Grid) -> np.ndarray:
    """Air column down to the carina, then the two main bronchi (the left one longer and
    more horizontal)."""
    tx, w = anat.midline - 0.004, anat.trachea_half_width

    def draw(g: Grid) -> np.ndarray:
        column = ramp(F32(w) - np.abs(g.x - F32(tx)), g.px) * ramp(F32(anat.carina) - g.v, g.px)
        for sign, length, angle in ((-1.0, 0.05, 0.5), (1.0, 0.065, 0.85)):
            end = (tx + sign * length * np.sin(angle), anat.carina + length * np.cos(angle))
            dist = segment_distance(g, (tx, anat.carina - w), end)
            column = np.maximum(column, ramp(F32(0.8 * w) - dist, g.px))
        return column

    return local_layer(grid, (tx - 0.07, tx + 0.07, 0.0, anat.carina + 0.07), draw)


def _gastric_bubble(anat: Anatomy, grid: Grid) -> np.ndarray:
    if anat.gastric_bubble <= 0:
        return np.zeros(grid.shape, dtype=F32)
    r, d = anat.gastric_bubble, anat.lung_half_width * 0.45
    cx, cv = anat.midline + d, float(geo.dome(anat, np.float32(d), "left")) + r + 0.012

    def draw(g: Grid) -> np.ndarray:
        return ellipse(g, cx, cv, 1.4 * r, r) * ramp(F32(cv + 0.3 * r) - g.v, g.px)  # air over a fluid level

    return local_layer(grid, (cx - 1.4 * r, cx + 1.4 * r, cv - r, cv + r), draw) * F32(DENSITY.gastric_air)


def _spine(anat: Anatomy, grid: Grid) -> np.ndarray:
    """Vertebral column: bodies with darker disc spaces and paired pedicles."""

    def draw(g: Grid) -> np.ndarray:
        off = np.abs(g.x - F32(anat.midline))
        phase = fraction(g.v / F32(anat.rib_spacing * 0.95))
        discs = F32(1.0) - F32(0.35) * np.exp(-(((phase - F32(0.92)) / F32(0.06)) ** 2))
        body = chord(off, SPINE_HALF_WIDTH) * discs
        ped = ((off - F32(PEDICLE_OFFSET)) / F32(PEDICLE_RADIUS)) ** 2 + ((phase - F32(0.4)) / F32(0.22)) ** 2
        return body + clamp(F32(1.0) - ped, 0.0, 1.0) * F32(0.6)

    half = SPINE_HALF_WIDTH
    spine = local_layer(grid, (anat.midline - half, anat.midline + half, 0.0, 1.0), draw)
    return spine * F32(DENSITY.spine / max(anat.bone, 1e-3))


def _ribs(anat: Anatomy, grid: Grid, side: str, fracture: dict | None) -> np.ndarray:
    """Posterior ribs (bright, arching down from the spine) and fainter anterior ribs (sloping
    down towards the midline) of one side."""
    return local_layer(grid, _hemithorax(anat, side, below=0.15), lambda g: _rib_bands(anat, g, side, fracture))


def _rib_bands(anat: Anatomy, grid: Grid, side: str, fracture: dict | None) -> np.ndarray:
    """All ribs of a side at once: each pixel's rib phase follows the rib's course, its integer
    part numbers the rib and its fraction says bone or intercostal space."""
    d = geo.lateral(anat, grid.x, side)
    q = clamp(d / F32(anat.lung_half_width), 0.0, 1.4)
    phase = _rib_phase(anat, grid.v - _posterior_arch(anat, q))
    if fracture is not None:  # the lateral fragment steps off; the shift fades out before the next ribs
        offset = np.abs(phase - F32(fracture["rib"] - 1 + anat.rib_width / 2))
        fade = clamp(F32(1.0) - offset * F32(1.0 / FRACTURE_REACH), 0.0, 1.0) * (q > F32(fracture["position"]))
        phase = phase + F32(fracture["step"]) * np.minimum(fade * F32(2.0), F32(1.0))
    posterior = _bone_band(phase, _rib_widths(anat, phase), grid.px / anat.rib_spacing) * (phase < F32(RIB_COUNT))
    if fracture is not None:
        gap = np.abs(q - F32(fracture["position"])) < F32(fracture["gap"] / 2)
        posterior = posterior * ~(gap & (np.abs(phase - F32(fracture["rib"] - 1 + anat.rib_width / 2)) < 0.6))
    slope = F32(ANTERIOR_SLOPE) * (F32(1.0) - q)
    anterior_phase = (grid.v + slope - F32(anat.apex + 0.06)) / F32(anat.rib_spacing * ANTERIOR_PERIOD)
    anterior = _bone_band(anterior_phase, anat.rib_width, grid.px / anat.rib_spacing) * (anterior_phase < 6.0)
    anterior = anterior * ramp(q - F32(ANTERIOR_START), 0.05)
    ribs = posterior + F32(ANTERIOR_CONTRAST) * anterior
    ribs = ribs * ramp(geo.chest_wall(anat, grid.v, side) + F32(RIB_EXTENT) - d, 3 * grid.px)
    return ribs * ramp(d - F32(0.02), 3 * grid.px)


def _rib_widths(anat: Anatomy, phase: np.ndarray) -> np.ndarray:
    """Each rib a little thicker or thinner than the patient's average (per-pixel lookup)."""
    rng = np.random.default_rng(anat.tree_seed + 2)
    jitter = rng.uniform(1 - RIB_WIDTH_JITTER, 1 + RIB_WIDTH_JITTER, RIB_COUNT + 2)
    widths = (anat.rib_width * jitter).astype(F32)
    return widths[clamp(phase, -1.0, RIB_COUNT).astype(np.int32) + 1]


def _posterior_arch(anat: Anatomy, q):
    return F32(anat.rib_arch) * (q * q - F32(0.25) * q)


def _bone_band(phase: np.ndarray, width: float, px_phase: float) -> np.ndarray:
    """Rib-like bands where the phase's fraction is below `width`, with bright cortical edges."""
    frac, width = fraction(phase), np.asarray(width, dtype=F32)
    inside = ramp(frac, px_phase) * ramp(width - frac, px_phase) * (phase >= 0)
    centred = np.abs(frac * F32(2.0 / width) - F32(1.0))  # 0 mid-rib, 1 at its edges
    cortex = np.maximum(centred - F32(1.0 - 2 * CORTEX_WIDTH), F32(0.0)) * F32(1.0 / (2 * CORTEX_WIDTH))
    return inside * (F32(0.6) + F32(DENSITY.rib_cortex) * cortex)


def _rib_phase(anat: Anatomy, v):
    """Rib number (fractional) at arch-corrected height v; the period grows downwards."""
    y = v - F32(anat.apex - 0.03)
    return y / (F32(anat.rib_spacing) * (F32(1.0) + F32(RIB_STRETCH) * np.maximum(y, F32(0.0))))


def rib_level(anat: Anatomy, rib: int, q: float) -> float:
    """v of the middle of posterior rib `rib` (1-based) at relative lateral position q: the
    inverse of the phase, used to place fracture findings and describe them."""
    p = rib - 1 + anat.rib_width / 2
    s = anat.rib_spacing
    y = p * s / (1.0 - RIB_STRETCH * p * s)
    return anat.apex - 0.03 + y + float(_posterior_arch(anat, np.float32(q)))


def _humeral_heads(anat: Anatomy, grid: Grid) -> np.ndarray:
    """The tops of the arms in the upper corners, often cut by the film's edge."""
    out = np.zeros(grid.shape, dtype=F32)
    offset, above, r = HUMERAL_HEAD
    for side in geo.SIDE_SIGN:
        cx, cv = anat.midline + geo.SIDE_SIGN[side] * offset, anat.clavicle_level + above

        def draw(g: Grid, cx=cx, cv=cv) -> np.ndarray:
            return ellipse(g, cx, cv, r, 1.15 * r) * (F32(0.8) + F32(0.5) * chord(g.x - F32(cx), r))

        out += local_layer(grid, (cx - r, cx + r, cv - 1.15 * r, cv + 1.15 * r), draw)
    return out * F32(DENSITY.clavicle)


def _clavicles(anat: Anatomy, grid: Grid) -> np.ndarray:
    d0, d1 = 0.035, 0.85 * anat.lung_half_width
    out = np.zeros(grid.shape, dtype=F32)
    for side in geo.SIDE_SIGN:

        def draw(g: Grid, side=side) -> np.ndarray:
            d = geo.lateral(anat, g.x, side)
            t = clamp((d - F32(d0)) / F32(d1 - d0), 0.0, 1.0)
            centre = F32(anat.clavicle_level) - F32(0.06) * t + F32(0.012) * np.sin(F32(2 * np.pi) * t)
            off = np.abs(g.v - centre)
            half = F32(CLAVICLE_THICKNESS / 2) * (F32(1.0) + F32(0.3) * (F32(1.0) - t))
            bone = ramp(half - off, g.px) * ramp(d - F32(d0), g.px) * ramp(F32(d1) - d, 2 * g.px)
            return bone * (F32(1.0) + F32(DENSITY.rib_cortex) * clamp(off / half, 0.0, 1.0) ** 4)

        sign = geo.SIDE_SIGN[side]
        xs = sorted((anat.midline + sign * d0, anat.midline + sign * d1))
        out += local_layer(grid, (xs[0], xs[1], anat.clavicle_level - 0.09, anat.clavicle_level + 0.04), draw)
    return out * F32(DENSITY.clavicle)
