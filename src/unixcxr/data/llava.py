"""Instruction-style annotation files used by UniX and its benchmarks.

- Understanding (LLaVA JSON, as in the UniX test set): a list of
  {"messages": [{"role": "user", "content": "<image>\\n<instruction>"},
                {"role": "assistant", "content": "FINDINGS: ... IMPRESSION: ..."}],
   "images": ["files/p10/p10000032/s50414267/<dicom_id>.jpg"]}
- Generation (CheXGenBench / LLaVA-Rad CSV): columns path, annotated_prompt (the findings
  text that conditions the image) and chexpert_labels, a Python dict written as text, e.g.
  "{'Atelectasis': nan, 'Cardiomegaly': 1.0, ...}".
Relative image paths are resolved against `image_root`, else the annotation file's folder."""

from __future__ import annotations

import ast
import csv
import json
import re
from pathlib import Path

from unixcxr.data.reports import DataError, StudyRecord, extract_findings_impression, labels_from_mapping
from unixcxr.labels import OBSERVATIONS

IMAGE_PLACEHOLDER = "<image>"
GENERATION_COLUMNS = ("path", "annotated_prompt", "chexpert_labels")
_NAN = re.compile(r"\b(?:nan|NaN|NAN)\b")
_STUDY_DIR = re.compile(r"^s(\d+)$")
_PATIENT_DIR = re.compile(r"^p(\d+)$")


def resolve_image(path: str, base: Path) -> Path:
    """An annotation's image path made usable: absolute paths as given, relative ones under
    `base`, or under base/files when the annotation omits MIMIC's leading files/ folder."""
    image = Path(path)
    if image.is_absolute():
        return image
    candidates = (base / image, base / "files" / image)
    return next((c for c in candidates if c.exists()), candidates[0])


def ids_from_path(image: Path, fallback: str) -> tuple[str, str]:
    """(subject_id, study_id) from a MIMIC-layout image path .../p1X/p1XXXXXXX/sXXXXXXXX/x.jpg."""
    study = _STUDY_DIR.match(image.parent.name)
    patient = _PATIENT_DIR.match(image.parent.parent.name)
    return (patient.group(1) if patient else "", study.group(1) if study else fallback)


def parse_chexpert_labels(text: str, source: str = "chexpert_labels") -> dict[str, int | None]:
    """The dict-as-text label column, parsed safely: nan becomes None, then ast.literal_eval
    (never eval). Unknown observation names are an error; missing ones are blank."""
    try:
        parsed = ast.literal_eval(_NAN.sub("None", text))
    except (ValueError, SyntaxError) as err:
        raise DataError(f"{source}: chexpert_labels {text[:80]!r} is not a dict literal ({err})") from None
    if not isinstance(parsed, dict):
        raise DataError(f"{source}: chexpert_labels must be a dict, got {type(parsed).__name__}")
    unknown = set(parsed) - set(OBSERVATIONS)
    if unknown:
        raise DataError(f"{source}: unknown observation(s) {sorted(unknown)}; expected names from "
                        "unixcxr.labels.OBSERVATIONS")
    return labels_from_mapping(parsed, source=source)


def _conversation(item: object, where: str) -> tuple[str, str, list[str]]:
    """(instruction, answer, images) of one LLaVA record."""
    if not isinstance(item, dict) or "messages" not in item or "images" not in item:
        raise DataError(f"{where}: expected an object with 'messages' and 'images'")
    by_role = {m.get("role"): str(m.get("content", "")) for m in item["messages"]}
    if "user" not in by_role:
        raise DataError(f"{where}: no user message")
    instruction = by_role["user"].replace(IMAGE_PLACEHOLDER, "").strip()
    return instruction, by_role.get("assistant", "").strip(), list(item["images"])


def load_understanding_json(
    path: str | Path, split: str = "test", image_root: str | Path | None = None
) -> list[StudyRecord]:
    """Records of a LLaVA understanding file; the assistant turn is the reference report
    (empty when the file holds questions only). Labels are blank: the file has none."""
    path = Path(path)
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read LLaVA JSON ({err})") from err
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of records")
    base = Path(image_root) if image_root else path.parent
    records = []
    for index, item in enumerate(items):
        instruction, answer, images = _conversation(item, f"{path} record {index}")
        resolved = tuple(resolve_image(p, base) for p in images)
        subject_id, study_id = ids_from_path(resolved[0], str(index)) if resolved else ("", str(index))
        findings, impression = extract_findings_impression(answer)
        records.append(StudyRecord(
            study_id=study_id, subject_id=subject_id, image_paths=resolved, report=answer,
            findings=findings, impression=impression, split=split, instruction=instruction,
            image_ids=tuple(p.stem for p in resolved),
        ))
    return records


def load_generation_csv(
    path: str | Path, split: str = "test", image_root: str | Path | None = None
) -> list[StudyRecord]:
    """Records of a CheXGenBench / LLaVA-Rad generation CSV: the prompt is the findings
    text; the image is the reference the generated one is compared with."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such generation CSV")
    base = Path(image_root) if image_root else path.parent
    records = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in GENERATION_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; "
                            f"expected {', '.join(GENERATION_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            image = resolve_image(row["path"], base)
            subject_id, study_id = ids_from_path(image, str(line))
            prompt = row["annotated_prompt"].strip()
            findings, impression = extract_findings_impression(prompt)
            records.append(StudyRecord(
                study_id=study_id, subject_id=subject_id, image_paths=(image,), report=prompt,
                findings=findings, impression=impression, split=split, image_ids=(image.stem,),
                labels=parse_chexpert_labels(row["chexpert_labels"], source=f"{path} line {line}"),
            ))
    return records
