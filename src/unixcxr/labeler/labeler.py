"""The rule-based CheXpert-style labeler: report text in, 14 observation states out.

Pipeline per report: clean (section headers, "___"/"XXXX" placeholders, line breaks), split into
sentences, find mentions with the phrase lists of `rules.py`, classify each mention with the cues
of `negation.py` inside the clause scope of `clauses.py`, then aggregate per observation
(positive > uncertain > negative) and set No Finding.

Only what the radiologist saw is labelled: INDICATION / HISTORY / COMPARISON / TECHNIQUE sections
are dropped ("rule out pneumonia" in an indication is a question, not a finding). A report with no
text left to label gets every observation blank, No Finding included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tqdm import tqdm

from unixcxr.labels import BLANK, NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN

from . import rules
from .clauses import Clauses, build_clauses
from .negation import Cues, classify, find_cues
from .scanner import Hit

NO_FINDING, SUPPORT_DEVICES, CARDIOMEGALY = "No Finding", "Support Devices", "Cardiomegaly"
STATE_PRIORITY = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}

# ---------------------------------------------------------------- cleaning and sentences
_PLACEHOLDER = re.compile(r"_{2,}|X{3,}")  # MIMIC "___", IU "XXXX" (case-sensitive, before lowering)
_SECTION_NAMES = (
    r"findings?|impressions?|conclusions?|summary|opinion|recommendations?|addendum|final report"
    r"|indications?|(?:clinical )?history|clinical (?:information|indications?|data|details)"
    r"|reason for (?:exam(?:ination)?|study|request)|comparisons?|technique|examination|exam"
    r"|type of exam(?:ination)?|procedure|wet read|notification"
)
_SKIPPED_SECTION = re.compile(r"indication|history|clinical|reason|comparison|technique|exam|procedure|wet|notif")
_HEADER = re.compile(
    rf"(?:^|(?<=\n)|(?<=\.\s))[ \t]*(?P<name>{_SECTION_NAMES})[ \t]*:", re.IGNORECASE
)
_HYPHEN_WRAP = re.compile(r"(?<=\w)-[ \t]*\n[ \t]*(?=\w)")  # "plate-\nlike" wrapped at its hyphen
_LIST_ITEM = re.compile(r"\n[ \t]*(?=(?:\d+[.)]|[-*\u2022])\s)")
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_ABBREVIATION = re.compile(r"\b(?:vs|dr|approx|e\.g|i\.e|cf)\.")
_SPACES = re.compile(r"\s+")
_SENTENCE = re.compile(r"(?:[^.!?]|[.!?](?=\S)(?![a-z]{2}))+")  # "1.5 cm" one sentence, "normal.no change" two
_LETTER = re.compile(r"[a-z]")


def clean_report(text: str) -> str:
    """Lower-cased report text holding only the sections that describe the image, on one line."""
    text = _PLACEHOLDER.sub(" xxxx ", text.replace("\r\n", "\n").replace("\r", "\n"))
    kept, cursor, keep = [], 0, True
    for header in _HEADER.finditer(text):
        if keep:
            kept.append(text[cursor : header.start()])
        kept.append("\n\n")  # a header always ends the sentence before it
        keep = not _SKIPPED_SECTION.match(header.group("name").lower())
        cursor = header.end()
    if keep:
        kept.append(text[cursor:])
    text = _PARAGRAPH.sub(" . ", _LIST_ITEM.sub("\n\n", _HYPHEN_WRAP.sub("-", "".join(kept))))
    text = _ABBREVIATION.sub(lambda m: m.group().replace(".", ""), text.replace("\n", " ").lower())
    return _SPACES.sub(" ", text).strip()


def split_sentences(doc: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence; a period inside a number ("1.5 cm") does not end one."""
    return [m.span() for m in _SENTENCE.finditer(doc) if _LETTER.search(m.group())]


# ---------------------------------------------------------------- mentions
def _compile(fragment: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + fragment + r")(?!\w)")


_CUES = ((NEGATIVE, _compile(rules.NORMAL_CUES)), (POSITIVE, _compile(rules.ENLARGED_CUES)),
         (UNCERTAIN, _compile(rules.HEDGE_CUES)))


@dataclass
class _Report:
    """One cleaned report with its clause scope and cues: what every mention is classified in."""

    doc: str
    clauses: Clauses
    cues: Cues

    def classify(self, start: int, end: int, hedged: bool = False) -> int:
        return classify(self.doc, start, end, self.clauses, self.cues, hedged)


def _kept(hits: list[Hit], unmentioned: list[Hit]) -> list[Hit]:
    """Hits that overlap no unmention phrase."""
    return [h for h in hits if not any(u[0] < h[1] and h[0] < u[1] for u in unmentioned)]


def _attribute_state(report: _Report, hit: Hit) -> int | None:
    """State of a neutral attribute ("heart size") from its size cue, or None without a cue.

    Cue search order: after the attribute in its own chunk, before it in its chunk, then the next
    chunks of its group ("heart size and mediastinal contours are normal").
    """
    start, end, _ = hit
    clauses, chunk = report.clauses, report.clauses.chunk_at(start)
    regions = [(end, clauses.ends[chunk]), (clauses.starts[chunk], start)]
    later = chunk + 1
    while later < len(clauses.starts) and clauses.group[later] == clauses.group[chunk]:
        regions.append((clauses.starts[later], clauses.ends[later]))
        later += 1
    for region_start, region_end in regions:
        for kind, pattern in _CUES:
            cue = pattern.search(report.doc, region_start, region_end)
            if cue is None:
                continue
            if kind == NEGATIVE:
                return NEGATIVE
            state = report.classify(min(start, cue.start()), max(end, cue.end()))
            return UNCERTAIN if kind == UNCERTAIN and state == POSITIVE else state
    return None


def _observation_states(report: _Report, name: str, hits: dict) -> tuple[list[int], bool]:
    """States of every mention of one observation, and whether a heart-failure mention was positive."""
    unmentioned = hits.get((name, "unmentions"), [])
    states, heart_failure = [], False
    for start, end, text in _kept(hits.get((name, "mentions"), []), unmentioned):
        state = report.classify(start, end)
        states.append(state)
        heart_failure |= state != NEGATIVE and bool(rules.HEART_FAILURE.fullmatch(text))
    for start, end, _ in _kept(hits.get((name, "hedged"), []), unmentioned):
        states.append(report.classify(start, end, hedged=True))
    for hit in _kept(hits.get((name, "attributes"), []), unmentioned):
        state = _attribute_state(report, hit)
        if state is not None:
            states.append(state)
    return states, heart_failure


# ---------------------------------------------------------------- public API
def label_report(text: str) -> dict[str, int | None]:
    """CheXpert-style labels of one report: {observation: 1, 0, -1 or None} over OBSERVATIONS."""
    if not isinstance(text, str):
        raise TypeError(f"label_report expects report text (str), got {type(text).__name__}")
    labels: dict[str, int | None] = dict.fromkeys(OBSERVATIONS, BLANK)
    doc = clean_report(text)
    sentences = split_sentences(doc)
    if not sentences:
        return labels
    cues, hits, heart_failure = find_cues(doc), rules.FINDER.find(doc), False
    mention_starts = sorted(start for found in hits.values() for start, _, _ in found)
    report = _Report(doc, build_clauses(doc, sentences, cues.starts(), mention_starts), cues)
    for name in {name for name, _ in hits}:
        states, failure = _observation_states(report, name, hits)
        heart_failure |= failure
        if states:
            labels[name] = max(states, key=STATE_PRIORITY.__getitem__)
    if heart_failure and labels[CARDIOMEGALY] in (BLANK, NEGATIVE):
        labels[CARDIOMEGALY] = UNCERTAIN
    findings = (labels[n] for n in OBSERVATIONS if n not in (NO_FINDING, SUPPORT_DEVICES))
    labels[NO_FINDING] = BLANK if any(v in (POSITIVE, UNCERTAIN) for v in findings) else POSITIVE
    return labels


def label_reports(texts: Iterable[str], progress: bool = False) -> list[dict[str, int | None]]:
    """`label_report` over many reports, with an optional progress bar."""
    texts = list(texts)
    return [label_report(t) for t in tqdm(texts, desc="labelling", unit="report", disable=not progress)]
