"""Report text: FINDINGS / IMPRESSION extraction from MIMIC free text and IU XML, label parsing."""

import textwrap

import pytest

from unixcxr.data.iu import iter_iu_reports
from unixcxr.data.reports import (
    DataError,
    extract_findings_impression,
    format_report,
    iu_xml_sections,
    labels_from_mapping,
    parse_label,
    split_sections,
)
from unixcxr.labels import OBSERVATIONS

MIMIC_STYLE = """\
                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


@pytest.fixture(scope="module")
def iu_reports():
    return list(iter_iu_reports())


def as_mimic_text(report) -> str:
    """An IU report re-typed the way MIMIC stores reports: banner, headers on their own lines,
    text wrapped at a fixed width."""
    wrap = lambda s: textwrap.fill(s, 70, initial_indent=" ", subsequent_indent=" ", break_on_hyphens=False)  # noqa: E731
    parts = ["                FINAL REPORT", " EXAMINATION: CHEST 2 VIEWS"]
    for header, body in (("COMPARISON", report.comparison), ("INDICATION", report.indication),
                         ("FINDINGS", report.findings), ("IMPRESSION", report.impression)):
        if body:
            parts += [f" {header}:", "", wrap(body), ""]
    return "\n".join(parts)


def test_mimic_report_sections_are_split_and_unwrapped():
    sections = split_sections(MIMIC_STYLE)
    assert sections["EXAMINATION"] == "CHEST (PA AND LAT)"
    assert sections["INDICATION"] == "___F with new onset ascites // eval for infection"
    assert sections["COMPARISON"] == "None."
    findings, impression = extract_findings_impression(MIMIC_STYLE)
    assert findings.startswith("There is no focal consolidation") and "\n" not in findings
    assert "Bilateral nodular opacities" in findings and findings.endswith("silhouette is normal.")
    assert impression == "No acute cardiopulmonary process."
    assert "FINAL REPORT" not in findings + impression


def test_one_line_targets_and_bare_text():
    assert extract_findings_impression("FINDINGS: Lungs clear. IMPRESSION: Normal.") == ("Lungs clear.", "Normal.")
    assert extract_findings_impression("Findings:\nLungs clear.\nImpression: Normal.") == ("Lungs clear.", "Normal.")
    assert extract_findings_impression("The lungs are clear.") == ("The lungs are clear.", "")
    assert extract_findings_impression("INDICATION: cough.\nIMPRESSION: Normal.") == ("", "Normal.")
    assert format_report("Lungs clear.", "") == "FINDINGS: Lungs clear."


def test_lower_case_phrases_inside_a_sentence_are_not_headers():
    text = "FINDINGS: Compared with prior findings: no change. Lungs are clear.\nIMPRESSION: Stable."
    assert extract_findings_impression(text) == ("Compared with prior findings: no change. Lungs are clear.", "Stable.")


def test_conclusion_and_combined_headers_map_to_the_two_sections():
    text = "FINDINGS AND IMPRESSION: Small left effusion.\nCONCLUSION: Effusion."
    assert extract_findings_impression(text) == ("Small left effusion.", "Effusion.")


def test_real_iu_reports_recover_their_tagged_sections(iu_reports):
    """IU reports retyped as MIMIC free text: the extractor must give back the XML's sections,
    without any header left inside."""
    assert len(iu_reports) > 3900
    tagged = [r for r in iu_reports if r.findings]
    assert len(tagged) > 3000
    recovered = exact = 0
    for report in tagged:
        findings, impression = extract_findings_impression(as_mimic_text(report))
        recovered += bool(findings)
        exact += findings == report.findings and impression == report.impression
        assert not findings.startswith(("FINDINGS", "IMPRESSION", "COMPARISON", "INDICATION"))
    assert recovered / len(tagged) >= 0.95
    assert exact / len(tagged) >= 0.99  # the rest: IU reports with a second report pasted inside


def test_iu_records_carry_mesh_terms_and_image_ids(iu_reports):
    first = iu_reports[0]
    assert first.uid.startswith("CXR") and first.image_ids and all(i.startswith(first.uid) for i in first.image_ids)
    assert sum(1 for r in iu_reports if "normal" in r.mesh_major) > 1000  # about a third are normal
    assert any(r.mesh_automatic for r in iu_reports)
    record = first.to_record()
    assert record.findings == first.findings and set(record.labels) == set(OBSERVATIONS)


def test_missing_torchxrayvision_is_reported_with_the_install_command(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torchxrayvision" else real_find_spec(name, *a))
    with pytest.raises(DataError, match=r"pip install 'unixcxr\[data\]'"):
        next(iter_iu_reports())


def test_iu_xml_sections_parse_abstract_labels():
    xml = """<eCitation><uId id="CXR9"/><MedlineCitation><Article><Abstract>
    <AbstractText Label="FINDINGS">Heart size normal.
      Lungs clear.</AbstractText><AbstractText Label="IMPRESSION"/></Abstract></Article>
    </MedlineCitation><MeSH><major>normal</major></MeSH><parentImage id="CXR9_IM-1"/></eCitation>"""
    sections = iu_xml_sections(xml)
    assert sections["FINDINGS"] == "Heart size normal. Lungs clear." and sections["IMPRESSION"] == ""
    assert sections["uid"] == "CXR9" and sections["mesh_major"] == ("normal",)
    with pytest.raises(DataError, match="malformed"):
        iu_xml_sections("<eCitation><unclosed></eCitation>")


@pytest.mark.parametrize("cell,value", [("1.0", 1), ("0.0", 0), ("-1.0", -1), ("", None), ("nan", None),
                                        (float("nan"), None), (None, None), (1, 1)])
def test_label_cells_parse_to_the_four_label_values(cell, value):
    assert parse_label(cell) == value


def test_bad_label_values_name_their_source():
    with pytest.raises(DataError, match="labels.csv.*2.0"):
        labels_from_mapping({"Edema": "2.0"}, source="labels.csv")
    labels = labels_from_mapping({"Edema": "1.0", "Cardiomegaly": "-1.0"})
    assert list(labels) == list(OBSERVATIONS) and labels["Edema"] == 1 and labels["Fracture"] is None
