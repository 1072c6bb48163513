"""Round trip and baselines, on readers/writers whose faithfulness we control."""

import numpy as np
import pytest

from unixcxr.evaluate.baselines import most_common_report, nearest_neighbour_reports
from unixcxr.evaluate.roundtrip import round_trip

CARDIO = "FINDINGS: The heart is enlarged. No pleural effusion. IMPRESSION: Cardiomegaly."
EFFUSION = "FINDINGS: Large right pleural effusion. Heart size is normal. IMPRESSION: Right effusion."
NORMAL = "FINDINGS: The lungs are clear. Heart size is normal. IMPRESSION: No acute disease."


class Echo:
    """Draws the report into an 'image' (keeps the text) and reads it back; `faithful` decides
    whether the drawing keeps the findings or always draws a normal film."""

    def __init__(self, faithful: bool):
        self.faithful = faithful

    def generate(self, reports, **_):
        return [r if self.faithful else NORMAL for r in reports]

    def report(self, images, **_):
        return list(images)


def test_a_faithful_model_scores_perfectly_and_an_unfaithful_one_does_not():
    reports = [CARDIO, EFFUSION, NORMAL, CARDIO]
    good = round_trip(Echo(True), reports, batch_size=3, progress=False)
    bad = round_trip(Echo(False), reports, batch_size=3, progress=False)
    good_f1 = good["label_f1_vs_prompt"]["uncertain_as_positive"]["micro_f1_14"]
    bad_f1 = bad["label_f1_vs_prompt"]["uncertain_as_positive"]["micro_f1_14"]
    assert good_f1 == pytest.approx(1.0)
    assert bad_f1 < 0.6
    assert good["readback_reports"] == reports


def test_most_common_report_ignores_whitespace_differences():
    assert most_common_report([NORMAL, CARDIO, NORMAL.replace(" ", "  "), EFFUSION]) == NORMAL


def test_nearest_neighbour_retrieves_the_report_of_the_most_similar_image():
    rng = np.random.default_rng(0)
    train = [rng.random((64, 64)) for _ in range(5)]
    reports = [f"report {i}" for i in range(5)]
    test = [train[3] * 0.8 + 0.05 * rng.random((64, 64)), train[1]]
    assert nearest_neighbour_reports(train, reports, test) == ["report 3", "report 1"]
