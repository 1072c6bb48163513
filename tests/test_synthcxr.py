"""SynthCXR: the embedded data set must look like MIMIC-CXR-JPG on disk, be reproducible,
have realistic label statistics and draw every finding where its report says it is."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unixcxr.cli import main
from unixcxr.data.prompts import DEFAULT_REPORT_PROMPT, REPORT_INSTRUCTIONS, asks_findings_only
from unixcxr.data.synthcxr import Finding, contact_sheet, describe_study, generate_dataset, render_image, render_study
from unixcxr.data.synthcxr import anatomy as geo
from unixcxr.data.synthcxr.params import SAMPLERS
from unixcxr.labels import OBSERVATIONS

SEED, SIZE = 3, 96
MANIFESTS = ("mimic-cxr-2.0.0-split.csv", "mimic-cxr-2.0.0-chexpert.csv", "mimic-cxr-2.0.0-metadata.csv",
             "synthcxr-truth.jsonl", *(f"understanding_{s}.json" for s in ("train", "validate", "test")),
             *(f"generation_{s}.csv" for s in ("train", "validate", "test")))  # fmt: skip
PATHOLOGIES = [o for o in OBSERVATIONS if o not in ("No Finding", "Support Devices")]
# Words a report must use when it labels an observation positive or uncertain.
MENTIONS = {
    "Enlarged Cardiomediastinum": r"mediastin", "Cardiomegaly": r"cardiomegaly|heart|cardiac",
    "Lung Opacity": r"opaci", "Lung Lesion": r"nodule|mass", "Edema": r"edema|congestion",
    "Consolidation": r"consolidat",
    "Pneumonia": r"pneumonia|infect", "Atelectasis": r"atelecta", "Pneumothorax": r"pneumothorax",
    "Pleural Effusion": r"effusion", "Pleural Other": r"pleural (thickening|plaque|cap)|plaques",
    "Fracture": r"fracture", "Support Devices": r"tube|catheter|line|pace|wires|device",
}  # fmt: skip


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(out, n=40, size=SIZE, seed=SEED, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def population() -> list:
    """Reports and specifications of 500 studies (no images: fast)."""
    return [describe_study(i, seed=0) for i in range(500)]


# ---- layout -----------------------------------------------------------------------------------


def test_every_manifest_row_points_to_existing_files(dataset):
    assert all((dataset / name).is_file() for name in MANIFESTS)
    split = read_csv(dataset / "mimic-cxr-2.0.0-split.csv")
    metadata = {r["dicom_id"]: r for r in read_csv(dataset / "mimic-cxr-2.0.0-metadata.csv")}
    assert len(split) == 40 and {r["split"] for r in split} == {"train", "validate", "test"}
    for row in split:
        s, p = row["subject_id"], row["study_id"]
        assert re.fullmatch(r"1\d{7}", s) and re.fullmatch(r"\d{8}", p)
        image = dataset / f"files/p{s[:2]}/p{s}/s{p}/{row['dicom_id']}.jpg"
        with Image.open(image) as im:
            assert im.mode == "L" and im.size == (SIZE, SIZE)
        assert (dataset / f"reports/files/p{s[:2]}/p{s}/s{p}.txt").read_text().startswith("FINDINGS: ")
        meta = metadata[row["dicom_id"]]
        assert (meta["ViewPosition"], meta["Rows"], meta["Columns"]) == ("PA", str(SIZE), str(SIZE))


def test_splits_are_by_patient_and_patients_have_one_to_three_studies(dataset):
    split = read_csv(dataset / "mimic-cxr-2.0.0-split.csv")
    by_patient = defaultdict(set)
    for row in split:
        by_patient[row["subject_id"]].add(row["split"])
    assert all(len(s) == 1 for s in by_patient.values())
    studies = Counter(r["subject_id"] for r in split)
    assert max(studies.values()) <= 3 and any(c > 1 for c in studies.values())


def test_chexpert_csv_holds_the_labels_the_truth_implies(dataset):
    rows = {r["study_id"]: r for r in read_csv(dataset / "mimic-cxr-2.0.0-chexpert.csv")}
    as_text = {1: "1.0", 0: "0.0", -1: "-1.0", None: ""}
    for line in (dataset / "synthcxr-truth.jsonl").read_text().splitlines():
        truth = json.loads(line)
        drawn = {f["observation"]: (-1 if f["hedged"] else 1) for f in truth["findings"]}
        for name in OBSERVATIONS[:-1]:
            assert rows[truth["study_id"]][name] == as_text[truth["labels"][name]]
            assert truth["labels"][name] == drawn[name] if name in drawn else truth["labels"][name] in (0, None)
        sick = any(drawn.get(name) for name in PATHOLOGIES)
        assert truth["labels"]["No Finding"] == (None if sick else 1)


def test_labels_are_implied_by_the_report_text(population):
    for study in population:
        text = study.report.lower()
        for name, value in study.labels.items():
            if name != "No Finding" and value is not None:
                assert re.search(MENTIONS[name], text), (name, value, study.report)


def test_understanding_records_answer_what_the_instruction_asks(dataset):
    records = [r for s in ("train", "validate", "test")
               for r in json.loads((dataset / f"understanding_{s}.json").read_text())]  # fmt: skip
    assert len(records) == 40
    kinds = Counter()
    for record in records:
        user, assistant = record["messages"]
        assert user["role"] == "user" and user["content"].startswith("<image>\n")
        assert (dataset / record["images"][0]).is_file()
        findings_only = asks_findings_only(user["content"])
        kinds[findings_only] += 1
        assert assistant["content"].startswith("FINDINGS: ")
        assert ("IMPRESSION:" in assistant["content"]) != findings_only
    assert kinds[True] and kinds[False]


def test_generation_csv_gives_findings_prompts_and_chexgenbench_labels(dataset):
    rows = read_csv(dataset / "generation_train.csv")
    labels = {r["study_id"]: r for r in read_csv(dataset / "mimic-cxr-2.0.0-chexpert.csv")}
    ids = {r["dicom_id"]: r["study_id"] for r in read_csv(dataset / "mimic-cxr-2.0.0-split.csv")}
    for row in rows:
        assert (dataset / row["path"]).is_file() and "IMPRESSION" not in row["annotated_prompt"]
        parsed = eval(row["chexpert_labels"], {"nan": float("nan")})  # a dict literal with nan, as CheXGenBench
        study = labels[ids[Path(row["path"]).stem]]
        for name in OBSERVATIONS:
            expected = float(study[name]) if study[name] else None
            assert (np.isnan(parsed[name]) and expected is None) or parsed[name] == expected


def test_report_instructions_are_ten_findings_and_ten_full_report_templates():
    assert len(REPORT_INSTRUCTIONS) == 20 and DEFAULT_REPORT_PROMPT in REPORT_INSTRUCTIONS
    assert sum(asks_findings_only(t) for t in REPORT_INSTRUCTIONS) == 10


# ---- determinism ------------------------------------------------------------------------------


def test_the_data_set_is_identical_whatever_the_worker_count(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    generate_dataset(one, n=12, size=64, seed=5, workers=1, progress=False)
    generate_dataset(two, n=12, size=64, seed=5, workers=2, progress=False)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    image = next(n for n in files if n.suffix == ".jpg")
    assert np.array_equal(np.asarray(Image.open(one / image)), np.asarray(Image.open(two / image)))


def test_a_study_is_reproducible_and_its_content_does_not_depend_on_size():
    small, large, again = render_study(11, seed=2, size=64), render_study(11, seed=2, size=128), render_study(11, 2, 64)
    assert small.report == large.report and small.labels == large.labels
    assert small.image.shape == (64, 64) and large.image.shape == (128, 128)
    assert np.array_equal(small.image, again.image)
    assert render_study(12, seed=2, size=64).report != small.report or render_study(12, 2, 64).truth != small.truth


# ---- statistics -------------------------------------------------------------------------------


def test_every_observation_appears_often_enough(population):
    counts = Counter(name for s in population for name, v in s.labels.items() if v in (1, -1))
    for name in OBSERVATIONS[:-1]:
        assert counts[name] >= 0.04 * len(population), (name, counts[name])


def test_about_a_third_of_studies_are_normal(population):
    normal = sum(s.labels["No Finding"] == 1 for s in population) / len(population)
    assert 0.25 <= normal <= 0.42


def test_about_one_positive_in_five_is_hedged(population):
    values = [v for s in population for name, v in s.labels.items() if name in PATHOLOGIES and v in (1, -1)]
    assert 0.14 <= values.count(-1) / len(values) <= 0.26


def test_absent_findings_are_sometimes_negated_and_sometimes_unmentioned(population):
    absent = [s.labels[n] for s in population for n in PATHOLOGIES if s.labels[n] not in (1, -1)]
    assert 0.1 <= absent.count(0) / len(absent) <= 0.9


def test_each_finding_is_worded_at_least_five_ways(population):
    templates = defaultdict(set)
    for study in population:
        for name, template in study.document.templates:
            templates[name].update(template.split("+") if name == "Support Devices" else [template])
    for name in OBSERVATIONS[:-1]:
        assert len(templates[name]) >= 5, (name, templates[name])


def test_normal_reports_are_worded_in_many_ways(population):
    normal = [s.report for s in population if not s.spec.findings]
    assert len(normal) > 50 and len(set(normal)) >= 0.6 * len(normal)


def test_clean_reports_have_no_placeholders_or_prior_comparisons(population):
    for study in population:
        assert "___" not in study.report and "prior" not in study.report.lower()
        assert study.report.startswith("FINDINGS: ") and " IMPRESSION: " in study.report


def test_raw_noise_adds_placeholders_and_comparisons_but_keeps_labels(tmp_path):
    clean, raw = tmp_path / "clean", tmp_path / "raw"
    generate_dataset(clean, n=20, size=64, seed=9, progress=False)
    generate_dataset(raw, n=20, size=64, seed=9, raw_noise=True, progress=False)
    for name in ("mimic-cxr-2.0.0-chexpert.csv", "understanding_train.json", "generation_train.csv"):
        assert (clean / name).read_bytes() == (raw / name).read_bytes()
    texts = [p.read_text() for p in sorted((raw / "reports").rglob("*.txt"))]
    assert all("___" in t and "FINAL REPORT" in t for t in texts)
    assert sum(bool(re.search(r"prior|previous", t)) for t in texts) >= 5
    assert any("Dr. ___" in t for t in texts)


# ---- the films show what the reports say --------------------------------------------------------


def neutral_spec(index: int = 0, seed: int = 0):
    """A normal study's specification with a straight, uncollimated, unmarked film."""
    spec = next(s.spec for i in range(index, index + 50) for s in [describe_study(i, seed)] if not s.spec.findings)
    acq = dataclasses.replace(spec.acquisition, rotation=0.0, shift=(0.0, 0.0), zoom=1.0,
                              collimation=(0.0, 0.0, 0.0, 0.0), marker="")  # fmt: skip
    return dataclasses.replace(spec, acquisition=acq)


def with_finding(spec, observation: str, side: str | None = None, **overrides):
    rng = np.random.default_rng(1)
    params = SAMPLERS[observation](rng, spec.anatomy, like={"side": side} if side else None)
    return spec.with_finding(Finding(observation, {**params, **overrides}))


def film(spec, size: int = 160) -> np.ndarray:
    return render_image(spec, size).astype(float)


def box(image: np.ndarray, x: float, v: float, half: float) -> float:
    """Mean of the pixels within `half` (film units) of patient point (x, v) on a neutral film."""
    size = image.shape[0]
    c0, c1 = int((x - half) * size), int((x + half) * size) + 1
    r0, r1 = int((v - half) * size), int((v + half) * size) + 1
    return float(image[r0:r1, c0:c1].mean())


def heart_row(image: np.ndarray, anat) -> np.ndarray:
    """The film's row through the left ventricle's widest point."""
    return image[int((geo.dome_peak(anat, "left") - 0.05) * image.shape[0])]


def heart_width(row: np.ndarray, anat, threshold: float) -> float:
    """Width (film units) of the run brighter than `threshold` through the midline."""
    size = row.shape[0]
    bright = row > threshold
    left = right = int(anat.midline * size)
    while left > 0 and bright[left - 1]:
        left -= 1
    while right < size - 1 and bright[right + 1]:
        right += 1
    return (right - left + 1) / size


def test_cardiomegaly_widens_the_heart_silhouette_on_the_film():
    spec = neutral_spec()
    anat = spec.anatomy
    big = with_finding(spec, "Cardiomegaly", severity="severe", ctr=0.66)
    normal_row, big_row = heart_row(film(spec), anat), heart_row(film(big), anat)
    size = normal_row.shape[0]
    lungs = np.r_[normal_row[int(0.2 * size) : int(0.3 * size)], normal_row[int(0.7 * size) : int(0.8 * size)]]
    threshold = (np.median(lungs) + normal_row[int(anat.midline * size)]) / 2  # halfway lung -> heart
    normal_width, big_width = heart_width(normal_row, anat, threshold), heart_width(big_row, anat, threshold)
    thorax = 2 * anat.lung_half_width
    assert big_width > normal_width + 0.06
    assert abs(big_width / thorax - 0.66) < 0.08 and normal_width / thorax < 0.52


@pytest.mark.parametrize("side", ["right", "left"])
def test_an_effusion_whitens_the_costophrenic_angle_of_its_side(side):
    spec = neutral_spec(5)
    wet = with_finding(spec, "Pleural Effusion", side=side, size="moderate", heights={side: 0.12})
    before, after = film(spec), film(wet)
    anat = spec.anatomy
    for s in ("right", "left"):
        x = anat.midline + geo.SIDE_SIGN[s] * 0.85 * anat.lung_half_width
        v = geo.sulcus_level(anat, s) - 0.03
        change = box(after, x, v, 0.02) - box(before, x, v, 0.02)
        assert change > 25 if s == side else abs(change) < 2


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_pneumothorax_darkens_the_lung_periphery_of_its_side(side):
    spec = neutral_spec(9)
    collapsed = with_finding(spec, "Pneumothorax", side=side, size="large", location="lateral", gap=0.1)
    before, after = film(spec), film(collapsed)
    anat = spec.anatomy
    v = anat.apex + 0.3
    for s in ("right", "left"):
        x = anat.midline + geo.SIDE_SIGN[s] * (float(geo.chest_wall(anat, np.float32(v), s)) - 0.04)
        change = box(after, x, v, 0.025) - box(before, x, v, 0.025)
        assert change < -4 if s == side else abs(change) < 1


LATERAL = ["Lung Opacity", "Lung Lesion", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
           "Pleural Effusion", "Pleural Other", "Fracture"]  # fmt: skip


@pytest.mark.parametrize("observation", LATERAL)
@pytest.mark.parametrize("side", ["right", "left"])
def test_each_finding_changes_the_film_on_the_side_its_report_names(observation, side):
    spec = neutral_spec(2)
    change = np.abs(film(with_finding(spec, observation, side=side)) - film(spec))
    mid = int(spec.anatomy.midline * change.shape[0])
    image_left, image_right = change[:, :mid].sum(), change[:, mid:].sum()
    named, other = (image_left, image_right) if side == "right" else (image_right, image_left)  # right = image left
    assert named > 200 and named > 3 * other, (named, other)


@pytest.mark.parametrize("observation", ["Edema", "Enlarged Cardiomediastinum", "Support Devices"])
def test_central_and_bilateral_findings_change_the_film(observation):
    spec = neutral_spec(4)
    assert np.abs(film(with_finding(spec, observation)) - film(spec)).sum() > 1000


# ---- command line -------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "must be positive"),
    (["--size", "16"], "outside"),
    (["--workers", "0"], "workers"),
])  # fmt: skip
def test_bad_arguments_give_clear_errors(tmp_path, capsys, args, message):
    assert main(["synth", str(tmp_path / "out"), "--quiet", *args]) == 2
    assert message in capsys.readouterr().err


def test_an_existing_file_or_non_empty_folder_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["synth", str(tmp_path / "file"), "--n", "2"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["synth", str(tmp_path), "--n", "2"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_the_command_writes_a_data_set_and_a_contact_sheet(tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert main(["synth", str(tmp_path / "d"), "--n", "3", "--size", "64", "--workers", "1", "--quiet",
                 "--contact-sheet", str(sheet)]) == 0  # fmt: skip
    assert "wrote 3 studies" in capsys.readouterr().out
    assert len(read_csv(tmp_path / "d" / "mimic-cxr-2.0.0-split.csv")) == 3
    with Image.open(sheet) as im:
        assert im.size == (4 * 64, 4 * 64)


def test_contact_sheet_is_a_png_grid(tmp_path):
    path = contact_sheet(tmp_path / "s.png", size=64, count=6, columns=3)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (3 * 64, 2 * 64)
