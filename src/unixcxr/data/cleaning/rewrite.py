"""The optional LLM stage: rewrite, judge, retry, then a deterministic label guard.

Rules cannot turn "interval resolution of the effusion" into "No pleural effusion." or mend
grammar that a placeholder broke; a language model can, and can also invent a finding. So every
rewrite goes through two checks before it replaces the rule-stage text:
1. a judge call (same endpoint, JSON verdict) that looks for added, dropped or changed findings;
   on a fail the rewrite is retried with the judge's feedback, up to `rounds` times;
2. the labeler guard: the 14 CheXpert labels of the rewrite must equal those of the original.
   It is deterministic and cheap, and catches what a lenient judge lets through.
Any failure keeps the rule-stage text and flags the record; nothing here raises per record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from unixcxr.data.cleaning.judge import FormatError, judge, parse_rewrite
from unixcxr.data.cleaning.llm import ChatClient, LLMError
from unixcxr.data.cleaning.prompts import rewrite_messages
from unixcxr.data.cleaning.rules import find_noise
from unixcxr.labeler import label_report
from unixcxr.labels import OBSERVATIONS

Labels = Mapping[str, int | None]
Labeler = Callable[[str], Labels]


def default_labeler(text: str) -> Labels:
    """The project's rule-based CheXpert labeler."""
    return label_report(text)


def label_diff(before: Labels, after: Labels) -> list[str]:
    """Observations whose label differs, as "Name:before->after", in the canonical order."""
    return [f"{name}:{before.get(name)}->{after.get(name)}" for name in OBSERVATIONS
            if before.get(name) != after.get(name)]  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """What the LLM stage decided for one report."""

    text: str | None  # the accepted rewrite; None keeps the rule-stage text
    flags: tuple[str, ...] = ()
    rounds: int = 0  # rewrite attempts used


class LLMStage:
    """Rewrite -> judge -> (retry with feedback) -> label guard, for one report at a time.

    Thread-safe as long as the client and labeler are (ChatClient is; the labeler is pure)."""

    def __init__(self, client: ChatClient, rounds: int = 3, labeler: Labeler = default_labeler):
        self.client = client
        self.rounds = max(1, rounds)
        self.labeler = labeler

    def run(self, original: str, draft: str, original_labels: Labels) -> Outcome:
        """`original`: the raw FINDINGS/IMPRESSION text; `draft`: the rule-stage text."""
        previous: str | None = None
        feedback: str | None = None
        for round_ in range(1, self.rounds + 1):
            try:
                answer = self.client.complete(rewrite_messages(original, draft, previous, feedback))
            except LLMError as err:
                return Outcome(None, (f"llm_failed: {err}",), round_)
            try:
                candidate = parse_rewrite(answer).as_text()
            except FormatError as err:
                previous, feedback = answer.strip()[:500], str(err)
                continue
            if noise := find_noise(candidate):
                previous, feedback = candidate, f"still contains {noise}"
                continue
            try:
                verdict = judge(self.client, original, candidate, attempts=self.rounds)
            except LLMError as err:
                return Outcome(None, (f"judge_failed: {err}",), round_)
            except FormatError as err:
                return Outcome(None, (f"judge_unreadable: {err}",), round_)
            if not verdict.passed:
                previous, feedback = candidate, verdict.feedback()
                continue
            changed = label_diff(original_labels, self.labeler(candidate))
            if changed:
                return Outcome(None, ("guard_labels_changed: " + ", ".join(changed),), round_)
            return Outcome(candidate, (), round_)
        return Outcome(None, (f"llm_rejected: {feedback}",), self.rounds)
