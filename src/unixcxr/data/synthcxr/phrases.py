"""How each finding is worded: several noun phrases (for the generic frames in words.py),
finding-specific sentences, hedged sentences and short impression lines, all naming the side
and the size or severity that was drawn. `describe` picks one wording and says which template
it used, so tests can count paraphrases."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from unixcxr.data.synthcxr import words as W
from unixcxr.data.synthcxr.words import NounPhrase as NP
from unixcxr.data.synthcxr.words import Words, capitalise, fill_frame

SPECIFIC_SHARE = 0.5  # how often a finding-specific sentence is used rather than a generic frame


@dataclass
class Phrasing:
    phrases: list[NP]
    sentences: list[str]
    hedged: list[str] = field(default_factory=list)
    impressions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Description:
    sentence: str  # for FINDINGS
    template: str  # which wording ("s2", "f1/n0", "h0", "hf3/n1", ...)
    impression: str  # for IMPRESSION (same certainty)


def describe(phrase: Callable[[dict, Words], Phrasing], params: dict, hedged: bool, words: Words) -> Description:
    """One wording of a finding (`phrase` is one of the PHRASINGS functions)."""
    phrasing = phrase(params, words)
    use_specific = words.rng.random() < SPECIFIC_SHARE
    if hedged:
        if use_specific and phrasing.hedged:
            i = int(words.rng.integers(len(phrasing.hedged)))
            sentence, template = phrasing.hedged[i], f"h{i}"
        else:
            (sentence, template) = _framed(W.HEDGE_FRAMES, phrasing.phrases, words, "hf")
        impression = _framed(W.IMPRESSION_HEDGE_FRAMES, phrasing.phrases, words, "")[0]
        return Description(capitalise(sentence), template, impression)
    if use_specific or not phrasing.phrases:
        i = int(words.rng.integers(len(phrasing.sentences)))
        sentence, template = phrasing.sentences[i], f"s{i}"
    else:
        sentence, template = _framed(W.POSITIVE_FRAMES, phrasing.phrases, words, "f")
    if phrasing.impressions and words.rng.random() < 0.5:
        impression = words.pick(phrasing.impressions)
    else:
        impression = _framed(W.IMPRESSION_FRAMES, phrasing.phrases, words, "")[0] if phrasing.phrases else sentence
    return Description(capitalise(sentence), template, capitalise(impression))


def _framed(frames, phrases: list[NP], words: Words, tag: str) -> tuple[str, str]:
    j, k = int(words.rng.integers(len(frames))), int(words.rng.integers(len(phrases)))
    return fill_frame(frames[j], phrases[k]), f"{tag}{j}/n{k}"


def _location(params: dict, words: Words) -> tuple[str, str]:
    return words.pick(W.LOCATIONS[(params["side"], params["zone"])])


# ---- heart and mediastinum ------------------------------------------------------------------


def cardiomegaly(p: dict, w: Words) -> Phrasing:
    sev, adv = w.pick(W.SEVERITY_WORDS[p["severity"]]), w.pick(W.SEVERITY_ADVERBS[p["severity"]])
    return Phrasing(
        [NP(f"{sev} cardiomegaly", False), NP(f"{sev} enlargement of the cardiac silhouette", False),
         NP(f"{sev} cardiac enlargement", False), NP(f"{adv} enlarged heart")],
        [f"The heart is {adv} enlarged.", f"The cardiac silhouette is {adv} enlarged.",
         f"Heart size is {adv} enlarged.", f"There is {sev} enlargement of the cardiac silhouette.",
         f"{sev} cardiomegaly is present.", f"The heart size is {adv} increased."],
        [f"The heart is possibly {adv} enlarged.", f"Heart size is likely {adv} enlarged.",
         f"The cardiac silhouette may be {adv} enlarged."],
        [f"{sev} cardiomegaly.", "Cardiomegaly.", f"{adv} enlarged heart."],
    )  # fmt: skip


def enlarged_cardiomediastinum(p: dict, w: Words) -> Phrasing:
    sev, adv = w.pick(W.SEVERITY_WORDS[p["severity"]]), w.pick(W.SEVERITY_ADVERBS[p["severity"]])
    return Phrasing(
        [NP(f"{sev} widening of the mediastinum", False), NP(f"{sev} mediastinal widening", False),
         NP(f"{adv} widened mediastinum"), NP(f"{sev} widening of the superior mediastinum", False)],
        [f"The mediastinum is {adv} widened.", f"The superior mediastinal contour is {adv} widened.",
         f"The mediastinal silhouette is {adv} widened.", f"There is {sev} widening of the upper mediastinum.",
         f"{sev} widening of the mediastinal contours is seen."],
        [f"The mediastinum is possibly {adv} widened.", f"The mediastinum may be {adv} widened.",
         f"Likely {sev} widening of the mediastinum."],
        [f"{sev} mediastinal widening.", "Widened mediastinum."],
    )  # fmt: skip


# ---- lungs ------------------------------------------------------------------------------------


def lung_opacity(p: dict, w: Words) -> Phrasing:
    ext, (adj, where) = w.pick(W.EXTENT_WORDS[p["extent"]]), _location(p, w)
    patterns = {"hazy": ("hazy", "ill-defined", "faint hazy"), "patchy": ("patchy", "patchy airspace")}
    kind = w.pick(patterns[p["pattern"]])
    many = p["side"] == "bilateral"
    noun = "opacities" if many else "opacity"
    return Phrasing(
        [NP(f"{ext} {kind} {noun} in {where}", plural=many), NP(f"{ext} {adj} {kind} {noun}", plural=many),
         NP(f"{ext} area of {kind} opacity in {where}"), NP(f"{ext} {kind} opacification of {where}", False)],
        [f"{ext} {kind} {noun} {'are' if many else 'is'} seen in {where}.",
         f"There is {ext} {kind} opacification of {where}.",
         f"{capitalise(where)} {'demonstrate' if many else 'demonstrates'} {ext} {kind} {noun}.",
         f"{ext} {kind} {noun} {'project' if many else 'projects'} over {where}.",
         f"An area of {ext} {kind} opacity is present in {where}."],
        [f"There is questionable {ext} {kind} opacity in {where}.",
         f"{ext} {kind} opacity may be present in {where}."],
        [f"{ext} {adj} {kind} {noun}."],
    )  # fmt: skip


def pneumonia(p: dict, w: Words) -> Phrasing:
    ext, (adj, where) = w.pick(W.EXTENT_WORDS[p["extent"]]), _location(p, w)
    return Phrasing(
        [NP(f"{ext} {adj} pneumonia", False), NP(f"{ext} pneumonia in {where}", False),
         NP(f"{ext} infectious process in {where}"), NP(f"{ext} infection in {where}", False)],
        [f"Findings are consistent with {ext} pneumonia in {where}.", f"{ext} {adj} pneumonia is present.",
         f"There is {ext} pneumonia involving {where}.", f"{ext} {adj} pneumonia.",
         f"{capitalise(where)} shows {ext} pneumonia."],
        [f"Findings in {where} are concerning for {ext} pneumonia.",
         f"{ext} pneumonia in {where} cannot be excluded.", f"Infection in {where} is not excluded."],
        [f"{ext} {adj} pneumonia.", f"Pneumonia in {where}."],
    )  # fmt: skip


def consolidation(p: dict, w: Words) -> Phrasing:
    (adj, where) = _location(p, w)
    ext = w.pick({"segmental": ("segmental", "focal"), "lobar": ("lobar", "dense lobar")}[p["extent"]])
    ab = w.pick((" with air bronchograms", " containing air bronchograms")) if p["air_bronchograms"] else ""
    return Phrasing(
        [NP(f"{ext} {adj} consolidation{ab}", False), NP(f"{ext} consolidation in {where}{ab}", False),
         NP(f"{ext} consolidation involving {where}{ab}", False)],
        [f"There is {ext} consolidation in {where}{ab}.", f"{ext} consolidation is seen in {where}{ab}.",
         f"Dense {ext} consolidation of {where}{ab}.", f"{ext} {adj} consolidation{ab} is present.",
         f"{ext} consolidation occupies {where}{ab}."],
        [f"Findings in {where} could represent {ext} consolidation.",
         f"{ext} consolidation in {where} is not excluded."],
        [f"{ext} {adj} consolidation.", f"Consolidation in {where}."],
    )  # fmt: skip


def atelectasis(p: dict, w: Words) -> Phrasing:
    sev = w.pick(W.SEVERITY_WORDS[p["severity"]])
    kind = w.pick(("plate-like", "linear", "subsegmental", "discoid"))
    zone_loc = {"lower": {"right": ("right basilar", "the right lung base"),
                          "left": ("left basilar", "the left lung base"),
                          "bilateral": ("bibasilar", "both lung bases")},
                "mid": {"right": ("right middle lobe", "the right middle lobe"), "left": ("lingular", "the lingula"),
                        "bilateral": ("bilateral mid lung", "both mid lungs")}}  # fmt: skip
    adj, where = zone_loc[p["zone"]][p["side"]]
    loss = ""
    if p["volume_loss"]:
        loss = w.pick((" with associated volume loss", f" with elevation of the {p['side']} hemidiaphragm"))
    return Phrasing(
        [NP(f"{sev} {adj} atelectasis{loss}", False), NP(f"{sev} {kind} atelectasis in {where}{loss}", False),
         NP(f"{sev} atelectatic changes in {where}{loss}", plural=True), NP(f"{sev} {adj} {kind} atelectasis", False)],
        [f"There is {sev} {kind} atelectasis in {where}{loss}.", f"{sev} {adj} atelectasis{loss}.",
         f"{sev} {kind} atelectasis is seen at {where}{loss}.",
         f"{capitalise(where)} {'show' if p['side'] == 'bilateral' else 'shows'} {sev} {kind} atelectasis{loss}.",
         f"{sev} {kind} atelectasis is present at {where}{loss}."],
        [f"{sev} {adj} atelectasis is likely.", f"Findings at {where} may represent {sev} atelectasis."],
        [f"{sev} {adj} atelectasis.", f"{adj} atelectasis."],
    )  # fmt: skip


def edema(p: dict, w: Words) -> Phrasing:
    sev = w.pick(W.SEVERITY_WORDS[p["severity"]])
    septal = " with septal lines" if p["septal_lines"] else ""
    return Phrasing(
        [NP(f"{sev} pulmonary edema", False), NP(f"{sev} interstitial pulmonary edema{septal}", False),
         NP(f"{sev} bilateral perihilar edema", False),
         NP(f"{sev} pulmonary edema with vascular congestion", False)],
        [f"There is {sev} pulmonary edema.", f"{sev} pulmonary edema with indistinct pulmonary vessels{septal}.",
         f"Findings are consistent with {sev} pulmonary edema.",
         f"The pulmonary vasculature is indistinct, consistent with {sev} edema.",
         f"{sev} interstitial edema is present{septal}.", f"There is {sev} pulmonary vascular congestion and edema."],
        [f"{sev} pulmonary edema is possible.", f"Indistinct pulmonary vessels may reflect {sev} edema."],
        [f"{sev} pulmonary edema.", "Pulmonary edema."],
    )  # fmt: skip


def lung_lesion(p: dict, w: Words) -> Phrasing:
    (adj, where) = _location(p, w)
    largest = max(lesion["size_cm"] for lesion in p["lesions"])
    if p["kind"] == "mass":
        lob = "lobulated " if p["lesions"][0]["lobulation"] > 0.08 else ""
        return Phrasing(
            [NP(f"{largest} cm {lob}mass in {where}"), NP(f"{largest} cm {adj} {lob}mass"),
             NP(f"{adj} lung mass measuring {largest} cm")],
            [f"A {largest} cm {lob}mass is present in {where}.",
             f"There is a {largest} cm {adj} mass with well-defined margins.",
             f"A {largest} cm {lob}mass projects over {where}.",
             f"{capitalise(where)} contains a {largest} cm {lob}mass.",
             f"A well-circumscribed {largest} cm mass is seen in {where}."],
            [f"A {largest} cm mass in {where} cannot be excluded."],
            [f"{largest} cm {adj} mass. Recommend chest CT for further evaluation.", f"{adj} mass, {largest} cm."],
        )  # fmt: skip
    if p["count"] > 1:
        n = W.NUMBER_WORDS[p["count"]]
        return Phrasing(
            [NP(f"{n} pulmonary nodules in {where}, the largest measuring {largest} cm", plural=True),
             NP(f"{n} {adj} nodules measuring up to {largest} cm", plural=True)],
            [f"There are {n} nodules in {where}, the largest measuring {largest} cm.",
             f"{n} well-defined pulmonary nodules are seen in {where}, up to {largest} cm.",
             f"{n} {adj} pulmonary nodules measure up to {largest} cm.",
             f"{n} nodules project over {where}, the largest {largest} cm.",
             f"{capitalise(where)} contains {n} rounded nodules up to {largest} cm."],
            [f"{n} possible nodules in {where}, up to {largest} cm."],
            [f"{n} {adj} pulmonary nodules up to {largest} cm. Recommend chest CT."],
        )  # fmt: skip
    return Phrasing(
        [NP(f"{largest} cm nodule in {where}"), NP(f"{largest} cm {adj} pulmonary nodule"),
         NP(f"{largest} cm pulmonary nodule projecting over {where}")],
        [f"There is a {largest} cm nodule in {where}.", f"A {largest} cm {adj} nodule is identified.",
         f"A well-circumscribed {largest} cm nodule projects over {where}.",
         f"A {largest} cm rounded nodule is seen in {where}.", f"{capitalise(where)} contains a {largest} cm nodule."],
        [f"A {largest} cm nodule in {where} is not excluded."],
        [f"{largest} cm {adj} nodule. Recommend chest CT for further evaluation.", f"{adj} nodule, {largest} cm."],
    )  # fmt: skip


PHRASINGS: dict[str, Callable[[dict, Words], Phrasing]] = {
    "Cardiomegaly": cardiomegaly,
    "Enlarged Cardiomediastinum": enlarged_cardiomediastinum,
    "Lung Opacity": lung_opacity,
    "Pneumonia": pneumonia,
    "Consolidation": consolidation,
    "Atelectasis": atelectasis,
    "Edema": edema,
    "Lung Lesion": lung_lesion,
}
