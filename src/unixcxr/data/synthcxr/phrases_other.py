"""Wording of the pleural, bone and device findings (see phrases.py for the lungs and heart)."""

from __future__ import annotations

from unixcxr.data.synthcxr import words as W
from unixcxr.data.synthcxr.phrases import Phrasing
from unixcxr.data.synthcxr.words import NounPhrase as NP
from unixcxr.data.synthcxr.words import Words, capitalise

MILD_THICKENING = 0.018  # film units: thinner pleural thickening is reported as mild
LATERALITY = {"right": ("right", "right-sided"), "left": ("left", "left-sided"), "bilateral": ("bilateral",)}


def pleural_effusion(p: dict, w: Words) -> Phrasing:
    size, side = w.pick(W.SIZE_WORDS[p["size"]]), p["side"]
    both = side == "bilateral"
    lat = w.pick(LATERALITY[side])
    angle = "both costophrenic angles" if both else f"the {side} costophrenic angle"
    noun = "pleural effusions" if both else "pleural effusion"
    where = "on both sides" if both else f"on the {side}"
    be = "are" if both else "is"
    return Phrasing(
        [NP(f"{size} {lat} {noun}", plural=both), NP(f"{size} {lat} effusion{'s' if both else ''}", plural=both),
         NP(f"{size} {noun} {w.pick(W.SIDE_ADVERBS[side])}", plural=both)],
        [f"There {be if both else 'is a'} {size} {lat} {noun}.", f"{size} {lat} {noun} {be} present.",
         f"{'Pleural effusions' if both else 'A pleural effusion'} {be} seen {where}, {size} in size.",
         f"{size} {lat} {noun} with blunting of {angle}.",
         f"Blunting of {angle} with a meniscus is consistent with {'' if both else 'a '}{size} {noun}.",
         f"{size} {side} {noun} layering dependently."],
        [f"Blunting of {angle} may represent {'' if both else 'a '}{size} {noun}.",
         f"{size} {lat} {noun} cannot be excluded."],
        [f"{size} {lat} {noun}.", f"{lat} {noun}, {size}."],
    )  # fmt: skip


def pneumothorax(p: dict, w: Words) -> Phrasing:
    size, side = w.pick(W.SIZE_WORDS[p["size"]]), p["side"]
    lat = w.pick(LATERALITY[side])
    apical = "apical " if p["location"] == "apical" else ""
    place = f"the {side} apex" if apical else f"the {side} lateral chest wall"
    return Phrasing(
        [NP(f"{size} {lat} {apical}pneumothorax"), NP(f"{size} {apical}pneumothorax on the {side}"),
         NP(f"{size} {side} {apical}pneumothorax with a visible pleural line")],
        [f"There is a {size} {lat} {apical}pneumothorax.",
         f"A {size} {side} pneumothorax is present, with a visible pleural line along {place}.",
         f"{size} {lat} {apical}pneumothorax.", f"A {size} {side} {apical}pneumothorax is seen.",
         f"A visceral pleural line is seen at {place}, consistent with a {size} pneumothorax."],
        [f"A faint line at {place} may represent a {size} pneumothorax.",
         f"A {size} {side} {apical}pneumothorax cannot be excluded."],
        [f"{size} {side} {apical}pneumothorax.", f"{side} pneumothorax, {size}."],
    )  # fmt: skip


def pleural_other(p: dict, w: Words) -> Phrasing:
    side = p["side"]
    lat = w.pick(LATERALITY[side])
    sev = "mild" if p["thickness"] < MILD_THICKENING else "moderate"
    if p["kind"] == "plaques":
        where = "bilaterally" if side == "bilateral" else f"along the {side} pleura"
        surfaces = "pleural surfaces" if side == "bilateral" else f"{side} pleura"
        return Phrasing(
            [NP(f"{lat} calcified pleural plaques", plural=True),
             NP(f"calcified pleural plaques {where}", plural=True)],
            [f"Calcified pleural plaques are seen {where}.", f"There are {lat} calcified pleural plaques.",
             f"{lat} calcified pleural plaques are noted, consistent with asbestos exposure.",
             f"Several calcified pleural plaques project {where}.",
             f"Calcified plaques along the {surfaces} are seen."],
            [f"Calcified pleural plaques are likely present {where}."],
            [f"{lat} calcified pleural plaques.", "Calcified pleural plaques, compatible with asbestos exposure."],
        )  # fmt: skip
    if p["kind"] == "apical_cap":
        return Phrasing(
            [NP(f"{sev} {side} apical pleural thickening", False), NP(f"{sev} {lat} apical pleural cap")],
            [f"There is {sev} pleural thickening at the {side} apex.",
             f"{sev} {side} apical pleural thickening is noted.",
             f"{sev} {lat} apical pleural thickening.", f"A {sev} {side} apical pleural cap is present.",
             f"The {side} apex shows {sev} pleural thickening."],
            [f"{sev} {side} apical pleural thickening is likely."],
            [f"{sev} {side} apical pleural thickening."],
        )  # fmt: skip
    return Phrasing(
        [NP(f"{sev} {lat} pleural thickening", False),
         NP(f"{sev} pleural thickening along the {side} lateral chest wall", False)],
        [f"There is {sev} pleural thickening along the {side} lateral chest wall.",
         f"{sev} {lat} pleural thickening is noted.", f"{sev} {side} lateral pleural thickening.",
         f"The {side} lateral pleura is {'mildly' if sev == 'mild' else 'moderately'} thickened.",
         f"{sev} pleural thickening is seen {w.pick(W.SIDE_ADVERBS[side])}."],
        [f"{sev} {side} pleural thickening is likely."],
        [f"{sev} {side} pleural thickening."],
    )  # fmt: skip


def fracture(p: dict, w: Words) -> Phrasing:
    side, rib = p["side"], W.ordinal(p["rib"], w)
    age = w.pick({"acute": ("acute", "mildly displaced", "acute, mildly displaced"),
                  "healing": ("healing", "subacute healing")}[p["age"]])  # fmt: skip
    callus = " with callus formation" if p["age"] == "healing" else ""
    return Phrasing(
        [NP(f"{age} fracture of the {side} {rib} posterior rib{callus}"), NP(f"{age} {side} {rib} rib fracture"),
         NP(f"{age} fracture of the {side} {rib} rib")],
        [f"There is a {age} fracture of the {side} {rib} posterior rib{callus}.",
         f"{age} {side} {rib} posterior rib fracture is noted.",
         f"A {age} fracture of the {side} {rib} rib is seen with cortical step-off.",
         f"The {side} {rib} posterior rib shows a {age} fracture{callus}.",
         f"Cortical step-off of the {side} {rib} posterior rib is consistent with a {age} fracture."],
        [f"Possible {age} fracture of the {side} {rib} posterior rib.",
         f"Cortical irregularity of the {side} {rib} rib may represent a {age} fracture."],
        [f"{age} {side} {rib} rib fracture.", f"{side} {rib} rib fracture ({age})."],
    )  # fmt: skip


# ---- support devices: one sentence per device ------------------------------------------------
CVC_TIPS = {"svc": ("SVC", "mid SVC", "superior vena cava"), "cavoatrial": ("cavoatrial junction",),
            "right atrium": ("right atrium",)}  # fmt: skip
CVC_ACCESS = {"jugular": ("internal jugular", "IJ"), "subclavian": ("subclavian",)}


def device_sentences(device: dict, w: Words) -> list[str]:
    kind = device["type"]
    if kind == "ett":
        n = device["tip_cm"]
        return [f"Endotracheal tube terminates {n} cm above the carina.",
                f"The endotracheal tube tip is {n} cm above the carina.",
                f"An endotracheal tube is in place with its tip {n} cm above the carina.",
                f"ET tube tip lies approximately {n} cm above the carina.",
                f"Endotracheal tube in place, tip {n} cm from the carina."]  # fmt: skip
    if kind == "enteric":
        return ["An enteric tube courses below the diaphragm with the tip in the stomach.",
                "Nasogastric tube tip is in the stomach.", "The enteric tube extends into the stomach.",
                "An orogastric tube is seen with its tip in the stomach.",
                "Feeding tube courses below the diaphragm, tip in the stomach."]  # fmt: skip
    if kind == "cvc":
        side, access, tip = device["side"], w.pick(CVC_ACCESS[device["access"]]), w.pick(CVC_TIPS[device["tip"]])
        return [f"{capitalise(side)} {access} central venous catheter terminates in the {tip}.",
                f"A {side} {access} central line ends in the {tip}.",
                f"{capitalise(side)} {access} catheter tip is at the {tip}.",
                f"There is a {side}-sided {access} central venous catheter with its tip in the {tip}.",
                f"The {side} {access} line terminates at the {tip}."]  # fmt: skip
    if kind == "pacemaker":
        side = device["side"]
        leads = ("with leads in the right atrium and right ventricle" if device["leads"] == 2
                 else "with a single lead in the right ventricle")  # fmt: skip
        return [f"{capitalise(side)}-sided pacemaker {leads}.", f"A {side} chest wall pacemaker is present {leads}.",
                f"Pacemaker generator overlies the {side} chest {leads}.",
                f"{capitalise(side)} pectoral pacer device {leads}.",
                f"Cardiac pacing device in the {side} chest wall {leads}."]  # fmt: skip
    return ["Median sternotomy wires are intact.", "Sternotomy wires are present.",
            "The patient is status post median sternotomy, with intact sternotomy wires.",
            "Intact median sternotomy wires are noted.", "Post-sternotomy wires are seen."]  # fmt: skip


DEVICE_IMPRESSIONS = ("Support devices in standard position.", "Lines and tubes as described above.",
                      "Support devices as above.")  # fmt: skip

PHRASINGS = {
    "Pleural Effusion": pleural_effusion,
    "Pneumothorax": pneumothorax,
    "Pleural Other": pleural_other,
    "Fracture": fracture,
}
