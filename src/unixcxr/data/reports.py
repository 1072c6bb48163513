"""Radiology report text and the study record every loader returns.

Reports arrive in several shapes (MIMIC free text with "FINAL REPORT" and capitalised headers,
IU XML with one tag per section, our own "FINDINGS: ... IMPRESSION: ..." targets). The model
only ever needs FINDINGS and IMPRESSION, so this module reduces all of them to those two
strings, and `StudyRecord` carries them with the labels, whatever the source."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from unixcxr.labels import OBSERVATIONS

Label = int | None  # 1 positive, 0 negative, -1 uncertain, None blank (see unixcxr.labels)
SPLITS = ("train", "validate", "test")

FINDINGS, IMPRESSION = "FINDINGS", "IMPRESSION"
# Headers that open a section. Aliases map to the canonical name the extractor reports.
SECTION_ALIASES: dict[str, str] = {
    "EXAMINATION": "EXAMINATION", "EXAM": "EXAMINATION", "TYPE OF EXAMINATION": "EXAMINATION",
    "PROCEDURE": "EXAMINATION",
    "INDICATION": "INDICATION", "INDICATIONS": "INDICATION", "REASON FOR EXAM": "INDICATION",
    "REASON FOR EXAMINATION": "INDICATION", "CLINICAL INDICATION": "INDICATION",
    "HISTORY": "HISTORY", "CLINICAL HISTORY": "HISTORY", "CLINICAL INFORMATION": "HISTORY",
    "TECHNIQUE": "TECHNIQUE",
    "COMPARISON": "COMPARISON", "COMPARISONS": "COMPARISON",
    "FINDINGS": FINDINGS, "FINDING": FINDINGS, "FINDINGS AND IMPRESSION": FINDINGS,
    "IMPRESSION": IMPRESSION, "IMPRESSIONS": IMPRESSION, "CONCLUSION": IMPRESSION,
    "CONCLUSIONS": IMPRESSION, "SUMMARY": IMPRESSION,
    "WET READ": "WET READ", "NOTIFICATION": "NOTIFICATION", "RECOMMENDATION": "RECOMMENDATION",
    "RECOMMENDATIONS": "RECOMMENDATION", "RECOMMENDATION(S)": "RECOMMENDATION", "ADDENDUM": "ADDENDUM",
}
_HEADER_NAMES = "|".join(re.escape(h) for h in sorted(SECTION_ALIASES, key=len, reverse=True))
# A header is a known name followed by a colon, either at the start of a line (any case) or
# after a sentence inside a line (capitals only, so "prior findings: none" is not a header).
_HEADER = re.compile(
    rf"(?:^[ \t]*(?i:(?P<line>{_HEADER_NAMES}))|(?<![A-Za-z])(?P<inline>{_HEADER_NAMES}))[ \t]*:",
    re.MULTILINE,
)
_BANNER = re.compile(r"^[ \t]*FINAL REPORT[ \t]*$", re.MULTILINE)
_SPACE = re.compile(r"\s+")


class DataError(ValueError):
    """Input data that does not follow the expected layout; the message names the file and fix."""


@dataclass
class StudyRecord:
    """One study (one report, one or more frontal images), the unit every loader yields."""

    study_id: str
    subject_id: str
    image_paths: tuple[Path, ...]
    report: str
    findings: str
    impression: str
    labels: dict[str, Label] = field(default_factory=lambda: dict.fromkeys(OBSERVATIONS))
    split: str = "train"
    instruction: str | None = None  # the user prompt, for instruction-style (LLaVA) data
    image_ids: tuple[str, ...] = ()  # dicom ids, parallel to image_paths when known


def normalise_space(text: str) -> str:
    """Collapse line breaks and runs of spaces: report files are wrapped at fixed width."""
    return _SPACE.sub(" ", text).strip()


def split_sections(text: str) -> dict[str, str]:
    """Map canonical section name -> whitespace-normalised text. Text before the first header
    (other than the "FINAL REPORT" banner) is returned under "PREAMBLE"; a repeated section
    keeps both parts, joined."""
    text = _BANNER.sub("", text)
    matches = list(_HEADER.finditer(text))
    sections: dict[str, str] = {}
    preamble = normalise_space(text[: matches[0].start()] if matches else text)
    if preamble:
        sections["PREAMBLE"] = preamble
    for match, nxt in zip(matches, [*matches[1:], None]):
        name = SECTION_ALIASES[(match.group("line") or match.group("inline")).upper()]
        body = normalise_space(text[match.end() : nxt.start() if nxt else len(text)])
        if body:
            sections[name] = f"{sections[name]} {body}" if name in sections else body
    return sections


def extract_findings_impression(text: str) -> tuple[str, str]:
    """(findings, impression) of a report. A text without any section header (a bare
    generated report, a one-line prompt) is all findings."""
    sections = split_sections(text)
    if set(sections) <= {"PREAMBLE"}:
        return sections.get("PREAMBLE", ""), ""
    return sections.get(FINDINGS, ""), sections.get(IMPRESSION, "")


def format_report(findings: str, impression: str) -> str:
    """The target text the model reads and writes: "FINDINGS: ... IMPRESSION: ..."."""
    parts = [f"{FINDINGS}: {findings.strip()}" if findings.strip() else "",
             f"{IMPRESSION}: {impression.strip()}" if impression.strip() else ""]
    return " ".join(p for p in parts if p)


def iu_xml_sections(xml: bytes | str) -> dict[str, object]:
    """Sections of one Indiana University report XML: the AbstractText labels (COMPARISON,
    INDICATION, FINDINGS, IMPRESSION), MeSH terms (major: coded by
    staff; automatic: by the indexing software) and image ids."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise DataError(f"malformed report XML ({err})") from err
    sections: dict[str, object] = {
        (node.get("Label") or "").upper(): normalise_space(node.text or "")
        for node in root.iter("AbstractText")
    }
    sections["uid"] = (root.find("uId").get("id") if root.find("uId") is not None else "") or ""
    sections["mesh_major"] = tuple(normalise_space(n.text or "") for n in root.iter("major"))
    sections["mesh_automatic"] = tuple(normalise_space(n.text or "") for n in root.iter("automatic"))
    sections["image_ids"] = tuple(n.get("id", "") for n in root.iter("parentImage"))
    return sections


def parse_label(value: object) -> Label:
    """One CheXpert label cell -> 1 / 0 / -1 / None. Accepts CSV strings ("1.0", "", "-1"),
    numbers and NaN; anything else is an error (a silently wrong label is worse than none)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if value == "" or value.lower() == "nan":
            return None
        try:
            value = float(value)
        except ValueError as err:
            raise DataError(f"label value {value!r} is not one of 1, 0, -1 or blank") from err
    if isinstance(value, float) and math.isnan(value):
        return None
    if value not in (1, 0, -1):
        raise DataError(f"label value {value!r} is not one of 1, 0, -1 or blank")
    return int(value)


def labels_from_mapping(row: Mapping[str, object], source: str = "labels") -> dict[str, Label]:
    """The 14 labels in unixcxr.labels order from a row keyed by observation name; missing
    observations are blank. `source` names the file for error messages."""
    try:
        return {name: parse_label(row.get(name)) for name in OBSERVATIONS}
    except DataError as err:
        raise DataError(f"{source}: {err}") from None
