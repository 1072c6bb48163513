"""One study in memory: ids, specification, report, labels, image and truth record."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unixcxr.data.synthcxr.config import LAYOUT
from unixcxr.data.synthcxr.findings import StudySpec, modify_anatomy, render_image
from unixcxr.data.synthcxr.report import Report, write_report
from unixcxr.data.synthcxr.sampler import REPORT, StudyRef, rng_for, sample_spec, study_ref


@dataclass(frozen=True)
class Study:
    ref: StudyRef
    spec: StudySpec
    document: Report  # the report's sentences, each with the labels it asserts
    image: np.ndarray | None  # [size, size] uint8, None when only described

    @property
    def report(self) -> str:
        """The clean report, "FINDINGS: ... IMPRESSION: ..."."""
        return self.document.text

    @property
    def labels(self) -> dict[str, int | None]:
        return self.document.labels()

    @property
    def truth(self) -> dict:
        """What was drawn (findings with every parameter, the anatomy they left, the
        acquisition) and what was written; one line of synthcxr-truth.jsonl."""
        templates = dict(self.document.templates)
        anatomy = modify_anatomy(self.spec.anatomy, self.spec.findings)
        return {
            "dicom_id": self.ref.dicom_id,
            "subject_id": self.ref.subject_id,
            "study_id": self.ref.study_id,
            "index": self.ref.index,
            "path": self.ref.image_path,
            "size": None if self.image is None else int(self.image.shape[0]),
            "findings": [{**f.to_dict(), "template": templates[f.observation]} for f in self.spec.findings],
            "labels": self.labels,
            "report": self.report,
            "anatomy": anatomy.to_dict(),
            "acquisition": self.spec.acquisition.to_dict(),
        }


def check_size(size: int) -> None:
    if not LAYOUT.min_size <= size <= LAYOUT.max_size:
        raise ValueError(f"image size (--size) {size} is outside [{LAYOUT.min_size}, {LAYOUT.max_size}] pixels; "
                         f"anatomy needs at least {LAYOUT.min_size} px (256 is the default)")  # fmt: skip


def describe_study(index: int, seed: int = 0, variant: str = "mimic") -> Study:
    """Study `index` of the data set `seed` (and `variant`, see sampler.VARIANTS), without its image
    (fast: for statistics)."""
    if index < 0:
        raise ValueError(f"study index must be >= 0, got {index}")
    ref = study_ref(index, seed)
    spec = sample_spec(ref, seed, variant)
    return Study(ref, spec, write_report(spec.findings, rng_for(seed, REPORT, index)), None)


def render_study(index: int, seed: int = 0, size: int = 256, variant: str = "mimic") -> Study:
    """Study `index` of the data set `seed`, with its [size, size] uint8 film. The same
    (index, seed, variant) gives the same study at any size and in any process."""
    check_size(size)
    study = describe_study(index, seed, variant)
    return Study(study.ref, study.spec, study.document, render_image(study.spec, size))
