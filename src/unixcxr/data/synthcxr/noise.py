"""Raw-report noise (`--raw-noise`): what real MIMIC-CXR reports carry and UniX's cleaning
pipeline removes. De-identification placeholders "___", comparisons with prior studies,
communication statements, technique and indication lines, filler, the FINAL REPORT banner and
fixed-width line wrapping. None of it names an observation, so the labels do not change."""

from __future__ import annotations

import textwrap

import numpy as np

from unixcxr.data.synthcxr.report import Report, Sentence
from unixcxr.labels import POSITIVE

EXAMINATIONS = ("CHEST (PA AND LAT)", "CHEST (PA AND LAT)", "CHEST PA AND LATERAL", "CHEST RADIOGRAPHS")
INDICATIONS = (
    "___ year old man with cough.", "___ year old woman with shortness of breath.",
    "___-year-old male with chest pain.", "___F with fever and cough, evaluate for acute process.",
    "History: ___M with dyspnea.", "___M, preoperative evaluation.", "___ year old woman, follow-up.",
    "___-year-old female with tachycardia.",
)  # fmt: skip
TECHNIQUES = ("PA and lateral views of the chest were obtained.", "Chest PA and lateral radiographs.",
              "Frontal and lateral views of the chest.", "PA and lateral views of the chest.")  # fmt: skip
COMPARISONS = ("___", "Chest radiograph from ___.", "Prior chest radiographs from ___ and ___.", "None.")
PRIOR_PREFIXES = ("Compared to the prior study of ___, ", "As compared to the previous radiograph, ",
                  "In comparison with the study of ___, ", "Since the prior radiograph, ")  # fmt: skip
PRIOR_SUFFIXES = (", unchanged from prior", ", unchanged compared to ___", ", similar to the prior study",
                  ", not significantly changed since ___")  # fmt: skip
PRIOR_REMARKS = ("As compared to the previous radiograph, there is no relevant change.",
                 "Little change since the prior study.")  # fmt: skip
FILLERS = ("No previous images.", "There are no prior chest radiographs available for review.",
           "No prior studies are available for comparison.")  # fmt: skip
COMMUNICATIONS = (
    "Findings discussed with Dr. ___ at 8:45 by telephone.",
    "The findings were communicated by Dr. ___ to Dr. ___ by telephone on ___ at 2:15 PM, "
    "2 minutes after discovery of the findings.",
    "These findings were discussed with ___, RN, at 10:30 on ___.",
    "Dr. ___ was paged with the results at 16:20 on ___.",
)  # fmt: skip
WRAP_WIDTH = 76
PRIOR_SHARE, SUFFIX_SHARE, REMARK_SHARE, COMMUNICATION_SHARE = 0.5, 0.35, 0.25, 0.35


def raw_report(report: Report, rng: np.random.Generator) -> str:
    """The report as a raw MIMIC-CXR text file would hold it; same labels as `report`."""

    def pick(options):
        return options[int(rng.integers(len(options)))]

    findings = [s.text for s in report.findings]
    impression = [s.text for s in report.impression]
    has_prior = rng.random() < PRIOR_SHARE
    if has_prior:
        comparison = pick(COMPARISONS[:3])
        _mention_prior(report.findings, findings, rng, pick)
        if rng.random() < REMARK_SHARE:
            findings.append(pick(PRIOR_REMARKS))
    else:
        comparison = "None."
        findings.insert(0, pick(FILLERS))
    if rng.random() < COMMUNICATION_SHARE:
        impression.append(pick(COMMUNICATIONS))
    sections = [("EXAMINATION", pick(EXAMINATIONS)), ("INDICATION", pick(INDICATIONS)),
                ("TECHNIQUE", pick(TECHNIQUES)), ("COMPARISON", comparison),
                ("FINDINGS", " ".join(findings)), ("IMPRESSION", " ".join(impression))]  # fmt: skip
    lines = ["                                 FINAL REPORT"]
    for name, body in sections:
        if name in ("FINDINGS", "IMPRESSION"):
            lines += [f" {name}:", " "] + _wrap(body) + [" "]
        else:
            lines += _wrap(f"{name}:  {body}") + [" "]
    return "\n".join(lines).rstrip() + "\n"


def _mention_prior(sentences: tuple[Sentence, ...], texts: list[str], rng, pick) -> None:
    """Open FINDINGS with a comparison, and say of a positive finding that it is unchanged."""
    if texts and rng.random() < 0.6:
        first = texts[0]
        lowered = first[0].lower() + first[1:] if first[1:2].islower() else first
        texts[0] = pick(PRIOR_PREFIXES) + lowered
    positives = [i for i, s in enumerate(sentences) if any(v == POSITIVE for _, v in s.labels)]
    if positives and rng.random() < SUFFIX_SHARE:
        i = positives[int(rng.integers(len(positives)))]
        texts[i] = texts[i].rstrip(".") + pick(PRIOR_SUFFIXES) + "."


def _wrap(text: str) -> list[str]:
    return [" " + line for line in textwrap.wrap(text, WRAP_WIDTH)] or [" "]
