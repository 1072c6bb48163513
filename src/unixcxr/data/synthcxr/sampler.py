"""Who the patients are, which studies they have and what each study shows.

Determinism: every random decision comes from a generator keyed by (seed, stream, index)
through numpy's SeedSequence, never from a shared sequential stream, so study i is the same
whichever process renders it and however many studies are made. Patients own 1-3 studies;
their anatomy is shared by all their studies."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from unixcxr.data.synthcxr.acquisition import sample_acquisition
from unixcxr.data.synthcxr.anatomy import sample_anatomy
from unixcxr.data.synthcxr.config import LAYOUT, SAMPLING, SIZES
from unixcxr.data.synthcxr.findings import Finding, StudySpec, modify_anatomy
from unixcxr.data.synthcxr.params import SAMPLERS
from unixcxr.labels import OBSERVATIONS

# Random streams (the first spawn-key element).
PATIENT_COUNTS, ANATOMY, FINDINGS, ACQUISITION, PIXELS, REPORT, RAW_NOISE, IDS, SPLITS, PROMPTS = range(10)
DEVICES = "Support Devices"
PATHOLOGIES = tuple(name for name in OBSERVATIONS if name not in ("No Finding", DEVICES))
# Sampling order: companions after the finding they sit with (their `like`).
# The heart and mediastinum go first: later findings are placed in the lungs they leave.
SAMPLE_ORDER = ("Cardiomegaly", "Enlarged Cardiomediastinum", "Pneumonia", "Consolidation", "Lung Opacity",
                "Pleural Effusion", "Atelectasis", "Edema", "Lung Lesion", "Pneumothorax", "Pleural Other",
                "Fracture", DEVICES)  # fmt: skip
COLOCATED = {"Consolidation": "Pneumonia", "Lung Opacity": "Pneumonia", "Atelectasis": "Pleural Effusion"}
UNHEDGED = (DEVICES,)  # a device is there or not
# What a data set's studies show. "mimic": MIMIC-like base rates and companions. "effusion-side": a
# conditioning test; every study shows a large left, a large right or no pleural effusion (a third
# each) and nothing else, so the text alone tells which, and a generator that reads it draws it.
VARIANTS = ("mimic", "effusion-side")
EFFUSION_SIDES = ("none", "left", "right")


def rng_for(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, index)))


@dataclass(frozen=True)
class StudyRef:
    """Where a study sits: its index, patient and MIMIC-style ids."""

    index: int
    patient: int
    visit: int  # 0 for the patient's first study
    subject_id: str
    study_id: str
    dicom_id: str

    @property
    def image_path(self) -> str:
        """files/p1X/p1XXXXXXX/sXXXXXXXX/<dicom_id>.jpg, relative to the data set's root."""
        return f"files/p{self.subject_id[:2]}/p{self.subject_id}/s{self.study_id}/{self.dicom_id}.jpg"

    @property
    def report_path(self) -> str:
        return f"reports/files/p{self.subject_id[:2]}/p{self.subject_id}/s{self.study_id}.txt"


@lru_cache(maxsize=64)
def _study_counts(seed: int, block: int) -> np.ndarray:
    """Number of studies of each patient in a block of LAYOUT.patient_block patients."""
    probs = np.asarray(SAMPLING.studies_per_patient)
    return 1 + rng_for(seed, PATIENT_COUNTS, block).choice(len(probs), size=LAYOUT.patient_block, p=probs)


def locate(index: int, seed: int) -> tuple[int, int]:
    """(patient, visit) of study `index`: patients take consecutive study indices."""
    block, first = 0, 0
    while True:
        counts = _study_counts(seed, block)
        ends = first + np.cumsum(counts)
        if index < ends[-1]:
            k = int(np.searchsorted(ends, index, side="right"))
            start = int(ends[k] - counts[k])
            return block * LAYOUT.patient_block + k, index - start
        block, first = block + 1, int(ends[-1])


def study_ref(index: int, seed: int) -> StudyRef:
    patient, visit = locate(index, seed)
    subject = LAYOUT.subject_base + (patient * LAYOUT.subject_stride + seed) % LAYOUT.id_span
    study = LAYOUT.study_base + (index * LAYOUT.study_stride + seed) % LAYOUT.id_span
    words = rng_for(seed, IDS, index).integers(0, 2**32, size=5)
    dicom = "-".join(f"{int(w):08x}" for w in words)
    return StudyRef(index, patient, visit, str(subject), str(study), dicom)


def plan(n: int, seed: int) -> list[StudyRef]:
    return [study_ref(i, seed) for i in range(n)]


def effusion_side_findings(rng: np.random.Generator) -> tuple[Finding, ...]:
    """The effusion-side variant: none, or one large effusion on one side."""
    side = EFFUSION_SIDES[int(rng.integers(len(EFFUSION_SIDES)))]
    if side == "none":
        return ()
    height = round(float(rng.uniform(*SIZES.effusion_height["large"])), 4)
    return (Finding("Pleural Effusion", {"side": side, "size": "large", "heights": {side: height}}, False),)


def sample_findings(rng: np.random.Generator, anatomy, variant: str = "mimic") -> tuple[Finding, ...]:
    """About a third of studies are normal (sometimes with a device); the others draw each
    pathology at its base rate, then its usual companions, then devices by how sick they are.
    variant "effusion-side": see VARIANTS."""
    if variant == "effusion-side":
        return effusion_side_findings(rng)
    if variant != "mimic":
        raise ValueError(f"unknown SynthCXR variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    names: set[str] = set()
    if rng.random() < SAMPLING.normal_share:
        if rng.random() < SAMPLING.normal_device_share:
            names.add(DEVICES)
    else:
        rates = SAMPLING.base_rate
        names = {name for name in PATHOLOGIES if rng.random() < rates[name]}
        if not names:
            weights = np.array([rates[n] for n in PATHOLOGIES])
            names.add(PATHOLOGIES[int(rng.choice(len(PATHOLOGIES), p=weights / weights.sum()))])
        for cause, companion, share in SAMPLING.companion:
            if cause in names and rng.random() < share:
                names.add(companion)
        device_share = min(SAMPLING.device_max, SAMPLING.device_base + SAMPLING.device_per_finding * len(names))
        if rng.random() < device_share:
            names.add(DEVICES)
    findings: dict[str, Finding] = {}
    for name in SAMPLE_ORDER:
        if name in names:
            partner = findings.get(COLOCATED.get(name, ""))
            current = modify_anatomy(anatomy, tuple(findings.values()))
            params = SAMPLERS[name](rng, current, like=partner.params if partner else None)
            hedged = name not in UNHEDGED and rng.random() < SAMPLING.hedge_share
            findings[name] = Finding(name, params, bool(hedged))
    return tuple(findings[name] for name in OBSERVATIONS if name in findings)


def sample_spec(ref: StudyRef, seed: int, variant: str = "mimic") -> StudySpec:
    """The study's full specification; size-independent."""
    anatomy = sample_anatomy(rng_for(seed, ANATOMY, ref.patient))
    findings = sample_findings(rng_for(seed, FINDINGS, ref.index), anatomy, variant)
    acquisition = sample_acquisition(rng_for(seed, ACQUISITION, ref.index))
    pixel_seed = int(rng_for(seed, PIXELS, ref.index).integers(2**63))
    return StudySpec(anatomy, findings, acquisition, pixel_seed)
