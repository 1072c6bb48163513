"""Rule-based labeler throughput on the real Indiana University chest X-ray reports (one core).

The 3,955 IU reports ship inside the installed torchxrayvision package
(torchxrayvision/data/NLMCXR_reports.tgz, licence CC BY-NC-ND 4.0). They are read in place and
never copied. Also prints the label distribution and how often our No Finding agrees with the
collection's own MeSH "normal" tag - a coarse, independent sanity check, not an accuracy.

    python -m benchmarks.bench_labeler [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tarfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from unixcxr.labeler import label_reports
from unixcxr.labels import OBSERVATIONS

IU_ARCHIVE = Path("data") / "NLMCXR_reports.tgz"
SECTIONS = ("INDICATION", "COMPARISON", "FINDINGS", "IMPRESSION")


def iu_reports() -> list[tuple[str, bool]]:
    """(report text with section headers, MeSH says normal) for every IU report with findings."""
    import torchxrayvision

    archive = Path(torchxrayvision.__file__).parent / IU_ARCHIVE
    reports = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.name.endswith(".xml"):
                continue
            root = ET.parse(tar.extractfile(member)).getroot()
            parts = {a.get("Label"): (a.text or "").strip() for a in root.iter("AbstractText")}
            text = "\n".join(f"{s}: {parts[s]}" for s in SECTIONS if parts.get(s))
            if parts.get("FINDINGS") or parts.get("IMPRESSION"):
                normal = any((m.text or "").strip().lower() == "normal" for m in root.iter("major"))
                reports.append((text, normal))
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed passes over all reports (best is kept)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    reports = iu_reports()
    texts = [t for t, _ in reports]
    wall, cpu = float("inf"), float("inf")
    for _ in range(args.repeat):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        labels = label_reports(texts)
        wall = min(wall, time.perf_counter() - start_wall)
        cpu = min(cpu, time.process_time() - start_cpu)
    # CPU time is what one core delivers; wall time also counts waiting for a busy, shared machine.
    print(f"IU reports: {len(texts)}, best of {args.repeat} passes on one core (target >= 1,000 reports/s):")
    print(f"  {len(texts) / cpu:,.0f} reports per CPU second   ({len(texts) / wall:,.0f} per wall second)")
    print(f"{'observation':28s} {'pos':>5s} {'neg':>5s} {'unc':>5s} {'blank':>6s}")
    for name in OBSERVATIONS:
        counts = Counter(row[name] for row in labels)
        print(f"{name:28s} {counts[1]:5d} {counts[0]:5d} {counts[-1]:5d} {counts[None]:6d}")
    agree = sum((row["No Finding"] == 1) == normal for row, (_, normal) in zip(labels, reports))
    print(f"No Finding == MeSH 'normal': {agree}/{len(reports)} = {agree / len(reports):.1%}")


if __name__ == "__main__":
    main()
