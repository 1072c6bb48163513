"""SynthCXR generation speed: render-only rate (one process, in memory) and full data set
writing (render + JPEG + report + manifests) with 1 and 2 worker processes, at 256 px.

    python -m benchmarks.bench_synthcxr [--n 300] [--size 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from unixcxr.data.synthcxr import describe_study, generate_dataset, render_study

TARGET = 50.0  # images/s on 2 cores at 256 px, with JPEG writing (SYNTHCXR.md asks for thousands a minute)


def render_rate(n: int, size: int) -> tuple[float, float]:
    """(studies/s described only, images/s rendered) in this process."""
    render_study(0, seed=0, size=size)  # warm up imports and caches
    start = time.perf_counter()
    for i in range(n):
        describe_study(i, seed=0)
    described = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(n):
        render_study(i, seed=0, size=size)
    return described, n / (time.perf_counter() - start)


def write_rate(n: int, size: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_dataset(os.path.join(tmp, "data"), n, size=size, seed=0, workers=workers, progress=False)
    return summary.images_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="studies per measurement (default: 300)")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    print(f"SynthCXR benchmark: {args.n} studies at {args.size} px, {os.cpu_count()} CPUs")
    described, rendered = render_rate(args.n, args.size)
    print(f"  report + labels only (1 process)   {described:8.1f} studies/s")
    print(f"  render only, in memory (1 process) {rendered:8.1f} images/s")
    rates = {}
    for workers in (1, 2):
        rates[workers] = write_rate(args.n, args.size, workers)
        print(f"  write data set, {workers} worker(s)        {rates[workers]:8.1f} images/s  (JPEG, reports, manifests)")
    print(f"  speed-up 2 vs 1 workers            {rates[2] / rates[1]:8.2f}x")
    print(f"  target >= {TARGET:.0f} images/s with 2 workers: {'met' if rates[2] >= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
