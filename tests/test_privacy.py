"""Privacy metrics on a small SynthCXR set: a "generator" that returns training films verbatim is
memorising (rate ~1, above the held-out calibration), one that returns films of new patients is not,
and one that returns another study of the prompt's patient is caught by the same-patient rate. The
re-identification checkpoint: the published Siamese format loads, anything else fails clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unixcxr.cli import main
from unixcxr.data.sources import DataSource
from unixcxr.data.synthcxr import generate_dataset
from unixcxr.evaluate import privacy as pv


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("privacy") / "data"
    generate_dataset(root, 160, size=64, seed=3, workers=1, progress=False)
    source = DataSource(root)
    first = {}
    for split in ("train", "validate", "test"):
        for s in source.samples(split):
            first.setdefault((split, s.study_id), s)
    by_split = {split: [s for (sp, _), s in sorted(first.items()) if sp == split] for split in ("train", "validate",
                                                                                               "test")}
    films = {split: [s.image.read() for s in samples] for split, samples in by_split.items()}
    return root, by_split, films


def features(films):
    """Any feature vectors will do for the arithmetic: 16 px thumbnails, flattened."""
    return pv.pixel_vectors(films, side=16)


def report(synth, generated, prompt_rows):
    _, samples, films = synth
    train, held = films["train"], films["test"]
    return pv.privacy_report(features(generated), features(held), features(train), generated, held, train,
                             prompt_rows, [s.subject_id for s in samples["train"]])


def test_a_generator_that_returns_training_films_verbatim_memorises(synth):
    _, samples, films = synth
    rows = list(range(0, len(films["train"]), 4))
    copied = report(synth, [films["train"][r] for r in rows], rows)
    for space in ("features", "pixels"):
        block = copied[space]
        assert block["memorisation_rate"] == 1.0
        assert block["generated"]["median"] > block["heldout"]["max"]  # above the whole calibration
        assert block["same_patient"]["rate"] == 1.0 and block["same_patient"]["own_study_rate"] == 1.0
        assert block["per_film"]["nearest"] == rows
    assert copied["features"]["prompt_film"]["min"] == pytest.approx(1.0)


def test_a_generator_of_new_patients_sits_inside_the_calibration(synth):
    _, samples, films = synth
    fresh = films["validate"]  # patients that are in neither the training nor the held-out split
    rows = list(range(len(fresh)))  # prompts: any training studies; the films are unrelated to them
    result = report(synth, fresh, rows)
    for space in ("features", "pixels"):
        block = result[space]
        assert block["memorisation_rate"] <= 0.2
        assert abs(block["median_gap"]) < 0.5 * (1 - block["heldout"]["median"])
        assert block["same_patient"]["own_study_rate"] < 0.2


def test_the_same_patient_rate_catches_a_copy_of_another_study_of_the_prompts_patient(synth):
    _, samples, films = synth
    train = samples["train"]
    by_patient: dict[str, list[int]] = {}
    for row, s in enumerate(train):
        by_patient.setdefault(s.subject_id, []).append(row)
    pairs = [(rows[0], rows[1]) for rows in by_patient.values() if len(rows) > 1]
    assert len(pairs) >= 5, "SynthCXR gives several studies to some patients"
    prompt_rows = [p for p, _ in pairs]
    generated = [films["train"][other] for _, other in pairs]
    block = report(synth, generated, prompt_rows)["features"]["same_patient"]
    assert block["rate"] == 1.0 and block["own_study_rate"] == 0.0
    assert block["chance"] < 0.1 and block["prompts_with_other_studies"] == len(pairs)


def test_memorisation_rate_is_the_share_above_every_held_out_film():
    rate, threshold = pv.memorisation_rate(np.array([0.2, 0.5, 0.91, 0.95]), np.array([0.1, 0.9, 0.3]))
    assert (rate, threshold) == (0.5, 0.9)
    sims, idx = pv.nearest(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[0.0, 1.0], [3.0, 0.1]]))
    assert idx.tolist() == [1, 0] and sims[1] == pytest.approx(1.0)


# ---------------------------------------------------------------- re-identification checkpoints
@pytest.mark.slow
def test_reid_checkpoint_in_the_siamese_format_loads_and_scores(tmp_path):
    torch.manual_seed(0)
    net = pv.SiameseReID()
    path = tmp_path / "reid.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)  # as saved from DataParallel
    loaded = pv.load_reid(path)
    rng = np.random.default_rng(0)
    films = [rng.random((40, 48)).astype(np.float32) for _ in range(3)]
    emb = pv.reid_embeddings(loaded, films)
    assert emb.shape == (3, pv.REID_FEATURES)
    scores = loaded.score(emb, emb)
    with torch.inference_mode():  # the pairwise score is the network's own forward on the pair
        direct = torch.sigmoid(net.eval()(pv.reid_tensor(films[:1]), pv.reid_tensor(films[2:3])))
    assert scores[0, 2].item() == pytest.approx(direct.item(), abs=1e-5)
    assert scores.diagonal().allclose(torch.sigmoid(net.fc_end.bias))  # a film with itself: |difference| = 0
    # in the privacy report: verbatim copies score as their own prompt's film does with itself
    train, held = films + [rng.random((40, 48)).astype(np.float32)], [rng.random((40, 48)).astype(np.float32)] * 2
    result = pv.privacy_report(pv.pixel_vectors(films[:2], 8), pv.pixel_vectors(held, 8), pv.pixel_vectors(train, 8),
                               films[:2], held, train, [0, 1], ["a", "a", "b", "c"], reid=loaded)["reid"]
    bias = torch.sigmoid(net.fc_end.bias).item()
    assert result["per_film"]["prompt_film"] == pytest.approx([bias, bias], abs=1e-6)
    assert all(b >= p - 1e-6 for b, p in zip(result["per_film"]["best"], result["per_film"]["prompt_film"]))
    assert 0 <= result["memorisation_rate"] <= 1 and result["same_patient"]["n"] == 2


def test_reid_checkpoint_with_other_keys_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(pv.ReIDError, match="not the Siamese re-identification format.*--reid-checkpoint"):
        pv.load_reid(path)
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(pv.ReIDError, match="junk.pth: not a readable torch checkpoint"):
        pv.load_reid(tmp_path / "junk.pth")


def test_evaluate_with_a_missing_reid_checkpoint_exits_2_naming_it(tmp_path, synth, capsys):
    from unixcxr.serve.demo_model import write_demo_model_folder

    model = write_demo_model_folder(tmp_path / "model")
    missing = tmp_path / "nowhere" / "reid.pth"
    args = ["evaluate", "--model", str(model), "--data", str(synth[0]), "--limit", "6", "--out", str(tmp_path / "e"),
            "--privacy", "--reid-checkpoint", str(missing)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "no such re-identification checkpoint" in err[0]
    assert not (tmp_path / "e").exists()
    assert main(args[:-3] + ["--reid-checkpoint", str(missing)]) == 2  # without --privacy
    assert "add --privacy" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_privacy_and_utility_write_their_blocks(tmp_path, capsys):
    import json

    from PIL import Image

    from unixcxr.serve.demo_model import write_demo_model_folder

    data = tmp_path / "data"
    generate_dataset(data, 160, size=64, seed=0, workers=1, progress=False)
    model = write_demo_model_folder(tmp_path / "model")
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(model), "--data", str(data), "--out", str(out), "--limit", "6", "--steps", "2",
            "--max-new-tokens", "4", "--batch-size", "3", "--no-baselines", "--no-vae-ceiling", "--privacy",
            "--utility", "--utility-steps", "2", "--privacy-n", "8"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    p, u = metrics["privacy"], metrics["utility"]
    assert p["n_generated"] == 8 and p["n_heldout"] == 6 and p["settings"]["features"]["name"] == "effnet-lite0"
    assert 0 <= p["features"]["memorisation_rate"] <= 1 and 0 <= p["pixels"]["same_patient"]["rate"] <= 1
    assert len(list((out / "train-prompts").glob("*.png"))) == 8  # films drawn from training prompts, kept
    assert set(u["arms"]) == {"synthetic", "real", "real+synthetic"}
    assert u["settings"]["steps"] == 2 and u["settings"]["n"] == 6 and u["arms"]["real+synthetic"]["n_train"] == 12
    printed = capsys.readouterr().out
    for text in ("## Privacy", "memorisation rate", "## Utility", "| real+synthetic |"):
        assert text in printed and text in (out / "metrics.md").read_text()
    for key in ("privacy_closest_pairs", "utility_auroc"):
        assert Image.open(out / metrics["figures"][key]).size[0] > 300
