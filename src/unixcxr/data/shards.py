"""Training shards: images resized once (letterboxed) and packed with their report and labels
into WebDataset-style tar files, so training reads a few large sequential files instead of
decoding hundreds of thousands of full-size JPEGs every epoch.

    OUT/index.json              image size and format, every shard with its split and sample count
    OUT/train-00000.tar         <key>.png + <key>.json per sample (key = s<study>_<image id>)

Shards are written whole to a temporary name and renamed, so a crash never leaves a shard
that looks complete; the index is written last. Reading lives in unixcxr.data.datasets."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import tarfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from unixcxr.data.images import ImageLoadError, letterbox, load_image, pil_to_unit, to_uint8
from unixcxr.data.reports import SPLITS, DataError, StudyRecord
from unixcxr.files import FILE_MODE, atomic_output

INDEX_FILE = "index.json"
FORMAT_VERSION = 1
DEFAULT_SHARD_SIZE = 1000  # ~50 MB of 256 px PNGs: large sequential reads, many shards to spread
IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG"}
JPEG_QUALITY = 95
POOL_CHUNKSIZE = 8  # images per task sent to a worker process
TAR_MTIME = 0  # fixed member times: the same inputs give byte-identical shards


@dataclass(frozen=True)
class ShardInfo:
    file: str
    split: str
    samples: int


@dataclass
class ShardIndex:
    """What a shard folder holds; read by the streaming dataset to plan an epoch."""

    image_size: int
    image_format: str
    shards: list[ShardInfo] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # images that could not be read, with why
    format_version: int = FORMAT_VERSION

    def of_split(self, split: str) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == split]

    def save(self, folder: Path) -> Path:
        with atomic_output(folder / INDEX_FILE) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        return folder / INDEX_FILE

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ShardIndex:
        path = Path(folder) / INDEX_FILE
        if not path.is_file():
            raise DataError(f"{path}: no shard index; write shards with `unixcxr prepare DATA_DIR {folder}`")
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{path}: shard format {raw.get('format_version')} is not {FORMAT_VERSION}; "
                            "re-run `unixcxr prepare`")
        raw["shards"] = [ShardInfo(**s) for s in raw["shards"]]
        return cls(**raw)


@dataclass(frozen=True)
class _Sample:
    key: str
    image: Path
    meta: dict


def sample_metadata(record: StudyRecord, image_index: int, cleaned: bool = False) -> dict:
    """Everything a training sample carries besides its pixels: one image of a study, with the
    study's report and labels. The key names the image uniquely across the data set. `report` is the
    raw text; findings / impression are the cleaned ones when `cleaned`."""
    image_id = (record.image_ids or tuple(p.stem for p in record.image_paths))[image_index]
    key = f"s{record.study_id}_{image_id}".replace(".", "-")  # a dot would split the key in two
    return {"key": key, "study_id": record.study_id, "subject_id": record.subject_id, "image_id": image_id,
            "split": record.split, "report": record.report, "findings": record.findings,
            "impression": record.impression, "labels": record.labels, "instruction": record.instruction,
            "cleaned": cleaned}


def _samples(records: Iterable[StudyRecord], cleaned: set[str]) -> list[_Sample]:
    """One sample per frontal image, each carrying its study's report and labels."""
    samples = []
    for r in records:
        for i, path in enumerate(r.image_paths):
            meta = sample_metadata(r, i, r.study_id in cleaned)
            samples.append(_Sample(meta["key"], Path(path), meta))
    return samples


def encode_image(path: Path, size: int, image_format: str) -> bytes:
    """Load any radiograph, letterbox it to size x size, and encode it as 8-bit PNG/JPEG."""
    square = to_uint8(letterbox(load_image(path, min_size=size), size))
    buffer = io.BytesIO()
    options = {"quality": JPEG_QUALITY} if image_format == "jpg" else {}
    Image.fromarray(square).save(buffer, format=IMAGE_FORMATS[image_format], **options)
    return buffer.getvalue()


def _encode_task(task: tuple[Path, int, str]) -> bytes | str:
    """Pool worker: the encoded image, or the error message (one bad file must not stop a run)."""
    try:
        return encode_image(*task)
    except ImageLoadError as err:
        return str(err)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), TAR_MTIME, FILE_MODE
    tar.addfile(info, io.BytesIO(data))


def write_shards(
    records: Iterable[StudyRecord],
    out_dir: str | os.PathLike,
    size: int,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int = 1,
    image_format: str = "png",
    seed: int = 0,
    progress: bool = True,
    cleaned: set[str] = frozenset(),
) -> ShardIndex:
    """Write every frontal image of `records` into shards of `shard_size` samples per split.
    Samples are shuffled (by `seed`) before sharding so that every shard mixes patients;
    images are decoded in `workers` processes while the main process writes, in order.
    `cleaned`: the studies whose findings / impression are cleaned text (marked in each sample)."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format {image_format!r}: choose one of {sorted(IMAGE_FORMATS)}")
    if shard_size < 1 or size < 1:
        raise ValueError(f"shard_size ({shard_size}) and size ({size}) must be positive")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = _samples(records, cleaned)
    if not samples:
        raise DataError("no images to write: the records list no frontal images")
    ordered = _shuffled_by_split(samples, seed)
    index = ShardIndex(image_size=size, image_format=image_format)
    tasks = ((x.image, size, image_format) for x in ordered)
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(multiprocessing.Pool(workers))
            encoded = pool.imap(_encode_task, tasks, chunksize=POOL_CHUNKSIZE)
        else:
            encoded = map(_encode_task, tasks)
        bar = stack.enter_context(tqdm(total=len(ordered), desc="writing shards", unit="img",
                                       disable=not progress))
        writer = _ShardWriter(out_dir, shard_size, index)
        for sample, data in zip(ordered, encoded):
            bar.update()
            if isinstance(data, str):
                index.skipped.append(data)
            else:
                writer.add(sample, data)
        writer.close()
    if index.skipped:
        warnings.warn(f"skipped {len(index.skipped)} unreadable images, e.g. {index.skipped[0]}",
                      stacklevel=2)
    if not index.shards:
        raise DataError(f"no image could be read (e.g. {index.skipped[0]})")
    index.save(out_dir)
    return index


def _shuffled_by_split(samples: list[_Sample], seed: int) -> list[_Sample]:
    """Samples grouped by split (train, validate, test, then any other), shuffled inside each."""
    rng = np.random.default_rng(seed)
    rank = {name: i for i, name in enumerate(SPLITS)}
    ordered = []
    for split in sorted({x.meta["split"] for x in samples}, key=lambda n: (rank.get(n, len(rank)), n)):
        group = [x for x in samples if x.meta["split"] == split]
        ordered += [group[i] for i in rng.permutation(len(group))]
    return ordered


class _ShardWriter:
    """Appends samples to the current shard; a shard closes (renamed into place and listed in
    the index) after shard_size samples or when the split changes."""

    def __init__(self, out_dir: Path, shard_size: int, index: ShardIndex):
        self.out_dir, self.shard_size, self.index = out_dir, shard_size, index
        self.tar: tarfile.TarFile | None = None
        self.name, self.split, self.count = "", "", 0
        self.per_split: dict[str, int] = {}

    def add(self, sample: _Sample, image: bytes) -> None:
        if self.tar is not None and (self.count == self.shard_size or sample.meta["split"] != self.split):
            self.close()
        if self.tar is None:
            self._open(sample.meta["split"])
        _add_member(self.tar, f"{sample.key}.{self.index.image_format}", image)
        _add_member(self.tar, f"{sample.key}.json", json.dumps(sample.meta).encode("utf-8"))
        self.count += 1

    def _open(self, split: str) -> None:
        number = self.per_split.get(split, 0)
        self.per_split[split] = number + 1
        self.name, self.split, self.count = f"{split}-{number:05d}.tar", split, 0
        self.tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)

    @property
    def _tmp(self) -> Path:
        return self.out_dir / f".{self.name}.tmp"

    def close(self) -> None:
        if self.tar is None:
            return
        self.tar.close()
        os.replace(self._tmp, self.out_dir / self.name)
        self.index.shards.append(ShardInfo(self.name, self.split, self.count))
        self.tar = None


def iter_shard(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for every sample of one shard, read sequentially."""
    path = Path(path)
    key, files = None, {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                stem, _, ext = member.name.rpartition("/")[2].partition(".")
                if stem != key and files:
                    yield key, files
                    files = {}
                key = stem
                files[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"{path}: unreadable shard ({err}); re-run `unixcxr prepare`") from err
    if files:
        yield key, files


def decode_sample(key: str, files: dict[str, bytes], image_format: str) -> dict:
    """The sample's metadata (report, labels, ids) plus its image as float32 [S, S] in [0, 1]."""
    if "json" not in files or image_format not in files:
        raise DataError(f"shard sample {key} lacks its .json or .{image_format} member; "
                        "re-run `unixcxr prepare`")
    sample = json.loads(files["json"])
    with Image.open(io.BytesIO(files[image_format])) as img:
        sample["image"] = pil_to_unit(img)
    return sample
