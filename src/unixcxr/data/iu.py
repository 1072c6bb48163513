"""Indiana University chest X-ray reports (Open-i, 3,955 reports), read in place from the copy
that the torchxrayvision package installs (data/NLMCXR_reports.tgz).

They are real radiologist text, so they test section extraction and the tokenizer on the
language the model must speak. Licence CC BY-NC-ND 4.0: read them where they are; never copy
the archive or anything derived from it (extracted text, tokenizers) into this repository."""

from __future__ import annotations

import importlib.util
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from unixcxr.data.reports import DataError, StudyRecord, format_report, iu_xml_sections

IU_PACKAGE = "torchxrayvision"
IU_ARCHIVE = Path("data") / "NLMCXR_reports.tgz"
IU_SPLIT = "iu"


@dataclass(frozen=True)
class IUReport:
    """One IU report: its sections as the XML tags give them, and its MeSH terms (major: coded
    by staff, e.g. "Cardiomegaly/mild"; automatic: assigned by the indexing software)."""

    uid: str
    comparison: str
    indication: str
    findings: str
    impression: str
    mesh_major: tuple[str, ...]
    mesh_automatic: tuple[str, ...]
    image_ids: tuple[str, ...]

    @property
    def text(self) -> str:
        """The report as free text with MIMIC-style headers (for tokenizer corpora and for
        testing the free-text section extractor against the tagged truth)."""
        parts = [f"COMPARISON: {self.comparison}" if self.comparison else "",
                 f"INDICATION: {self.indication}" if self.indication else "",
                 format_report(self.findings, self.impression)]
        return "\n".join(p for p in parts if p)

    def to_record(self) -> StudyRecord:
        """As a StudyRecord (no images or labels in this archive)."""
        return StudyRecord(study_id=self.uid, subject_id=self.uid, image_paths=(), report=self.text,
                           findings=self.findings, impression=self.impression, split=IU_SPLIT)


def iu_archive_path() -> Path:
    """Where torchxrayvision installed the IU reports; a clear error when it is absent. The
    package is located, not imported (importing it pulls in torchvision: ~10 s)."""
    spec = importlib.util.find_spec(IU_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the IU reports come with torchxrayvision, which is not installed; "
                        "pip install 'unixcxr[data]' (or pip install torchxrayvision)")
    path = Path(spec.submodule_search_locations[0]) / IU_ARCHIVE
    if not path.is_file():
        raise DataError(f"{path}: torchxrayvision is installed without its IU reports archive; "
                        "reinstall it: pip install --force-reinstall torchxrayvision")
    return path


def iter_iu_reports(archive: str | Path | None = None) -> Iterator[IUReport]:
    """Every report in the archive, in archive order, streamed without extracting to disk."""
    archive = Path(archive) if archive else iu_archive_path()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if not (member.isfile() and member.name.endswith(".xml")):
                    continue
                try:
                    sections = iu_xml_sections(tar.extractfile(member).read())
                except DataError as err:
                    raise DataError(f"{archive}:{member.name}: {err}") from err
                yield IUReport(
                    uid=str(sections["uid"]) or Path(member.name).stem,
                    comparison=str(sections.get("COMPARISON", "")),
                    indication=str(sections.get("INDICATION", "")),
                    findings=str(sections.get("FINDINGS", "")),
                    impression=str(sections.get("IMPRESSION", "")),
                    mesh_major=sections["mesh_major"],
                    mesh_automatic=sections["mesh_automatic"],
                    image_ids=sections["image_ids"],
                )
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"{archive}: unreadable IU reports archive ({err}); "
                        "reinstall torchxrayvision") from err
