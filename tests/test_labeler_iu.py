"""The labeler on real reports written by radiologists: the Indiana University reports inside the
installed torchxrayvision package, against the expert MeSH codes (evaluate/iu_agreement.py). The
reports are read where they are installed; nothing of them is stored in this repository. The
numbers are in docs/labeler.md (scripts/labeler_agreement.py prints them)."""

from __future__ import annotations

import pytest

from unixcxr.evaluate.iu_agreement import (
    HALVES,
    SCORED,
    agreement,
    iu_cases,
    measure,
    mesh_observations,
    negation_matcher,
)
from unixcxr.labeler import label_reports
from unixcxr.labels import OBSERVATIONS

# Measured on 2026-12-07 (macro F1 over the 11 observations, uncertain as present / as absent):
# odd 0.844 / 0.845, held-out even 0.828 / 0.829; the matcher 0.827 / 0.825 on both mappings.
# Before the IU work the labeler was at odd 0.832 / 0.826, even 0.822 / 0.814: below the matcher.
MACRO_FLOOR = {"uncertain_as_present": {"odd": 0.840, "even": 0.825},
               "uncertain_as_absent": {"odd": 0.840, "even": 0.825}}


@pytest.fixture(scope="module")
def cases():
    return iu_cases()


@pytest.fixture(scope="module")
def scores(cases):
    return {"labeler": measure(label_reports, cases),
            "matcher": measure(lambda texts: [negation_matcher(t) for t in texts], cases)}


def test_mesh_terms_map_to_the_chexpert_observations_they_name():
    assert mesh_observations(["Cardiomegaly/borderline"]) == {"Cardiomegaly"}
    assert mesh_observations(["Cardiac Shadow/enlarged/mild", "Pulmonary Congestion"]) == {"Cardiomegaly", "Edema"}
    assert mesh_observations(["Cicatrix/lung/base/left"]) == {"Lung Opacity"}
    assert mesh_observations(["Nodule/lung/lingula", "Fractures, Bone/ribs/healed"]) == {"Lung Lesion", "Fracture"}
    assert mesh_observations(["Cardiac Shadow/borderline"]) == {"No Finding"}  # no "enlarged": not coded


def test_no_finding_is_chexperts_no_finding_not_meshs_normal():
    """Findings CheXpert does not label leave No Finding; its unscored findings and devices behave as in CheXpert."""
    assert mesh_observations(["normal"]) == {"No Finding"}
    assert mesh_observations(["Calcified Granuloma/lung/right", "Aorta/tortuous"]) == {"No Finding"}
    assert mesh_observations(["Catheters, Indwelling/right"]) == {"No Finding"}  # Support Devices never counts
    for unscored in (["Cicatrix/pleura/apex"], ["Mediastinum/prominent"], ["Costophrenic Angle/right/blunted"]):
        found = mesh_observations(unscored)
        assert "No Finding" not in found and not found & set(SCORED), unscored


def test_cases_are_the_indexed_reports_split_by_the_parity_of_their_number(cases):
    assert 3800 < len(cases) < 3955  # 3,955 reports less the unindexed ones and those without text
    assert {case.half for case in cases} == set(HALVES)
    assert all(case.half == ("odd" if case.number % 2 else "even") for case in cases)
    assert len({case.number for case in cases}) == len(cases)
    assert all(case.present and case.text for case in cases)


def test_agreement_is_one_for_the_reference_itself_and_counts_what_is_missed(cases):
    perfect = [{name: 1 if name in case.present else None for name in OBSERVATIONS} for case in cases]
    result = agreement(cases, perfect)
    assert all(result[half]["macro_f1"] == 1.0 for half in (*HALVES, "all"))
    hedged = [{name: -1 if name in case.present else None for name in OBSERVATIONS} for case in cases]
    assert agreement(cases, hedged)["all"]["macro_f1"] == 1.0  # uncertain counts as present by default
    assert agreement(cases, hedged, present=(1,))["all"]["macro_f1"] == 0.0
    silent = agreement(cases, [{} for _ in cases])
    assert silent["all"]["macro_f1"] == 0.0
    assert silent["odd"]["n_present"]["No Finding"] + silent["even"]["n_present"]["No Finding"] == sum(
        "No Finding" in case.present for case in cases)


def test_the_matcher_reads_negation_within_its_sentence():
    labels = negation_matcher("FINDINGS: No pneumothorax. Small right effusion. IMPRESSION: Cardiomegaly.")
    assert (labels["Pneumothorax"], labels["Pleural Effusion"], labels["Cardiomegaly"]) == (0, 1, 1)
    assert labels["No Finding"] is None and negation_matcher("No acute disease.")["No Finding"] == 1


@pytest.mark.parametrize("mapping", ["uncertain_as_present", "uncertain_as_absent"])
def test_labeler_agrees_with_the_experts_better_than_the_simple_matcher_on_both_halves(scores, mapping):
    for half in HALVES:
        ours, matcher = scores["labeler"][mapping][half]["macro_f1"], scores["matcher"][mapping][half]["macro_f1"]
        assert ours >= MACRO_FLOOR[mapping][half], (half, ours)
        assert ours > matcher, (half, ours, matcher)
