"""Round-trip consistency (no published model reports it): draw an image from each reference
report, let the understanding branch read it back, and score the labels of the read-back report
against those of the report asked for. It measures whether generation is faithful to the findings
requested, with our own model as the reader."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from tqdm import tqdm

from unixcxr.evaluate.report_metrics import label_f1
from unixcxr.labeler import label_reports


class ReaderWriter(Protocol):
    def report(self, images: list, **decoding) -> list[str]: ...

    def generate(self, reports: list[str], **sampling) -> list: ...


def round_trip(model: ReaderWriter, reports: Sequence[str], reference_labels: Sequence[dict] | None = None,
               batch_size: int = 8, labeler: Callable = label_reports, progress: bool = True,
               generate_kwargs: dict | None = None, report_kwargs: dict | None = None) -> dict:
    """reports: the prompts (reference reports). reference_labels: optionally the labels of the real
    image's report (e.g. the data set's label file), scored as a second reference."""
    readback: list[str] = []
    bar = tqdm(total=len(reports), desc="round trip", unit="report", disable=not progress)
    for start in range(0, len(reports), batch_size):
        chunk = list(reports[start:start + batch_size])
        images = model.generate(chunk, **(generate_kwargs or {}))
        readback += model.report(images, **(report_kwargs or {}))
        bar.update(len(chunk))
    bar.close()
    asked, read = labeler(list(reports)), labeler(readback)
    result = {"n": len(reports), "label_f1_vs_prompt": label_f1(read, asked), "readback_reports": readback}
    if reference_labels is not None:
        result["label_f1_vs_reference_labels"] = label_f1(read, list(reference_labels))
    return result
