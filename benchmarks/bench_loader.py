"""Data input: shard streaming samples/s vs DataLoader workers (0, 1, 2) on 256 px shards (PNG,
and JPEG for comparison); the preparation step (images/s, 1 and 2 processes) on full-size
JPEGs; and the JPEG draft decoding that preparation relies on. Synthetic radiograph-sized
images, written to a temporary folder. On a shared machine, rates follow the free cores.

    python -m benchmarks.bench_loader [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import machine, print_table, timed
from unixcxr.data.datasets import ShardLoader, ShardStream
from unixcxr.data.images import letterbox, load_image
from unixcxr.data.reports import StudyRecord
from unixcxr.data.shards import write_shards

SHARD_PX = 256  # the CPU presets' image size
SOURCE_PX = (2048, 1700)  # a MIMIC-CXR-JPG image is about 2500 x 3000; rows x columns
BATCH = 32
REPORT = "FINDINGS: Heart size is normal. No focal consolidation, effusion or pneumothorax. IMPRESSION: Normal."


def write_images(folder: Path, count: int, shape: tuple[int, int], suffix: str) -> list[StudyRecord]:
    """Smooth chest-like intensity fields plus noise (compressible like a radiograph, not like
    white noise), one study each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    records = []
    for i in range(count):
        field = 0.5 + 0.3 * np.sin(6 * x + i) * np.cos(4 * y) + rng.normal(0, 0.03, shape)
        path = folder / f"img{i}.{suffix}"
        Image.fromarray((np.clip(field, 0, 1) * 255).astype(np.uint8)).save(path, quality=90)
        records.append(StudyRecord(study_id=str(i), subject_id=str(i), image_paths=(path,), image_ids=(f"img{i}",),
                                   report=REPORT, findings=REPORT[10:53], impression="Normal."))
    return records


def loader_rate(shard_dir: Path, num_workers: int) -> float:
    """Samples per second over one epoch (decoded images collated into [B, S, S] batches)."""
    loader = ShardLoader(ShardStream(shard_dir, "train", batch_size=BATCH, shuffle_buffer=256), num_workers)
    start, count = time.perf_counter(), 0
    for batch in loader:
        count += batch["image"].shape[0]
    return count / (time.perf_counter() - start)


def main(quick: bool = False) -> dict:
    n_stream, n_prepare = (512, 24) if quick else (2048, 96)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = write_images(tmp / "small", n_stream, (SHARD_PX, SHARD_PX), "png")
        index = write_shards(small, tmp / "shards", size=SHARD_PX, shard_size=128, workers=2, progress=False)
        shard_bytes = sum((tmp / "shards" / s.file).stat().st_size for s in index.shards)
        loader_rate(tmp / "shards", 0)  # warm the page cache
        rates = {w: loader_rate(tmp / "shards", w) for w in (0, 1, 2)}
        write_shards(small, tmp / "jpg", size=SHARD_PX, shard_size=128, workers=2, image_format="jpg",
                     progress=False)
        jpg_rate = loader_rate(tmp / "jpg", 0)

        big = write_images(tmp / "big", n_prepare, SOURCE_PX, "jpg")
        path = big[0].image_paths[0]
        full = timed(lambda: letterbox(load_image(path), SHARD_PX), repeat=5, warmup=1)
        draft = timed(lambda: letterbox(load_image(path, min_size=SHARD_PX), SHARD_PX), repeat=5, warmup=1)
        prepare = {}
        for workers in (1, 2):
            start = time.perf_counter()
            write_shards(big, tmp / f"prep{workers}", size=SHARD_PX, workers=workers, progress=False)
            prepare[workers] = n_prepare / (time.perf_counter() - start)

    results = {
        "machine": machine(),
        **{f"stream_samples_per_s_workers_{w}": r for w, r in rates.items()},
        "stream_workers_2_vs_0": rates[2] / rates[0],
        "stream_jpg_samples_per_s_workers_0": jpg_rate,
        "shard_kb_per_sample": shard_bytes / n_stream / 1024,
        **{f"prepare_images_per_s_workers_{w}": r for w, r in prepare.items()},
        "jpeg_draft_speedup": full / draft,
    }
    print_table(f"data input ({machine()})", [
        *[(f"stream {SHARD_PX} px shards, {w} workers", f"{r:.0f} samples/s") for w, r in rates.items()],
        ("stream: 2 workers vs in-process", f"{rates[2] / rates[0]:.2f}x"),
        ("shard size", f"{shard_bytes / n_stream / 1024:.1f} KiB per sample (PNG)"),
        ("stream JPEG (q95) shards, 0 workers", f"{jpg_rate:.0f} samples/s  ({jpg_rate / rates[0]:.2f}x PNG)"),
        *[(f"prepare {SOURCE_PX[0]}x{SOURCE_PX[1]} JPEG -> {SHARD_PX} px, {w} proc", f"{r:.1f} images/s")
          for w, r in prepare.items()],
        ("JPEG load + letterbox: full decode", f"{1e3 * full:.1f} ms"),
        ("JPEG load + letterbox: draft decode", f"{1e3 * draft:.1f} ms  ({full / draft:.1f}x faster)"),
    ])
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images (about 4x faster)")
    main(parser.parse_args().quick)
