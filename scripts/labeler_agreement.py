"""The labeler against the Indiana University reports' expert MeSH codes (evaluate/iu_agreement.py):
per-class F1 on the odd-numbered reports (development) and the even-numbered ones (held out), for
the rule-based labeler and the simple negation-aware matcher, as the Markdown table in
docs/labeler.md. Needs torchxrayvision (the reports are read inside its installed package).

    python scripts/labeler_agreement.py                       # print the tables (~10 s)
    python scripts/labeler_agreement.py --save now.json       # keep the numbers (F1 only, no text)
    python scripts/labeler_agreement.py --before then.json    # add a "before" column from a saved run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unixcxr.evaluate.iu_agreement import SCORED, iu_cases, measure, negation_matcher  # noqa: E402
from unixcxr.labeler import label_reports  # noqa: E402


def table(mapping: str, now: dict, baseline: dict, before: dict | None) -> str:
    columns = ["observation", "n odd / even"]
    columns += ["before odd", "before even"] if before else []
    columns += ["labeler odd", "labeler even", "matcher odd", "matcher even"]
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    runs = ([before[mapping]] if before else []) + [now[mapping], baseline[mapping]]

    def cells(name: str | None) -> list[str]:  # None: the macro F1
        return [f"{100 * (run[half]['macro_f1'] if name is None else run[half]['per_class_f1'][name]):.1f}"
                for run in runs for half in ("odd", "even")]

    for name in SCORED:
        counts = f"{now[mapping]['odd']['n_present'][name]} / {now[mapping]['even']['n_present'][name]}"
        lines.append(f"| {name} | {counts} | " + " | ".join(cells(name)) + " |")
    reports = f"{now[mapping]['odd']['n_reports']} / {now[mapping]['even']['n_reports']} reports"
    lines.append(f"| **macro F1 ({len(SCORED)})** | {reports} | " + " | ".join(f"**{c}**" for c in cells(None)) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="write the labeler's numbers to this JSON")
    parser.add_argument("--before", type=Path, help="a JSON from --save, shown as the 'before' columns")
    args = parser.parse_args()
    cases = iu_cases()
    now = measure(label_reports, cases)
    baseline = measure(lambda texts: [negation_matcher(t) for t in texts], cases)
    before = json.loads(args.before.read_text()) if args.before else None
    if args.save:
        args.save.write_text(json.dumps(now, indent=1))
    for mapping in now:
        print(f"\n### {mapping.replace('_', ' ')} (F1 in %)\n\n{table(mapping, now, baseline, before)}")


if __name__ == "__main__":
    main()
