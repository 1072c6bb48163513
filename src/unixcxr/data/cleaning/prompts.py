"""The prompts of the LLM stage: one rewrite prompt that states the cleaning rules, one judge
prompt that checks a rewrite against its original and answers in JSON.

UniX's own prompts (DeepSeek with a self-judgment loop, as the paper describes) were never released;
these state the same rules the rule stage applies, plus what rules cannot do (tense, grammar).
The rule stage's draft goes in with the original so that the model edits rather than rewrites.
"""

from __future__ import annotations

REWRITE_SYSTEM = """\
You clean chest X-ray radiology reports for training a model that writes reports from one image.
The cleaned report must describe only what this one image shows.

Keep, exactly:
- every finding of the original, positive or negative ("no pneumothorax" stays), with its laterality
  (left / right / bilateral), severity and size (mild / moderate / large, measurements), location and
  certainty (hedged wording such as "may represent" or "cannot exclude" stays hedged);
- support devices and their positions.

Remove or rewrite:
- de-identification placeholders ("___", "XXXX") and any sentence that only carries them;
- comparisons with prior studies: say the present state in the present tense ("unchanged moderate
  cardiomegaly" -> "Moderate cardiomegaly."; "interval resolution of the left effusion" -> "No left
  pleural effusion."); delete comparison statements that say nothing else ("No change from prior.");
- communication statements ("discussed with Dr. ___ at 8:45", "paged", "by telephone", "critical results");
- technique and view metadata ("PA and lateral views of the chest were obtained.");
- filler ("No previous images.", requests for comparison studies).

Never add a finding, a diagnosis, a hedge or a reassurance that the original does not state.
Answer with the cleaned report only, on one line, in exactly this form:
FINDINGS: <sentences> IMPRESSION: <sentences>
Leave out a section that would be empty. No other text, no markdown."""

JUDGE_SYSTEM = """\
You check a cleaned chest X-ray report against its original. Removing placeholders, comparisons with
prior studies, communication statements, technique metadata and filler is expected and is not an error.
Errors are: a finding in the cleaned report that the original does not state (added), a finding of
the original missing from the cleaned report (dropped; a negative finding such as "no effusion" counts),
and a finding whose laterality, severity, size or certainty changed (changed).
Answer with one JSON object and nothing else:
{"added": [<strings>], "dropped": [<strings>], "changed": [<strings>], "verdict": "pass" or "fail"}
The verdict is "pass" only when all three lists are empty."""

ORIGINAL_HEADING = "ORIGINAL REPORT:"
DRAFT_HEADING = "RULE-BASED DRAFT (placeholders and comparisons removed by rules; fix any grammar slips):"
PREVIOUS_HEADING = "YOUR PREVIOUS REWRITE WAS REJECTED:"
CLEANED_HEADING = "CLEANED REPORT:"

Messages = list[dict[str, str]]


def rewrite_messages(original: str, draft: str, previous: str | None = None,
                     feedback: str | None = None) -> Messages:  # fmt: skip
    """Chat messages asking for a cleaned report; `previous` and `feedback` when retrying after the
    judge (or the format check) rejected a rewrite."""
    parts = [f"{ORIGINAL_HEADING}\n{original}", f"{DRAFT_HEADING}\n{draft or '(empty)'}"]
    if previous is not None:
        parts.append(f"{PREVIOUS_HEADING}\n{previous}\nReason: {feedback or 'unspecified'}")
    return [{"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def judge_messages(original: str, cleaned: str) -> Messages:
    """Chat messages asking for a JSON verdict on one rewrite."""
    user = f"{ORIGINAL_HEADING}\n{original}\n\n{CLEANED_HEADING}\n{cleaned}"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]
