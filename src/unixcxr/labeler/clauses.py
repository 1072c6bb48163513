"""Clause scope: how far a negation or hedge reaches inside a sentence.

A sentence is cut into chunks at commas, semicolons and conjunctions. Neighbouring chunks are
joined ("soft" link) when the second continues a list - "no effusion, consolidation, or
pneumothorax" - and separated ("hard" link) when it starts a new statement - "no pneumothorax,
but a small left effusion", "no pneumothorax, small left effusion", "there is no effusion, and
the heart is enlarged". A run of soft-linked chunks is a group: negation and uncertainty cues
reach across their group and never beyond it. "with" separates forward scope ("no pneumothorax
with a chest tube in place") but not backward scope, since "X with Y" is one subject ("edema
with septal lines cannot be excluded"), so every chunk also has a backward group. Chunks on
either side of "or" / "versus" are alternatives, which CheXpert labels uncertain ("atelectasis
or pneumonia").
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

_BOUNDARY_WORDS = (
    r"and/or|and|or|nor|but|however|although|though|whereas|while|which|versus|vs|except(?: for)?"
    r"|aside from|apart from|other than|with"
)
BOUNDARY = re.compile(rf"(?P<comma>,\s*)?\b(?P<word>{_BOUNDARY_WORDS})\b|(?P<punct>[,;:])")

COMMA, AND, OR, VERSUS, WITH, HARD = "comma", "and", "or", "versus", "with", "hard"
_WORD_KIND = {"and": AND, "or": OR, "nor": OR, "and/or": OR, "versus": VERSUS, "vs": VERSUS, "with": WITH}
# "consistent with pneumonia" keeps its object in the same chunk; other "with"s start a new statement.
_WITH_JOINS_AFTER = ("consistent", "compatible", "associated", "along", "together", "keeping", "filled")

_VERB = re.compile(
    r"\b(?:is|are|was|were|be|been|has|have|had|remains?|persists?|appears?|seems?|there|demonstrates?"
    r"|shows?|reveals?|represents?|measures?|projects?|terminates?|extends?)\b"
)
_DETERMINER = re.compile(r"\s*(?:a|an)\b")
_SEVERITY = re.compile(
    r"\s*(?:the\s+)?(?:small|tiny|trace|minimal|mild|mildly|moderate|moderately|large|severe|massive|new"
    r"|increased|increasing|worsening|worsened|persistent|persisting|residual|stable|unchanged|improved"
    r"|improving|decreased|decreasing|enlarged|enlarging|known|chronic|interval)\b"
)
_LATER_OR = re.compile(r"\b(?:or|nor)\b")
# "nodules in the right upper lung, the largest measuring 2 cm, ..." describes the same finding.
_APPOSITIVE = re.compile(r"\s*(?:the\s+)?(?:largest|larger|biggest|dominant|measuring)\b")
# "borderline cardiomegaly, otherwise unremarkable": what follows speaks of the rest of the film.
_OTHERWISE = re.compile(r"\s*(?:otherwise|elsewhere)\b")


@dataclass
class Clauses:
    """Chunks of every sentence of one cleaned report, with their group and alternative flags."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    group: list[int] = field(default_factory=list)
    back_group: list[int] = field(default_factory=list)  # like group, but "with" does not separate
    # Mentions at or after this position of the chunk are alternatives ("a or b"); None: no "or".
    alternative_from: list[int | None] = field(default_factory=list)

    def chunk_at(self, pos: int) -> int:
        """Index of the chunk holding character `pos` (a boundary belongs to the chunk before it)."""
        return max(bisect.bisect_right(self.starts, pos) - 1, 0)


def build_clauses(
    doc: str, sentences: list[tuple[int, int]], trigger_starts: list[int], mention_starts: list[int]
) -> Clauses:
    """Cut each sentence into chunks and decide which neighbours share a negation scope.

    `trigger_starts` (sorted) are the positions of negation / hedge cues: a chunk holding one is a
    complete statement of its own, so a following "and the heart is enlarged" starts a new group.
    `mention_starts` (sorted) are where phrases of any observation start: after a comma, a new
    severity word starts a new finding only when the chunk before already named one ("no
    pneumothorax, small effusion", but "possible acute, mildly displaced fracture").
    """
    clauses = Clauses()
    group = back_group = -1
    for sent_start, sent_end in sentences:
        chunks, links = _cut(doc, sent_start, sent_end)
        group += 1
        back_group += 1
        first = len(clauses.starts)
        for i, (start, end) in enumerate(chunks):
            if i > 0:
                link = links[i - 1]
                soft = link[0] == WITH or _is_soft(
                    doc, chunks[i - 1], (start, end), link, sent_end, trigger_starts, mention_starts
                )
                group += link[0] == WITH or not soft
                back_group += not soft
            clauses.starts.append(start)
            clauses.ends.append(end)
            clauses.group.append(group)
            clauses.back_group.append(back_group)
            clauses.alternative_from.append(None)
        _mark_alternatives(doc, clauses, first, links, trigger_starts)
    return clauses


def _cut(doc: str, start: int, end: int) -> tuple[list[tuple[int, int]], list[tuple[str, bool]]]:
    """Chunks (start, end) of doc[start:end] and the links between them as (kind, after_comma)."""
    chunks: list[tuple[int, int]] = []
    links: list[tuple[str, bool]] = []
    pending: tuple[str, bool] | None = None
    cursor = start
    for match in BOUNDARY.finditer(doc, start, end):
        word = match.group("word")
        if word == "with" and doc[max(start, match.start() - 12) : match.start()].rstrip().endswith(
            _WITH_JOINS_AFTER
        ):
            continue
        if word:
            link = (_WORD_KIND.get(word, HARD), match.group("comma") is not None)
        else:
            link = (COMMA if match.group("punct") == "," else HARD, False)
        pending = _add_chunk(doc, cursor, match.start(), chunks, links, pending)
        pending = link if pending is None or link[0] == HARD else pending
        cursor = match.end()
    _add_chunk(doc, cursor, end, chunks, links, pending)
    return chunks, links


def _add_chunk(doc, start, end, chunks, links, pending):
    """Append doc[start:end] stripped as a chunk; returns the link still waiting for a next chunk."""
    text = doc[start:end]
    stripped = text.strip(" .!?")
    if not stripped:
        return pending
    lead = len(text) - len(text.lstrip(" .!?"))
    if chunks:
        links.append(pending or (HARD, False))
    chunks.append((start + lead, start + lead + len(stripped)))
    return None


def _is_soft(doc, prev, nxt, link, sent_end, trigger_starts, mention_starts) -> bool:
    """True when chunk `nxt` continues the list or statement of chunk `prev`."""
    kind, _ = link
    if kind in (OR, VERSUS):
        return True
    if kind == HARD:
        return False
    nxt_text = doc[nxt[0] : nxt[1]]
    starts_new_item = bool(_DETERMINER.match(nxt_text) or _SEVERITY.match(nxt_text))
    if kind == COMMA:
        if _APPOSITIVE.match(nxt_text):
            return True
        if _OTHERWISE.match(nxt_text):
            return False
        prev_text = doc[prev[0] : prev[1]]
        if _has_position(trigger_starts, prev) and not _has_position(mention_starts, prev) and not _VERB.search(
            prev_text
        ):
            return True  # "no acute, displaced rib fractures are seen": the cue still waits for its finding
        if _VERB.search(nxt_text) or _DETERMINER.match(nxt_text):
            return False
        new_finding = _SEVERITY.match(nxt_text) and _has_position(mention_starts, prev)
        return not (new_finding and not _LATER_OR.search(doc, nxt[0], sent_end))
    # "and": a second full statement, or a new positive item after a negated one, is separate.
    prev_text = doc[prev[0] : prev[1]]
    prev_has_cue = _has_position(trigger_starts, prev)
    if _VERB.search(nxt_text) and (_VERB.search(prev_text) or prev_has_cue):
        return False
    return not (starts_new_item and prev_has_cue)


def _has_position(positions: list[int], span: tuple[int, int]) -> bool:
    """True when one of the sorted `positions` lies inside span."""
    i = bisect.bisect_left(positions, span[0])
    return i < len(positions) and positions[i] < span[1]


def _mark_alternatives(doc, clauses: Clauses, first: int, links, trigger_starts: list[int]) -> None:
    """Flag chunks joined by "or" / "versus"; an Oxford-comma list ("a, b, or c") is flagged whole.

    In the chunk left of "or" only its last phrase is an alternative: in "opacities could reflect
    aspiration or infection" the opacities are seen, aspiration and infection are the alternatives.
    """
    for i, (kind, after_comma) in enumerate(links):
        if kind not in (OR, VERSUS):
            continue
        left, right = first + i, first + i + 1
        clauses.alternative_from[left] = _last_phrase_start(doc, clauses, left, trigger_starts)
        clauses.alternative_from[right] = clauses.starts[right]
        j = i
        while after_comma and j > 0 and links[j - 1][0] == COMMA and (
            clauses.group[first + j - 1] == clauses.group[first + j]
        ):
            clauses.alternative_from[first + j - 1] = clauses.starts[first + j - 1]
            j -= 1


def _last_phrase_start(doc: str, clauses: Clauses, chunk: int, trigger_starts: list[int]) -> int:
    """Position after the chunk's last verb or cue (its start when it has neither)."""
    start, end = clauses.starts[chunk], clauses.ends[chunk]
    verbs = [m.end() for m in _VERB.finditer(doc, start, end)]
    cues = trigger_starts[bisect.bisect_left(trigger_starts, start) : bisect.bisect_left(trigger_starts, end)]
    return max([start, *verbs, *cues])
