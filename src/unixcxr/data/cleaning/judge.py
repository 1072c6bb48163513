"""Reading what the model says: the rewrite (a report in the clean format) and the judge's verdict
(structured JSON). Models wrap answers in code fences, add a preamble or return half a JSON object;
each of those is either recovered or reported as a FormatError the stage can retry on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from unixcxr.data.cleaning.llm import ChatClient
from unixcxr.data.cleaning.prompts import judge_messages
from unixcxr.data.cleaning.sections import Sections, extract_sections

_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_SECTION_START = re.compile(r"\b(?:FINDINGS|IMPRESSION)\s*:")
_VERDICTS = ("pass", "fail")
_ISSUE_KINDS = ("added", "dropped", "changed")


class FormatError(ValueError):
    """A model answer that is not in the form asked for."""


@dataclass(frozen=True)
class Verdict:
    """The judge's answer: which findings the rewrite added, dropped or changed."""

    passed: bool
    added: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def feedback(self) -> str:
        """The issues as one line, to send back with a retried rewrite and to store as a flag."""
        kinds = (("added", self.added), ("dropped", self.dropped), ("changed", self.changed))
        issues = [f"{kind}: {'; '.join(items)}" for kind, items in kinds if items]
        return " | ".join(issues) or "judge verdict fail"


def _unfence(text: str) -> str:
    return _FENCE.sub("", text.strip()).strip()


def parse_rewrite(answer: str) -> Sections:
    """The cleaned sections in a rewrite answer; anything before the first header is dropped."""
    text = _unfence(answer)
    start = _SECTION_START.search(text)
    if start is None:
        raise FormatError(f"rewrite has no FINDINGS: or IMPRESSION: header: {text[:120]!r}")
    sections = extract_sections(text[start.start():])
    if sections.is_empty():
        raise FormatError("rewrite has empty FINDINGS and IMPRESSION")
    return sections


def _json_object(text: str) -> dict:
    """The first JSON object in the text (models sometimes add prose around it)."""
    text = _unfence(text)
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise FormatError(f"judge answer holds no JSON object: {text[:120]!r}")


def _strings(value: object, kind: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise FormatError(f"judge field {kind!r} is not a list of strings: {value!r}")
    return tuple(item.strip() for item in value if item.strip())


def parse_verdict(answer: str) -> Verdict:
    """A Verdict from the judge's JSON. A "pass" that lists issues counts as a fail: the lists
    are the evidence, the verdict word is only a summary."""
    data = _json_object(answer)
    verdict = str(data.get("verdict", "")).strip().lower()
    if verdict not in _VERDICTS:
        raise FormatError(f"judge verdict must be one of {_VERDICTS}, got {data.get('verdict')!r}")
    issues = {kind: _strings(data.get(kind), kind) for kind in _ISSUE_KINDS}
    return Verdict(passed=verdict == "pass" and not any(issues.values()), **issues)


def judge(client: ChatClient, original: str, cleaned: str, attempts: int) -> Verdict:
    """Ask the judge, re-asking up to `attempts` times in all while it answers in the wrong form.
    LLMError (endpoint down after its own retries) propagates; FormatError after the last try."""
    error = FormatError("no judge attempts allowed")
    for _ in range(max(1, attempts)):
        try:
            return parse_verdict(client.complete(judge_messages(original, cleaned)))
        except FormatError as err:
            error = err
    raise error
