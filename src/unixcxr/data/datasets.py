"""torch Datasets over our data sources.

- `load_records(data_dir)`: StudyRecords from a data folder (MIMIC-CXR-JPG / SynthCXR layout).
- `RecordImageDataset`: map-style, one sample per frontal image, decoded from the original
  files on the fly (evaluation, small data, no preparation step).
- `ShardStream` + `ShardLoader`: streaming training input from `unixcxr prepare` shards.
  Shards are split across torch.distributed ranks and DataLoader workers without overlap;
  a shuffle buffer mixes samples; and the position (epoch, samples consumed) can be saved and
  restored so that a resumed run sees exactly the batches the interrupted run would have seen.

A sample is a dict: "image" float32 [S, S] in [0, 1] plus the metadata of unixcxr.data.shards
(key, study_id, subject_id, image_id, split, report, findings, impression, labels, instruction).
The model's sequence batches are built from these by unixcxr.data.batches."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from unixcxr.data.images import letterbox, load_image
from unixcxr.data.mimic import SPLIT_CSV, find_csv, load_mimic
from unixcxr.data.reports import SPLITS, DataError, StudyRecord
from unixcxr.data.shards import ShardIndex, decode_sample, iter_shard, sample_metadata

DEFAULT_SHUFFLE_BUFFER = 1000


def load_records(data_dir: str | Path, splits: Iterable[str] = SPLITS,
                 progress: bool = True) -> list[StudyRecord]:
    """StudyRecords of a data folder in the MIMIC-CXR-JPG layout (real MIMIC or SynthCXR)."""
    data_dir = Path(data_dir)
    find_csv(data_dir, SPLIT_CSV)  # a clear layout error before anything else
    return load_mimic(data_dir, splits=splits, progress=progress)


class RecordImageDataset(Dataset):
    """One sample per frontal image of `records`, letterboxed to `size` on the fly."""

    def __init__(self, records: Iterable[StudyRecord], size: int,
                 transform: Callable[[dict], object] | None = None):
        self.records = list(records)
        self.index = [(r, i) for r, rec in enumerate(self.records) for i in range(len(rec.image_paths))]
        self.size, self.transform = size, transform

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int):
        record_index, image_index = self.index[item]
        record = self.records[record_index]
        sample = sample_metadata(record, image_index)
        image = load_image(record.image_paths[image_index], min_size=self.size)
        sample["image"] = letterbox(image, self.size)
        return self.transform(sample) if self.transform else sample


@dataclass(frozen=True)
class StreamPosition:
    """Where a rank stands in the stream, and the settings that make that position mean the
    same samples on resume (the split of shards over workers depends on all of them)."""

    epoch: int = 0
    samples_consumed: int = 0  # by this rank, counted in samples handed to the training loop
    batch_size: int = 1
    num_workers: int = 0
    world_size: int = 1
    seed: int = 0


class ShardStream(IterableDataset):
    """Samples of one split of a shard folder, streamed.

    Per epoch the shard order is permuted (by seed and epoch); shard k goes to rank k % R,
    and within a rank to logical worker j % W. Each worker reads its shards in order through
    a shuffle buffer. A DataLoader takes whole batches from workers in turn (0, 1, ..., W-1,
    skipping exhausted ones), so the rank's batch sequence is fully determined; to resume
    after n samples, each worker skips what it had delivered and the workers' roles are
    rotated so that the next batch comes from the right one. `batch_size` must therefore be
    the DataLoader's (ShardLoader guarantees it)."""

    def __init__(self, shard_dir: str | Path, split: str = "train", *, batch_size: int = 1,
                 shuffle: bool = True, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None,
                 transform: Callable[[dict], object] | None = None):
        self.shard_dir = Path(shard_dir)
        self.index = ShardIndex.load(self.shard_dir)
        self.shards = self.index.of_split(split)
        if not self.shards:
            raise DataError(f"{self.shard_dir}: no {split!r} shards; splits present: "
                            f"{sorted({s.split for s in self.index.shards})}")
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        if world_size is None:
            world_size = dist.get_world_size() if distributed else 1
        self.world_size = world_size
        if len(self.shards) < self.world_size:  # a rank without data would stall the others
            raise DataError(f"{self.shard_dir}: {len(self.shards)} {split!r} shards cannot feed "
                            f"{self.world_size} ranks; re-run `unixcxr prepare` with a smaller --shard-size")
        self.batch_size, self.shuffle, self.seed, self.transform = batch_size, shuffle, seed, transform
        self.shuffle_buffer = shuffle_buffer if shuffle else 0
        self.epoch, self.samples_consumed = 0, 0

    def set_position(self, epoch: int, samples_consumed: int = 0) -> None:
        """Start the next iteration at `epoch`, after this rank's first `samples_consumed`."""
        self.epoch, self.samples_consumed = epoch, samples_consumed

    def worker_shards(self, epoch: int, num_workers: int) -> list[list[int]]:
        """Shard numbers (into self.shards) that each logical worker of this rank reads."""
        order = list(range(len(self.shards)))
        if self.shuffle:
            order = [int(i) for i in np.random.default_rng([self.seed, epoch]).permutation(len(order))]
        mine = order[self.rank :: self.world_size]
        return [mine[w::num_workers] for w in range(num_workers)]

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        plan = self.worker_shards(self.epoch, num_workers)
        totals = [sum(self.shards[i].samples for i in shards) for shards in plan]
        delivered, first = _split_consumed(totals, self.batch_size, self.samples_consumed)
        logical = (worker + first) % num_workers
        stream = self._worker_stream(plan[logical], logical)
        for key, files in _skip(stream, delivered[logical]):
            sample = decode_sample(key, files, self.index.image_format)
            yield self.transform(sample) if self.transform else sample

    def _worker_stream(self, shard_numbers: list[int], logical_worker: int) -> Iterator[tuple[str, dict]]:
        raw = (s for i in shard_numbers for s in iter_shard(self.shard_dir / self.shards[i].file))
        entropy = [self.seed, self.epoch, self.rank, logical_worker]
        rng = random.Random(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
        return _buffer_shuffle(raw, self.shuffle_buffer, rng)


def _skip(stream: Iterator, n: int) -> Iterator:
    """Drop the first n items without decoding them (raw bytes are cheap; PNG decoding is not)."""
    for _ in range(n):
        next(stream, None)
    return stream


def _buffer_shuffle(items: Iterator, size: int, rng: random.Random) -> Iterator:
    """Approximate shuffle of a stream with `size` items in memory: each new item replaces a
    random buffered one, which is emitted. Deterministic for a given rng seed."""
    if size <= 1:
        yield from items
        return
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


def _split_consumed(totals: list[int], batch_size: int, consumed: int) -> tuple[list[int], int]:
    """Replay the DataLoader's round-robin over workers (batches of `batch_size`, a shorter last
    batch per worker, exhausted workers skipped) for `consumed` samples. Returns how many
    samples each worker delivered, and which worker would deliver the next batch."""
    delivered, left, last = [0] * len(totals), consumed, -1
    while left > 0:
        progressed = False
        for w, total in enumerate(totals):
            batch = min(batch_size, total - delivered[w])
            if batch <= 0 or left == 0:
                continue
            if batch > left:
                raise DataError(f"resume position {consumed} is not on a batch boundary of {batch_size}")
            delivered[w], left, last, progressed = delivered[w] + batch, left - batch, w, True
        if not progressed:
            raise DataError(f"resume position {consumed} is beyond the epoch ({sum(totals)} samples)")
    return delivered, (last + 1) % len(totals)


def collate_samples(samples: list[dict]) -> dict:
    """Stack images to [B, S, S] float32; keep every other field as a list of B values."""
    batch = {k: [s[k] for s in samples] for k in samples[0]}
    batch["image"] = torch.from_numpy(np.stack(batch["image"]))
    return batch


class ShardLoader:
    """A DataLoader over a ShardStream that counts what it hands out, so that its position can
    be checkpointed: state_dict() / load_state_dict(), then iterate again to continue exactly
    where the interrupted run stopped. One `for` loop over it is one epoch."""

    def __init__(self, stream: ShardStream, num_workers: int = 0,
                 collate_fn: Callable[[list], object] = collate_samples, **loader_kwargs):
        if loader_kwargs.get("persistent_workers"):
            raise ValueError("ShardLoader needs fresh workers each epoch (they carry the position); "
                             "drop persistent_workers")
        self.stream, self.num_workers, self.collate_fn = stream, num_workers, collate_fn
        self.loader_kwargs = loader_kwargs
        self.epoch, self.samples_consumed = 0, 0

    def __len__(self) -> int:
        """Batches per epoch on this rank (the last batch of each worker may be short)."""
        plan = self.stream.worker_shards(self.epoch, max(1, self.num_workers))
        totals = (sum(self.stream.shards[i].samples for i in shards) for shards in plan)
        return sum(math.ceil(t / self.stream.batch_size) for t in totals)

    def __iter__(self) -> Iterator:
        self.stream.set_position(self.epoch, self.samples_consumed)
        loader = DataLoader(self.stream, batch_size=self.stream.batch_size, num_workers=self.num_workers,
                            collate_fn=_counted(self.collate_fn), **self.loader_kwargs)
        for count, batch in loader:
            self.samples_consumed += count
            yield batch
        self.epoch, self.samples_consumed = self.epoch + 1, 0

    def state_dict(self) -> dict:
        s = self.stream
        return asdict(StreamPosition(self.epoch, self.samples_consumed, s.batch_size, self.num_workers,
                                     s.world_size, s.seed))

    def load_state_dict(self, state: dict) -> None:
        saved = StreamPosition(**state)
        now = StreamPosition(saved.epoch, saved.samples_consumed, self.stream.batch_size, self.num_workers,
                             self.stream.world_size, self.stream.seed)
        if saved != now:
            raise DataError(f"cannot resume the data stream exactly: saved with {saved}, now {now}; "
                            "resume with the same batch size, workers, world size and seed")
        self.epoch, self.samples_consumed = saved.epoch, saved.samples_consumed


class _counted:
    """collate_fn wrapper returning (number of samples, batch); a class so workers can pickle it."""

    def __init__(self, collate_fn: Callable[[list], object]):
        self.collate_fn = collate_fn

    def __call__(self, samples: list) -> tuple[int, object]:
        return len(samples), self.collate_fn(samples)
