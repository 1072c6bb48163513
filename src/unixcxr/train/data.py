"""Training data from a data set (unixcxr.data.sources: a MIMIC-CXR-JPG layout folder, real or
SynthCXR, or `unixcxr prepare` shards, optionally with cleaned reports):

- items: one Sample per frontal image of a split, with its report sections;
- caches in the run folder, built once: letterboxed 8-bit films per resolution (a memory map),
  and raw VAE latents per resolution (the VAE is frozen after stage 0, so encoding every image at
  every step would only burn time); both are filled in parallel by all ranks;
- tokens: report targets (FINDINGS + IMPRESSION, or FINDINGS alone when the instruction asks only
  for findings), generation prompts (the findings text) and the 20 instruction templates;
- a batch plan: which items every micro-batch of every step holds, a pure function of (seed, step)
  over per-epoch permutations. Ranks take disjoint micro-batches of each global batch and
  DataLoader workers take whole micro-batches, so no sample is seen twice, and resuming needs only
  the step.
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from unixcxr.data.images import letterbox
from unixcxr.data.images import to_uint8 as film_to_uint8
from unixcxr.data.prompts import REPORT_INSTRUCTIONS, asks_findings_only
from unixcxr.data.reports import DataError, format_report
from unixcxr.data.sources import DataSource, ImageRef, Sample
from unixcxr.train.distributed import DistEnv, barrier

CACHE_CHUNK = 64  # images per task / per VAE batch while filling a cache
LATENT_DTYPE = np.float16  # raw latents on disk: half the bytes, far below the VAE's own error


def load_items(data: str | Path | DataSource, split: str) -> list[Sample]:
    """Every frontal image of `split` that has report text (a data folder, shards, or a DataSource)."""
    source = data if isinstance(data, DataSource) else DataSource(data)
    return source.samples(split)


# --- caches ------------------------------------------------------------------------------------------
def _key(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:12]


def items_key(items: list[Sample]) -> str:
    """Changes when the list of images or any file they are read from changes."""
    digest, stats = hashlib.sha256(), {}
    for item in items:
        path = item.image.path
        if path not in stats:  # a shard holds many images: stat it once
            stat = path.stat()
            stats[path] = f"{stat.st_size}\0{stat.st_mtime_ns}"
        digest.update(f"{item.image}\0{stats[path]}\n".encode())
    return digest.hexdigest()[:12]


def _fill_shared(path: Path, shape: tuple, dtype, fill: Callable[[list[int], np.ndarray], None], env: DistEnv,
                 desc: str, progress: bool) -> np.ndarray:
    """Create the .npy at `path` once: rank 0 allocates a temporary memory map, every rank fills its
    share of the rows (row i goes to rank i % world), rank 0 renames it into place."""
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.tmp")
        if env.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape).flush()
        barrier(env)
        out = np.lib.format.open_memmap(tmp, mode="r+")
        mine = list(range(env.rank, shape[0], env.world_size))
        chunks = [mine[i:i + CACHE_CHUNK] for i in range(0, len(mine), CACHE_CHUNK)]
        for chunk in tqdm(chunks, desc=desc, unit="chunk", disable=not (progress and env.is_main)):
            fill(chunk, out)
        out.flush()
        del out
        barrier(env)
        if env.is_main:
            os.replace(tmp, path)
        barrier(env)
    return np.load(path, mmap_mode="r")


def _load_film(task: tuple[ImageRef, int]) -> np.ndarray:
    image, size = task
    return film_to_uint8(letterbox(image.read(min_size=size), size))


def film_cache(items: list[Sample], size: int, cache_dir: Path, env: DistEnv, workers: int = 0,
               progress: bool = True) -> np.ndarray:
    """uint8 [N, size, size] letterboxed films, memory-mapped from cache_dir."""
    path = cache_dir / f"films_{size}_{items_key(items)}.npy"
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 and not path.is_file() else None

    def fill(rows: list[int], out: np.ndarray) -> None:
        tasks = [(items[i].image, size) for i in rows]
        for i, film in zip(rows, pool.imap(_load_film, tasks) if pool else map(_load_film, tasks)):
            out[i] = film

    try:
        return _fill_shared(path, (len(items), size, size), np.uint8, fill, env, f"films {size}px", progress)
    finally:
        if pool is not None:
            pool.close()


def module_fingerprint(module: torch.nn.Module) -> str:
    """Hash of every weight: a cache made with other VAE weights is never reused."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


def films_to_vae(films: np.ndarray) -> torch.Tensor:
    """uint8 [N, S, S] -> VAE input [N, 3, S, S] in [-1, 1]."""
    x = torch.from_numpy(np.array(films, dtype=np.float32)) / 127.5 - 1.0
    return x[:, None].expand(-1, 3, -1, -1)


def films_to_unit(films: np.ndarray) -> torch.Tensor:
    """uint8 [N, S, S] -> float [N, S, S] in [0, 1]."""
    return torch.from_numpy(np.array(films, dtype=np.float32)) / 255.0


@torch.no_grad()
def latent_cache(films: np.ndarray, films_key: str, vae, cache_dir: Path, env: DistEnv, device: torch.device,
                 progress: bool = True) -> np.ndarray:
    """Raw (un-normalised) posterior means [N, C, h, w] of the frozen VAE for every film."""
    f, C = vae.cfg.downsample, vae.cfg.latent_channels
    N, S = films.shape[0], films.shape[-1]
    path = cache_dir / f"latents_{S}_{_key(films_key, module_fingerprint(vae))}.npy"
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu",
                                                                                                   enabled=False)

    def fill(rows: list[int], out: np.ndarray) -> None:
        with autocast:
            posterior = vae.autoencoder.encode(films_to_vae(films[rows]).to(device)).latent_dist
        out[rows] = posterior.mean.float().cpu().numpy().astype(LATENT_DTYPE)

    return _fill_shared(path, (N, C, S // f, S // f), LATENT_DTYPE, fill, env, f"latents {S}px", progress)


# --- tokens ------------------------------------------------------------------------------------------
@dataclass
class TextTokens:
    """Token ids of every item's texts and of the instruction templates."""

    reports: list[list[int]]  # FINDINGS + IMPRESSION
    findings: list[list[int]]  # FINDINGS only (answers to findings-only instructions)
    prompts: list[list[int]]  # generation prompts
    own_instructions: list[list[int] | None]  # per item, for instruction-style data
    instructions: list[list[int]]  # the 20 templates
    findings_only: list[bool]  # per template: it asks for FINDINGS alone


def tokenize(tokenizer, items: list[Sample], max_tokens: int) -> TextTokens:
    def enc(texts: list[str]) -> list[list[int]]:
        return [ids[:max_tokens] for ids in tokenizer.encode_batch(texts)]

    own = [it.instruction for it in items]
    own_ids = enc([t or "" for t in own])
    return TextTokens(
        reports=enc([it.report for it in items]),
        findings=enc([format_report(it.findings, "") or it.report for it in items]),
        prompts=enc([it.prompt for it in items]),
        own_instructions=[ids if text else None for ids, text in zip(own_ids, own)],
        instructions=enc(list(REPORT_INSTRUCTIONS)),
        findings_only=[asks_findings_only(t) for t in REPORT_INSTRUCTIONS],
    )


# --- which items each micro-batch holds ----------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def seed_for(*parts: int) -> int:
    """A 63-bit seed from integers (seed, step, chunk, ...): independent streams per micro-batch."""
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class BatchPlan:
    """Global batch `step` = positions [step * B, (step + 1) * B) of the endless sequence of
    per-epoch permutations; it is cut into B / micro micro-batches ("chunks"), and rank r runs
    chunks r, r + R, r + 2R, ... So one process with accumulation A * R sees exactly the micro-
    batches that R processes with accumulation A see together."""

    num_items: int
    global_batch: int
    micro_batch: int
    world_size: int = 1
    rank: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.num_items <= 0:
            raise DataError("no training items: the data folder's train split is empty")
        if self.global_batch % (self.micro_batch * self.world_size):
            raise ValueError(f"batch_size {self.global_batch} is not a multiple of micro_batch_size "
                             f"{self.micro_batch} x {self.world_size} ranks")

    @property
    def accumulation(self) -> int:
        return self.global_batch // (self.micro_batch * self.world_size)

    def chunks(self, step: int) -> list[int]:
        return [a * self.world_size + self.rank for a in range(self.accumulation)]

    def indices(self, step: int, chunk: int) -> list[int]:
        start = step * self.global_batch + chunk * self.micro_batch
        n = self.num_items
        return [int(_permutation(n, self.seed, p // n)[p % n]) for p in range(start, start + self.micro_batch)]


class MicroBatchStream(Dataset):
    """Item k = this rank's k-th micro-batch from `start_step` on, built by `build(step, chunk,
    indices)`. A DataLoader's workers each build whole micro-batches, in order."""

    def __init__(self, plan: BatchPlan, build: Callable, start_step: int, end_step: int):
        self.plan, self.build, self.start, self.end = plan, build, start_step, end_step

    def __len__(self) -> int:
        return max(0, self.end - self.start) * self.plan.accumulation

    def __getitem__(self, k: int):
        step = self.start + k // self.plan.accumulation
        chunk = self.plan.chunks(step)[k % self.plan.accumulation]
        return self.build(step, chunk, self.plan.indices(step, chunk))


def _identity(x):
    return x


def micro_batches(plan: BatchPlan, build: Callable, start_step: int, end_step: int, num_workers: int = 0):
    stream = MicroBatchStream(plan, build, start_step, end_step)
    return DataLoader(stream, batch_size=None, shuffle=False, num_workers=num_workers, collate_fn=_identity,
                      multiprocessing_context="fork" if num_workers else None)


def example_rng(seed: int, step: int, chunk: int) -> random.Random:
    return random.Random(seed_for(seed, step, chunk))
