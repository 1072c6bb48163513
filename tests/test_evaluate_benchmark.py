"""`unixcxr evaluate` end to end on a small SynthCXR split with a random tiny model: every block of
metrics is filled, and a rerun continues from the per-sample outputs instead of starting over."""

import json

import pytest

from unixcxr.cli import main
from unixcxr.data.synthcxr import generate_dataset
from unixcxr.serve.demo_model import write_demo_model_folder


@pytest.mark.slow
def test_evaluate_writes_every_metric_and_resumes(tmp_path, capsys):
    data = tmp_path / "data"
    generate_dataset(data, 160, size=64, seed=0, workers=1, progress=False)
    model = write_demo_model_folder(tmp_path / "run" / "model")
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(model.parent), "--data", str(data), "--out", str(out), "--limit", "6",
            "--steps", "3", "--max-new-tokens", "8", "--batch-size", "3"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_studies"] == 6
    assert set(metrics["reports"]) == {"model", "most_common_report", "nearest_neighbour_pixels"}
    assert metrics["images"]["features"]["name"] == "effnet-lite0" and metrics["images"]["n_fake"] == 6
    assert "label_f1_vs_prompt" in metrics["round_trip"] and "label_f1_vs_other_prompt" in metrics["round_trip"]
    assert "against another study's prompt" in (out / "metrics.md").read_text()
    ceiling = metrics["round_trip"]["vae_ceiling_vs_prompt"]["uncertain_as_positive"]["micro_f1_14"]
    assert 0.0 <= ceiling <= 1.0
    assert "| model |" in (out / "metrics.md").read_text()
    # every number names its convention; both text conventions are there; the two figures are linked
    assert set(metrics["reports"]["model"]["text_pycocoevalcap"]) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4",
                                                                      "rouge_l"}
    assert "pycocoevalcap" in metrics["reports"]["model"]["conventions"]["text_pycocoevalcap"]["bleu_n"]
    assert "clean-fid" in metrics["images"]["conventions"]["kd"]
    from PIL import Image

    for name in ("per_class_f1.png", "real_vs_generated.png"):
        assert f"]({name})" in (out / "metrics.md").read_text() and name in metrics["figures"].values()
        assert Image.open(out / name).size[0] > 300
    assert f"VAE's reconstructions of the real images): {ceiling:.3f}" in (out / "metrics.md").read_text()

    # a killed run: one image and the metrics missing -> only that image is drawn again
    images = sorted((out / "generated").glob("*.png"))
    kept = images[1].read_bytes()
    images[0].unlink()
    (out / "metrics.json").unlink()
    lines = (out / "reports.jsonl").read_text().splitlines()
    assert main(args) == 0
    assert images[0].is_file() and images[1].read_bytes() == kept
    assert (out / "reports.jsonl").read_text().splitlines() == lines  # no report written twice


def test_evaluate_refuses_a_folder_that_is_not_a_model(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "not a unixcxr model folder" in capsys.readouterr().err


def test_a_film_that_draws_exactly_its_prompt_scores_lower_against_another_studys_prompt():
    """The round trip's text-specific part: with read == asked the own-prompt score is 1, and against
    other_studies (every study paired with a different one) it falls to what the label mix alone gives."""
    from unixcxr.evaluate.report_metrics import label_f1
    from unixcxr.evaluate.suite import other_studies
    from unixcxr.labeler import label_reports

    reports = ["Large right pleural effusion.", "Cardiomegaly.", "Right pneumothorax.", "No acute findings.",
               "Left lower lobe consolidation.", "Pacemaker in place."]
    paired = other_studies(list(range(len(reports))))
    assert sorted(paired) == list(range(len(reports))) and all(i != j for i, j in enumerate(paired))
    asked = label_reports(reports)
    own = label_f1(asked, asked)["uncertain_as_positive"]["micro_f1_14"]
    other = label_f1(asked, other_studies(asked))["uncertain_as_positive"]["micro_f1_14"]
    assert own == 1.0 and other < 0.5
