"""Loaders: MIMIC-CXR-JPG layout, LLaVA understanding JSON, CheXGenBench generation CSV, and
the SynthCXR generator's output through the same loaders."""

import csv
import gzip
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from unixcxr.data.datasets import RecordImageDataset, load_records
from unixcxr.data.llava import load_generation_csv, load_understanding_json, parse_chexpert_labels
from unixcxr.data.mimic import load_mimic
from unixcxr.data.reports import DataError
from unixcxr.labels import OBSERVATIONS

# (subject, study, split, [(dicom_id, view)], report text or None, labels {name: csv cell})
STUDIES = [
    ("10000032", "50414267", "train", [("d1", "PA"), ("d2", "LATERAL")],
     "FINAL REPORT\n EXAMINATION: CHEST\n\n FINDINGS:\n Lungs are clear.\n No effusion.\n\n IMPRESSION:\n Normal.",
     {"No Finding": "1.0"}),
    ("10000032", "53189527", "train", [("d3", "AP")],
     "FINDINGS: Moderate cardiomegaly. Possible small left effusion. IMPRESSION: Cardiomegaly.",
     {"Cardiomegaly": "1.0", "Pleural Effusion": "-1.0", "Pneumothorax": "0.0"}),
    ("11000011", "56699142", "test", [("d4", "PA"), ("d5", "AP")],
     "FINDINGS: Right basal consolidation.\nIMPRESSION: Pneumonia.", {"Consolidation": "1.0", "Pneumonia": "1.0"}),
    ("12000022", "57000001", "validate", [("d6", "LL")], "FINDINGS: Lateral only.", {}),
    ("12000022", "57000002", "validate", [("d7", "PA")], None, {}),  # report file missing
]


def write_mimic_fixture(root):
    """A tiny MIMIC-CXR-JPG folder written by hand (chexpert table gzipped, as PhysioNet ships it)."""
    splits, meta, labels = [], [], []
    rng = np.random.default_rng(0)
    for subject, study, split, images, report, cells in STUDIES:
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        for dicom, view in images:
            Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8)).save(folder / f"{dicom}.jpg")
            splits.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": split})
            meta.append({"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": view,
                         "Rows": 48, "Columns": 40})
        if report is not None:
            text = root / "reports" / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text(report)
        labels.append({"subject_id": subject, "study_id": study, **{n: cells.get(n, "") for n in OBSERVATIONS}})
    _write_csv(root / "mimic-cxr-2.0.0-split.csv", splits, open)
    _write_csv(root / "mimic-cxr-2.0.0-metadata.csv", meta, open)
    _write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", labels, gzip.open)
    return root


def _write_csv(path, rows, opener):
    with opener(path, "wt", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def mimic(tmp_path):
    return write_mimic_fixture(tmp_path / "mimic")


def test_mimic_layout_round_trips_texts_labels_and_frontal_images(mimic):
    with pytest.warns(UserWarning, match="skipped 1 studies without a report"):
        records = {r.study_id: r for r in load_mimic(mimic, progress=False)}
    assert set(records) == {"50414267", "53189527", "56699142"}  # lateral-only and report-less dropped
    first = records["50414267"]
    assert first.subject_id == "10000032" and first.split == "train"
    assert first.image_ids == ("d1",) and first.image_paths[0] == mimic / "files/p10/p10000032/s50414267/d1.jpg"
    assert first.findings == "Lungs are clear. No effusion." and first.impression == "Normal."
    assert first.labels["No Finding"] == 1 and first.labels["Edema"] is None
    second = records["53189527"]
    assert second.labels["Cardiomegaly"] == 1 and second.labels["Pleural Effusion"] == -1
    assert second.labels["Pneumothorax"] == 0 and list(second.labels) == list(OBSERVATIONS)
    assert records["56699142"].image_ids == ("d4", "d5") and records["56699142"].split == "test"


def test_split_selection_and_lateral_views_on_request(mimic):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = load_mimic(mimic, splits=["train"], progress=False)
        everything = {r.study_id: r for r in load_mimic(mimic, frontal_only=False, progress=False)}
    assert {r.split for r in train} == {"train"} and len(train) == 2
    assert everything["50414267"].image_ids == ("d1", "d2") and "57000001" in everything


def test_layout_errors_name_the_missing_file(mimic, tmp_path):
    (mimic / "mimic-cxr-2.0.0-split.csv").unlink()
    with pytest.raises(DataError, match="mimic-cxr-2.0.0-split.csv.*MIMIC-CXR-JPG layout"):
        load_records(mimic)
    with pytest.raises(DataError, match="no such data folder"):
        load_mimic(tmp_path / "absent")
    with pytest.raises(DataError, match="unknown split"):
        load_mimic(mimic, splits=["training"])


def test_record_dataset_gives_one_letterboxed_image_per_frontal_view(mimic):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = load_mimic(mimic, progress=False)
    dataset = RecordImageDataset(records, size=32)
    assert len(dataset) == 4  # d1, d3, d4, d5
    sample = dataset[0]
    assert sample["image"].shape == (32, 32) and sample["key"] == "s50414267_d1"
    assert sample["findings"] == "Lungs are clear. No effusion."


def test_llava_understanding_json_gives_instruction_report_and_image(mimic):
    items = [{"messages": [{"role": "user", "content": "<image>\nDescribe the FINDINGS of this X-ray."},
                           {"role": "assistant", "content": "FINDINGS: Lungs clear. IMPRESSION: Normal."}],
              "images": ["files/p10/p10000032/s50414267/d1.jpg"]}]
    (mimic / "understanding_test.json").write_text(json.dumps(items))
    [record] = load_understanding_json(mimic / "understanding_test.json")
    assert record.instruction == "Describe the FINDINGS of this X-ray."
    assert (record.findings, record.impression) == ("Lungs clear.", "Normal.")
    assert record.image_paths[0].is_file() and (record.subject_id, record.study_id) == ("10000032", "50414267")
    (mimic / "bad.json").write_text(json.dumps([{"images": []}]))
    with pytest.raises(DataError, match="bad.json record 0"):
        load_understanding_json(mimic / "bad.json")


def test_generation_csv_parses_labels_with_nan_safely(mimic):
    labels = {"Atelectasis": float("nan"), "Cardiomegaly": 1.0, "Edema": -1.0, "No Finding": 0.0}
    rows = [{"path": "p10/p10000032/s53189527/d3.jpg", "annotated_prompt": "Moderate cardiomegaly.",
             "chexpert_labels": repr(labels)}]
    _write_csv(mimic / "generation_test.csv", rows, open)
    assert "nan" in rows[0]["chexpert_labels"]
    [record] = load_generation_csv(mimic / "generation_test.csv")
    assert record.findings == "Moderate cardiomegaly." and record.image_paths[0].is_file()  # under files/
    assert record.labels["Cardiomegaly"] == 1 and record.labels["Edema"] == -1
    assert record.labels["Atelectasis"] is None and record.labels["No Finding"] == 0
    assert record.labels["Fracture"] is None and record.study_id == "53189527"


@pytest.mark.parametrize("text,problem", [
    ("__import__('os').system('echo owned')", "not a dict literal"),
    ("['Edema']", "must be a dict"),
    ("{'Edemaa': 1.0}", "unknown observation"),
    ("{'Edema': 3.0}", "not one of"),
])
def test_generation_label_strings_are_never_evaluated_and_errors_are_clear(text, problem):
    with pytest.raises(DataError, match=problem):
        parse_chexpert_labels(text)


def test_synthcxr_output_loads_through_the_same_loaders(tmp_path):
    synthcxr = pytest.importorskip("unixcxr.data.synthcxr")
    if not hasattr(synthcxr, "generate_dataset"):
        pytest.skip("the SynthCXR generator is not available yet")
    root = tmp_path / "synth"
    synthcxr.generate_dataset(root, n=24, size=64, seed=0, progress=False)
    records = {r.study_id: r for r in load_records(root, progress=False)}
    assert len(records) == 24 and {r.split for r in records.values()} == {"train", "validate", "test"}
    for r in records.values():
        assert r.findings and r.image_paths and all(p.is_file() for p in r.image_paths)
        assert list(r.labels) == list(OBSERVATIONS) and all(v in (1, 0, -1, None) for v in r.labels.values())
    assert any(v == 1 for r in records.values() for v in r.labels.values())
    image = RecordImageDataset(list(records.values()), size=64)[0]["image"]
    assert image.shape == (64, 64) and image.std() > 0.05  # a picture, not a blank
    for split in ("train", "validate", "test"):  # the three annotation files agree with each other
        for item in load_generation_csv(root / f"generation_{split}.csv", split=split):
            study = records[item.study_id]
            assert item.labels == study.labels and item.findings == study.findings
            assert item.image_paths[0] in study.image_paths and study.split == split
        for item in load_understanding_json(root / f"understanding_{split}.json", split=split):
            study = records[item.study_id]
            assert item.instruction and item.findings == study.findings
            assert item.impression in ("", study.impression) and item.image_paths[0] in study.image_paths
