"""Report cleaning: raw radiology reports -> "FINDINGS: ... IMPRESSION: ..." without placeholders,
comparisons to prior studies, communication statements, technique metadata or filler (as the
UniX paper describes its cleaning; the UniX authors never released theirs).

Two stages: `rules` (always on, offline, deterministic) and an optional LLM rewrite (`llm`, `prompts`,
`judge`) checked by a judge call and by a deterministic label guard. `batch` runs them over a
JSONL / CSV file, resumably and concurrently; `unixcxr clean IN OUT` is its command line.
"""

from unixcxr.data.cleaning.rules import RuleResult, clean_report, find_noise
from unixcxr.data.cleaning.sections import Sections, extract_sections

__all__ = ["RuleResult", "Sections", "clean_report", "extract_sections", "find_noise"]
