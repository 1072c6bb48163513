"""FINDINGS and IMPRESSION of a raw report, tidied for the rule stage, and sentence splitting.

Section extraction itself is unixcxr.data.reports (MIMIC free text, IU fields joined with headers).
This module adds what cleaning needs on top: IU sections sometimes carry a second report pasted
inline ("... Exam: CHEST 2V Date: XXXX Comparison: CT chest XXXX History: dyspnea FINDINGS: ..."),
whose metadata headers are mixed-case and so stay in the section text; and a body-part lead
("Chest: The heart is ..."). Everything but FINDINGS and IMPRESSION is metadata a report generator
must not learn to write.
"""

from __future__ import annotations

import itertools
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
# A hyphenated word that fixed-width wrapping split across lines ("ill-\n defined"); "right- and
# left-sided" keeps its space.
_WRAPPED_HYPHEN = re.compile(r"(?<=[a-z])- (?!(?:and|or|to|through)\b)(?=[a-z])")


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
    text = normalise_whitespace(_BODY_PART_LEAD.sub("", _drop_inline_metadata(_BANNER.sub(" ", body))))
    return _WRAPPED_HYPHEN.sub("-", text)


def extract_sections(text: str) -> Sections:
    """FINDINGS and IMPRESSION of a raw report; a report without any header is all findings."""
    findings, impression = extract_findings_impression(text)
    return Sections(tidy_section(findings), tidy_section(impression))


# Abbreviations whose period does not end a sentence ("Dr. ___", "8:45 a.m. on ___").
_ABBREVIATIONS = re.compile(r"\b(Dr|Drs|Mr|Mrs|Ms|vs|approx|e\.g|i\.e|a\.m|p\.m|No(?=\.\s*\d))\.", re.I)
_PROTECT = "\u2024"  # one-dot leader: stands in for a protected period while splitting
# List numbers opening an item: "1. No acute process. 2. Small effusion." and "3.Chronic findings".
_ENUMERATOR = re.compile(r"(?:^|(?<=[.!?])|(?<=\s))\(?\d{1,2}[.)](?:\s+(?=[A-Za-z0-9])|(?=[A-Za-z]))")
_ITEM = "\u00a7"  # stands in for a list number while splitting (a number's period would end a sentence)
# Sentence ends: end punctuation and space, a "; " before a capital, and IU's "normal.No change" typo.
_SPLIT = re.compile(r"(?<=[.!?])\s+|\s*;\s+(?=[A-Z])|(?<=[A-Za-z]{2}\.)(?=[A-Z][a-z])")


def split_items(section: str) -> list[tuple[str, bool]]:
    """(sentence, opens a numbered item) for each sentence of one section; list numbers are cut
    off (the cleaner renumbers what it keeps), abbreviations stay whole."""
    text = _ABBREVIATIONS.sub(lambda m: m.group(0)[:-1] + _PROTECT, normalise_whitespace(section))
    text = _ENUMERATOR.sub(f" {_ITEM} ", text)
    pieces = [p.replace(_PROTECT, ".").strip() for p in _SPLIT.split(text)]
    return [(p.removeprefix(_ITEM).strip(), p.startswith(_ITEM)) for p in pieces if p.strip(f" {_ITEM}")]


def split_sentences(section: str) -> list[str]:
    """Sentences of one section, list numbers removed, abbreviations kept whole."""
    return [sentence for sentence, _ in split_items(section)]


def number_items(items: list[tuple[str, bool]]) -> str:
    """(sentence or "" if dropped, opens an item) pairs joined back into a section, numbered
    "1. ... 2. ..." when two or more items remain; a sentence whose item opener was dropped opens
    the item in its place."""
    kept: list[tuple[str, bool]] = []
    opens_pending = False
    for sentence, opens in items:
        opens_pending |= opens
        if sentence:
            kept.append((sentence, opens_pending))
            opens_pending = False
    numbered = sum(opens for _, opens in kept) >= 2
    number = itertools.count(1)
    return " ".join(f"{next(number)}. {sentence}" if numbered and opens else sentence for sentence, opens in kept)
