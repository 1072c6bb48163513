"""Feature extraction throughput for the image metrics (images per second).

Measures the network alone (pre-made batches) and the whole path from PNG files on disk
(decode, resize, crop, normalise, forward) with `extract_features`, without the cache.

    python -m benchmarks.bench_image_features [--features effnet-lite0|rad-dino:PATH]
        [--images 64] [--batch-size 32] [--device cpu] [--workers 0] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unixcxr.evaluate.image_features import build_extractor, extract_features, list_images

FILM_SIZE = 512  # pixels of the synthetic PNG films read from disk


def write_films(folder: Path, count: int) -> list[Path]:
    """Smooth random grayscale films (the content does not change the cost)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        coarse = rng.random((16, 16))
        film = Image.fromarray((coarse * 255).astype(np.uint8)).resize((FILM_SIZE, FILM_SIZE), Image.BICUBIC)
        film.save(folder / f"film{i:04d}.png")
    return list_images(folder)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="effnet-lite0")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    extractor = build_extractor(args.features).to(args.device)
    size = extractor.spec.image_size
    batch = torch.randn(args.batch_size, 3, size, size, device=args.device)
    extractor(batch)  # warm-up
    synchronize(args.device)
    start, steps = time.perf_counter(), max(1, args.images // args.batch_size)
    for _ in range(steps):
        extractor(batch)
    synchronize(args.device)
    network_rate = steps * args.batch_size / (time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        files = write_films(Path(tmp), args.images)
        start = time.perf_counter()
        extract_features(files, extractor, args.batch_size, args.device, args.workers, cache_dir=None, progress=False)
        synchronize(args.device)
        end_to_end_rate = len(files) / (time.perf_counter() - start)

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} "
    device += "" if args.device.startswith("cuda") else "threads)"
    print(f"{extractor.spec.name} ({extractor.spec.dim}-d at {size} px) on {device}, batch {args.batch_size}:")
    print(f"  network only        {network_rate:8.1f} images/s")
    print(f"  from {FILM_SIZE}px PNG files {end_to_end_rate:8.1f} images/s  ({args.workers} decode workers)")


if __name__ == "__main__":
    main()
