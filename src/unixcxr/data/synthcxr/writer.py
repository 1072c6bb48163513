"""Writing a SynthCXR data set to disk in the MIMIC-CXR-JPG layout (see docs/synthcxr.md).

Workers render and write one study each (image, report) and send back its manifest rows; the
parent writes every manifest in study order, atomically. Since study i depends only on
(seed, i, size), the files are byte-identical whatever the number of workers."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from unixcxr.data.prompts import REPORT_INSTRUCTIONS, asks_findings_only
from unixcxr.data.synthcxr.config import LAYOUT
from unixcxr.data.synthcxr.noise import raw_report
from unixcxr.data.synthcxr.sampler import PROMPTS, RAW_NOISE, SPLITS, VARIANTS, rng_for
from unixcxr.data.synthcxr.study import check_size, render_study
from unixcxr.files import write_bytes
from unixcxr.labels import OBSERVATIONS

SPLIT_NAMES = ("train", "validate", "test")
DEFAULT_SPLIT = (0.8, 0.1, 0.1)
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
TRUTH_JSONL = "synthcxr-truth.jsonl"
VIEW_POSITION = "PA"
LABEL_TEXT = {1: "1.0", 0: "0.0", -1: "-1.0", None: ""}


@dataclass(frozen=True)
class Job:
    """What every worker needs to render and write a study."""

    out_dir: str
    size: int
    seed: int
    raw_noise: bool
    variant: str = "mimic"


@dataclass
class DatasetSummary:
    out_dir: Path
    studies: int
    patients: int
    split_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.studies / max(self.seconds, 1e-9)


def check_arguments(out_dir: Path, n: int, size: int, workers: int, split: Sequence[float], overwrite: bool) -> None:
    """Reject bad arguments before any work, with messages that say what to change."""
    if n <= 0:
        raise ValueError(f"number of studies (--n) must be positive, got {n}")
    check_size(size)
    if workers <= 0:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if len(split) != 3 or any(f < 0 for f in split) or not np.isclose(sum(split), 1.0) or split[0] <= 0:
        raise ValueError(f"split must be three non-negative fractions (train, validate, test) summing to 1 "
                         f"with train > 0, e.g. 0.8,0.1,0.1; got {','.join(map(str, split))}")  # fmt: skip
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is a file; choose a folder path for the data set")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"{out_dir} is not empty; choose a new folder or pass overwrite=True (--overwrite)")


def generate_dataset(out_dir: str | os.PathLike, n: int, size: int = 256, seed: int = 0, workers: int = 1,
                     raw_noise: bool = False, split: Sequence[float] = DEFAULT_SPLIT, overwrite: bool = False,
                     progress: bool = True, variant: str = "mimic") -> DatasetSummary:
    """Write n studies to out_dir; returns counts and timing. docs/synthcxr.md describes the layout.
    variant: what the studies show (sampler.VARIANTS)."""
    out_dir = Path(out_dir)
    check_arguments(out_dir, n, size, workers, split, overwrite)
    if variant not in VARIANTS:
        raise ValueError(f"unknown SynthCXR variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    job = Job(str(out_dir), size, seed, raw_noise, variant)
    rows = list(tqdm(_render_all(job, n, workers), total=n, desc="synthcxr", unit="img", disable=not progress))
    splits = assign_splits(sorted({r["patient"] for r in rows}), split, seed)
    for row in rows:
        row["split"] = splits[row["patient"]]
    write_manifests(out_dir, rows, size)
    counts = {name: sum(r["split"] == name for r in rows) for name in SPLIT_NAMES}
    return DatasetSummary(out_dir, n, len(splits), counts, time.perf_counter() - start)


def _render_all(job: Job, n: int, workers: int) -> Iterator[dict]:
    """Manifest rows in study order, rendered here or by a pool of processes."""
    write = partial(write_study, job)
    if workers == 1:
        yield from map(write, range(n))
        return
    chunk = max(1, min(16, n // (workers * 8)))
    with multiprocessing.get_context().Pool(workers) as pool:
        yield from pool.imap(write, range(n), chunksize=chunk)


def write_study(job: Job, index: int) -> dict:
    """Render study `index`, write its image and report; return its manifest row."""
    study = render_study(index, job.seed, job.size, job.variant)
    ref, root = study.ref, Path(job.out_dir)
    image_path, report_path = root / ref.image_path, root / ref.report_path
    image_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(study.image, mode="L").save(buffer, format="JPEG", quality=LAYOUT.jpeg_quality)
    write_atomic(image_path, buffer.getvalue())
    text = raw_report(study.document, rng_for(job.seed, RAW_NOISE, index)) if job.raw_noise else study.report + "\n"
    write_atomic(report_path, text.encode("utf-8"))
    instructions = rng_for(job.seed, PROMPTS, index)
    return {"patient": ref.patient, "index": index, "subject_id": ref.subject_id, "study_id": ref.study_id,
            "dicom_id": ref.dicom_id, "path": ref.image_path, "labels": study.labels, "report": study.report,
            "findings": study.document.findings_text, "truth": study.truth,
            "instruction": REPORT_INSTRUCTIONS[int(instructions.integers(len(REPORT_INSTRUCTIONS)))]}  # fmt: skip


def assign_splits(patients: list[int], fractions: Sequence[float], seed: int) -> dict[int, str]:
    """Patient -> split: a seeded shuffle cut by the fractions (largest remainders), every
    split with a positive fraction getting at least one patient when there are enough."""
    order = rng_for(seed, SPLITS, 0).permutation(len(patients))
    wanted = np.asarray(fractions, dtype=float) * len(patients)
    counts = np.floor(wanted).astype(int)
    for i in np.argsort(-(wanted - counts), kind="stable")[: len(patients) - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((counts == 0) & (np.asarray(fractions) > 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor], counts[i] = counts[donor] - 1, 1
    names = np.repeat(SPLIT_NAMES, counts)
    return {patients[p]: str(names[rank]) for rank, p in enumerate(order)}


def write_manifests(out_dir: Path, rows: list[dict], size: int) -> None:
    """Every table and index file of the data set, from the rows in study order."""
    _write_csv(out_dir / SPLIT_CSV, ["dicom_id", "study_id", "subject_id", "split"],
               [[r["dicom_id"], r["study_id"], r["subject_id"], r["split"]] for r in rows])  # fmt: skip
    _write_csv(out_dir / CHEXPERT_CSV, ["subject_id", "study_id", *OBSERVATIONS],
               [[r["subject_id"], r["study_id"], *(LABEL_TEXT[r["labels"][o]] for o in OBSERVATIONS)] for r in rows])
    _write_csv(out_dir / METADATA_CSV, ["dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns"],
               [[r["dicom_id"], r["subject_id"], r["study_id"], VIEW_POSITION, size, size] for r in rows])  # fmt: skip
    truth = "".join(json.dumps({**r["truth"], "split": r["split"]}, sort_keys=True) + "\n" for r in rows)
    write_atomic(out_dir / TRUTH_JSONL, truth.encode("utf-8"))
    for name in SPLIT_NAMES:
        members = [r for r in rows if r["split"] == name]
        records = [understanding_record(r) for r in members]
        write_atomic(out_dir / f"understanding_{name}.json", json.dumps(records, indent=1).encode("utf-8"))
        _write_csv(out_dir / f"generation_{name}.csv", ["path", "annotated_prompt", "chexpert_labels"],
                   [[r["path"], r["findings"], chexpert_label_text(r["labels"])] for r in members])  # fmt: skip


def understanding_record(row: dict) -> dict:
    """LLaVA-style instruction record; a FINDINGS-only instruction gets the FINDINGS alone."""
    answer = f"FINDINGS: {row['findings']}" if asks_findings_only(row["instruction"]) else row["report"]
    return {"messages": [{"role": "user", "content": "<image>\n" + row["instruction"]},
                         {"role": "assistant", "content": answer}],
            "images": [row["path"]]}  # fmt: skip


def chexpert_label_text(labels: dict) -> str:
    """CheXGenBench's form: a Python dict literal with 1.0 / 0.0 / -1.0 / nan."""
    return repr({name: (float("nan") if labels[name] is None else float(labels[name])) for name in OBSERVATIONS})


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(path, text.getvalue().encode("utf-8"))


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    write_bytes(path, data)
