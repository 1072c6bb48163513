"""Writing the report of a study and reading its labels off the sentences.

Every sentence carries the labels it asserts, so the 14-observation vector is exactly what a
perfect labeler would read: positive beats uncertain beats negative, unmentioned is blank,
and "No Finding" is 1 only when nothing but support devices is positive or uncertain."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unixcxr.data.synthcxr import phrases, phrases_other
from unixcxr.data.synthcxr import words as W
from unixcxr.data.synthcxr.findings import Finding
from unixcxr.data.synthcxr.phrases import describe
from unixcxr.data.synthcxr.words import Words
from unixcxr.labels import BLANK, NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN

NO_FINDING, DEVICES = "No Finding", "Support Devices"
GROUPS = (  # FINDINGS are written in this order
    ("lungs", ("Lung Opacity", "Consolidation", "Pneumonia", "Atelectasis", "Edema", "Lung Lesion")),
    ("pleura", ("Pleural Effusion", "Pneumothorax", "Pleural Other")),
    ("heart", ("Cardiomegaly", "Enlarged Cardiomediastinum")),
    ("bones", ("Fracture",)),
    ("devices", (DEVICES,)),
)
IMPRESSION_PRIORITY = ("Pneumothorax", "Pleural Effusion", "Pneumonia", "Consolidation", "Edema", "Cardiomegaly",
                       "Lung Lesion", "Lung Opacity", "Atelectasis", "Fracture", "Enlarged Cardiomediastinum",
                       "Pleural Other", DEVICES)  # fmt: skip
MAX_IMPRESSION_ITEMS = 3
NUMBERED_SHARE = 0.35  # impressions with several items are sometimes numbered "1. ... 2. ..."
DEVICE_IMPRESSION_SHARE = 0.3
OTHERWISE_NORMAL_SHARE = 0.3
# chance of one explicit negation per group: (normal study, group without findings, group with findings)
NEGATION_SHARE = {"lungs": (0.95, 0.6, 0.35), "pleura": (0.9, 0.65, 0.3), "heart": (0.9, 0.6, 0.2),
                  "bones": (0.45, 0.25, 0.0), "devices": (0.0, 0.0, 0.0)}  # fmt: skip
SECOND_NEGATION_SHARE = 0.35
PHRASINGS = {**phrases.PHRASINGS, **phrases_other.PHRASINGS}


@dataclass(frozen=True)
class Sentence:
    text: str
    labels: tuple[tuple[str, int], ...] = ()  # (observation, value) pairs this sentence asserts


@dataclass(frozen=True)
class Report:
    findings: tuple[Sentence, ...]
    impression: tuple[Sentence, ...]
    templates: tuple[tuple[str, str], ...]  # (observation, wording template) of each described finding

    @property
    def findings_text(self) -> str:
        return " ".join(s.text for s in self.findings)

    @property
    def impression_text(self) -> str:
        return " ".join(s.text for s in self.impression)

    @property
    def text(self) -> str:
        """The model's target form: "FINDINGS: ... IMPRESSION: ..."."""
        return f"FINDINGS: {self.findings_text} IMPRESSION: {self.impression_text}"

    def labels(self) -> dict[str, int | None]:
        return labels_of(self.findings + self.impression)


def labels_of(sentences) -> dict[str, int | None]:
    """Aggregate sentence labels (positive > uncertain > negative > blank) and derive No Finding."""
    rank = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}
    labels: dict[str, int | None] = dict.fromkeys(OBSERVATIONS, BLANK)
    for sentence in sentences:
        for name, value in sentence.labels:
            if labels[name] is None or rank[value] > rank[labels[name]]:
                labels[name] = value
    abnormal = any(labels[n] in (POSITIVE, UNCERTAIN) for n in OBSERVATIONS if n not in (NO_FINDING, DEVICES))
    labels[NO_FINDING] = BLANK if abnormal else POSITIVE
    return labels


def write_report(findings: tuple[Finding, ...], rng: np.random.Generator) -> Report:
    """FINDINGS grouped lungs / pleura / heart and mediastinum / bones / devices, then an
    IMPRESSION that repeats the main findings with the same certainty."""
    words = Words(rng)
    present = {f.observation: f for f in findings}
    normal = not (set(present) - {DEVICES})
    body, impressions, templates, negated = [], [], [], set()
    for group, names in GROUPS:
        positives = []
        for name in names:
            if name in present:
                sentences, impression, template = _describe(present[name], words)
                positives += sentences
                impressions.append((name, impression))
                templates.append((name, template))
        share = NEGATION_SHARE[group][0 if normal else (2 if positives else 1)]
        body += positives + _negations(group, set(present), negated, share, words, clear_ok=not positives)
    return Report(tuple(body), tuple(_impression(impressions, normal, words)), tuple(templates))


def _describe(finding: Finding, words: Words) -> tuple[list[Sentence], Sentence, str]:
    value = UNCERTAIN if finding.hedged else POSITIVE
    label = ((finding.observation, value),)
    if finding.observation == DEVICES:
        sentences, ids = [], []
        for device in finding.params["devices"]:
            options = phrases_other.device_sentences(device, words)
            i = int(words.rng.integers(len(options)))
            sentences.append(Sentence(options[i], label))
            ids.append(f"{device['type']}{i}")
        return sentences, Sentence(words.pick(phrases_other.DEVICE_IMPRESSIONS), label), "+".join(ids)
    text = describe(PHRASINGS[finding.observation], finding.params, finding.hedged, words)
    return [Sentence(text.sentence, label)], Sentence(text.impression, label), text.template


def _negations(group: str, present: set[str], negated: set[str], share: float, words: Words,
               clear_ok: bool) -> list[Sentence]:
    """Up to two explicit negations of absent findings (or label-free normal remarks)."""
    out = []
    for attempt in range(2):
        if words.rng.random() >= (share if attempt == 0 else share * SECOND_NEGATION_SHARE):
            break
        options = [(text, names) for text, names in W.NEGATIONS[group]
                   if not set(names) & (present | negated) and (names or clear_ok)
                   and text not in [s.text for s in out]]  # fmt: skip
        if not options:
            break
        text, names = words.pick(options)
        negated.update(names)
        out.append(Sentence(text, tuple((n, NEGATIVE) for n in names)))
    return out


def _impression(items: list[tuple[str, Sentence]], normal: bool, words: Words) -> list[Sentence]:
    if normal:
        lines = [Sentence(words.pick(W.NORMAL_IMPRESSIONS))]
        devices = [s for name, s in items if name == DEVICES]
        if devices and words.rng.random() < 0.5:
            lines.insert(0, devices[0])
        return lines
    order = {name: i for i, name in enumerate(IMPRESSION_PRIORITY)}
    ranked = sorted(items, key=lambda item: order[item[0]])
    keep = [s for name, s in ranked if name != DEVICES][:MAX_IMPRESSION_ITEMS]
    if any(name == DEVICES for name, _ in items) and words.rng.random() < DEVICE_IMPRESSION_SHARE:
        keep.append(next(s for name, s in items if name == DEVICES))
    if words.rng.random() < OTHERWISE_NORMAL_SHARE:
        keep.append(Sentence(words.pick(W.OTHERWISE_NORMAL)))
    if len(keep) > 1 and words.rng.random() < NUMBERED_SHARE:
        keep = [Sentence(f"{i}. {s.text}", s.labels) for i, s in enumerate(keep, 1)]
    return keep
