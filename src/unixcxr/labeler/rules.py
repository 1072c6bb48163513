"""What counts as a mention of each observation: the phrase lists of the rule-based labeler.

The design follows the CheXpert labeler (docs/labeler.md): phrase lists per observation, "unmention"
phrases that cancel a match, and the rest of the sentence decides the state. Three kinds of phrase:

- mentions: the finding itself ("pleural effusion"); the sentence decides 1 / 0 / -1.
- hedged: wording that is itself a hedge ("vascular congestion" is uncertain Edema) unless negated.
- attributes: a neutral anatomy word ("heart size", "mediastinum") that only becomes a mention when
  the clause describes it with a size cue: "is enlarged" -> 1, "is normal" -> 0, "is stable" /
  "borderline" / "obscured" -> -1 (CheXpert's convention for unqualified stable silhouettes).

All phrases are lower-case regular-expression fragments matched at a word start. Deliberate
CheXpert conventions kept so our labels mean what the field's labels mean: "heart failure"/"CHF"
is an Edema mention that also adds uncertain Cardiomegaly; scarring is Lung Opacity; "fibrosis"
is Pleural Other; calcified nodules and granulomas are not lung lesions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from unixcxr.labels import OBSERVATIONS

from .scanner import PhraseScanner


@dataclass(frozen=True)
class Phrases:
    """Regex fragments for one observation (see the module docstring for the three kinds)."""

    mentions: tuple[str, ...] = ()
    hedged: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    unmentions: tuple[str, ...] = ()


EC, CM, LO, LL, ED, CO, PN, AT, PX, PE, PO, FR, SD, NF = OBSERVATIONS

PHRASES: dict[str, Phrases] = {
    EC: Phrases(
        attributes=(
            r"(?:cardio)?mediastin(?:um|al)(?: (?:silhouette|contours?|configuration|width|structures))?",
            r"pericardial silhouette",
        ),
        unmentions=(
            r"mediastinal (?:and (?:\w+ )?hilar )?(?:shift|drains?|tubes?|(?:surgical )?clips?|wires?|lymph\w*|nodes?"
            r"|mass\w*|emphysema|fat|air|granulom\w*|calcifi\w*)",
        ),
    ),
    CM: Phrases(
        mentions=(r"cardiomegaly", r"cardiac enlargement", r"enlarged heart"),
        attributes=(
            r"(?:the )?heart(?: size)?",
            r"size of the heart",
            r"cardiac (?:size|silhouette|shadow|contours?|dimensions?)",
            r"cardiac and mediastinal (?:contours?|silhouettes?)",
        ),
        unmentions=(r"heart (?:failure|borders?|valves?|rate|disease|surgery|sounds?)",),
    ),
    LO: Phrases(
        mentions=(
            r"opaci\w*",
            r"decreased translucency",
            r"increased densit(?:y|ies)",
            r"(?:patchy|ill-defined|hazy|streaky|linear|focal|airspace|parenchymal|basilar|bibasilar"
            r"|retrocardiac) densit(?:y|ies)",
            r"air[- ]?space (?:disease|process)",
            r"infiltrat\w*",
            r"interstitial (?:marking|pattern|lung|opacit|prominence|thickening|abnormalit)\w*",
            r"reticul\w*",
            r"(?:peribronchial|bronchial wall) (?:thickening|cuffing)",
            r"scar\w*",
            r"ground[- ]glass",
            r"haz(?:y|iness)",
        ),
        unmentions=(r"pleural scar\w*", r"pleuro-?parenchymal scar\w*"),
    ),
    LL: Phrases(
        mentions=(
            r"mass(?:es)?\b",
            r"nodul\w*",
            r"lumps?\b",  # not "lumpectomy"
            r"(?:cavitary|spiculated|pulmonary|lung|parenchymal) lesions?",
            r"carcinoma\w*",
            r"neoplasm\w*",
            r"tumou?rs?",
            r"malignan\w*",
            r"(?:pulmonary|lung) metasta\w*",
            r"lung cancer",
        ),
        unmentions=(r"calcified nodul\w*", r"mass effect"),
    ),
    ED: Phrases(
        mentions=(r"o?edema\w*", r"heart failure", r"chf"),
        hedged=(
            r"(?:pulmonary |vascular |venous |interstitial )+congestion",
            r"(?:pulmonary )?vascular (?:prominence|engorgement|redistribution)",
            r"prominen\w* (?:of )?(?:the )?(?:central )?(?:pulmonary |lung )?vascula\w*",
            r"indistinct\w* (?:of )?(?:the )?(?:pulmonary )?(?:vessels|vascula\w*)",
        ),
        unmentions=(
            r"(?:soft tissue|subcutaneous|chest wall|facial|extremity|peripheral|airway|laryngeal) o?edema",
        ),
    ),
    CO: Phrases(mentions=(r"consolidat\w*",)),
    PN: Phrases(
        mentions=(r"(?:broncho)?pneumonias?\b", r"pneumonitis", r"infection\w*", r"infectious"),
        # healed granulomatous disease, not an infection of the lung now
        unmentions=(r"granulomatous infection\w*", r"(?:old|prior|previous|remote|healed) infection\w*"),
    ),
    AT: Phrases(
        mentions=(r"atelecta\w*", r"collapse[ds]?\b"),
        unmentions=(r"(?:vertebral|compression) (?:body )?collapse",),
    ),
    PX: Phrases(mentions=(r"(?:hydro)?pneumothora(?:x|ces)",)),
    PE: Phrases(
        mentions=(r"effusions?", r"pleural fluid", r"hydrothorax"),
        hedged=(
            r"blunt\w* (?:of )?(?:the )?(?:\w+ )?(?:costophrenic|cp) (?:angles?|sulc\w*)",
            r"(?:costophrenic|cp) (?:angles? )?(?:is |are )?blunt\w*",
        ),
        unmentions=(r"pericardial effusions?", r"(?:joint|knee|shoulder) effusions?"),
    ),
    PO: Phrases(
        mentions=(
            r"pleural (?:thickening|based scar\w*|scar\w*|plaques?|calcifications?)",
            r"pleuro-?parenchymal (?:scar\w*|thickening)",
            r"pleura(?: is| are)?(?: \w+ly)? thickened",
            r"thickened pleura\w*",
            r"plaques? along the (?:\w+ )?pleura\w*",
            r"fibrothorax",
            r"(?:apical )?pleural caps?",
            r"apical caps?",
            r"apical capping",
            r"fibrosis",
        ),
    ),
    FR: Phrases(mentions=(r"fractur\w*", r"fx")),
    SD: Phrases(
        mentions=(
            r"tubes?\b",
            r"catheters?",
            r"picc",
            r"cvc",
            r"(?:central|venous|arterial|picc|pic|ij|jugular|subclavian|femoral|swan[- ]ganz|dialysis"
            r"|hemodialysis|enteric|feeding|pa) (?:venous )?lines?",
            r"lines and tubes",
            r"pacemakers?",
            r"pacers?",
            r"a?icds?",
            r"defibrillators?",
            r"(?:sternotomy |sternal |surgical )?wires?\b",
            r"(?:prosthetic|mechanical|bioprosthetic|replaced) (?:\w+ )?valves?",
            r"valve (?:replacement|prosthesis)",
            r"stents?",
            r"drains?\b",
            r"hardware",
            r"plates?\b",
            r"screws?",
            r"coils?\b",
            r"cannula\w*",
            r"devices?",
            r"ports?\b",
            r"port-a-cath",
            r"portacath",
            r"mediport",
            r"tracheostomy",
            r"endotracheal",
            r"nasogastric",
            r"orogastric",
            r"ett",
            r"ngt",
            r"ogt",
            r"lvad",
            r"iabp",
            r"balloon pump",
            r"impella",
            r"ecmo",
            r"arthroplast\w*",
        ),
        unmentions=(r"plate-?like", r"plate atelecta\w*", r"end ?plates?", r"growth plates?"),
    ),
}

HEART_FAILURE = re.compile(r"heart failure|chf")
"""An Edema mention that also adds uncertain Cardiomegaly when it is positive or uncertain."""

# Size cues that turn an attribute ("heart size") into a mention. Order is priority within a clause.
NORMAL_CUES = r"normal|unremarkable"
ENLARGED_CUES = r"enlarg\w*|large|larger|increased|widen\w*|wide|abnormal"
HEDGE_CUES = (
    r"borderline|prominen\w*|stable|unchanged|similar|obscur\w*|no (?:\w+ )?change|not (?:significantly )?"
    r"changed|(?:difficult|unable) to (?:assess|evaluate)|cannot be (?:assessed|evaluated)"
    r"|not (?:well )?(?:assessed|evaluated)|poorly (?:assessed|evaluated|seen)"
)

KINDS = ("mentions", "hedged", "attributes", "unmentions")

FINDER = PhraseScanner(
    {(name, kind): "|".join(getattr(p, kind)) for name, p in PHRASES.items() for kind in KINDS if getattr(p, kind)}
)
"""Finds every mention, hedged phrase, attribute and unmention of every observation in one pass."""
