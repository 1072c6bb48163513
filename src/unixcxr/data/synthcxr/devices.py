"""Support devices: endotracheal tube, enteric tube, central venous catheter, pacemaker with
leads, sternotomy wires. Tubes and lines are Bezier curves through anatomical landmarks,
splatted as radiopaque lines into the metal layer."""

from __future__ import annotations

import numpy as np

from unixcxr.data.synthcxr import anatomy as geo
from unixcxr.data.synthcxr.anatomy import Anatomy
from unixcxr.data.synthcxr.config import DENSITY
from unixcxr.data.synthcxr.params import cm_per_unit
from unixcxr.data.synthcxr.raster import F32, curve_points, ellipse, splat, window
from unixcxr.data.synthcxr.thorax import Layers

TUBE_WIDTH, TUBE_STRIPE, TUBE_WALL = 0.011, 0.6, 0.25  # endotracheal tube: wall + radiopaque stripe
LINE_WIDTH, LINE_METAL = 0.004, 0.55
LEAD_WIDTH, LEAD_METAL = 0.005, 0.9
WIRE_WIDTH, WIRE_METAL = 0.0035, 1.0
GENERATOR_SIZE = (0.042, 0.03)  # half-width, half-height of the pacemaker can
CVC_TIP_BELOW_CARINA = {"svc": 0.02, "cavoatrial": 0.075, "right atrium": 0.12}


def _line(layers: Layers, control, width: float, metal: float) -> None:
    points = curve_points(np.asarray(control), layers.grid)
    layers.metal += splat(layers.grid, points, 1.0, width) * F32(metal * DENSITY.metal)


def ett_tip(anat: Anatomy, tip_cm: float) -> tuple[float, float]:
    return anat.midline - 0.004, anat.carina - tip_cm / cm_per_unit(anat)


def _ett(layers: Layers, device: dict) -> None:
    anat = layers.anatomy
    tx, tv = ett_tip(anat, device["tip_cm"])
    points = curve_points(np.asarray([(tx + 0.008, -0.02), (tx + 0.003, 0.12), (tx, tv)]), layers.grid)
    tube = splat(layers.grid, points, 1.0, TUBE_WIDTH) * F32(TUBE_WALL)
    stripe = splat(layers.grid, points + np.array([0.002, 0.0]), 1.0, LINE_WIDTH) * F32(TUBE_STRIPE)
    layers.metal += (tube + stripe) * F32(DENSITY.metal)


def _enteric(layers: Layers, device: dict) -> None:
    """Down the oesophagus, through the hiatus, tip in the gastric fundus."""
    anat = layers.anatomy
    m, dome = anat.midline, geo.dome_peak(anat, "left")
    waypoints = [(m + 0.004, -0.02), (m + 0.008, anat.carina), (m + 0.03, dome + 0.01), (m + 0.1, dome + 0.07),
                 (m + 0.17, dome + 0.05)]  # fmt: skip
    _line(layers, waypoints, LINE_WIDTH, LINE_METAL)


def _svc_path(anat: Anatomy, side: str) -> list[tuple[float, float]]:
    """From the side's brachiocephalic vein into the SVC, which lies right of the midline."""
    m, sign, clav = anat.midline, geo.SIDE_SIGN[side], anat.clavicle_level
    if side == "left":
        return [(m + 0.06, clav + 0.01), (m + 0.01, clav + 0.045), (m - 0.035, clav + 0.08)]
    return [(m + sign * 0.05, clav + 0.01), (m - 0.035, clav + 0.06)]


def _cvc(layers: Layers, device: dict) -> None:
    anat = layers.anatomy
    m, side = anat.midline, device["side"]
    sign, clav = geo.SIDE_SIGN[side], anat.clavicle_level
    tip = (m - 0.035, anat.carina + CVC_TIP_BELOW_CARINA[device["tip"]])
    if device["access"] == "jugular":
        entry = [(m + sign * 0.07, -0.02), (m + sign * 0.06, clav - 0.04)]
    else:
        entry = [(m + sign * 0.3, clav + 0.015), (m + sign * 0.16, clav + 0.02)]
    _line(layers, [*entry, *_svc_path(anat, side), tip], LINE_WIDTH, LINE_METAL)


def pacemaker_generator(anat: Anatomy, side: str) -> tuple[float, float]:
    return anat.midline + geo.SIDE_SIGN[side] * 0.24, anat.clavicle_level + 0.06


def _pacemaker(layers: Layers, device: dict) -> None:
    """Generator below the clavicle; leads through the subclavian vein and SVC to the right
    ventricular apex and (second lead) the right atrial appendage."""
    anat, grid, side = layers.anatomy, layers.grid, device["side"]
    gx, gv = pacemaker_generator(anat, side)
    rx, rv = GENERATOR_SIZE
    win = window(grid, gx - rx, gx + rx, gv - rv, gv + rv)
    can = ellipse(win.grid, gx, gv, rx, rv) * (F32(0.7) + F32(0.3) * ellipse(win.grid, gx, gv, 0.7 * rx, 0.7 * rv))
    win.paste(layers.metal, can * F32(DENSITY.metal))
    m, sign = anat.midline, geo.SIDE_SIGN[side]
    right, left = (float(e) for e in geo.cardiac_borders(anat, np.float32(geo.dome_peak(anat, "left") - 0.05)))
    atrium = (m - 0.6 * right, anat.carina + 0.14)
    venous = [(gx - sign * rx, gv - 0.01), (m + sign * 0.14, anat.clavicle_level + 0.03), *_svc_path(anat, side)[-1:]]
    ventricle = (m + 0.65 * left, geo.dome_peak(anat, "left") - 0.04)
    leads = [[*venous, atrium, (m + 0.1 * left, atrium[1] + 0.06), ventricle],
             [*venous, atrium, (atrium[0] + 0.01, atrium[1] - 0.03)]][: device["leads"]]  # fmt: skip
    for waypoints in leads:
        _line(layers, waypoints, LEAD_WIDTH, LEAD_METAL)


def _sternotomy(layers: Layers, device: dict) -> None:
    """Twisted wire loops stacked along the sternum."""
    anat = layers.anatomy
    top, bottom = anat.clavicle_level + 0.04, geo.dome_peak(anat, "right") - 0.08
    count = max(16, int(2 * np.pi * 0.012 / (layers.grid.px * 0.5)))
    t = np.linspace(0.0, 2 * np.pi, count)
    points = []
    for v in np.linspace(top, bottom, device["wires"]):
        loop = np.stack([anat.midline + 0.012 * np.cos(t), v + 0.005 * np.sin(2 * t)], axis=1)
        points.append(loop)
    layers.metal += splat(layers.grid, np.concatenate(points), 1.0, WIRE_WIDTH) * F32(WIRE_METAL * DENSITY.metal)


DEVICE_DRAWERS = {"ett": _ett, "enteric": _enteric, "cvc": _cvc, "pacemaker": _pacemaker, "sternotomy": _sternotomy}


def draw_support_devices(layers: Layers, params: dict, rng: np.random.Generator) -> None:
    for device in params["devices"]:
        DEVICE_DRAWERS[device["type"]](layers, device)
