"""The conditioning check's instruments: the effusion-side SynthCXR variant (the text alone decides a
large feature: a left, a right or no effusion, nothing else) and the side reader that scores films
(fitted on real films, reads real test films correctly and follows a mirrored film to the other side)."""

import json
from pathlib import Path

import numpy as np
import pytest

from unixcxr.data.sources import DataSource
from unixcxr.data.synthcxr import generate_dataset, render_study
from unixcxr.evaluate.conditioning import SIDES, SideReader, accuracy, films_of, truth_sides


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    out = tmp_path_factory.mktemp("effusion")
    generate_dataset(out, n=240, size=64, seed=4, workers=1, progress=False, variant="effusion-side")
    return out


def test_every_study_shows_one_large_effusion_or_none_and_its_report_says_which_side(variant):
    sides = truth_sides(variant)
    counts = {s: sum(v == s for v in sides.values()) for s in SIDES}
    assert all(60 <= c <= 100 for c in counts.values()), counts  # a third each
    for line in (variant / "synthcxr-truth.jsonl").read_text().splitlines()[:60]:
        row = json.loads(line)
        findings = row["findings"]
        assert len(findings) <= 1 and all(f["observation"] == "Pleural Effusion" and f["size"] == "large"
                                          for f in findings)
        findings_text = row["report"].split("IMPRESSION:")[0].lower()
        side = sides[row["dicom_id"]]
        if side == "none":
            assert "left" not in findings_text and "right" not in findings_text
        else:
            other = "left" if side == "right" else "right"
            assert side in findings_text and other not in findings_text
            assert row["labels"]["Pleural Effusion"] == 1


def test_the_variant_keeps_each_patients_anatomy_and_only_changes_findings():
    plain, variant = render_study(11, seed=2, size=64), render_study(11, seed=2, size=64, variant="effusion-side")
    assert plain.truth["anatomy"]["lung_half_width"] == pytest.approx(variant.truth["anatomy"]["lung_half_width"])
    with pytest.raises(ValueError, match="unknown SynthCXR variant"):
        render_study(0, seed=0, size=64, variant="nope")


def test_the_side_reader_reads_real_films_and_follows_a_mirror(variant):
    sides = truth_sides(variant)
    source = DataSource(variant)
    train, test = source.samples("train"), source.samples("test") + source.samples("validate")
    reader = SideReader.fit(films_of(train, 64), [sides[s.image_id] for s in train])
    films = films_of(test, 64)
    wanted = [sides[s.image_id] for s in test]
    assert accuracy(reader.predict(films), wanted)["accuracy"] >= 0.95
    swap = {"none": "none", "left": "right", "right": "left"}
    mirrored = accuracy(reader.predict(films[:, :, ::-1]), [swap[w] for w in wanted])
    assert mirrored["per_side"]["left"] >= 0.8 and mirrored["per_side"]["right"] >= 0.8
    constant = accuracy(reader.predict(np.repeat(films[:1], len(films), 0)), wanted)
    assert constant["accuracy"] < 0.6  # one film for every prompt: the score a deaf generator gets


def test_a_mimic_like_folder_is_refused_by_the_check(tmp_path):
    generate_dataset(tmp_path / "m", n=30, size=64, seed=1, workers=1, progress=False)
    with pytest.raises(ValueError, match="needs the effusion-side variant"):
        truth_sides(tmp_path / "m")


@pytest.mark.slow
def test_the_generator_draws_the_side_the_text_names(tmp_path):
    """The conditioning test: trained for 200 steps from a random network (configs/conditioning.yaml,
    about 1.5 minutes on 2 cores), the generator draws the side its prompt names in >= 90% of the
    test studies, and the side follows the prompt, not the noise: the same seeds with the prompts
    shuffled among the studies are read as the shuffled prompts' sides."""
    from unixcxr.cli import main
    from unixcxr.evaluate.conditioning import conditioning_check
    from unixcxr.pipeline import UniXPipeline

    data, run = tmp_path / "effusion", tmp_path / "run"
    generate_dataset(data, n=360, size=64, seed=0, workers=1, progress=False, variant="effusion-side")
    recipe = Path(__file__).resolve().parents[1] / "configs" / "conditioning.yaml"
    assert main(["train", str(recipe), "--data", str(data), "--out", str(run), "--no-progress"]) == 0
    validation = [json.loads(line) for line in (run / "stages" / "gen_pretrain" / "metrics.jsonl").read_text()
                  .splitlines() if '"val"' in line][-1]
    assert validation["text_gain"] >= 0.05 * validation["mse"]  # another film's prompt costs >= 5% more MSE
    pipe = UniXPipeline.from_pretrained(run)
    result = conditioning_check(pipe, data, steps=13, size=64)
    assert result["reader_on_real"]["accuracy"] >= 0.95
    assert result["reader_on_generated"]["accuracy"] >= 0.9, result["reader_on_generated"]
    sides, test = truth_sides(data), DataSource(data).samples("test")
    order = np.random.default_rng(0).permutation(len(test))
    shuffled = pipe.generate([test[i].prompt for i in order], steps=13, seed=list(range(len(test))), size=64)
    reader = SideReader.fit(films_of(DataSource(data).samples("train"), 64),
                            [sides[s.image_id] for s in DataSource(data).samples("train")])
    drawn = reader.predict(np.stack([np.asarray(img.convert("L")) for img in shuffled]))
    assert accuracy(drawn, [sides[test[i].image_id] for i in order])["accuracy"] >= 0.9
