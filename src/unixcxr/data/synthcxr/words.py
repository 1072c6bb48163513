"""Report vocabulary: sentence frames, synonyms for sides / sizes / places, and the sentences
of normal studies and of explicit negation, each with the labels a perfect labeler reads in it.

Rule for everything here: a sentence may only use words that name the observations in its
label set (no "opacity" in a pneumonia sentence, no "heart failure" in an edema one), so the
labels written to disk are exactly the ones implied by the text."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ---- generic frames around a noun phrase ---------------------------------------------------
# {a_np}: with its article ("a small left pleural effusion"), {np}: bare, {be}: is / are.
POSITIVE_FRAMES = (
    "There {be} {a_np}.",
    "{a_np} {be} present.",
    "{a_np} {be} seen.",
    "{a_np} {be} noted.",
    "{np}.",
    "Findings are consistent with {a_np}.",
)
HEDGE_FRAMES = (
    "Possible {np}.",
    "{a_np} cannot be excluded.",
    "Findings may represent {a_np}.",
    "Likely {np}.",
    "There may be {a_np}.",
    "{a_np} {be} not excluded.",
    "Questionable {np}.",
    "Probable {np}.",
    "Findings could reflect {a_np}.",
)
IMPRESSION_FRAMES = ("{np}.", "{a_np}.", "Findings consistent with {a_np}.")
IMPRESSION_HEDGE_FRAMES = ("Possible {np}.", "{a_np} cannot be excluded.", "Likely {np}.", "Probable {np}.")


@dataclass(frozen=True)
class NounPhrase:
    text: str
    countable: bool = True  # takes "a" / "an"
    plural: bool = False

    def with_article(self) -> str:
        if self.plural or not self.countable:
            return self.text
        return ("an " if self.text[0].lower() in "aeiou" else "a ") + self.text


def fill_frame(frame: str, phrase: NounPhrase) -> str:
    text = frame.format(a_np=phrase.with_article(), np=phrase.text, be="are" if phrase.plural else "is")
    return capitalise(text)


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


class Words:
    """Random choice of synonyms, from the study's report generator."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]


# ---- synonyms -------------------------------------------------------------------------------
SIZE_WORDS = {"small": ("small", "small"), "moderate": ("moderate", "moderate-sized", "moderate"),
              "large": ("large", "large", "sizable")}  # fmt: skip
SEVERITY_WORDS = {"minimal": ("minimal",), "mild": ("mild", "mild", "slight"), "moderate": ("moderate",),
                  "severe": ("severe", "marked"), "marked": ("marked", "marked", "severe")}  # fmt: skip
SEVERITY_ADVERBS = {"mild": ("mildly", "mildly", "slightly"), "moderate": ("moderately",),
                    "severe": ("severely", "markedly"), "marked": ("markedly", "markedly", "severely")}  # fmt: skip
EXTENT_WORDS = {"small": ("small", "focal"), "moderate": ("moderate", "moderate"), "large": ("large", "extensive")}
SIDE_ADVERBS = {"right": ("on the right",), "left": ("on the left",), "bilateral": ("bilaterally",)}
# (adjective, noun phrase) for each side and lung zone
LOCATIONS = {
    ("right", "upper"): (("right upper lobe", "the right upper lobe"), ("right upper lung", "the right upper lung")),
    ("right", "mid"): (("right middle lobe", "the right middle lobe"), ("right mid lung", "the right mid lung")),
    ("right", "lower"): (("right lower lobe", "the right lower lobe"), ("right basilar", "the right lung base"),
                         ("right base", "the right base")),
    ("left", "upper"): (("left upper lobe", "the left upper lobe"), ("left upper lung", "the left upper lung")),
    ("left", "mid"): (("lingular", "the lingula"), ("left mid lung", "the left mid lung")),
    ("left", "lower"): (("left lower lobe", "the left lower lobe"), ("left basilar", "the left lung base"),
                        ("retrocardiac", "the retrocardiac region")),
    ("bilateral", "upper"): (("bilateral upper lobe", "both upper lobes"),
                             ("bilateral upper lung", "both upper lungs")),
    ("bilateral", "mid"): (("bilateral mid lung", "both mid lungs"), ("bilateral perihilar", "both perihilar regions")),
    ("bilateral", "lower"): (("bibasilar", "both lung bases"), ("bilateral lower lobe", "both lower lobes")),
}  # fmt: skip
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
            "eleventh", "twelfth")  # fmt: skip
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")


def ordinal(n: int, words: Words) -> str:
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(n if n < 20 else n % 10, "th")
    return words.pick((ORDINALS[n - 1], ORDINALS[n - 1], f"{n}{suffix}"))


# ---- sentences of normal studies and negations, with their labels -------------------------
CON, PNA, OPA, EDE, ATE, LES = "Consolidation", "Pneumonia", "Lung Opacity", "Edema", "Atelectasis", "Lung Lesion"
EFF, PTX, PLO = "Pleural Effusion", "Pneumothorax", "Pleural Other"
CMG, ECM, FRA = "Cardiomegaly", "Enlarged Cardiomediastinum", "Fracture"

NEGATIONS = {  # group -> (sentence, observations it negates); an empty set is a label-free remark
    "lungs": (
        ("The lungs are clear.", ()), ("Lungs are clear.", ()), ("The lungs are well expanded and clear.", ()),
        ("No focal consolidation.", (CON,)), ("There is no focal consolidation.", (CON,)),
        ("No focal consolidation is seen.", (CON,)), ("There is no focal airspace consolidation.", (CON,)),
        ("No focal consolidation to suggest pneumonia.", (CON, PNA)), ("No evidence of pneumonia.", (PNA,)),
        ("No pulmonary edema.", (EDE,)), ("There is no pulmonary edema.", (EDE,)),
        ("No evidence of pulmonary edema.", (EDE,)), ("There is no pulmonary vascular congestion.", (EDE,)),
        ("No focal opacity.", (OPA,)), ("No focal airspace opacity is seen.", (OPA,)),
        ("No suspicious pulmonary nodules.", (LES,)), ("No pulmonary nodules or masses are seen.", (LES,)),
        ("No consolidation, edema, or atelectasis.", (CON, EDE, ATE)),
        ("No focal consolidation, pleural effusion, or pneumothorax.", (CON, EFF, PTX)),
    ),
    "pleura": (
        ("No pleural effusion or pneumothorax.", (EFF, PTX)),
        ("There is no pleural effusion or pneumothorax.", (EFF, PTX)),
        ("No pneumothorax or pleural effusion is seen.", (EFF, PTX)), ("No pleural effusion is seen.", (EFF,)),
        ("There is no pleural effusion.", (EFF,)), ("No pleural effusion.", (EFF,)), ("No pneumothorax.", (PTX,)),
        ("There is no pneumothorax.", (PTX,)), ("No pneumothorax is seen.", (PTX,)),
        ("No pleural thickening.", (PLO,)),
    ),
    "heart": (
        ("Heart size is normal.", (CMG,)), ("The heart is normal in size.", (CMG,)), ("Normal heart size.", (CMG,)),
        ("The cardiac silhouette is not enlarged.", (CMG,)),
        ("The cardiomediastinal silhouette is within normal limits.", (ECM,)),
        ("Mediastinal contours are normal.", (ECM,)), ("The mediastinum is not widened.", (ECM,)),
        ("Heart size and mediastinal contours are normal.", (CMG, ECM)),
        ("The cardiac and mediastinal silhouettes are unremarkable.", (CMG, ECM)),
        ("Hilar contours are normal.", ()), ("The hila are unremarkable.", ()),
    ),
    "bones": (
        ("No displaced fracture is seen.", (FRA,)), ("No acute rib fracture.", (FRA,)),
        ("No acute osseous abnormality.", ()), ("The osseous structures are unremarkable.", ()),
        ("Visualized osseous structures are intact.", ()),
    ),
}  # fmt: skip
NORMAL_IMPRESSIONS = (
    "No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.", "Normal chest radiograph.",
    "No radiographic evidence of acute cardiopulmonary disease.", "No acute findings in the chest.",
    "Unremarkable chest radiograph.",
)  # fmt: skip
OTHERWISE_NORMAL = ("No other acute cardiopulmonary process.", "Otherwise, no acute cardiopulmonary process.")
