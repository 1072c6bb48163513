"""Findings as data, and turning a study specification into pixels.

A `Finding` is an observation name (from unixcxr.labels), its parameters (see params.py) and
whether the report hedges it. Some findings change the anatomy itself (a big heart, a wide
mediastinum, an elevated hemidiaphragm, a broken rib); the others are drawn onto the density
layers in a fixed order, so the same specification always gives the same film."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unixcxr.data.synthcxr.acquisition import Acquisition, develop, grid_for
from unixcxr.data.synthcxr.anatomy import SIDE_SIGN, Anatomy
from unixcxr.data.synthcxr.config import DENSITY
from unixcxr.data.synthcxr.devices import draw_support_devices
from unixcxr.data.synthcxr.lungs import (
    draw_atelectasis,
    draw_consolidation,
    draw_edema,
    draw_lung_lesion,
    draw_lung_opacity,
    draw_pneumonia,
)
from unixcxr.data.synthcxr.pleura import draw_pleural_effusion, draw_pleural_other, draw_pneumothorax
from unixcxr.data.synthcxr.raster import F32, ellipse, window
from unixcxr.data.synthcxr.thorax import Layers, render_anatomy, rib_level
from unixcxr.labels import OBSERVATIONS

CALLUS_RADIUS = 0.012
NOISE_STREAM = len(OBSERVATIONS)  # detector noise: a random stream apart from the findings' ones
HEART_GROWTH = 0.6  # a big heart is also taller: height grows by this share of the width's growth


@dataclass(frozen=True)
class Finding:
    observation: str
    params: dict = field(default_factory=dict)
    hedged: bool = False

    def to_dict(self) -> dict:
        return {"observation": self.observation, "hedged": self.hedged, **self.params}


@dataclass(frozen=True)
class StudySpec:
    """Everything that decides one film: the patient's anatomy, the findings, the acquisition
    and the seed of the pixel-level randomness (textures, noise)."""

    anatomy: Anatomy
    findings: tuple[Finding, ...]
    acquisition: Acquisition
    pixel_seed: int

    def without(self, observation: str) -> StudySpec:
        kept = tuple(f for f in self.findings if f.observation != observation)
        return StudySpec(self.anatomy, kept, self.acquisition, self.pixel_seed)

    def with_finding(self, finding: Finding) -> StudySpec:
        return StudySpec(self.anatomy, (*self.findings, finding), self.acquisition, self.pixel_seed)


def modify_anatomy(anat: Anatomy, findings: tuple[Finding, ...]) -> Anatomy:
    """The anatomy as the findings leave it."""
    for finding in findings:
        p = finding.params
        if finding.observation == "Cardiomegaly":
            growth = max(p["ctr"] / anat.ctr - 1.0, 0.0)
            anat = anat.replace(ctr=p["ctr"], heart_height=anat.heart_height * (1.0 + HEART_GROWTH * growth))
        elif finding.observation == "Enlarged Cardiomediastinum":
            anat = anat.replace(mediastinum_half_width=anat.mediastinum_half_width * p["widening"],
                                aortic_knob=anat.aortic_knob * (0.5 + 0.5 * p["widening"]))  # fmt: skip
        elif finding.observation == "Atelectasis" and p.get("volume_loss"):
            if p["side"] == "right":
                anat = anat.replace(dome_right=anat.dome_right - p["lift"],
                                    dome_left_drop=anat.dome_left_drop + p["lift"])  # fmt: skip
            else:
                anat = anat.replace(dome_left_drop=anat.dome_left_drop - p["lift"])
    return anat


def _draw_fracture_callus(layers: Layers, params: dict, rng: np.random.Generator) -> None:
    """The break itself is drawn with the ribs; a healing fracture also gets a callus."""
    if params["age"] != "healing":
        return
    anat = layers.anatomy
    x, v = fracture_site(anat, params)
    reach = 2 * CALLUS_RADIUS
    win = window(layers.grid, x - reach, x + reach, v - reach, v + reach)
    win.paste(layers.dense, ellipse(win.grid, x, v, CALLUS_RADIUS, 0.7 * CALLUS_RADIUS) * F32(DENSITY.calcium * 0.6))


def fracture_site(anat: Anatomy, params: dict) -> tuple[float, float]:
    q = params["position"]
    v = rib_level(anat, params["rib"], q) - 0.5 * params["step"] * anat.rib_spacing  # between the fragments
    return anat.midline + SIDE_SIGN[params["side"]] * q * anat.lung_half_width, v


# Drawing order: parenchyma first, then pleura (a pneumothorax clears what lies beyond its
# line), then bone and metal on top.
DRAWERS = {
    "Edema": draw_edema,
    "Lung Opacity": draw_lung_opacity,
    "Pneumonia": draw_pneumonia,
    "Consolidation": draw_consolidation,
    "Atelectasis": draw_atelectasis,
    "Lung Lesion": draw_lung_lesion,
    "Pleural Effusion": draw_pleural_effusion,
    "Pleural Other": draw_pleural_other,
    "Pneumothorax": draw_pneumothorax,
    "Fracture": _draw_fracture_callus,
    "Support Devices": draw_support_devices,
}
ANATOMY_FINDINGS = ("Cardiomegaly", "Enlarged Cardiomediastinum")


def render_layers(spec: StudySpec, size: int) -> Layers:
    """Density layers of the study (before developing), for tests and inspection."""
    anat = modify_anatomy(spec.anatomy, spec.findings)
    grid = grid_for(spec.acquisition, size)
    fracture = next((f.params for f in spec.findings if f.observation == "Fracture"), None)
    layers = render_anatomy(anat, grid, fracture)
    for observation, draw in DRAWERS.items():
        for finding in spec.findings:
            if finding.observation == observation:
                draw(layers, finding.params, np.random.default_rng([spec.pixel_seed, OBSERVATIONS.index(observation)]))
    return layers


def render_image(spec: StudySpec, size: int) -> np.ndarray:
    """The film [size, size] uint8 of a study specification."""
    layers = render_layers(spec, size)
    return develop(layers.density(), spec.acquisition, np.random.default_rng([spec.pixel_seed, NOISE_STREAM]))
