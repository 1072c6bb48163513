"""One way in to a data set: a MIMIC-layout folder and the shards `unixcxr prepare` made of it give the
same samples (ids, text, labels, pixels); cleaned reports from `unixcxr clean` replace the raw text
(all, some with a warning, none is an error); an annotation CSV picks images by id with its own
prompts; broken inputs fail with one line naming the file and the fix."""

import json
import warnings

import numpy as np
import pytest

from unixcxr.cli import main
from unixcxr.data.reports import DataError
from unixcxr.data.sources import DataSource
from unixcxr.data.synthcxr import generate_dataset


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw")
    generate_dataset(out, n=30, size=64, seed=3, workers=1, raw_noise=True, progress=False)
    return out


@pytest.fixture(scope="module")
def cleaned(raw, tmp_path_factory):
    path = tmp_path_factory.mktemp("clean") / "cleaned.jsonl"
    assert main(["clean", str(raw / "reports"), str(path), "--no-progress"]) == 0
    return path


@pytest.fixture(scope="module")
def shards(raw, cleaned, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "s"
    assert main(["prepare", str(raw), str(out), "--size", "64", "--shard-size", "7", "--reports", str(cleaned)]) == 0
    return out


def test_shards_hold_the_folders_samples_with_the_cleaned_text_and_the_same_pixels(raw, cleaned, shards):
    folder, packed = DataSource(raw, cleaned), DataSource(shards)
    assert packed.kind == "shards" and folder.kind == "folder"
    for split in ("train", "validate", "test"):
        a, b = folder.samples(split), packed.samples(split)
        assert [s.id for s in a] == [s.id for s in b] and a
        for x, y in zip(a, b):
            assert (x.findings, x.impression, x.labels, x.study_id, x.image_id) == \
                (y.findings, y.impression, y.labels, y.study_id, y.image_id)
            assert x.cleaned and y.cleaned
    x, y = folder.samples("train")[4], packed.samples("train")[4]
    # the shard holds the letterboxed 8-bit film: equal to the file read at the same size, rounded
    assert np.abs(np.round(x.image.read() * 255) - y.image.read() * 255).max() <= 1


def test_cleaned_text_replaces_the_raw_sections(raw, cleaned):
    rows = {json.loads(line)["id"]: json.loads(line) for line in cleaned.read_text().splitlines()}
    plain, clean = DataSource(raw).samples("train"), DataSource(raw, cleaned).samples("train")
    changed = [(a, b) for a, b in zip(plain, clean) if a.report != b.report]
    assert len(changed) > len(plain) // 2  # --raw-noise reports carry placeholders, comparisons, ...
    for before, after in changed:
        assert after.report == rows[f"s{after.study_id}"]["cleaned"] != before.report and "___" not in after.report


def test_a_partial_cleaned_file_warns_with_the_count_and_keeps_raw_text(raw, cleaned, tmp_path):
    lines = cleaned.read_text().splitlines()
    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(lines[:10]) + "\n")
    with pytest.warns(UserWarning, match=r"\d+ of \d+ studies have no cleaned text"):
        samples = DataSource(raw, partial).samples("train")
    assert 0 < sum(s.cleaned for s in samples) < len(samples)
    failed = tmp_path / "failed.jsonl"  # a record whose cleaning failed keeps the raw report
    row = json.loads(lines[0])
    failed.write_text(json.dumps({**row, "cleaned": "", "stage": "failed"}) + "\n" + "\n".join(lines[1:]) + "\n")
    source = DataSource(raw, failed)
    study = row["id"][1:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hit = [s for split in ("train", "validate", "test") for s in source.samples(split) if s.study_id == study]
    assert hit and not hit[0].cleaned


def test_a_cleaned_file_of_another_data_set_is_refused(raw, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "s99999999", "cleaned": "FINDINGS: Clear."}) + "\n")
    with pytest.raises(DataError, match="none of its 1 ids matches a study"):
        DataSource(raw, other).samples("train")
    assert main(["train", "configs/tiny.yaml", "--data", str(raw), "--reports", str(other), "--dry-run"]) == 2


def test_an_annotation_csv_picks_its_images_by_id_with_its_own_prompts(raw, shards, tmp_path):
    rows = (raw / "generation_train.csv").read_text().splitlines()
    head, body = rows[0], rows[1:]
    mine = tmp_path / "split.csv"
    mine.write_text("\n".join([head, *body[:5]]) + "\n")
    picked = DataSource(shards).annotated(mine, "train")
    assert len(picked) == 5 and all(s.image.offset is not None for s in picked)  # found inside the shards
    assert picked[0].prompt and picked[0].prompt in body[0]
    path, rest = body[1].split(",", 1)
    unknown = f"{path.rsplit('/', 1)[0]}/00000000-0000.jpg,{rest}"  # an image the data set does not hold
    missing = tmp_path / "missing.csv"
    missing.write_text("\n".join([head, body[0], unknown]) + "\n")
    with pytest.warns(UserWarning, match="1 of 2 images are not in"):
        assert len(DataSource(shards).annotated(missing, "train")) == 1
    none = tmp_path / "none.csv"
    none.write_text(head + "\n" + unknown + "\n")
    with pytest.raises(DataError, match="none of its 1 images is in"):
        DataSource(shards).annotated(none, "train")


def test_a_shards_folder_without_its_index_is_refused_naming_the_fix(shards, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train-00000.tar").write_bytes((shards / "train-00000.tar").read_bytes())
    with pytest.raises(DataError, match="without index.json.*run `unixcxr prepare` again"):
        DataSource(broken)


def test_prepare_refuses_a_shards_folder_and_a_non_empty_output(shards, tmp_path, capsys):
    assert main(["prepare", str(shards), str(tmp_path / "x")]) == 2
    assert "already a shards folder" in capsys.readouterr().err
    assert main(["prepare", str(shards.parent), str(shards)]) == 2
    assert "is not empty; write shards into a new folder" in capsys.readouterr().err
