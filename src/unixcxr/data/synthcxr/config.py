"""Every number that shapes SynthCXR, in one place: anatomy ranges, tissue densities,
acquisition ranges, finding sizes, prevalences and the on-disk id scheme. Ranges are (low, high)
of a uniform draw; lengths are in film units (1.0 = the film's width)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

Range = tuple[float, float]


@dataclass(frozen=True)
class RasterConfig:
    line_step_px: float = 0.5  # spacing of curve samples before splatting
    min_sigma_px: float = 0.55  # thinnest drawn line (Gaussian sigma, pixels)
    fwhm_per_sigma: float = 2.355
    blur_truncate: float = 3.0
    binomial_max_sigma_px: float = 1.5  # up to this blur, binomial passes beat scipy's Gaussian


RASTER = RasterConfig()

# Patient anatomy (normal); each study of a patient shares it. See anatomy.Anatomy for meanings.
ANATOMY_RANGES: MappingProxyType[str, Range] = MappingProxyType({
    "midline": (0.485, 0.515),
    "lung_half_width": (0.33, 0.38),
    "apex": (0.08, 0.11),
    "dome_right": (0.66, 0.72),
    "dome_left_drop": (0.015, 0.04),
    "sulcus_drop": (0.05, 0.075),
    "ctr": (0.40, 0.49),
    "heart_height": (0.12, 0.145),
    "heart_right_share": (0.30, 0.37),
    "mediastinum_half_width": (0.06, 0.075),
    "aortic_knob": (0.018, 0.026),
    "carina": (0.30, 0.34),
    "trachea_half_width": (0.011, 0.015),
    "rib_spacing": (0.052, 0.06),
    "rib_arch": (0.13, 0.19),
    "rib_width": (0.36, 0.45),
    "clavicle_level": (0.16, 0.19),
    "body_margin": (0.045, 0.075),
    "soft_tissue": (0.85, 1.0),
    "lung_air": (0.62, 0.74),
    "bone": (0.13, 0.19),
})  # fmt: skip
FEMALE_SHARE = 0.5
GASTRIC_BUBBLE_SHARE = 0.7
GASTRIC_BUBBLE_RADIUS: Range = (0.02, 0.04)


@dataclass(frozen=True)
class DensityConfig:
    """Relative X-ray attenuation (film brightness before the film curve)."""

    spine: float = 0.12
    trachea_air: float = 0.30
    vessel: float = 0.075
    hilum: float = 0.22
    breast: float = 0.08
    gastric_air: float = 0.45
    metal: float = 1.6
    calcium: float = 0.55
    rib_cortex: float = 0.6  # extra brightness of the rib edges, relative to the rib
    clavicle: float = 1.2  # relative to the rib bone density


DENSITY = DensityConfig()


@dataclass(frozen=True)
class FilmConfig:
    """Acquisition variation (per study)."""

    rotation_deg: Range = (-3.0, 3.0)
    shift: Range = (-0.02, 0.02)
    zoom: Range = (0.94, 1.04)
    exposure: Range = (0.9, 1.3)  # film curve: 1 - exp(-exposure * density)
    gamma: Range = (0.85, 1.2)
    noise: Range = (0.008, 0.025)
    blur_px: Range = (0.3, 0.9)  # at 256 px; scaled with size
    collimation: Range = (0.0, 0.035)  # border width per side, drawn on some films
    collimation_share: float = 0.45
    collimation_level: Range = (0.78, 0.95)
    marker_share: float = 0.85
    marker_size: float = 0.035
    black: Range = (0.0, 0.04)
    white: Range = (0.93, 1.0)


FILM = FilmConfig()


@dataclass(frozen=True)
class TreeConfig:
    """Branching vessel tree drawn from each hilum."""

    trunks: int = 10
    generations: int = 5
    trunk_length: Range = (0.045, 0.065)
    length_decay: Range = (0.72, 0.86)
    spread: Range = (0.22, 0.45)  # radians between a branch and its parent
    jitter: float = 0.16
    weight_decay: float = 0.8
    width: float = 0.0045


TREE = TreeConfig()


@dataclass(frozen=True)
class SamplingConfig:
    """How often each observation is drawn. Abnormal studies draw every finding independently
    at its base rate, then add the classic companions (edema -> cardiomegaly and effusions,
    pneumonia -> consolidation / opacity, effusion -> basal atelectasis, sick -> devices)."""

    normal_share: float = 0.31
    hedge_share: float = 0.2  # of the findings a report may hedge
    base_rate: MappingProxyType[str, float] = field(default_factory=lambda: MappingProxyType({
        "Enlarged Cardiomediastinum": 0.07, "Cardiomegaly": 0.22, "Lung Opacity": 0.18,
        "Lung Lesion": 0.08, "Edema": 0.11, "Consolidation": 0.09, "Pneumonia": 0.09,
        "Atelectasis": 0.17, "Pneumothorax": 0.07, "Pleural Effusion": 0.2, "Pleural Other": 0.065,
        "Fracture": 0.06,
    }))  # fmt: skip
    companion: tuple[tuple[str, str, float], ...] = (
        ("Edema", "Cardiomegaly", 0.55),
        ("Edema", "Pleural Effusion", 0.5),
        ("Cardiomegaly", "Pleural Effusion", 0.2),
        ("Pneumonia", "Consolidation", 0.35),
        ("Pneumonia", "Lung Opacity", 0.35),
        ("Pleural Effusion", "Atelectasis", 0.35),
    )
    device_base: float = 0.08
    device_per_finding: float = 0.09
    device_max: float = 0.7
    normal_device_share: float = 0.06
    studies_per_patient: tuple[float, ...] = (0.62, 0.24, 0.14)  # P(1), P(2), P(3)


SAMPLING = SamplingConfig()


@dataclass(frozen=True)
class LayoutConfig:
    """Ids and files, shaped like MIMIC-CXR-JPG's."""

    subject_base: int = 10_000_000  # subject ids 1XXXXXXX -> folders p10 ... p19
    study_base: int = 50_000_000  # study ids 5XXXXXXX
    id_span: int = 10_000_000
    subject_stride: int = 7_919  # odd and not a multiple of 5: a bijection modulo id_span
    study_stride: int = 104_729
    jpeg_quality: int = 95
    min_size: int = 64
    max_size: int = 4096
    patient_block: int = 1024  # patients' study counts are drawn in blocks of this many


LAYOUT = LayoutConfig()


class FindingSizes:
    """What each severity word means on the film (ranges are drawn per study). A plain class:
    its tables are read-only mappings, which dataclass fields cannot default to."""

    ctr: MappingProxyType = MappingProxyType({"mild": (0.55, 0.59), "moderate": (0.59, 0.64),
                                              "severe": (0.64, 0.70)})  # fmt: skip
    mediastinal_widening: MappingProxyType = MappingProxyType({"mild": (1.35, 1.5), "moderate": (1.5, 1.7),
                                                               "marked": (1.7, 1.95)})  # fmt: skip
    effusion_height: MappingProxyType = MappingProxyType({"small": (0.03, 0.05), "moderate": (0.1, 0.15),
                                                          "large": (0.2, 0.3)})  # fmt: skip
    pneumothorax_gap: MappingProxyType = MappingProxyType({"small": (0.018, 0.03), "large": (0.07, 0.12)})
    opacity_radius: MappingProxyType = MappingProxyType({"small": (0.045, 0.06), "moderate": (0.065, 0.085),
                                                         "large": (0.09, 0.12)})  # fmt: skip
    opacity_fill: MappingProxyType = MappingProxyType({"hazy": (0.3, 0.45), "patchy": (0.5, 0.7),
                                                       "pneumonia": (0.55, 0.8), "consolidation": (0.82, 0.95)})
    edema_haze: MappingProxyType = MappingProxyType({"mild": (0.2, 0.28), "moderate": (0.32, 0.45),
                                                     "severe": (0.5, 0.65)})  # fmt: skip
    septal_lines: MappingProxyType = MappingProxyType({"mild": (0, 0), "moderate": (3, 6), "severe": (5, 9)})
    atelectasis_thickness: MappingProxyType = MappingProxyType({"minimal": (0.004, 0.006),
                                                                "mild": (0.006, 0.009),
                                                                "moderate": (0.01, 0.015)})  # fmt: skip
    atelectasis_length: Range = (0.08, 0.16)
    volume_loss_lift: Range = (0.025, 0.045)
    nodule_cm: Range = (0.6, 2.0)
    mass_cm: Range = (3.2, 5.5)
    chest_width_cm: float = 28.0  # thoracic width in cm, to turn film units into cm
    pleural_thickening: Range = (0.012, 0.024)
    plaque_count: tuple[int, int] = (2, 6)
    fracture_rib: tuple[int, int] = (3, 8)  # posterior ribs 3-7 lie over the lungs
    fracture_step: Range = (0.3, 0.55)  # in rib periods
    fracture_gap: Range = (0.035, 0.06)  # in lung half-widths
    ett_tip_cm: tuple[int, int] = (2, 7)
    sternotomy_wires: tuple[int, int] = (5, 8)


SIZES = FindingSizes()
