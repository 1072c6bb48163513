"""A patient's normal chest geometry and the shapes derived from it.

The geometry is analytic (a few curves per structure), so the same functions give whole-frame
masks for rendering and point tests for placing findings inside a lung. Sides are the
PATIENT's: the right lung lies on the image left (x < midline), the heart bulges to the image
right (the patient's left), the right hemidiaphragm is higher."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from unixcxr.data.synthcxr.config import (
    ANATOMY_RANGES,
    FEMALE_SHARE,
    GASTRIC_BUBBLE_RADIUS,
    GASTRIC_BUBBLE_SHARE,
)
from unixcxr.data.synthcxr.raster import clamp

SIDE_SIGN = {"right": -1.0, "left": 1.0}  # sign of (x - midline) on the film
APEX_CURVATURE = 3.5  # how fast the lung top falls away from its highest point
APEX_PEAK = 0.4  # the lung top is highest at this fraction of the half-width
WALL_NARROWING = 0.3  # the chest wall is this much narrower at the apex than at the base
DOME_PEAK = 0.45  # each hemidiaphragm peaks at this fraction of the half-width
RA_CENTRE_ABOVE_DOME = 0.07  # the right atrium bulges most this far above the right dome
RA_HEIGHT_SHARE = 0.8  # its half-height, as a share of the heart's half-height
LV_WIDEST_ABOVE_DOME = 0.05  # the left ventricle is widest this far above the left dome
LV_APEX_DROP = 0.07  # below that, the border curves back to the apex over this height
KNOB_ABOVE_CARINA = 0.035
SHOULDER_POWER = 0.75  # 0.5 = elliptic (abrupt) heart shoulders, 1 = parabolic (gentle)
ZONES = ("upper", "mid", "lower")
ZONE_EDGES = (0.0, 0.36, 0.64, 1.0)  # fractions of the lung height (apex -> dome)


@dataclass(frozen=True)
class Anatomy:
    """Normal anatomy of one patient (film units: 1.0 = film width; v grows downwards)."""

    midline: float  # x of the spine
    lung_half_width: float  # midline -> lateral lung edge at the bases
    apex: float  # v of the lung apices
    dome_right: float  # v of the right hemidiaphragm's peak
    dome_left_drop: float  # how much lower the left dome is
    sulcus_drop: float  # costophrenic angle below its dome's peak
    ctr: float  # cardiothoracic ratio
    heart_height: float  # half the height of the cardiac silhouette
    heart_right_share: float  # share of the heart's width right of the midline
    mediastinum_half_width: float
    aortic_knob: float  # radius
    carina: float  # v of the carina
    trachea_half_width: float
    rib_spacing: float
    rib_arch: float  # how far posterior ribs fall from spine to chest wall
    rib_width: float  # share of each rib period taken by bone
    clavicle_level: float
    body_margin: float  # soft tissue lateral to the ribs
    soft_tissue: float  # densities
    lung_air: float
    bone: float
    female: bool
    gastric_bubble: float  # radius, 0 = none
    tree_seed: int  # the vessel tree's randomness

    def replace(self, **changes) -> Anatomy:
        return Anatomy(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})

    def to_dict(self) -> dict:
        return {f.name: (round(v, 4) if isinstance(v, float) else v)
                for f in fields(self) for v in [getattr(self, f.name)]}  # fmt: skip


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """A random normal patient."""
    values = {name: float(rng.uniform(lo, hi)) for name, (lo, hi) in ANATOMY_RANGES.items()}
    bubble = float(rng.uniform(*GASTRIC_BUBBLE_RADIUS)) if rng.random() < GASTRIC_BUBBLE_SHARE else 0.0
    female = bool(rng.random() < FEMALE_SHARE)
    return Anatomy(**values, female=female, gastric_bubble=bubble, tree_seed=int(rng.integers(2**31)))


# ---- geometry (works on arrays of any shape) ----------------------------------------------


def lateral(anat: Anatomy, x, side: str):
    """Distance from the midline towards `side` (negative on the other side)."""
    return (x - np.float32(anat.midline)) * np.float32(SIDE_SIGN[side])


def dome_peak(anat: Anatomy, side: str) -> float:
    return anat.dome_right + (anat.dome_left_drop if side == "left" else 0.0)


def sulcus_level(anat: Anatomy, side: str) -> float:
    """v of the costophrenic angle."""
    return dome_peak(anat, side) + anat.sulcus_drop


def chest_wall(anat: Anatomy, v, side: str):
    """Lateral distance of the lung's outer edge at height v."""
    span = sulcus_level(anat, side) - anat.apex
    t = clamp((v - np.float32(anat.apex)) / np.float32(span), 0.0, 1.0)
    return np.float32(anat.lung_half_width) * (1.0 - WALL_NARROWING * (1.0 - t) ** 2)


def lung_top(anat: Anatomy, d):
    """v of the lung apex contour at lateral distance d."""
    w = anat.lung_half_width
    return np.float32(anat.apex) + np.float32(APEX_CURVATURE) * (d - np.float32(APEX_PEAK * w)) ** 2


def dome(anat: Anatomy, d, side: str):
    """v of the hemidiaphragm at lateral distance d: a parabola meeting the chest wall at the
    costophrenic angle, which is therefore sharp."""
    w = anat.lung_half_width
    k = anat.sulcus_drop / (w * (1.0 - DOME_PEAK)) ** 2
    return np.float32(dome_peak(anat, side)) + np.float32(k) * (d - np.float32(DOME_PEAK * w)) ** 2


def cardiac_borders(anat: Anatomy, v):
    """(right, left) extents of the cardiomediastinal silhouette from the midline at height v.
    Right: the SVC, then the right atrium's bulge. Left: the mediastinum, the aortic knob, then
    the left ventricle whose widest point sits just above the left dome. The heart's width,
    right + left at their widest, is ctr times the thoracic width."""
    width = anat.ctr * 2.0 * anat.lung_half_width
    m = mediastinum_edge(anat, v)
    right_max, left_max = width * anat.heart_right_share, width * (1.0 - anat.heart_right_share)
    ra_centre = np.float32(anat.dome_right - RA_CENTRE_ABOVE_DOME)
    ra = right_max * _shoulder((v - ra_centre) / np.float32(anat.heart_height * RA_HEIGHT_SHARE))
    lv_widest = np.float32(dome_peak(anat, "left") - LV_WIDEST_ABOVE_DOME)
    top = np.float32(anat.heart_height * 2.0 - LV_WIDEST_ABOVE_DOME)
    above = v < lv_widest
    lv = left_max * np.where(above, _shoulder((v - lv_widest) / top), _bump((v - lv_widest) / np.float32(LV_APEX_DROP)))
    knob = np.float32(anat.aortic_knob) * _bump((v - np.float32(knob_level(anat))) / np.float32(anat.aortic_knob))
    return np.maximum(m * np.float32(0.9), ra), np.maximum(m + knob, lv)


def knob_level(anat: Anatomy) -> float:
    return anat.carina - KNOB_ABOVE_CARINA


def _shoulder(t):
    """Like _bump but rising gently from its ends: heart borders merge into the mediastinum."""
    return clamp(1.0 - t * t, 0.0, 1.0).astype(np.float32) ** np.float32(SHOULDER_POWER)


def _bump(t):
    """Half-ellipse profile: 1 at t = 0, 0 for |t| >= 1."""
    return np.sqrt(clamp(1.0 - t * t, 0.0, 1.0)).astype(np.float32)


def hilum(anat: Anatomy, side: str) -> tuple[float, float]:
    """(x, v) of a hilum, where the vessel tree starts."""
    offset = anat.mediastinum_half_width + 0.035
    return anat.midline + SIDE_SIGN[side] * offset, anat.carina + 0.09 + (0.012 if side == "left" else 0.0)


def zone_span(anat: Anatomy, side: str, zone: str) -> tuple[float, float]:
    """(top v, bottom v) of an upper / mid / lower lung zone."""
    top, bottom = anat.apex, dome_peak(anat, side)
    i = ZONES.index(zone)
    return top + ZONE_EDGES[i] * (bottom - top), top + ZONE_EDGES[i + 1] * (bottom - top)


def inside_lung(anat: Anatomy, side: str, x, v, margin: float = 0.0):
    """Boolean: points at least `margin` inside the lung (heart and mediastinum excluded)."""
    x, v = np.asarray(x, dtype=np.float32), np.asarray(v, dtype=np.float32)
    d = lateral(anat, x, side)
    inside = d + margin < chest_wall(anat, v, side)
    inside &= (v - margin > lung_top(anat, d)) & (v + margin < dome(anat, d, side))
    right, left = cardiac_borders(anat, v)
    return inside & (d - margin > (right if side == "right" else left))


def mediastinum_edge(anat: Anatomy, v):
    """Half-width of the upper mediastinum at height v (narrower at the thoracic inlet)."""
    t = clamp((v - np.float32(anat.apex)) / np.float32(anat.carina - anat.apex), 0.0, 1.0)
    return np.float32(anat.mediastinum_half_width) * (0.7 + 0.3 * t)
