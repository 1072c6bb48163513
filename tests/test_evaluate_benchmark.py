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


def test_evaluate_draws_with_the_guidance_given_and_refuses_to_mix_settings_in_one_folder(tmp_path, capsys):
    data = tmp_path / "data"
    generate_dataset(data, 160, size=64, seed=0, workers=1, progress=False)
    model = write_demo_model_folder(tmp_path / "model")

    def evaluate(out, *extra):
        return main(["evaluate", "--model", str(model), "--data", str(data), "--out", str(out), "--limit", "6",
                     "--steps", "3", "--max-new-tokens", "4", "--batch-size", "6", "--no-baselines",
                     "--no-vae-ceiling", *extra])

    assert evaluate(tmp_path / "plain", "--cfg-interval", "0", "1", "--shift", "2") == 0  # the preset's text scale
    assert evaluate(tmp_path / "cfg8", "--cfg-text", "8", "--cfg-interval", "0", "1", "--shift", "2") == 0
    metrics = json.loads((tmp_path / "cfg8" / "metrics.json").read_text())
    sampler = metrics["images"]["sampler"]
    assert (sampler["cfg_text"], sampler["cfg_interval"], sampler["shift"]) == (8.0, [0.0, 1.0], 2.0)
    assert sampler["num_points"] == 3 and metrics["settings"]["cfg_text"] == 8.0
    assert "text guidance 8 on (0, 1], shift 2" in (tmp_path / "cfg8" / "metrics.md").read_text()
    plain = sorted((tmp_path / "plain" / "generated").glob("*.png"))
    guided = sorted((tmp_path / "cfg8" / "generated").glob("*.png"))
    assert len(guided) == 6 and [p.name for p in plain] == [p.name for p in guided]
    assert all(a.read_bytes() != b.read_bytes() for a, b in zip(plain, guided))  # the scale reached the sampler

    # the same folder with another scale: one clear line, exit 2, the films there untouched
    before = {p.name: p.read_bytes() for p in guided}
    capsys.readouterr()
    assert evaluate(tmp_path / "cfg8", "--cfg-text", "2", "--cfg-interval", "0", "1", "--shift", "2") == 2
    err = capsys.readouterr().err
    assert "holds films drawn with other sampler settings (cfg_text 8.0 -> 2.0)" in err and "another --out" in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "cfg8" / "generated").glob("*.png")} == before
    again = ("--cfg-text", "8", "--cfg-interval", "0", "1", "--shift", "2")
    assert evaluate(tmp_path / "cfg8", *again) == 0  # the same settings: resumes

    assert evaluate(tmp_path / "bad", "--cfg-text", "-1") == 2
    assert "--cfg-text must be" in capsys.readouterr().err and not (tmp_path / "bad").exists()
