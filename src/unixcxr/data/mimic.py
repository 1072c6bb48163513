"""MIMIC-CXR-JPG layout loader (also serves SynthCXR, which writes the same layout).

    ROOT/files/p1X/p1XXXXXXX/sXXXXXXXX/<dicom_id>.jpg
    ROOT/reports/files/p1X/p1XXXXXXX/sXXXXXXXX.txt     (or beside the images: files/.../sXXX.txt)
    ROOT/mimic-cxr-2.0.0-{split,chexpert,metadata}.csv  (plain or .gz, as PhysioNet ships them)

One StudyRecord per study: its frontal (PA/AP) images, report sections, CheXpert labels and
the official split, which is by patient."""

from __future__ import annotations

import csv
import gzip
import io
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from unixcxr.data.reports import (
    SPLITS,
    DataError,
    StudyRecord,
    extract_findings_impression,
    labels_from_mapping,
)
from unixcxr.labels import OBSERVATIONS

SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
FRONTAL_VIEWS = frozenset({"PA", "AP"})
IMAGE_SUFFIX = ".jpg"
LAYOUT_HINT = "DATA_DIR must follow the MIMIC-CXR-JPG layout (see docs/synthcxr.md); generate one with SynthCXR"


def find_csv(root: Path, name: str, required: bool = True) -> Path | None:
    """The table `name` in root, plain or gzipped."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    if required:
        raise DataError(f"{root}: missing {name} (or {name}.gz); {LAYOUT_HINT}")
    return None


def read_csv(path: Path, columns: Iterable[str] = ()) -> Iterator[dict[str, str]]:
    """Rows of a (possibly gzipped) CSV as dicts; a clear error if `columns` are not all there."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        reader = csv.DictReader(text)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; {LAYOUT_HINT}")
        yield from reader


def patient_dir(subject_id: str) -> Path:
    """files/p10/p10000032: patients are bucketed by the first two digits of their id."""
    return Path("files") / f"p{subject_id[:2]}" / f"p{subject_id}"


def image_path(root: Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    return root / patient_dir(subject_id) / f"s{study_id}" / f"{dicom_id}{IMAGE_SUFFIX}"


def report_path(root: Path, subject_id: str, study_id: str) -> Path:
    """MIMIC-CXR-JPG keeps reports under reports/ (the unzipped mimic-cxr-reports.zip); some
    copies put them beside the image folders instead. The first that exists wins."""
    name = patient_dir(subject_id) / f"s{study_id}.txt"
    for candidate in (root / "reports" / name, root / name):
        if candidate.is_file():
            return candidate
    return root / "reports" / name


@dataclass
class _Study:
    subject_id: str
    split: str
    dicom_ids: list[str] = field(default_factory=list)


def _frontal_views(root: Path) -> dict[str, str]:
    path = find_csv(root, METADATA_CSV)
    views = {}
    for row in read_csv(path, ("dicom_id", "ViewPosition")):
        views[row["dicom_id"]] = row["ViewPosition"].strip().upper()
    return views


def _studies(root: Path, splits: tuple[str, ...], frontal_only: bool) -> dict[str, _Study]:
    """study_id -> its images and split, in the split file's order."""
    views = _frontal_views(root) if frontal_only else {}
    path = find_csv(root, SPLIT_CSV)
    studies: dict[str, _Study] = {}
    for row in read_csv(path, ("dicom_id", "study_id", "subject_id", "split")):
        if row["split"] not in SPLITS:
            raise DataError(f"{path}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
        if row["split"] not in splits or (frontal_only and views.get(row["dicom_id"]) not in FRONTAL_VIEWS):
            continue
        study = studies.setdefault(row["study_id"], _Study(row["subject_id"], row["split"]))
        if study.split != row["split"]:
            raise DataError(f"{path}: study {row['study_id']} has images in two splits")
        study.dicom_ids.append(row["dicom_id"])
    return studies


def _labels(root: Path) -> dict[str, dict]:
    path = find_csv(root, CHEXPERT_CSV, required=False)
    if path is None:
        warnings.warn(f"{root}: no {CHEXPERT_CSV}; all labels are blank", stacklevel=3)
        return {}
    labels = {}
    for row in read_csv(path, ("study_id", *OBSERVATIONS)):
        labels[row["study_id"]] = labels_from_mapping(row, source=str(path))
    return labels


def load_mimic(
    root: str | Path, splits: Iterable[str] = SPLITS, frontal_only: bool = True, progress: bool = True
) -> list[StudyRecord]:
    """Every study of the requested splits that has a report (and, by default, a frontal
    image). Studies whose report file is missing are skipped with one warning."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder; {LAYOUT_HINT}")
    splits = tuple(splits)
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise DataError(f"unknown split(s) {sorted(unknown)}; choose from {', '.join(SPLITS)}")
    studies = _studies(root, splits, frontal_only)
    labels = _labels(root)
    records, missing = [], []
    for study_id, study in tqdm(studies.items(), desc="reading reports", unit="study", disable=not progress):
        path = report_path(root, study.subject_id, study_id)
        if not path.is_file():
            missing.append(path)
            continue
        report = path.read_text(encoding="utf-8", errors="replace")
        findings, impression = extract_findings_impression(report)
        records.append(StudyRecord(
            study_id=study_id,
            subject_id=study.subject_id,
            image_paths=tuple(image_path(root, study.subject_id, study_id, d) for d in study.dicom_ids),
            image_ids=tuple(study.dicom_ids),
            report=report,
            findings=findings,
            impression=impression,
            labels=labels.get(study_id, dict.fromkeys(OBSERVATIONS)),
            split=study.split,
        ))
    if missing and not records:
        raise DataError(f"{root}: none of the {len(missing)} report files exist (e.g. {missing[0]}); "
                        "unzip mimic-cxr-reports.zip into DATA_DIR/reports")
    if missing:
        warnings.warn(f"{root}: skipped {len(missing)} studies without a report file (e.g. {missing[0]})",
                      stacklevel=2)
    return records
