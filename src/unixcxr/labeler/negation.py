"""Classify one mention as positive, negative or uncertain from the cues around it.

Order (as in the CheXpert labeler; docs/labeler.md): pre-negation uncertainty first ("cannot exclude", "not excluded",
"no new"), then negation ("no", "without", "resolved", "is normal", "no longer seen"), then
uncertainty ("possible", "may represent", "likely", "versus", alternatives joined by "or").
A forward cue ("no", "possible") reaches the mentions after it in its clause group; a backward
cue ("has resolved", "is suspected") reaches the mentions before it. Pseudo-negations ("no
change in", "has not resolved", "in normal position") are masked out first so that they never
count as cues. Scope is decided by `clauses.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from unixcxr.labels import NEGATIVE, POSITIVE, UNCERTAIN

from .clauses import Clauses
from .scanner import Hit, PhraseScanner


def _alternation(*phrases: str) -> str:
    return "|".join(phrases)


PSEUDO_NEGATION = _alternation(
    r"no (?:significant |interval |appreciable |substantial |definite )*(?:change|progression|worsening)\w*",
    r"no (?:significant |interval )*increase in",
    r"not (?:significantly |substantially |appreciably |markedly )?changed",
    r"without (?:significant |interval )*change",
    r"not (?:yet )?(?:completely |fully |entirely |totally )?(?:resolved|cleared)",
    r"(?:incompletely|partially|nearly) (?:resolved|cleared)",
    r"(?:incomplete|partial) (?:resolution|clearing)",
    r"normal(?:ly)? (?:in )?(?:position\w*|location|placement|course|alignment)",
)

# Pre-negation uncertainty: checked before negation, so "cannot exclude" is never a negation.
PRE_NEG_UNCERTAIN_FORWARD = _alternation(
    r"(?:cannot|can not|can't|could not|unable to|difficult to|not possible to) (?:be )?(?:exclude|rule out)",
    r"no new",
    r"no evidence to rule out",
)
PRE_NEG_UNCERTAIN_BACKWARD = _alternation(
    r"(?:cannot|can not|could not) (?:be )?(?:entirely |completely |totally |definitely )?(?:excluded|ruled out)",
    r"not (?:be )?(?:entirely |completely |totally |definitely )?(?:excluded|ruled out)",
    r"not (?:well|clearly|definitely)[- ](?:seen|visualized|identified|evaluated|assessed|demonstrated)",
    r"(?:poorly|incompletely) (?:seen|visualized|evaluated|assessed)",
)

NEGATION_FORWARD = _alternation(
    r"no(?! longer)",
    r"not",
    r"without",
    r"negative for",
    r"free of",
    r"clear of",
    r"absence of",
    r"resolution of",
    r"removal of",
    r"rather than",
    r"neither",
    r"nor",
)
# Adjectives negate only the chunk they stand in: "normal heart size, small effusion".
NEGATION_FORWARD_CHUNK = _alternation(r"normal", r"unremarkable", r"resolved", r"removed", r"cleared", r"absent")
NEGATION_BACKWARD = _alternation(
    r"not (?:\w+ )?(?:seen|identified|visualized|present|appreciated|evident|demonstrated|noted|detected"
    r"|visible|apparent|enlarged|widened|shown)",
    r"no longer(?: \w+)?",
    r"(?:resolved|cleared|removed|excluded|ruled out|absent)",
    r"normal",
    r"unremarkable",
    r"(?:is|are) negative",
)

UNCERTAINTY = _alternation(
    r"possibl[ey]",
    r"possibility(?: of)?",
    r"probabl[ey]",
    r"(?:less |more |most )?likely",
    r"questionabl[ey]",
    r"question(?:ed)?(?: of)?",
    r"may",
    r"might",
    r"could",
    r"suggest\w*",
    r"concern(?:ing|s)?(?: for| of)?",
    r"worrisome(?: for)?",
    r"suspicious(?: for)?",
    r"suspect\w*",
    r"presum\w*",
    r"equivocal",
    r"borderline",
    r"indeterminate",
    r"uncertain",
    r"differential(?: diagnosis)?(?: includes?| considerations?)?",
    r"consider\w*",
    r"favou?r\w*",
    r"correlat\w* (?:clinically )?for",
    r"(?:to )?(?:rule out|r/o|exclude)",
    r"(?:evaluat|assess)\w* for",
)
# An uncertainty cue that ends its chunk ("pneumothorax is suspected.") or the predicate ("plaques
# are likely present bilaterally") reaches backwards.
_CHUNK_TAIL = re.compile(r"\s*(?:(?:be|been)\s+)?(?:(?:present|seen|noted|identified)\b|\s*$)")

Cue = Hit  # (start, end, text)


@dataclass
class Cues:
    """All cues of one cleaned report, by kind and direction, each sorted by position."""

    pre_neg_forward: list[Cue] = field(default_factory=list)
    pre_neg_backward: list[Cue] = field(default_factory=list)
    neg_forward: list[Cue] = field(default_factory=list)
    neg_forward_chunk: list[Cue] = field(default_factory=list)
    neg_backward: list[Cue] = field(default_factory=list)
    uncertain: list[Cue] = field(default_factory=list)

    def starts(self) -> list[int]:
        """Sorted start positions of every cue (clause cutting needs them)."""
        return sorted(cue[0] for kind in fields(self) for cue in getattr(self, kind.name))


_SCANNER = PhraseScanner(
    {
        "pseudo": PSEUDO_NEGATION,
        "pre_neg_forward": PRE_NEG_UNCERTAIN_FORWARD,
        "pre_neg_backward": PRE_NEG_UNCERTAIN_BACKWARD,
        "neg_forward": NEGATION_FORWARD,
        "neg_forward_chunk": NEGATION_FORWARD_CHUNK,
        "neg_backward": NEGATION_BACKWARD,
        "uncertain": UNCERTAINTY,
    }
)


def find_cues(doc: str) -> Cues:
    """Every cue in `doc`, found in one pass; cues inside a pseudo-negation do not count."""
    found = _SCANNER.find(doc)
    pseudo = found.pop("pseudo", [])
    if pseudo:
        found = {kind: [c for c in cues if not any(p[0] < c[1] and c[0] < p[1] for p in pseudo)]
                 for kind, cues in found.items()}
    return Cues(**found)


def classify(doc: str, start: int, end: int, clauses: Clauses, cues: Cues, hedged: bool = False) -> int:
    """State of the mention doc[start:end]: NEGATIVE, UNCERTAIN or POSITIVE.

    `hedged` marks wording that is uncertain by itself ("vascular congestion") unless negated.
    """
    first, last = clauses.chunk_at(start), clauses.chunk_at(max(end - 1, start))
    group, back_group = clauses.group[first], clauses.back_group[first]
    if _forward(cues.pre_neg_forward, end, group, clauses) or _backward(
        cues.pre_neg_backward, end, back_group, clauses
    ):
        return UNCERTAIN
    if (
        _forward(cues.neg_forward, end, group, clauses)
        or _forward(cues.neg_forward_chunk, end, group, clauses, chunks=(first, last))
        or _backward(cues.neg_backward, end, back_group, clauses)
    ):
        return NEGATIVE
    alternative_from = clauses.alternative_from[first]
    if hedged or (alternative_from is not None and start >= alternative_from):
        return UNCERTAIN
    if _forward(cues.uncertain, end, group, clauses):
        return UNCERTAIN
    tails = [cue for cue in cues.uncertain if _ends_chunk(doc, cue, clauses)]
    if _backward(tails, end, back_group, clauses):
        return UNCERTAIN
    return POSITIVE


def _forward(cues: list[Cue], end: int, group: int, clauses: Clauses, chunks: tuple[int, int] | None = None) -> bool:
    """A cue before the mention end, in the same group (or in one of `chunks` when given)."""
    for cue_start, cue_end, _ in cues:
        if cue_end > end:
            break
        chunk = clauses.chunk_at(cue_start)
        if clauses.group[chunk] != group:
            continue
        if chunks is None or chunks[0] <= chunk <= chunks[1]:
            return True
    return False


def _backward(cues: list[Cue], end: int, back_group: int, clauses: Clauses) -> bool:
    """A cue after the mention end, in the same backward group."""
    return any(start >= end and clauses.back_group[clauses.chunk_at(start)] == back_group for start, _, _ in cues)


def _ends_chunk(doc: str, cue: Cue, clauses: Clauses) -> bool:
    """True when nothing but filler follows the cue up to the end of its chunk."""
    start, end, _ = cue
    chunk_end = clauses.ends[clauses.chunk_at(start)]
    return end <= chunk_end and bool(_CHUNK_TAIL.match(doc, end, chunk_end))
