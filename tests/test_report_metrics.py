"""Report metrics: label F1 arithmetic against hand-computed cases, BLEU, ROUGE-L, eval-reports CLI."""

from __future__ import annotations

import csv
import json

import pytest

from unixcxr.cli import main
from unixcxr.evaluate.report_metrics import (
    bleu_scores,
    label_f1,
    markdown_table,
    pycocoevalcap_scores,
    report_metrics,
    rouge_l,
    tokenize,
)
from unixcxr.labels import OBSERVATIONS

CM, ED, PE, AT = "Cardiomegaly", "Edema", "Pleural Effusion", "Atelectasis"


def labels(**values) -> dict:
    row = dict.fromkeys(OBSERVATIONS)
    row.update({name.replace("_", " "): v for name, v in values.items()})
    return row


# Four reports, worked out by hand in the tests below.
REF = [labels(Cardiomegaly=1, Edema=-1), labels(Cardiomegaly=1), labels(Pleural_Effusion=1), labels()]
PRED = [labels(Cardiomegaly=1, Edema=1), labels(Cardiomegaly=0), labels(Pleural_Effusion=1, Atelectasis=-1),
        labels(Cardiomegaly=1)]


def test_f1_with_uncertain_as_negative_matches_hand_computation():
    s = label_f1(PRED, REF)["uncertain_as_negative"]
    # CM: TP 1 (r1), FP 1 (r4), FN 1 (r2) -> 1 / (1 + 1) ; ED: FP 1 -> 0 ; PE: TP 1 -> 1 ; AT: nothing -> 0
    assert s["per_class_f1"][CM] == pytest.approx(0.5)
    assert s["per_class_f1"][ED] == 0.0 and s["per_class_f1"][PE] == 1.0 and s["per_class_f1"][AT] == 0.0
    assert s["micro_f1_14"] == pytest.approx(2 / (2 + 0.5 * 3))  # TP 2, FP 2, FN 1
    assert s["micro_f1_5"] == pytest.approx(2 / (2 + 0.5 * 3))  # all of them are top-5 classes
    assert s["macro_f1_14"] == pytest.approx(1.5 / 14)
    assert s["macro_f1_5"] == pytest.approx(1.5 / 5)


def test_f1_with_uncertain_as_positive_matches_hand_computation():
    s = label_f1(PRED, REF)["uncertain_as_positive"]
    # ED becomes TP (1 vs -1); AT becomes FP (-1 vs blank)
    assert s["per_class_f1"][ED] == 1.0 and s["per_class_f1"][AT] == 0.0
    assert s["micro_f1_14"] == pytest.approx(3 / (3 + 0.5 * 3))  # TP 3, FP 2, FN 1
    assert s["macro_f1_14"] == pytest.approx(2.5 / 14)
    assert s["macro_f1_5"] == pytest.approx(2.5 / 5)


def test_example_based_scores_match_hand_computation():
    ex = label_f1(PRED, REF)["uncertain_as_negative"]["example_based"]
    # r1: P 1/2 R 1 F1 2/3 ; r2: nothing predicted -> 0, 0, 0 ; r3: 1, 1, 1 ; r4: nothing true -> 0, 0, 0
    assert ex["precision"] == pytest.approx((0.5 + 1) / 4)
    assert ex["recall"] == pytest.approx((1 + 1) / 4)
    assert ex["f1"] == pytest.approx((2 / 3 + 1) / 4)


def test_classes_with_no_positives_anywhere_score_zero():
    s = label_f1([labels(Cardiomegaly=1)] * 3, [labels(Cardiomegaly=1)] * 3)["uncertain_as_negative"]
    assert s["per_class_f1"][CM] == 1.0
    assert all(s["per_class_f1"][name] == 0.0 for name in OBSERVATIONS if name != CM)
    assert s["micro_f1_14"] == 1.0 and s["macro_f1_14"] == pytest.approx(1 / 14)
    empty = label_f1([labels()] * 2, [labels()] * 2)["uncertain_as_positive"]
    assert empty["micro_f1_14"] == 0.0 and empty["macro_f1_5"] == 0.0


def test_blank_and_negative_are_both_negative():
    s = label_f1([labels(Edema=0)], [labels()])["uncertain_as_positive"]
    assert s["micro_f1_14"] == 0.0 and s["example_based"]["precision"] == 0.0


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="reference"):
        label_f1(PRED, REF[:2])


def test_tokenize_needs_no_nltk_data_and_keeps_punctuation():
    tokens = tokenize("Heart size is normal.\nNo effusion!")
    assert tokens == ["heart", "size", "is", "normal", ".", "no", "effusion", "!"]


def test_bleu_is_one_for_identical_reports_and_matches_nltk_directly():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    same = "the heart size is normal and the lungs are clear ."
    assert all(v == pytest.approx(1.0) for v in bleu_scores([same], [same]).values())
    pred, ref = "small left pleural effusion , no pneumothorax .", "small left effusion . no pneumothorax ."
    expected = sentence_bleu([ref.split()], pred.split(), smoothing_function=SmoothingFunction().method4)
    assert bleu_scores([pred], [ref])["bleu_4"] == pytest.approx(expected)
    assert bleu_scores(["", same], [same, same])["bleu_1"] == pytest.approx(0.5)  # empty report scores 0


def test_rouge_l_is_lcs_f_measure_without_stemming():
    assert rouge_l(["a b c d"], ["a c d e"]) == pytest.approx(0.75)  # LCS 3 of 4 and 4
    assert rouge_l(["effusions"], ["effusion"]) == 0.0  # no stemming


def test_report_metrics_omits_radgraph_with_a_note_and_renders_markdown():
    results = report_metrics(["Small effusion."] * 4, ["Small effusion."] * 4, PRED, REF)
    assert results["text"]["radgraph_f1"] is None and "RadGraph" in results["notes"][0]
    table = markdown_table(results)
    assert "Micro-F1-14" in table and "| Cardiomegaly | 50.0 | 50.0 |" in table


def _write_csv(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_eval_reports_cli_matches_by_id_and_writes_json_and_markdown(tmp_path, capsys):
    ref = tmp_path / "ref.csv"
    _write_csv(ref, [{"id": "a", "report": "Mild cardiomegaly. No effusion."},
                     {"id": "b", "report": "Small left pleural effusion."},
                     {"id": "c", "report": "No acute process."}])
    pred = tmp_path / "pred.jsonl"
    pred.write_text("\n".join(json.dumps(r) for r in [
        {"id": "b", "report": "Small left pleural effusion."},
        {"id": "a", "report": "The heart is enlarged."},
        {"id": "z", "report": "Pneumonia."}]) + "\n")
    out = tmp_path / "results" / "reports.json"
    assert main(["eval-reports", "--pred", str(pred), "--ref", str(ref), "-o", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["inputs"] == {"pred": str(pred), "ref": str(ref), "matched": 2, "only_in_pred": 1,
                                 "only_in_ref": 1}
    assert results["label_f1"]["uncertain_as_negative"]["micro_f1_14"] == 1.0  # CM and PE agree
    coco = pycocoevalcap_scores(["The heart is enlarged.", "Small left pleural effusion."],
                                ["Mild cardiomegaly. No effusion.", "Small left pleural effusion."])  # ids a, b
    assert results["text_pycocoevalcap"] == pytest.approx(coco)  # both conventions, on the matched pairs
    assert set(results["conventions"]) == {"label_f1", "text", "text_pycocoevalcap"}
    assert out.with_suffix(".md").read_text().startswith("| mapping |")
    assert "Micro-F1-14" in capsys.readouterr().out


def test_eval_reports_cli_names_a_missing_id_column(tmp_path, capsys):
    path = tmp_path / "r.csv"
    _write_csv(path, [{"study": "a", "report": "x"}])
    assert main(["eval-reports", "--pred", str(path), "--ref", str(path)]) == 2
    assert "no id column 'id'" in capsys.readouterr().err


def test_eval_reports_cli_rejects_duplicate_ids(tmp_path, capsys):
    path = tmp_path / "r.csv"
    _write_csv(path, [{"id": "a", "report": "x"}, {"id": "a", "report": "y"}])
    assert main(["eval-reports", "--pred", str(path), "--ref", str(path)]) == 2
    assert "appears twice" in capsys.readouterr().err
