"""The rule stage: always on, offline, deterministic. Raw report in, "FINDINGS: ... IMPRESSION: ..." out.

Works one sentence at a time, in a fixed order: communication statements and filler are dropped whole;
technique-only sentences are dropped; comparison wording is rewritten to the present ("Stable mild
cardiomegaly." -> "Mild cardiomegaly.", "unchanged from prior" -> removed); de-identification
placeholders are removed and the grammar around them repaired. A rewritten sentence with nothing
left to say about the patient ("No change from prior exam." -> "") is dropped.

Rules delete words; the only words they write are function words ("There is ..."), "No X." for
"X has resolved", and the few nouns in patterns.RESTORE that a placeholder provably hid ("x-XXXX"
-> "x-ray"). Whether they lost a finding is measured by comparing the labeler's 14 labels before
and after (pipeline.py flags each record where they differ; the tests measure the share).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from unixcxr.data.cleaning import patterns as P
from unixcxr.data.cleaning.sections import Sections, extract_sections, normalise_whitespace, number_items, split_items

_WORD = re.compile(r"[a-z0-9][a-z0-9'/-]*")
_TRAILING = re.compile(
    r"[\s,;:(-]*\b(?:and|or|but|with|of|from|to|the|a|an|in|on|at|by|since|than|as|which|that|is|are|has|"
    r"have|been|was|were|for|when|compared|its|their|this|these|both)\s*$", re.I)
_LEADING = re.compile(r"^(?:[\s,;:.)\-]+|(?:and|or|but|with|which|that|however|also|then)\b[\s,]*)+", re.I)
_LOST_SUBJECT = re.compile(r"^(is|are)\s+", re.I)  # "XXXX is minimal retrolisthesis" lost its subject
_REPAIRS = [
    (re.compile(r"\(\s*[,;]?\s*\)"), ""),
    (re.compile(r"\s+([,.;:)])"), r"\1"),
    (re.compile(r"\(\s+"), "("),
    (re.compile(r"([,;:])(?:\s*[,;:])+"), r"\1"),
    (re.compile(r"[,;:]\s*([.!?])"), r"\1"),
    (re.compile(r"([.!?])\1+"), r"\1"),
    (re.compile(r"\b(no|without|and|or|with)\s+of\b", re.I), r"\1"),
    (re.compile(r"\b(a|an|the)\s+(?=(?:of|in|on|at|with|to|and|or|is|are)\b|[,.;])", re.I), ""),
    (re.compile(r"\b([Aa])n\s+(?=[bcdfgjklmnpqrstvwxyz])"), r"\1 "),
    (re.compile(r"\b([Aa])\s+(?=[aeio])"), r"\1n "),
    (re.compile(r"\s{2,}"), " "),
]


@dataclass(frozen=True)
class Edit:
    """One sentence the rules touched: what it was, what it became ("" when dropped) and why."""

    before: str
    after: str
    reason: str  # "communication", "filler", "technique", "comparison", "placeholder", joined by "+"


@dataclass(frozen=True)
class RuleResult:
    """The rule stage's answer for one report."""

    original: Sections  # FINDINGS / IMPRESSION as written, whitespace repaired only
    cleaned: Sections
    edits: tuple[Edit, ...]

    @property
    def text(self) -> str:
        return self.cleaned.as_text()

    @property
    def changed(self) -> bool:
        return self.cleaned != self.original


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _is_technique_only(text: str) -> bool:
    """"PA and lateral views of the chest were obtained." and its kin: only view / acquisition words."""
    words = _words(P.PLACEHOLDER.sub(" ", text))
    return bool(words) and set(words) <= P.TECHNIQUE_WORDS and bool(set(words) & P.TECHNIQUE_NOUNS)


def _has_content(text: str) -> bool:
    return any(word not in P.NON_CONTENT for word in _words(text))


def _is_bare_anatomy(text: str) -> bool:
    """A verbless phrase that only names anatomy: "Mediastinal contours." left by "... are unchanged."."""
    words = set(_words(text))
    return not (words & P.VERBS or words & P.EVALUATIVE) and words - P.NON_CONTENT <= P.ANATOMY


def _lost_subject_says_nothing(text: str) -> bool:
    """"XXXX are normal." -> "There are normal.": the placeholder took the subject and nothing is left."""
    rest = set(_words(text)) - P.NON_CONTENT
    return text.startswith(("There is ", "There are ")) and rest <= P.GENERIC_PREDICATE

def repair(text: str) -> str:
    """Mend what deletions leave behind: stray punctuation, dangling words, lost subjects, case."""
    for pattern, replacement in _REPAIRS:
        text = pattern.sub(replacement, text)
    previous = None
    while previous != text:
        previous = text
        text = _TRAILING.sub("", _LEADING.sub("", text.strip(" .")))
    text = _LOST_SUBJECT.sub(lambda m: f"There {m.group(1).lower()} ", text)
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _apply(pairs: list[tuple[re.Pattern[str], P.Replacement]], text: str) -> str:
    for pattern, replacement in pairs:
        text = pattern.sub(replacement, text).strip()
    return text


def _before_communication(sentence: str, match: re.Match[str]) -> str:
    """The finding a communication statement was appended to ("Large right pneumothorax, discussed
    with Dr. ___ at 9:10." -> "Large right pneumothorax"), or "" when there is none."""
    head = sentence[:match.start()]
    cut = max(head.rfind(","), head.rfind(";"))
    head = head[:cut].strip() if cut > 0 else ""
    if P.PLACEHOLDER.search(head) or P.FINDINGS_REFERENCE.match(head) or not _has_content(head):
        return ""
    return head


def clean_sentence(sentence: str) -> tuple[str, str | None]:
    """(cleaned sentence, reason): "" when the sentence is dropped, reason None when untouched."""
    if communication := P.COMMUNICATION.search(sentence):
        head = _before_communication(sentence, communication)
        cleaned, reason = clean_sentence(head + ".") if head else ("", None)
        return cleaned, "+".join(["communication"] + ([reason] if reason else []))
    text = _apply(P.RESTORE, sentence)
    may_compare = P.COMPARISON_TRIGGER.search(text) is not None
    if may_compare and P.FILLER.search(P.PLACEHOLDER.sub("", text).strip()):
        return "", "filler"
    if _is_technique_only(text):
        return "", "technique"
    reasons = ["placeholder"] if text != sentence else []
    rewritten = _apply(P.COMPARISON, text) if may_compare else text
    if rewritten != text:
        reasons.append("comparison")
    text = P.TECHNIQUE_LEAD.sub("", rewritten)
    if text != rewritten:
        reasons.append("technique")
    if P.PLACEHOLDER.search(text):
        text = P.PLACEHOLDER.sub(" ", text)
        reasons.append("placeholder")
    if P.NOISE["comparison"].search(text):  # a comparison no rewrite understood: cut the phrase out
        text = P.NOISE["comparison"].sub(" ", text)
        reasons.append("comparison")
    reasons = list(dict.fromkeys(reasons))
    if not reasons:
        return sentence, None
    text = repair(text)
    if (not _has_content(text) or _is_technique_only(text) or _is_bare_anatomy(text)
            or _lost_subject_says_nothing(text)):
        return "", "+".join(reasons)
    return text, "+".join(reasons)


def clean_section(section: str) -> tuple[str, list[Edit]]:
    """One section's cleaned text and the edits that made it."""
    items, edits = [], []
    for sentence, opens_item in split_items(section):
        cleaned, reason = clean_sentence(sentence)
        if reason is not None:
            edits.append(Edit(sentence, cleaned, reason))
        if cleaned and cleaned[-1] not in ".!?":
            cleaned += "."
        items.append((cleaned, opens_item))
    return normalise_whitespace(number_items(items)), edits


def clean_sections(original: Sections) -> RuleResult:
    findings, findings_edits = clean_section(original.findings)
    impression, impression_edits = clean_section(original.impression)
    return RuleResult(original, Sections(findings, impression), tuple(findings_edits + impression_edits))


def clean_report(raw: str) -> RuleResult:
    """The rule stage on one raw report (any format extract_sections reads)."""
    return clean_sections(extract_sections(raw))


def find_noise(text: str) -> dict[str, list[str]]:
    """Noise that should not survive cleaning, by kind: {"placeholder": ["___"], ...}; {} when clean."""
    found = {kind: [m.group(0) for m in pattern.finditer(text)] for kind, pattern in P.NOISE.items()}
    return {kind: hits for kind, hits in found.items() if hits}
