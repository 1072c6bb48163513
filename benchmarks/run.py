"""Run every benchmark once and collect what they print.

    python -m benchmarks.run --quick        # minutes: smaller sizes, one repeat
    python -m benchmarks.run --full         # the sizes quoted in the README
    python -m benchmarks.run --only decode,sampler   # refreshes those entries of the results file

Each benchmark runs in its own process (a clean allocator and thread pool, and one crash does not
stop the others) and prints ratios measured within its own run. The outputs are written to
benchmarks/results/<machine>.json and .md; the README quotes the Markdown."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["decode", "sampler", "vae", "train", "attention", "synthcxr", "loader", "labeler", "image_features",
         "cleaning", "serve"]


def discover() -> list[str]:
    found = {p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py")}
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def machine_name() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.node() or 'machine'}-{os.cpu_count()}cpu-{cpu}".replace(" ", "_").replace("/", "_")


def run_one(name: str, quick: bool, timeout: int) -> dict:
    cmd = [sys.executable, "-m", f"benchmarks.bench_{name}"]
    help_text = subprocess.run(cmd + ["--help"], capture_output=True, text=True, cwd=HERE.parent).stdout
    if quick and "--quick" in help_text:
        cmd.append("--quick")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent, timeout=timeout)
        status, out = ("ok" if proc.returncode == 0 else f"exit {proc.returncode}"), proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        status, out = f"timeout after {timeout} s", (err.stdout or b"").decode() if isinstance(err.stdout, bytes) \
            else (err.stdout or "")
    return {"name": name, "command": " ".join(cmd[1:]), "mode": "quick" if "--quick" in cmd else "full",
            "status": status, "seconds": round(time.perf_counter() - start, 1), "output": out.strip()}


def entry_mode(r: dict) -> str:
    """quick or full: what the entry's own run used (entries kept by --only may differ)."""
    return r.get("mode") or ("quick" if "--quick" in r.get("command", "") else "full")


def markdown(meta: dict, results: list[dict]) -> str:
    modes = sorted({entry_mode(r) for r in results})
    md = [f"# Benchmarks on {meta['machine']} ({' and '.join(modes)}, {meta['date']})", ""]
    if len(modes) > 1:
        md += ["Entries come from runs of both modes (each heading says which); `--only` refreshes single entries.", ""]
    for r in results:
        md += [f"## {r['name']} ({entry_mode(r)}, {r['status']}, {r['seconds']} s)", "", "```", r["output"], "```", ""]
    return "\n".join(md)


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller sizes, one repeat (default)")
    mode.add_argument("--full", action="store_true", help="the sizes quoted in the README")
    parser.add_argument("--only", default="", help=f"comma list among: {', '.join(discover())}")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per benchmark (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder (default: %(default)s)")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or discover()
    unknown = set(names) - set(discover())
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; available: {', '.join(discover())}")
    results = []
    for name in names:
        print(f"== {name} ...", flush=True)
        r = run_one(name, quick=not args.full, timeout=args.timeout)
        print(r["output"], f"\n-- {name}: {r['status']} in {r['seconds']} s", flush=True)
        results.append(r)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / machine_name()
    if args.only and stem.with_suffix(".json").is_file():  # --only refreshes those entries, keeps the others
        fresh = {r["name"] for r in results}
        kept = [r for r in json.loads(stem.with_suffix(".json").read_text())["benchmarks"] if r["name"] not in fresh]
        results = sorted(kept + results, key=lambda r: discover().index(r["name"]) if r["name"] in discover() else 99)
    modes = {entry_mode(r) for r in results}
    meta = {"machine": machine_name(), "python": platform.python_version(),
            "mode": modes.pop() if len(modes) == 1 else "mixed", "date": time.strftime("%Y-%m-%d %H:%M")}
    write_atomic(stem.with_suffix(".json"), json.dumps({**meta, "benchmarks": results}, indent=2))
    write_atomic(stem.with_suffix(".md"), markdown(meta, results))
    print(f"\nwrote {stem}.json and {stem}.md")
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
