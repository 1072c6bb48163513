"""Instruction templates for report generation (understanding), as in UniX's evaluation: 20
templates, 10 asking for the FINDINGS section only and 10 for FINDINGS and IMPRESSION. When an
instruction asks for FINDINGS only, the answer is the FINDINGS section only."""

from __future__ import annotations

DEFAULT_REPORT_PROMPT = "As an imaging expert, review this X-ray and share the FINDINGS and IMPRESSION."

FINDINGS_INSTRUCTIONS: tuple[str, ...] = (
    "Describe the FINDINGS of this chest X-ray.",
    "Write the FINDINGS section of the radiology report for this chest radiograph.",
    "What are the FINDINGS in this chest X-ray?",
    "Review this chest radiograph and report the FINDINGS.",
    "As a radiologist, list the FINDINGS visible on this X-ray.",
    "Provide the FINDINGS for this frontal chest radiograph.",
    "Examine this chest X-ray and write its FINDINGS.",
    "Generate the FINDINGS section for this image.",
    "Please report the FINDINGS you see on this chest film.",
    "Interpret this chest X-ray and give only the FINDINGS.",
)

FULL_REPORT_INSTRUCTIONS: tuple[str, ...] = (
    DEFAULT_REPORT_PROMPT,
    "Write a radiology report with FINDINGS and IMPRESSION for this chest X-ray.",
    "Describe the FINDINGS and give an IMPRESSION for this chest radiograph.",
    "As a radiologist, report the FINDINGS and IMPRESSION of this X-ray.",
    "Review this chest X-ray and provide the FINDINGS followed by the IMPRESSION.",
    "Generate the full report (FINDINGS and IMPRESSION) for this image.",
    "What are the FINDINGS and the IMPRESSION for this chest film?",
    "Interpret this frontal chest radiograph: FINDINGS, then IMPRESSION.",
    "Please read this chest X-ray and write the FINDINGS and IMPRESSION sections.",
    "Provide a complete chest X-ray report including FINDINGS and IMPRESSION.",
)

REPORT_INSTRUCTIONS: tuple[str, ...] = FINDINGS_INSTRUCTIONS + FULL_REPORT_INSTRUCTIONS


def asks_findings_only(instruction: str) -> bool:
    """True when the instruction wants the FINDINGS section alone (no IMPRESSION)."""
    return "IMPRESSION" not in instruction
