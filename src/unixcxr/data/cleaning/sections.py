"""FINDINGS and IMPRESSION of a raw report, tidied for the rule stage, and sentence splitting.

Section extraction itself is unixcxr.data.reports (MIMIC free text, IU fields joined with headers).
This module adds what cleaning needs on top: IU sections sometimes carry a second report pasted
inline ("... Exam: CHEST 2V Date: XXXX Comparison: CT chest XXXX History: dyspnea FINDINGS: ..."),
whose metadata headers are mixed-case and so stay in the section text; and a body-part lead
("Chest: The heart is ..."). Everything but FINDINGS and IMPRESSION is metadata a report generator
must not learn to write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from unixcxr.data.reports import extract_findings_impression, format_report
from unixcxr.data.reports import normalise_space as normalise_whitespace

# Metadata headers that show up inside a kept section, in any case but always with a colon.
_METADATA = ("EXAMINATION", "EXAM", "INDICATIONS", "INDICATION", "CLINICAL HISTORY", "HISTORY",
             "REASON FOR EXAMINATION", "REASON FOR EXAM", "TECHNIQUE", "COMPARISONS", "COMPARISON",
             "DATE", "NOTIFICATION")  # fmt: skip
_INLINE_METADATA = re.compile(r"(?i)(?<![A-Za-z])(?:" + "|".join(_METADATA) + r")\s*:")
_BANNER = re.compile(r"(?i)\b(?:FINAL|PRELIMINARY) REPORT\b")
_BODY_PART_LEAD = re.compile(r"(?i)^\s*chest\s*[:.]\s*")  # IU "Chest: The heart is ..."
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


@dataclass(frozen=True)
class Sections:
    """The two sections a clean report keeps; either may be empty."""

    findings: str = ""
    impression: str = ""

    def is_empty(self) -> bool:
        return not (self.findings.strip() or self.impression.strip())

    def as_text(self) -> str:
        """The clean one-line format: "FINDINGS: ... IMPRESSION: ...", an empty section omitted."""
        return format_report(self.findings, self.impression)


def _metadata_run_end(body: str, start: int) -> int:
    """Where an inline metadata run that starts at `start` ends: at the next inline header or after
    its first sentence, whichever comes first, so a finding written after it is not swallowed."""
    ends = [len(body)]
    if following := _INLINE_METADATA.search(body, start):
        ends.append(following.start())
    if sentence_end := _SENTENCE_END.search(body, start):
        ends.append(sentence_end.end())
    return min(ends)


def _drop_inline_metadata(body: str) -> str:
    """Remove "History: shortness of breath" style runs found inside a kept section."""
    out, cursor = [], 0
    while header := _INLINE_METADATA.search(body, cursor):
        out.append(body[cursor:header.start()])
        cursor = _metadata_run_end(body, header.end())
    out.append(body[cursor:])
    return " ".join(out)


def tidy_section(body: str) -> str:
    """One extracted section without banners, inline metadata or a body-part lead."""
    return normalise_whitespace(_BODY_PART_LEAD.sub("", _drop_inline_metadata(_BANNER.sub(" ", body))))


def extract_sections(text: str) -> Sections:
    """FINDINGS and IMPRESSION of a raw report; a report without any header is all findings."""
    findings, impression = extract_findings_impression(text)
    return Sections(tidy_section(findings), tidy_section(impression))


# Abbreviations whose period does not end a sentence ("Dr. ___", "8:45 a.m. on ___").
_ABBREVIATIONS = re.compile(r"\b(Dr|Drs|Mr|Mrs|Ms|vs|approx|e\.g|i\.e|a\.m|p\.m|No(?=\.\s*\d))\.", re.I)
_PROTECT = "\u2024"  # one-dot leader: stands in for a protected period while splitting
# List numbers opening an item: "1. No acute process. 2. Small effusion." and "3.Chronic findings".
_ENUMERATOR = re.compile(r"(?:^|(?<=[.!?:;])|(?<=\s))\(?\d{1,2}[.)](?=\s*[A-Za-z])\s*")
# Sentence ends: end punctuation and space, a "; " before a capital, and IU's "normal.No change" typo.
_SPLIT = re.compile(r"(?<=[.!?])\s+|\s*;\s+(?=[A-Z])|(?<=[A-Za-z]{2}\.)(?=[A-Z][a-z])")


def split_sentences(section: str) -> list[str]:
    """Sentences of one section, list numbers removed, abbreviations kept whole."""
    text = _ABBREVIATIONS.sub(lambda m: m.group(0)[:-1] + _PROTECT, normalise_whitespace(section))
    text = _ENUMERATOR.sub(" ", text)
    return [s.replace(_PROTECT, ".").strip() for s in _SPLIT.split(text) if s.strip()]
