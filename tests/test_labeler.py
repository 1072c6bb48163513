"""The rule-based labeler: hand-written cases (tests/data/labeler_cases.tsv) and its contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from unixcxr.labeler import clean_report, label_report, label_reports
from unixcxr.labels import OBSERVATIONS

CASES_FILE = Path(__file__).parent / "data" / "labeler_cases.tsv"
MIN_CASES = 150


def load_cases() -> list[tuple[int, str, dict[str, int | None]]]:
    """(line number, report text, expected labels) for every case in the TSV."""
    cases = []
    for number, line in enumerate(CASES_FILE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        text, expected_cells = line.split("\t")
        expected = dict.fromkeys(OBSERVATIONS)
        for cell in expected_cells.split("; "):
            name, value = cell.split("=")
            assert name in OBSERVATIONS, f"line {number}: unknown observation {name!r}"
            expected[name] = int(value)
        cases.append((number, text.replace("\\n", "\n"), expected))
    return cases


CASES = load_cases()


@pytest.mark.parametrize(("number", "text", "expected"), CASES, ids=[f"line{n}" for n, _, _ in CASES])
def test_hand_written_case_gets_expected_labels(number, text, expected):
    got = label_report(text)
    wrong = {name: (expected[name], got[name]) for name in OBSERVATIONS if got[name] != expected[name]}
    assert not wrong, f"line {number}: {text!r} -> (expected, got) {wrong}"


def test_case_set_is_large_and_covers_every_observation_and_state():
    assert len(CASES) >= MIN_CASES
    seen = {(name, labels[name]) for _, _, labels in CASES for name in OBSERVATIONS}
    for name in OBSERVATIONS[:-1]:
        for state in (1, 0, -1):
            assert (name, state) in seen, f"no case where {name} is {state}"
    assert ("No Finding", 1) in seen and ("No Finding", None) in seen


def test_labels_hold_every_observation_in_order_with_valid_values():
    labels = label_report("Small left effusion. No pneumothorax.")
    assert list(labels) == list(OBSERVATIONS)
    assert set(labels.values()) <= {1, 0, -1, None}


def test_scope_negates_only_the_negated_finding():
    labels = label_report("No pneumothorax, but a small left effusion.")
    assert labels["Pneumothorax"] == 0 and labels["Pleural Effusion"] == 1


def test_positive_beats_uncertain_beats_negative_within_a_report():
    assert label_report("No effusion. Possible effusion. Small effusion.")["Pleural Effusion"] == 1
    assert label_report("No effusion. Possible effusion.")["Pleural Effusion"] == -1


def test_support_devices_do_not_block_no_finding_but_findings_do():
    assert label_report("Endotracheal tube in place. Lungs are clear.")["No Finding"] == 1
    assert label_report("Endotracheal tube in place. Possible pneumonia.")["No Finding"] is None


@pytest.mark.parametrize("text", ["", "   \n ", "INDICATION: cough, rule out pneumonia.", "..."])
def test_report_without_findings_text_is_all_blank(text):
    assert all(value is None for value in label_report(text).values())


def test_non_text_input_is_a_clear_type_error():
    with pytest.raises(TypeError, match="str"):
        label_report(None)


def test_label_reports_equals_label_report_per_text():
    texts = ["Mild cardiomegaly.", "No acute process.", "Cannot exclude pneumonia."]
    assert label_reports(texts) == [label_report(t) for t in texts]


def test_cleaning_drops_indication_and_placeholders_and_joins_wrapped_lines():
    doc = clean_report("INDICATION: ___ with CHF\nFINDINGS: The XXXX are\nclear.\n\nIMPRESSION: Normal.")
    assert "chf" not in doc and "___" not in doc and "xxxx are clear" in doc and "normal" in doc


@pytest.mark.slow
def test_every_real_iu_report_is_labelled():
    """All 3,927 Indiana University reports (read in place from torchxrayvision) label cleanly."""
    pytest.importorskip("torchxrayvision")
    from benchmarks.bench_labeler import iu_reports

    reports = iu_reports()
    labels = label_reports([text for text, _ in reports])
    assert len(labels) == len(reports) > 3000
    normal = [lab["No Finding"] == 1 for lab in labels]
    assert 0.4 < sum(normal) / len(normal) < 0.8  # IU is a mostly-normal outpatient collection
    assert all(set(lab.values()) <= {1, 0, -1, None} for lab in labels)
