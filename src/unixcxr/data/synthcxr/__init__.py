"""SynthCXR: the embedded default data set (see docs/synthcxr.md). Procedural chest films with
ground-truth findings and MIMIC-style reports, written in the MIMIC-CXR-JPG layout.

    from unixcxr.data.synthcxr import generate_dataset, render_study
    generate_dataset("data/synthcxr", n=1000, size=256, seed=0, workers=2)
    study = render_study(7, seed=0, size=256)  # .image [256, 256] uint8, .report, .labels, .truth
"""

from unixcxr.data.synthcxr.contact import contact_sheet
from unixcxr.data.synthcxr.findings import Finding, StudySpec, render_image, render_layers
from unixcxr.data.synthcxr.study import Study, describe_study, render_study
from unixcxr.data.synthcxr.writer import DatasetSummary, generate_dataset

__all__ = [
    "DatasetSummary", "Finding", "Study", "StudySpec", "contact_sheet", "describe_study", "generate_dataset",
    "render_image", "render_layers", "render_study",
]  # fmt: skip
