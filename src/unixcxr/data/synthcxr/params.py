"""Parameters of each finding: side, size, severity and the exact geometry that gets drawn.

Everything numeric is decided here, once, in film units, so the image (any size), the report
and synthcxr-truth.jsonl all describe the same finding. `like` places a companion finding
where an earlier one is (pneumonia inside its consolidation, atelectasis above an effusion)."""

from __future__ import annotations

import numpy as np

from unixcxr.data.synthcxr import anatomy as geo
from unixcxr.data.synthcxr.anatomy import Anatomy
from unixcxr.data.synthcxr.config import SIZES

SIDES_ONE = ("right", "left")
PLACEMENT_TRIES = 200


def _pick(rng: np.random.Generator, options, weights=None):
    weights = None if weights is None else np.asarray(weights, dtype=float) / np.sum(weights)
    return options[int(rng.choice(len(options), p=weights))]


def _uniform(rng: np.random.Generator, bounds) -> float:
    return round(float(rng.uniform(*bounds)), 4)


def cm_per_unit(anat: Anatomy) -> float:
    return SIZES.chest_width_cm / (2.0 * anat.lung_half_width)


def _side(rng, like, bilateral_share: float = 0.0) -> str:
    if like and like.get("side") in ("right", "left", "bilateral"):
        return like["side"]
    return "bilateral" if rng.random() < bilateral_share else _pick(rng, SIDES_ONE)


def _zone(rng, like, weights=(0.25, 0.25, 0.5)) -> str:
    if like and like.get("zone") in geo.ZONES:
        return like["zone"]
    return _pick(rng, geo.ZONES, weights)


def _point_in_zone(rng, anat: Anatomy, side: str, zone: str, margin: float) -> tuple[float, float]:
    """A random point at least `margin` inside the lung zone (rejection sampling)."""
    top, bottom = geo.zone_span(anat, side, zone)
    sign = geo.SIDE_SIGN[side]
    for _ in range(PLACEMENT_TRIES):
        d = rng.uniform(0.15, 1.0) * anat.lung_half_width
        x, v = anat.midline + sign * d, rng.uniform(top, bottom)
        if geo.inside_lung(anat, side, np.float32(x), np.float32(v), margin):
            return round(float(x), 4), round(float(v), 4)
    d = 0.6 * anat.lung_half_width  # a safe fallback: mid-lung of that zone
    return round(anat.midline + sign * d, 4), round((top + bottom) / 2, 4)


def _region(rng, anat, side, zone, extent) -> list[dict]:
    """Blob centres and radii, one per involved lung."""
    sides = SIDES_ONE if side == "bilateral" else (side,)
    out = []
    for s in sides:
        radius = _uniform(rng, SIZES.opacity_radius[extent])
        x, v = _point_in_zone(rng, anat, s, zone, margin=0.5 * radius)
        out.append({"side": s, "centre": [x, v], "radius": radius, "aspect": _uniform(rng, (0.7, 1.2))})
    return out


def enlarged_cardiomediastinum(rng, anat, like=None) -> dict:
    severity = _pick(rng, ("mild", "moderate", "marked"), (0.45, 0.4, 0.15))
    return {"severity": severity, "widening": _uniform(rng, SIZES.mediastinal_widening[severity])}


def cardiomegaly(rng, anat, like=None) -> dict:
    severity = _pick(rng, ("mild", "moderate", "severe"), (0.45, 0.35, 0.2))
    return {"severity": severity, "ctr": _uniform(rng, SIZES.ctr[severity])}


def lung_opacity(rng, anat, like=None) -> dict:
    side, zone = _side(rng, like, 0.2), _zone(rng, like)
    extent = _pick(rng, ("small", "moderate", "large"))
    pattern = _pick(rng, ("hazy", "patchy"))
    return {"side": side, "zone": zone, "extent": extent, "pattern": pattern,
            "fill": _uniform(rng, SIZES.opacity_fill[pattern]), "regions": _region(rng, anat, side, zone, extent)}


def pneumonia(rng, anat, like=None) -> dict:
    side, zone = _side(rng, like, 0.12), _zone(rng, like)
    extent = _pick(rng, ("small", "moderate", "large"))
    return {"side": side, "zone": zone, "extent": extent, "fill": _uniform(rng, SIZES.opacity_fill["pneumonia"]),
            "regions": _region(rng, anat, side, zone, extent)}


def consolidation(rng, anat, like=None) -> dict:
    side, zone = _side(rng, like, 0.08), _zone(rng, like)
    extent = _pick(rng, ("segmental", "lobar"), (0.6, 0.4))
    params = {"side": side, "zone": zone, "extent": extent, "air_bronchograms": bool(rng.random() < 0.5),
              "fill": _uniform(rng, SIZES.opacity_fill["consolidation"])}
    params["regions"] = _region(rng, anat, side, zone, "moderate" if extent == "segmental" else "large")
    return params


def atelectasis(rng, anat, like=None) -> dict:
    side = _side(rng, like, 0.35)
    severity = _pick(rng, ("minimal", "mild", "moderate"), (0.3, 0.45, 0.25))
    zone = "lower" if rng.random() < 0.85 else "mid"
    bands = []
    for s in SIDES_ONE if side == "bilateral" else (side,):
        top, bottom = geo.zone_span(anat, s, zone)
        v = rng.uniform(top + 0.45 * (bottom - top), bottom - 0.035)
        d = rng.uniform(0.4, 0.65) * anat.lung_half_width
        bands.append({"side": s, "centre": [round(anat.midline + geo.SIDE_SIGN[s] * d, 4), round(float(v), 4)],
                      "length": _uniform(rng, SIZES.atelectasis_length), "angle": _uniform(rng, (-0.3, 0.3)),
                      "thickness": _uniform(rng, SIZES.atelectasis_thickness[severity])})  # fmt: skip
    volume_loss = side != "bilateral" and severity == "moderate" and rng.random() < 0.6
    return {"side": side, "zone": zone, "severity": severity, "bands": bands, "volume_loss": bool(volume_loss),
            "lift": _uniform(rng, SIZES.volume_loss_lift) if volume_loss else 0.0}


def edema(rng, anat, like=None) -> dict:
    severity = _pick(rng, ("mild", "moderate", "severe"), (0.45, 0.4, 0.15))
    low, high = SIZES.septal_lines[severity]
    return {"side": "bilateral", "severity": severity, "haze": _uniform(rng, SIZES.edema_haze[severity]),
            "septal_lines": int(rng.integers(low, high + 1))}


def lung_lesion(rng, anat, like=None) -> dict:
    side, zone = _side(rng, like), _zone(rng, like, (0.4, 0.35, 0.25))
    kind = _pick(rng, ("nodule", "mass"), (0.7, 0.3))
    count = 1 if kind == "mass" else int(_pick(rng, (1, 1, 1, 2, 3)))
    scale = cm_per_unit(anat)
    lesions = []
    for _ in range(count):
        size_cm = round(float(rng.uniform(*(SIZES.mass_cm if kind == "mass" else SIZES.nodule_cm))), 1)
        radius = size_cm / scale / 2.0
        x, v = _point_in_zone(rng, anat, side, zone, margin=radius + 0.01)
        lesions.append({"centre": [x, v], "radius": round(radius, 4), "size_cm": size_cm,
                        "lobulation": _uniform(rng, (0.0, 0.15 if kind == "mass" else 0.05))})  # fmt: skip
    return {"side": side, "zone": zone, "kind": kind, "count": count, "lesions": lesions}


def pneumothorax(rng, anat, like=None) -> dict:
    side = _side(rng, like)
    size = _pick(rng, ("small", "large"), (0.65, 0.35))
    location = _pick(rng, ("apical", "lateral"), (0.6, 0.4)) if size == "small" else "lateral"
    return {"side": side, "size": size, "location": location, "gap": _uniform(rng, SIZES.pneumothorax_gap[size])}


def pleural_effusion(rng, anat, like=None) -> dict:
    side = _side(rng, like, 0.3)
    size = _pick(rng, ("small", "moderate", "large"), (0.55, 0.33, 0.12))
    sides = SIDES_ONE if side == "bilateral" else (side,)
    return {"side": side, "size": size, "heights": {s: _uniform(rng, SIZES.effusion_height[size]) for s in sides}}


def pleural_other(rng, anat, like=None) -> dict:
    kind = _pick(rng, ("thickening", "apical_cap", "plaques"), (0.4, 0.25, 0.35))
    side = _side(rng, like, 0.7 if kind == "plaques" else 0.0)
    params = {"side": side, "kind": kind, "thickness": _uniform(rng, SIZES.pleural_thickening)}
    if kind == "plaques":
        count = int(rng.integers(SIZES.plaque_count[0], SIZES.plaque_count[1] + 1))
        params["plaques"] = [{"side": _pick(rng, SIDES_ONE) if side == "bilateral" else side,
                              "height": _uniform(rng, (0.35, 0.95)), "length": _uniform(rng, (0.02, 0.05))}
                             for _ in range(count)]  # fmt: skip
    else:
        params["span"] = sorted([_uniform(rng, (0.25, 0.6)), _uniform(rng, (0.6, 0.95))])
    return params


def fracture(rng, anat, like=None) -> dict:
    rib = int(rng.integers(*SIZES.fracture_rib))
    return {"side": _side(rng, like), "rib": rib, "position": _uniform(rng, (0.55, 0.9)),
            "step": _uniform(rng, SIZES.fracture_step), "gap": _uniform(rng, SIZES.fracture_gap),
            "age": _pick(rng, ("acute", "healing"), (0.7, 0.3))}  # fmt: skip


def support_devices(rng, anat, like=None) -> dict:
    kinds = ("ett", "enteric", "cvc", "pacemaker", "sternotomy")
    count = int(_pick(rng, (1, 1, 2, 2, 3)))
    chosen = sorted(rng.choice(len(kinds), size=count, replace=False, p=[0.22, 0.18, 0.27, 0.16, 0.17]))
    devices = []
    for i in chosen:
        kind = kinds[i]
        device = {"type": kind}
        if kind == "ett":
            device["tip_cm"] = int(rng.integers(SIZES.ett_tip_cm[0], SIZES.ett_tip_cm[1]))
        elif kind == "cvc":
            device.update(side=_pick(rng, SIDES_ONE, (0.7, 0.3)), access=_pick(rng, ("jugular", "subclavian")),
                          tip=_pick(rng, ("svc", "cavoatrial", "right atrium"), (0.5, 0.35, 0.15)))
        elif kind == "pacemaker":
            device.update(side=_pick(rng, SIDES_ONE, (0.15, 0.85)), leads=int(_pick(rng, (1, 2, 2))))
        elif kind == "sternotomy":
            device["wires"] = int(rng.integers(SIZES.sternotomy_wires[0], SIZES.sternotomy_wires[1]))
        devices.append(device)
    if "ett" in [d["type"] for d in devices] and "enteric" not in [d["type"] for d in devices] and rng.random() < 0.6:
        devices.insert(1, {"type": "enteric"})  # intubated patients usually have an enteric tube too
    return {"devices": devices}


SAMPLERS = {
    "Enlarged Cardiomediastinum": enlarged_cardiomediastinum, "Cardiomegaly": cardiomegaly,
    "Lung Opacity": lung_opacity, "Lung Lesion": lung_lesion, "Edema": edema, "Consolidation": consolidation,
    "Pneumonia": pneumonia, "Atelectasis": atelectasis, "Pneumothorax": pneumothorax,
    "Pleural Effusion": pleural_effusion, "Pleural Other": pleural_other, "Fracture": fracture,
    "Support Devices": support_devices,
}  # fmt: skip
