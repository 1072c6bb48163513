"""How well a report labeler agrees with experts on real reports: the Indiana University chest
X-ray reports (Open-i), whose findings were coded by staff as MeSH terms, read in place from the
torchxrayvision package (licence CC BY-NC-ND: nothing of them is copied into this repository).

Every F1 this project prints rests on the rule-based labeler, and its phrase lists were written
against our own SynthCXR text; here it meets language written by radiologists, judged against an
annotation made independently of both.

Reference labels. A MeSH term "Heading/qualifier/..." counts for the observation that
`MESH_RULES` gives its heading (some headings only with a qualifier: "Cardiac Shadow/enlarged" is
Cardiomegaly, "Cicatrix/pleura" is Pleural Other). MeSH names a finding only when it is present, so
the reference is binary: present or absent. Eleven observations are scored (`SCORED`):

- ten with MeSH headings of their own: Cardiomegaly, Lung Opacity (Opacity, Density, Infiltrate,
  Airspace Disease, lung scars as CheXpert counts them, interstitial markings), Lung Lesion (Nodule,
  Mass; calcified granulomas are not lesions in CheXpert), Edema (Pulmonary Edema, Pulmonary
  Congestion, Heart Failure as CheXpert counts it), Consolidation, Pneumonia, Atelectasis,
  Pneumothorax, Pleural Effusion, Fracture;
- No Finding as CheXpert defines it: no finding among the 13 other observations but Support
  Devices, so a report coded only "Calcified Granuloma" or "Aorta/tortuous" is No Finding. The
  rules for Enlarged Cardiomediastinum, Pleural Other and blunted costophrenic angles serve this
  definition only.

Not scored: Enlarged Cardiomediastinum (27 "Mediastinum" codes in all, no heading of its own),
Pleural Other (pleural thickening and scars are coded under several headings) and Support
Devices (MeSH's device headings also code abdominal surgical clips and breast implants).
Reports coded "No Indexing" or without findings or impression are left out.

The labeler's labels are made binary with uncertain counted as present (the radiologist named the
finding, hedged; MeSH codes such findings about half the time); `measure` also reports uncertain
as absent.
Development uses the reports with an odd number (CXR1, CXR3, ...); the even ones are held out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from unixcxr.data.iu import iter_iu_reports
from unixcxr.evaluate.report_metrics import f1_score
from unixcxr.labeler import clean_report
from unixcxr.labels import OBSERVATIONS, POSITIVE, UNCERTAIN

(EC, CM, LO, LL, ED, CO, PN, AT, PX, PE, PO, FR, SD, NF) = OBSERVATIONS
SCORED: tuple[str, ...] = (CM, LO, LL, ED, CO, PN, AT, PX, PE, FR, NF)
HALVES = ("odd", "even")  # development, held out
NO_INDEXING = "No Indexing"

BLUNTED_ANGLE = "blunted costophrenic angle"  # uncertain Pleural Effusion to CheXpert: a finding, not scored

# (MeSH heading, observation, qualifiers of which one must be present - None: any)
MESH_RULES: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("Cardiomegaly", CM, None),
    ("Cardiac Shadow", CM, ("enlarged",)),
    ("Opacity", LO, None),
    ("Density", LO, None),
    ("Infiltrate", LO, None),
    ("Airspace Disease", LO, None),
    ("Cicatrix", LO, ("lung",)),
    ("Markings", LO, ("interstitial",)),
    ("Lung Diseases, Interstitial", LO, None),
    ("Nodule", LL, None),
    ("Mass", LL, None),
    ("Pulmonary Edema", ED, None),
    ("Pulmonary Congestion", ED, None),
    ("Heart Failure", ED, None),
    ("Consolidation", CO, None),
    ("Pneumonia", PN, None),
    ("Pulmonary Atelectasis", AT, None),
    ("Pneumothorax", PX, None),
    ("Hydropneumothorax", PX, None),
    ("Hemopneumothorax", PX, None),
    ("Pleural Effusion", PE, None),
    ("Fractures, Bone", FR, None),
    # only to decide No Finding: CheXpert findings that MeSH codes too loosely to score
    ("Mediastinum", EC, ("enlarged", "prominent", "widened")),
    ("Cicatrix", PO, ("pleura",)),
    ("Thickening", PO, ("pleura",)),
    ("Pleura", PO, None),
    ("Pulmonary Fibrosis", PO, None),
    ("Costophrenic Angle", BLUNTED_ANGLE, ("blunted",)),
)
_RULES_BY_HEADING: dict[str, list[tuple[str, tuple[str, ...] | None]]] = {}
for _heading, _observation, _needed in MESH_RULES:
    _RULES_BY_HEADING.setdefault(_heading, []).append((_observation, _needed))


@dataclass(frozen=True)
class Case:
    """One IU report: its number, its text and the observations its MeSH terms name."""

    number: int
    text: str
    present: frozenset[str]

    @property
    def half(self) -> str:
        return HALVES[self.number % 2 == 0]


def mesh_observations(terms: Iterable[str]) -> set[str]:
    """The observations (CheXpert names; No Finding included) that a report's MeSH terms name."""
    found = set()
    for term in terms:
        heading, *qualifiers = term.split("/")
        for observation, needed in _RULES_BY_HEADING.get(heading, ()):
            if needed is None or any(q in needed for q in qualifiers):
                found.add(observation)
    if not found:  # no device heading is in MESH_RULES: devices never decide No Finding, as in CheXpert
        found.add(NF)
    return found


def iu_cases(reports=None) -> list[Case]:
    """Every indexed IU report with text, as a Case (the installed torchxrayvision copy by default)."""
    cases = []
    for report in reports if reports is not None else iter_iu_reports():
        if NO_INDEXING in report.mesh_major or not (report.findings or report.impression):
            continue
        cases.append(Case(int(report.uid.removeprefix("CXR")), report.text,
                          frozenset(mesh_observations(report.mesh_major))))
    return cases


def agreement(cases: list[Case], labels: list[dict], present=(POSITIVE, UNCERTAIN)) -> dict:
    """Per scored observation and half: F1 (TP / (TP + 0.5 (FP + FN))), the reference count, and
    the macro F1 over the scored observations; labels[i] belongs to cases[i]."""
    results = {}
    for half in (*HALVES, "all"):
        rows = [i for i, case in enumerate(cases) if half in ("all", case.half)]
        ref = np.array([[name in cases[i].present for name in SCORED] for i in rows], dtype=bool)
        pred = np.array([[labels[i].get(name) in present for name in SCORED] for i in rows], dtype=bool)
        tp, fp, fn = ((ref & pred).sum(0), (~ref & pred).sum(0), (ref & ~pred).sum(0))
        per_class = {name: f1_score(tp[j], fp[j], fn[j]) for j, name in enumerate(SCORED)}
        results[half] = {"n_reports": len(rows), "per_class_f1": per_class,
                         "n_present": {name: int(ref[:, j].sum()) for j, name in enumerate(SCORED)},
                         "macro_f1": float(np.mean(list(per_class.values())))}
    return results


# ---------------------------------------------------------------- the baseline the issue names
_BASELINE_PHRASES = {
    CM: r"cardiomegaly|cardiac enlargement|enlarged (?:heart|cardiac silhouette)|heart (?:size )?is enlarged",
    LO: r"opacit\w*|infiltrat\w*|air ?space disease|densit(?:y|ies)|scar\w*",
    LL: r"nodul\w*|mass(?:es)?",
    ED: r"edema|congestion|heart failure",
    CO: r"consolidat\w*",
    PN: r"pneumonia",
    AT: r"atelecta\w*",
    PX: r"pneumothora\w*",
    PE: r"effusions?",
    FR: r"fractur\w*",
}
_BASELINE_NEGATION = re.compile(r"\b(?:no|not|without|negative for|free of|clear of|resolved)\b")
_BASELINE_MENTION = {name: re.compile(rf"\b(?:{body})\b") for name, body in _BASELINE_PHRASES.items()}
_SENTENCE_END = re.compile(r"[.!?;]")


def negation_matcher(text: str) -> dict[str, int | None]:
    """A simple negation-aware keyword matcher (NegEx-like): a keyword per observation, negated
    when a negation word comes before it in its sentence; No Finding when nothing is positive.
    Reads the same sections as the labeler. The yardstick our labeler has to beat."""
    labels: dict[str, int | None] = dict.fromkeys(OBSERVATIONS)
    for sentence in _SENTENCE_END.split(clean_report(text)):
        for name, pattern in _BASELINE_MENTION.items():
            for match in pattern.finditer(sentence):
                negated = _BASELINE_NEGATION.search(sentence, 0, match.start()) is not None
                labels[name] = max(labels[name] or 0, 0 if negated else POSITIVE)
    labels[NF] = None if any(labels[name] == POSITIVE for name in _BASELINE_PHRASES) else POSITIVE
    return labels


def measure(labeler: Callable[[list[str]], list[dict]], cases: list[Case] | None = None) -> dict:
    """agreement() of `labeler` (a function from texts to label dicts) under both uncertain mappings."""
    cases = cases if cases is not None else iu_cases()
    labels = labeler([case.text for case in cases])
    return {"uncertain_as_present": agreement(cases, labels),
            "uncertain_as_absent": agreement(cases, labels, present=(POSITIVE,))}
