"""One way in to a data set, whatever its form: every command that reads training or evaluation data
(`train`, `evaluate`, `report`, `generate --prompts`) takes any of

- a folder in the MIMIC-CXR-JPG layout (real MIMIC-CXR-JPG, or `unixcxr synth` output);
- a shards folder written by `unixcxr prepare`, recognised by its index.json;
- either of them with a cleaned-reports JSONL (`unixcxr clean`) laid over the raw report text;
- and, for a split defined by an annotation file (the CheXGenBench / LLaVA-Rad generation CSV, a
  LLaVA JSON), the images that file names, found in the data set by their image id.

The unit is a `Sample`: one frontal image with its study's report and labels. Its `ImageRef` reads
the pixels from a file, or from a byte range inside a shard (offsets are read once from the tar
headers, so an image costs one seek and one read, like a file)."""

from __future__ import annotations

import io
import os
import tarfile
import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from unixcxr.data.cleaned import CleanedReports
from unixcxr.data.datasets import load_records
from unixcxr.data.images import ImageLoadError, load_image, pil_to_unit
from unixcxr.data.llava import load_generation_csv, load_understanding_json
from unixcxr.data.reports import SPLITS, DataError, StudyRecord, format_report
from unixcxr.data.shards import INDEX_FILE, ShardIndex, sample_metadata
from unixcxr.labels import OBSERVATIONS


@dataclass(frozen=True)
class ImageRef:
    """Where one image's bytes are: a whole file, or `length` bytes at `offset` inside a shard."""

    path: Path
    offset: int | None = None
    length: int | None = None

    def read(self, min_size: int | None = None) -> np.ndarray:
        """float32 [H, W] in [0, 1], as unixcxr.data.images.load_image gives for a file."""
        if self.offset is None:
            return load_image(self.path, min_size=min_size)
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.length)
            with Image.open(io.BytesIO(data)) as img:
                if min_size is not None and img.format == "JPEG":  # decode at the smallest DCT scale that will do
                    img.draft("L", (min_size, min_size))
                img.load()
                return pil_to_unit(img)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            raise ImageLoadError(f"{self.path} (bytes {self.offset}+{self.length}): unreadable image in a shard "
                                 f"({err}); re-run `unixcxr prepare`") from err

    def __str__(self) -> str:
        return str(self.path) if self.offset is None else f"{self.path}@{self.offset}"


@dataclass(frozen=True)
class Sample:
    """One frontal image of a study with the study's text and labels."""

    id: str  # s<study id>_<image id>: unique across the data set
    study_id: str
    subject_id: str
    image_id: str
    split: str
    image: ImageRef
    findings: str
    impression: str
    labels: dict
    instruction: str | None = None
    cleaned: bool = False  # findings / impression come from a cleaned-reports file

    @property
    def report(self) -> str:
        """The target text: "FINDINGS: ... IMPRESSION: ..."."""
        return format_report(self.findings, self.impression)

    @property
    def prompt(self) -> str:
        """The generation prompt: the findings text (the impression when there are no findings)."""
        return self.findings.strip() or self.impression.strip()


def is_shards(path: str | os.PathLike) -> bool:
    return (Path(path) / INDEX_FILE).is_file()


class DataSource:
    """The samples of one data set; read once per split and kept."""

    def __init__(self, root: str | os.PathLike, reports: str | os.PathLike | None = None, progress: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such data folder; give a MIMIC-CXR-JPG layout folder (or `unixcxr synth` "
                            "output) or a shards folder from `unixcxr prepare`")
        if not is_shards(self.root) and any(self.root.glob("*.tar")):
            raise DataError(f"{self.root}: shard files without {INDEX_FILE} (it is written last: `unixcxr prepare` did "
                            "not finish); run `unixcxr prepare` again into a new folder")
        self.kind = "shards" if is_shards(self.root) else "folder"
        self.cleaned = CleanedReports.load(reports) if reports else None
        self.progress = progress
        self._samples: dict[str, list[Sample]] = {}
        self._checked = False

    def __repr__(self) -> str:
        return f"DataSource({str(self.root)!r}, kind={self.kind!r})"

    @cached_property
    def index(self) -> ShardIndex:
        return ShardIndex.load(self.root)

    def splits(self) -> list[str]:
        if self.kind == "shards":
            return [s for s in SPLITS if self.index.of_split(s)]
        return list(SPLITS)

    def samples(self, split: str) -> list[Sample]:
        """Every frontal image of `split` that has report text, sorted by id: a data set gives the same
        samples in the same order whether it is read from its folder or from its shards."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        if split not in self._samples:
            raw = self._shard_samples(split) if self.kind == "shards" else self._folder_samples(split)
            kept = [s for s in self._apply_cleaned(raw) if s.findings.strip() or s.impression.strip()]
            self._samples[split] = sorted(kept, key=lambda s: s.id)
        return self._samples[split]

    def all_samples(self) -> list[Sample]:
        return [s for split in self.splits() for s in self.samples(split)]

    def records(self, split: str) -> list[StudyRecord]:
        """One StudyRecord per study (its first image), sorted by study id: what evaluation scores."""
        first: dict[str, Sample] = {}
        for sample in self.samples(split):
            first.setdefault(sample.study_id, sample)
        return [StudyRecord(study_id=s.study_id, subject_id=s.subject_id, image_paths=(s.image.path,),
                            report=s.report, findings=s.findings, impression=s.impression, labels=s.labels,
                            split=s.split, instruction=s.instruction, image_ids=(s.image_id,))
                for s in sorted(first.values(), key=lambda s: s.study_id)]

    def check_files(self, splits: list[str]) -> dict[str, int]:
        """Samples per split, after making sure every file they will read exists."""
        counts = {}
        for split in splits:
            samples = self.samples(split)
            missing = sorted({str(s.image.path) for s in samples if not s.image.path.is_file()})
            if missing:
                raise DataError(f"{self.root}: {len(missing)} image file(s) of split {split!r} are missing (e.g. "
                                f"{missing[0]}); restore them or re-run `unixcxr prepare`")
            counts[split] = len(samples)
        return counts

    # --- an annotation file as a split ---------------------------------------------------------------
    def annotated(self, path: str | os.PathLike, split: str) -> list[Sample]:
        """The samples an annotation file names (CheXGenBench / LLaVA-Rad CSV, or LLaVA JSON), with
        its text as their findings and, from a CSV, its labels. Images are found by image id among
        all of the data set's samples (an annotation split need not follow the data's own split)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such annotation file; give a CheXGenBench CSV (path, annotated_prompt, "
                            "chexpert_labels) or a LLaVA JSON")
        if path.suffix.lower() == ".csv":
            records = load_generation_csv(path, split=split, image_root=self.root)
        elif path.suffix.lower() == ".json":
            records = load_understanding_json(path, split=split, image_root=self.root)
        else:
            raise DataError(f"{path}: an annotation split is a .csv (CheXGenBench) or a .json (LLaVA) file")
        by_image = {s.image_id: s for s in self.all_samples()}
        out, missing = [], []
        for record in records:
            image_id = record.image_ids[0] if record.image_ids else Path(record.image_paths[0]).stem
            sample = by_image.get(image_id)
            if sample is None:
                missing.append(image_id)
                continue
            labels = record.labels if any(v is not None for v in record.labels.values()) else sample.labels
            out.append(replace(sample, split=split, findings=record.findings, impression=record.impression,
                               labels=labels, instruction=record.instruction or sample.instruction))
        if not out:
            raise DataError(f"{path}: none of its {len(records)} images is in {self.root} (e.g. image id "
                            f"{missing[0] if missing else '-'}); point --data at the data set it annotates")
        if missing:
            warnings.warn(f"{path}: {len(missing)} of {len(records)} images are not in {self.root} and are left out",
                          stacklevel=2)
        return out

    # --- readers -----------------------------------------------------------------------------------------
    def _folder_samples(self, split: str) -> list[Sample]:
        samples = []
        for record in load_records(self.root, splits=(split,), progress=self.progress):
            for i, path in enumerate(record.image_paths):
                meta = sample_metadata(record, i)
                samples.append(_sample(meta, ImageRef(Path(path))))
        return samples

    def _shard_samples(self, split: str) -> list[Sample]:
        samples = []
        for shard in self.index.of_split(split):
            samples += scan_shard(self.root / shard.file, self.index.image_format)
        return samples

    def _apply_cleaned(self, samples: list[Sample]) -> list[Sample]:
        if self.cleaned is None:
            return samples
        self.cleaned.check_matches({s.study_id for s in samples})
        out = []
        for sample in samples:
            text = self.cleaned.lookup(sample.study_id)
            out.append(sample if text is None else replace(sample, findings=text[0], impression=text[1], cleaned=True))
        return out


def _sample(meta: dict, image: ImageRef) -> Sample:
    labels = meta.get("labels") or dict.fromkeys(OBSERVATIONS)
    return Sample(id=meta["key"], study_id=str(meta["study_id"]), subject_id=str(meta.get("subject_id", "")),
                  image_id=str(meta["image_id"]), split=meta["split"], image=image, findings=meta.get("findings", ""),
                  impression=meta.get("impression", ""), labels=labels, instruction=meta.get("instruction"),
                  cleaned=bool(meta.get("cleaned", False)))


def scan_shard(path: Path, image_format: str) -> list[Sample]:
    """The samples of one shard, with the byte range of each image (headers only; images not decoded)."""
    import json

    metas, images = {}, {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                stem, _, ext = member.name.rpartition("/")[2].partition(".")
                if ext == "json":
                    metas[stem] = json.loads(tar.extractfile(member).read())
                elif ext == image_format:
                    images[stem] = (member.offset_data, member.size)
    except (tarfile.TarError, OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable shard ({err}); re-run `unixcxr prepare`") from err
    lost = sorted(set(metas) ^ set(images))
    if lost:
        raise DataError(f"{path}: sample {lost[0]} lacks its .json or .{image_format} member; re-run `unixcxr prepare`")
    return [_sample(meta, ImageRef(path, *images[key])) for key, meta in metas.items()]
