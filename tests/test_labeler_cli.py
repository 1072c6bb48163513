"""`unixcxr label`: CSV / JSONL / folder in, label CSV out, clear errors."""

from __future__ import annotations

import csv
import json

from unixcxr.cli import main
from unixcxr.labels import OBSERVATIONS


def read_csv(path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_csv_input_keeps_other_columns_and_adds_the_14_observations(tmp_path):
    src = tmp_path / "reports.csv"
    with src.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_id", "report", "split"])
        writer.writerow(["s1", "No pneumothorax, but a small left effusion.", "test"])
        writer.writerow(["s2", "", "test"])
    out = tmp_path / "out" / "labels.csv"
    assert main(["label", str(src), "-o", str(out)]) == 0
    rows = read_csv(out)
    assert list(rows[0]) == ["study_id", "report", "split", *OBSERVATIONS]
    assert rows[0]["Pneumothorax"] == "0" and rows[0]["Pleural Effusion"] == "1" and rows[0]["Edema"] == ""
    assert all(rows[1][name] == "" for name in OBSERVATIONS)  # an empty report is all blank


def test_jsonl_input_with_a_custom_field(tmp_path):
    src = tmp_path / "gen.jsonl"
    src.write_text(json.dumps({"id": 7, "text": "Possible right lower lobe pneumonia."}) + "\n")
    out = tmp_path / "labels.csv"
    assert main(["label", str(src), "--column", "text", "-o", str(out)]) == 0
    (row,) = read_csv(out)
    assert row["id"] == "7" and row["Pneumonia"] == "-1" and row["No Finding"] == ""


def test_folder_of_txt_files_names_each_row_by_file(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "b.txt").write_text("FINDINGS: Heart size is normal.\nIMPRESSION: No acute process.")
    (folder / "a.txt").write_text("Mild cardiomegaly.")
    (folder / "notes.md").write_text("ignored")
    out = tmp_path / "labels.csv"
    assert main(["label", str(folder), "-o", str(out)]) == 0
    rows = read_csv(out)
    assert [r["file"] for r in rows] == ["a.txt", "b.txt"]
    assert rows[0]["Cardiomegaly"] == "1" and rows[1]["Cardiomegaly"] == "0" and rows[1]["No Finding"] == "1"


def test_missing_report_column_is_named_with_the_columns_present(tmp_path, capsys):
    src = tmp_path / "reports.csv"
    src.write_text("id,findings\n1,No effusion.\n")
    assert main(["label", str(src), "-o", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "no column 'report'" in err and "findings" in err and "--column" in err
    assert not (tmp_path / "x.csv").exists()


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"report": "ok"}\n{not json}\n')
    assert main(["label", str(broken), "-o", str(tmp_path / "x.csv")]) == 2
    assert "broken.jsonl:2" in capsys.readouterr().err
    assert main(["label", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "x.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["label", str(empty), "-o", str(tmp_path / "x.csv")]) == 2
    assert "no .txt files" in capsys.readouterr().err


def test_chexbert_backend_without_weights_says_what_is_missing(tmp_path, capsys):
    src = tmp_path / "r.csv"
    src.write_text("report\nNo effusion.\n")
    assert main(["label", str(src), "-o", str(tmp_path / "x.csv"), "--backend", "chexbert"]) == 2
    assert "--chexbert" in capsys.readouterr().err


def test_a_missing_value_marker_is_no_report_not_a_normal_study(tmp_path, capsys):
    """pandas and spreadsheets write a missing report as NaN; labelled as text it would read No Finding = 1."""
    src = tmp_path / "reports.csv"
    src.write_text("id,report\n1,NaN\n2,nan\n3,null\n4,No acute cardiopulmonary process.\n")
    out = tmp_path / "labels.csv"
    assert main(["label", str(src), "-o", str(out)]) == 0
    rows = read_csv(out)
    assert all(rows[i][name] == "" for i in range(3) for name in OBSERVATIONS)
    assert rows[3]["No Finding"] == "1"
    assert "3 report cell(s) hold a missing-value marker" in capsys.readouterr().err


def test_an_unclosed_quote_is_an_error_not_a_swallowed_file(tmp_path, capsys):
    src = tmp_path / "reports.csv"
    src.write_text('id,report\n1,"Small effusion.\n2,Clear.\n3,Edema.\n')
    assert main(["label", str(src), "-o", str(tmp_path / "labels.csv")]) == 2
    assert "never closed" in capsys.readouterr().err and not (tmp_path / "labels.csv").exists()
