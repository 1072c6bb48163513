"""The front door and the docs: README's test command is the one CI runs, the README stays short,
every relative link in README.md and docs/ resolves, and no file of the repository cites a document
that lives outside it."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")
# notes kept outside the repository while it was built; a clone cannot open them
OUTSIDE = re.compile(r"\b(UNIX|METRICS|SYNTHCXR|OFFICIAL_CHECKPOINT|STYLE)\.md\b|\.\./shared/|shared/reference")


def markdown_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_the_readme_test_command_is_exactly_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in readme.splitlines() if line.rstrip().endswith("&& python -m pytest")]
    assert len(commands) == 1, commands
    assert commands[0].strip() in ci.splitlines()


def test_the_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_every_relative_link_in_the_docs_resolves():
    broken = []
    for md in markdown_files():
        for target, _anchor in LINK.findall(md.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (md.parent / target).exists():
                broken.append(f"{md.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_no_file_cites_a_document_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    hits = []
    for name in tracked.split():
        path = ROOT / name
        text_file = path.suffix in {".py", ".md", ".yaml", ".yml", ".toml", ".tsv", ".txt", ".cfg", ".sh", ""}
        if not text_file or not path.is_file():
            continue
        if name == "tests/test_docs.py":
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{name}:{number}")
    assert not hits, hits
