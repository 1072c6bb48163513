"""The vocabulary of raw-report noise, in one place: what the rule stage removes or rewrites.

Grouped by the kinds of noise the UniX paper's cleaning removes (its data section): de-identification
placeholders, comparisons to prior studies, communication statements, technique / view metadata and
filler. Each group is a list of (pattern, replacement) pairs applied in order, or one detector.
Patterns are case-insensitive unless noted; they act on one sentence at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_I = re.IGNORECASE


Replacement = str | Callable[[re.Match[str]], str]


def _compile(pairs: list[tuple[str, Replacement]]) -> list[tuple[re.Pattern[str], Replacement]]:
    return [(re.compile(pattern, _I), replacement) for pattern, replacement in pairs]


def _lower_first(phrase: str) -> str:
    """"Consolidation" -> "consolidation" inside a sentence; acronyms ("ET tube") stay."""
    return phrase[:1].lower() + phrase[1:] if phrase[1:2].islower() else phrase


# ---- de-identification placeholders -------------------------------------------------------------
# MIMIC writes "___", IU writes "XXXX" (also glued: "x-XXXX", "XXXXPM"), MIMIC-II wrote "[**...**]".
PLACEHOLDER = re.compile(r"_{2,}|(?<![a-z])X{3,}|\[\*\*.*?\*\*\]")
# IU's de-identifier also hid a few ordinary words; where the word is certain we put it back
# rather than leave a broken phrase. Never a finding: only the noun the phrase already implies.
RESTORE = _compile([
    (r"\bx-(?:XXXX|___)", "x-ray"),
    (r"\blymph (?:XXXX|___)", "lymph nodes"),
    (r"\bcostophrenic (?:XXXX|___)(?= are\b)", "costophrenic angles"),
    (r"\bcostophrenic (?:XXXX|___)", "costophrenic angle"),
])

# ---- comparisons to prior studies ----------------------------------------------------------------
_DATE = (r"(?:(?:___|XXXX)(?:\s*/\s*(?:___|XXXX))*|\d{1,2}[/-]\d{1,2}(?:[/-]\d{2,4})?|\d{4}|yesterday"
         r"|today|earlier(?:\s+today)?|this\s+morning"
         r"|(?:one|two|three|several|\d+)\s+(?:days?|weeks?|months?|years?)\s+ago)")
_STUDY = (r"(?:studies|study|exams?|examinations?|radiographs?|films?|images?|x-?rays?|CTs?|CXRs?|scans?"
          r"|tomograms?|imaging|ones?|___|XXXX)")
_PRIOR_ADJ = (r"(?:prior|previous|preceding|earlier|(?:most\s+)?recent|last|old|outside|comparison"
              r"|remote|initial|baseline)")
_DATED = rf"(?:\s+(?:from|of|dated|on|obtained|performed|done|taken)(?:\s+on)?\s+{_DATE}(?:\s*,\s*{_DATE})*)?"
_PRIOR_STUDY = (rf"(?:the\s+|a\s+|an\s+|any\s+|no\s+)?(?:patient's\s+)?(?:{_PRIOR_ADJ}\s+)+"
                rf"(?:(?!of\b|on\b|in\b|with\b)[\w-]+\s+){{0,2}}?{_STUDY}\b{_DATED}")
_DATED_STUDY = (rf"(?:the\s+|a\s+|an\s+)?(?:[\w-]+\s+){{0,2}}?{_STUDY}\s+"
                rf"(?:from|of|dated|(?:obtained|performed|done)\s+on)\s+{_DATE}")
_BARE_PRIOR = r"(?:prior|previous)(?=\s*(?:[.,;)]|$))"
_ANY_PRIOR = rf"(?:{_PRIOR_STUDY}|{_DATED_STUDY}|{_BARE_PRIOR})"
_COMPARATOR = (r"(?:___|XXXX|(?:as\s+|when\s+)?compared\s+(?:to|with)|in\s+comparison\s+(?:to|with)"
               r"|comparison\s+(?:to|with)|relative\s+to|since|from|than|to|versus|vs\.?|with|on"
               r"|seen\s+on|noted\s+on|of|in|over)")
_DEGREE = r"(?:relatively|essentially|grossly|largely|overall|otherwise|roughly|fairly|not\s+significantly)"
_STEADY = (r"(?:unchanged|stable(?:[\s-]appearing)?|unaltered|not\s+(?:significantly\s+|substantially\s+)?changed"
           r"|without\s+change)")
_CONNECT = r"(?:(?<!\w)(?:and|but|which\s+(?:is|are)|that\s+(?:is|are))\s+|,\s*)"
_COPULA = r"(?:is|are|remains?|appears?|has\s+remained|have\s+remained|has\s+been|have\s+been|looks?)"
_PREDICATE_END = r"(?=\s*(?:[.,;)]|$|\b(?:with|but|since)\b))"

COMPARISON = _compile([
    # whole-sentence leads: "Comparison: ___." / "Comparison XXXX, XXXX Clear lungs."
    (r"^comparison\s*(?:is\s+made\s+(?:to|with)\s+[^.]*|[:.]?\s*(?:(?:___|XXXX|none)[\s,.]*)+)", ""),
    # "(not seen on prior chest x-ray)"
    (rf"\((?:[^()]*?\b(?:{_COMPARATOR}\s+{_ANY_PRIOR}|prior|previous)\b[^()]*)\)", ""),
    (r",?\s*(?:however,?\s*)?recommend\s+comparison\s+with\s+[^.;]*", ""),
    # "..., as compared to the prior study of ___", "since the previous radiograph", "from prior"
    (rf"\s*,?\s*(?:{_COMPARATOR})\s+{_ANY_PRIOR}", ""),
    (rf"\s*,?\s*(?:since|from|than|(?:compared|similar)\s+(?:to|with))\s+{_DATE}"
     r"(?=\s*(?:[.,;)]|$))", ""),
    # what a removed comparison leaves dangling: "edema, improved since the prior study" -> "edema"
    (r",\s*(?:(?:slightly|mildly|minimally|markedly|significantly|somewhat)\s+)?(?:improved|improving|worse"
     r"|worsened|worsening|increased|increasing|decreased|decreasing|larger|smaller|better)\s*(?=[.]?$)", ""),
    (r"\s+on\s+(?:today's|the\s+current|this|the\s+present)\s+"
     r"(?:exam|examination|study|radiograph|film)", ""),
    # "no (significant) (interval) change", "or significant interval change"
    (r"\s*,?\s*\b(?:or|and)\s+(?:(?:no|any)\s+)?(?:(?:significant|substantial|appreciable|interval)\s+)*"
     r"change\b", ""),
    (r"\bno\s+acute\s+interval\s+change\b", ""),
    (r"\b(?:no|without|little|minimal)\s+(?:(?:significant|substantial|appreciable|gross|definite|relevant"
     r"|major|notable|radiographic|marked|visible)\s+)*(?:interval\s+)?changes?\b"
     r"(?:\s+(?:in|of)\s+(?:the\s+)?(?:(?:appearance|position|size|configuration)(?:\s+of(?:\s+the)?)?)?)?",
     ""),
    (r"\bin\s+the\s+(?:interval|interim)\b|\bover\s+the\s+interval\b", ""),
    # change verbs: "X has improved." -> "X." (still there); "X has resolved." -> "No X."
    (r"^(?:the\s+)?(.+?)\s+(?:has|have)\s+(?:completely\s+)?(?:resolved|cleared)\s*\.?$",
     lambda m: f"No {_lower_first(m.group(1))}."),
    (r"\s+(?:has|have)\s+(?:(?:slightly|mildly|minimally|markedly|substantially|further)\s+)?"
     r"(?:improved|worsened|increased|decreased|progressed|regressed)(?:\s+in\s+(?:size|extent|severity))?"
     r"(?=\s*(?:[.,;]|$))", ""),
    (r"^(?:there\s+(?:has|have)\s+been\s+)?(?:an?\s+)?(?:interval|new)\s+(?:placement|insertion|development"
     r"|appearance)\s+of\s+(?:an?\s+|the\s+)?", ""),
    (r"\binterval\s+(?:placement|insertion|development|appearance)\s+of\s+(?:an?\s+|the\s+)?", ""),
    (r"\binterval\s+", ""),
    # "again seen", "redemonstrated", "as before", "previously described"
    (r"^again\s+(?:seen|noted|demonstrated|identified|visualized|shown|present)\s+(is|are)\s+", r"There \1 "),
    (r"^re-?demonstrated\s+(is|are)\s+", r"There \1 "),
    (r"^re-?demonstration\s+of\s+(?:the\s+)?", ""),
    (r"\bre-?demonstration\s+(?:of|in)\s+", ""),
    (r"\b(is|are)\s+re-?demonstrated\b", r"\1 seen"),
    (r"\bre-?demonstrated\b", "seen"),
    (r"\bagain\s+", ""),
    (r"\s*,?\s*\bas\s+(?:before|previously(?:\s+(?:seen|described|noted|demonstrated|reported|identified))?)",
     ""),
    (r"\b(?:seen|noted|described|identified|demonstrated|visualized)\s+previously\b", ""),
    (r"\bpreviously\s+(?:seen|noted|described|identified|demonstrated|visualized|reported|partially"
     r"\s+demonstrated)\s*", ""),
    (r"\b(?:persistent|persisting|continued)\s+", ""),
    # "unchanged" / "stable" / "similar": predicative ("X is unchanged.", "X, stable.") first,
    # then attributive ("Stable cardiomegaly", "unchanged appearance of ...")
    (rf"\s*{_CONNECT}?(?:(?<!\w){_COPULA}\s+)?(?:(?<!\w){_DEGREE}\s+)*(?<!\w)(?:{_STEADY}|similar)"
     rf"(?:\s+in\s+(?:appearance|size|position|configuration|extent|distribution))?{_PREDICATE_END}", ""),
    (rf"\b(is|are)\s+{_STEADY}\s+(?=position\b)", r"\1 in "),
    (rf"\b(?:{_DEGREE}\s+)*{_STEADY}\s+and\s+", ""),
    (rf"\b(?:{_DEGREE}\s+)*{_STEADY}\s+(?:appearance\s+of\s+(?:the\s+)?)?", ""),
    # "new": "a new opacity" -> "a opacity" (article repaired later); "effusion is new."
    (r"\s*\b(?:is|are)\s+new\b", ""),
    (r"\bnew\s+(?!or\b|and\b)(?=[a-z])", ""),
])

# Every COMPARISON and FILLER pattern needs one of these words; most sentences have none, and one
# scan for them is ~20x cheaper than trying the ~40 patterns (see benchmarks/bench_cleaning.py).
COMPARISON_TRIGGER = re.compile(
    r"prior|previous|preceding|earlier|recent|\blast\b|\bold\b|outside|remote|initial|baseline|compar"
    r"|interval|interim|unchanged|stable|unaltered|similar|again|before|re-?demonstr|persist|continued"
    r"|\bnew\b|change|since|resolved|cleared|improv|worse|increas|decreas|progress|regress|larger|smaller"
    r"|better|today|current|present\s+(?:exam|study|radiograph|film)|yesterday|morning|\bago\b|none"
    r"|available|submitted|___|XXXX|\d+/\d+|\b(?:19|20)\d\d\b",
    _I,
)

# Sentences that only talk about having (or wanting) a prior study: dropped whole.
FILLER = re.compile(
    rf"\bfor\s+comparison\b|^(?:recommend\s+)?comparison\s+(?:with|to)\b"
    rf"|^(?:there\s+(?:is|are)\s+)?no\s+(?:{_PRIOR_ADJ}\s+)+(?:[\w-]+\s+){{0,2}}?{_STUDY}\b"
    r"|^no\s+comparisons?\b|^none\.?$"
    r"|\bnot\s+(?:available|submitted)\s+for\s+(?:my\s+)?(?:review|interpretation)"
    r"|\bavailable\s+for\s+(?:my\s+)?interpretation\b"
    rf"|{_PRIOR_STUDY}.*\b(?:would|may|might|could)\s+be\s+(?:helpful|useful)"
    rf"|{_PRIOR_STUDY}\s+(?:is|are|were|was)\s+not\s+available",
    _I,
)

# ---- communication statements --------------------------------------------------------------------
COMMUNICATION = re.compile(
    r"\b(?:discussed(?!\s+(?:below|above|earlier|further|in\b))|d/w|communicated|conveyed|relayed|notified"
    r"|paged|telephone|telephoned|by\s+phone|phone\s+call|called\s+(?:to|and|with|at)|results?\s+called"
    r"|veriphy|critical\s+results?|acknowledged\s+receipt|made\s+aware|informed\s+of"
    r"|(?:please|to)\s+(?:call|contact)|discuss\s+this\s+case"
    r"|(?:was|were)\s+(?:called|informed|e-?mailed))\b",
    _I,
)

# "These findings", "The above results": the subject of a communication statement, not a finding.
FINDINGS_REFERENCE = re.compile(r"^(?:the\s+|these\s+|this\s+|above\s+|critical\s+)*(?:findings?|results?"
                                r"|recommendations?|impression|case|study)\b", _I)

# ---- technique and view metadata -----------------------------------------------------------------
_VIEWS = (r"(?:(?:pa|ap|frontal|lateral|portable|upright|supine|semi-?upright|semi-?erect|erect|single"
          r"|two|three|2|3|oblique|decubitus|bedside|and|,)\s*)+")
# "Frontal and lateral views of the chest (with overlying leads) show ..." -> "..."
TECHNIQUE_LEAD = re.compile(
    rf"^(?:the\s+)?{_VIEWS}(?:chest\s+)?(?:views?|radiographs?|images?|films?)(?:\s+of\s+the\s+chest)?"
    r"(?:\s+with\s+[^,]*?)?\s+(?:show|shows|demonstrate|demonstrates|reveal|reveals)\s+",
    _I,
)
# Words a technique-only sentence is made of ("PA and lateral views of the chest were obtained.").
TECHNIQUE_WORDS = frozenset(
    "pa ap frontal lateral portable upright supine semi-upright semiupright semi-erect erect single one two "
    "three four 1 2 3 4 total oblique decubitus bedside view views radiograph radiographs radiographic "
    "image images film films projection projections x-ray x-rays chest exam examination study technique "
    "consists consisting obtained provided performed acquired submitted taken reviewed was were is are of "
    "the a an and with through".split()
)
TECHNIQUE_NOUNS = frozenset("view views radiograph radiographs image images film films projection "
                            "projections x-ray x-rays examination exam study technique".split())

# ---- what carries content -------------------------------------------------------------------------
# A sentence whose words all fall in this set (after the rewrites) says nothing about the patient:
# "No previous images." -> "No." ; "Unchanged." -> "" ; "Improved from prior." -> "Improved."
NON_CONTENT = frozenset(
    "a an the this that these those it its there here is are was were be been being has have had do does "
    "and or but with without of in on at to from by for as than since so also otherwise again "
    "no not none any seen noted identified demonstrated visualized evident present shown "
    "study studies exam exams examination examinations image images film films comparison comparisons "
    "available change changes changed interval prior previous previously made significant significantly "
    "appreciable definite substantial marked markedly slightly slight somewhat overall grossly essentially "
    "relatively largely improved improving improvement worsened worsening increased decreased resolved "
    "similar same better worse chest x-ray radiograph radiographs appearance unchanged stable today "
    "current findings".split()
)
# Words that make a verbless phrase a statement ("Heart size normal.") rather than a bare noun.
EVALUATIVE = frozenset(
    "normal abnormal clear unremarkable intact enlarged large small mild moderate severe minimal tiny "
    "negative positive acute chronic healed elevated low high widened tortuous calcified atherosclerotic "
    "prominent increased decreased blunted hyperinflated hyperexpanded degenerative well-expanded expanded "
    "limits within".split()
)
# Words that only name anatomy: a verbless phrase made of them ("Mediastinal contours.", left by
# "Mediastinal contours are unchanged.") states nothing about the patient.
ANATOMY = frozenset(
    "heart cardiac mediastinum mediastinal cardiomediastinal silhouette silhouettes contour contours size "
    "lung lungs pulmonary vasculature vascularity vascular hilar hila hilum osseous bony bone bones skeletal "
    "structures structure soft tissue tissues thorax thoracic aorta aortic diaphragm diaphragms "
    "hemidiaphragm hemidiaphragms pleura pleural pleurae spine trachea airway airways costophrenic "
    "angle angles cardiopulmonary chest upper lower left right bilateral both visualized visible overall "
    "position configuration appearance".split()
)
# What is left of "XXXX are normal." once the placeholder (the subject) is gone.
GENERIC_PREDICATE = frozenset("normal unremarkable intact clear within limits satisfactory expected "
                              "negative grossly appear appears appearing".split())
VERBS = frozenset(
    "is are was were be been remains remain appears appear show shows demonstrate demonstrates reveal "
    "reveals measures measure projects project terminates terminate extends extend seen noted identified "
    "present has have suggests suggest represents represent may could".split()
)

# ---- what must not survive (used by find_noise and by the tests) ---------------------------------
NOISE = {
    "placeholder": PLACEHOLDER,
    "comparison": re.compile(
        r"\b(?:(?:compared\s+(?:to|with)|in\s+comparison\s+(?:to|with)|comparison\s+(?:to|with))"
        rf"\s+{_ANY_PRIOR}"
        rf"|{_PRIOR_STUDY}|unchanged"
        r"|again\s+(?:seen|noted|demonstrated|identified|visualized)|as\s+before|in\s+the\s+interval"
        r"|interval\s+(?:change|increase|decrease|development|placement|improvement|worsening|resolution)"
        r"|re-?demonstrat\w*|previously\s+(?:seen|noted|described|identified|demonstrated)"
        r"|no\s+(?:significant\s+)?change)\b", _I),
    "communication": COMMUNICATION,
}
