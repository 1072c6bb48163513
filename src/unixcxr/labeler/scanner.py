"""Find the matches of many phrase patterns in one regex pass.

Scanning a report once per pattern (~30 patterns for mentions and cues) dominates the labeler's
time. Here a single scan stops only where some pattern starts (the gate, one alternation of all
of them), and named lookaheads at that position say which patterns match there - so patterns
may share a start ("heart failure" is an Edema mention and a Cardiomegaly unmention). Within one
pattern the matches do not overlap, exactly like `re.finditer`. About 2-3x faster than separate
scans on the Indiana University reports.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Hashable

Hit = tuple[int, int, str]  # (start, end, text) of one match


class PhraseScanner:
    """All matches of named regex bodies, each matched at a word start and ending at a word end."""

    def __init__(self, bodies: dict[Hashable, str]):
        self._keys: dict[str, Hashable] = {}
        lookaheads = []
        for index, (key, body) in enumerate(bodies.items()):
            group = f"p{index}"
            self._keys[group] = key
            lookaheads.append(rf"(?:(?=(?P<{group}>{body})(?!\w))|)")
        gate = r"\b(?=(?:" + "|".join(f"(?:{b})" for b in bodies.values()) + r")(?!\w))"
        self._pattern = re.compile(gate + "".join(lookaheads))

    def find(self, text: str) -> dict[Hashable, list[Hit]]:
        """{key: [(start, end, matched text), ...]} in order of position."""
        found: dict[Hashable, list[Hit]] = defaultdict(list)
        pos = 0
        while (match := self._pattern.search(text, pos)) is not None:
            start = match.start()
            for group, matched in match.groupdict().items():
                if matched is not None:
                    hits = found[self._keys[group]]
                    if not hits or start >= hits[-1][1]:
                        hits.append((start, start + len(matched), matched))
            pos = start + 1
        return found
