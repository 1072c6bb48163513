"""The labeler reads SynthCXR reports the way the generator labelled them (target >= 99% of cells)."""

from __future__ import annotations

import pytest

from unixcxr.labeler import label_report
from unixcxr.labels import OBSERVATIONS

synthcxr = pytest.importorskip("unixcxr.data.synthcxr")

STUDIES = 300
TARGET_CELL_AGREEMENT = 0.99
HELD_OUT_SEED = 11  # not a seed the phrase lists were tuned on (0, 1, 2)


def test_labels_agree_with_synthcxr_ground_truth_on_clean_and_raw_reports():
    from unixcxr.data.synthcxr.noise import raw_report
    from unixcxr.data.synthcxr.sampler import RAW_NOISE, rng_for

    agree = total = 0
    for index in range(STUDIES):
        study = synthcxr.describe_study(index, seed=HELD_OUT_SEED)
        raw = raw_report(study.document, rng_for(HELD_OUT_SEED, RAW_NOISE, index))
        for text in (study.report, raw):
            got = label_report(text)
            agree += sum(got[name] == study.labels.get(name) for name in OBSERVATIONS)
            total += len(OBSERVATIONS)
    assert agree / total >= TARGET_CELL_AGREEMENT, f"cell agreement {agree / total:.4f}"
