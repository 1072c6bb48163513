"""Utility metrics: AUROC / F1 arithmetic, skipped observations, and a real fine-tuning run in which
the synthetic arm with shuffled labels loses utility against the same films with their labels."""

from __future__ import annotations

import numpy as np
import pytest

from unixcxr.data.sources import DataSource
from unixcxr.data.synthcxr import generate_dataset
from unixcxr.evaluate import utility as ut
from unixcxr.labels import OBSERVATIONS


def test_auroc_counts_ties_as_half_and_equals_sklearn():
    assert ut.auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert ut.auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert ut.auroc(np.array([0.2, 0.3]), np.array([1, 1])) is None
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores, targets = rng.integers(0, 6, 40) / 5, rng.integers(0, 2, 40)
        assert ut.auroc(scores, targets) == pytest.approx(sklearn_metrics.roc_auc_score(targets, scores), abs=1e-12)


def test_score_skips_single_class_observations_and_maps_uncertain_to_positive():
    labels = [{"Edema": 1, "Cardiomegaly": -1}, {"Edema": 0}, {"Edema": None, "Cardiomegaly": 0}]
    y = ut.label_matrix(labels)
    edema, cardio = OBSERVATIONS.index("Edema"), OBSERVATIONS.index("Cardiomegaly")
    assert y[:, edema].tolist() == [1, 0, 0] and y[:, cardio].tolist() == [1, 0, 0]
    probabilities = np.zeros_like(y)
    probabilities[:, edema] = [0.9, 0.2, 0.6]
    result = ut.score(probabilities, y)
    assert set(result["per_observation"]) == {"Edema", "Cardiomegaly"}
    assert "Fracture" in result["skipped"] and len(result["skipped"]) == len(OBSERVATIONS) - 2
    assert result["per_observation"]["Edema"] == {"auroc": 1.0, "f1": pytest.approx(2 / 3), "positives": 1}


@pytest.mark.slow
def test_shuffled_labels_in_the_synthetic_arm_lose_utility(tmp_path):
    generate_dataset(tmp_path / "d", 240, size=64, seed=0, workers=1, progress=False)
    source = DataSource(tmp_path / "d")
    train = source.samples("train")
    test = source.samples("test") + source.samples("validate")
    films, labels = [s.image.read() for s in train], [s.labels for s in train]
    shuffled = [labels[i] for i in np.random.default_rng(0).permutation(len(labels))]
    settings = ut.UtilitySettings(n=len(films), steps=60, image_size=64)
    result = ut.utility_report({"synthetic": (films, labels), "synthetic, shuffled labels": (films, shuffled)},
                               ([s.image.read() for s in test], [s.labels for s in test]), settings)
    right, wrong = (result["arms"][k]["macro_auroc"] for k in ("synthetic", "synthetic, shuffled labels"))
    assert right > wrong + 0.05
    assert "| synthetic |" in "\n".join(ut.markdown_table(result))


def test_evaluate_refuses_a_non_positive_utility_budget_in_one_line(tmp_path, capsys):
    from unixcxr.cli import main

    assert main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path), "--utility", "--utility-n", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--utility-n 0: must be a positive whole number" in err[0]
