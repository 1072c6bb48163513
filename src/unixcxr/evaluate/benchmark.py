"""One command for a whole benchmark: report generation, image generation, every metric, the
round trip and the baselines, on one split of a data folder. Per-sample outputs are appended
(reports) or written atomically (images) as they are produced, so a killed run continues where
it stopped; metrics.json and metrics.md are written last."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from unixcxr.data.cleaning.records import ResumableWriter
from unixcxr.data.images import load_image
from unixcxr.data.mimic import load_mimic
from unixcxr.data.reports import StudyRecord
from unixcxr.evaluate import image_metrics as im
from unixcxr.evaluate.baselines import most_common_report, nearest_neighbour_reports
from unixcxr.evaluate.image_features import build_extractor, extract_features
from unixcxr.evaluate.labeler import label_reports
from unixcxr.evaluate.report_metrics import label_f1, report_metrics


@dataclass
class BenchmarkSettings:
    split: str = "test"
    limit: int | None = None  # first N studies of the split (sorted by id), None = all
    max_new_tokens: int = 256
    steps: int | None = None  # sampler grid points; None = the released 50
    sampler: str = "released"
    image_size: int | None = None  # None = the model's generation size
    batch_size: int = 8
    features: str = "effnet-lite0"
    baselines: bool = True
    vae_ceiling: bool = True  # also read back the VAE's reconstructions of the real images
    baseline_train_limit: int = 2000  # training studies used by the retrieval baseline
    seed: int = 0


def reference_report(record: StudyRecord) -> str:
    """The cleaned-report form the model is trained and scored on."""
    parts = [f"FINDINGS: {record.findings}" if record.findings else "",
             f"IMPRESSION: {record.impression}" if record.impression else ""]
    return " ".join(p for p in parts if p) or record.report


def generation_prompt(record: StudyRecord) -> str:
    """Generation is prompted with the findings text, as in UniX's evaluation."""
    return record.findings or record.impression or record.report


def _write_json(path: Path, payload) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(payload if isinstance(payload, str) else json.dumps(payload, indent=2))
    os.replace(tmp, path)


def _save_png(image, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".png.tmp")
    os.close(fd)
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def generate_outputs(pipe, records: list[StudyRecord], out: Path, s: BenchmarkSettings) -> dict[str, str]:
    """Reports (reports.jsonl) and images (generated/<id>.png) for every record; finished ones are
    skipped, so rerunning the same command resumes."""
    (out / "generated").mkdir(parents=True, exist_ok=True)
    with ResumableWriter(out / "reports.jsonl") as writer:
        todo = [r for r in records if r.study_id not in writer.done]
        for start in tqdm(range(0, len(todo), s.batch_size), desc="reports", unit="batch", disable=not todo):
            chunk = todo[start:start + s.batch_size]
            texts = pipe.report([str(r.image_paths[0]) for r in chunk], max_new_tokens=s.max_new_tokens,
                                batch_size=s.batch_size)
            for record, text in zip(chunk, texts):
                writer.append({"id": record.study_id, "report": text})
    todo = [r for r in records if not (out / "generated" / f"{r.study_id}.png").is_file()]
    for start in tqdm(range(0, len(todo), s.batch_size), desc="images", unit="batch", disable=not todo):
        chunk = todo[start:start + s.batch_size]
        seeds = [s.seed + records.index(r) for r in chunk]  # an image's seed does not depend on resumption
        images = pipe.generate([generation_prompt(r) for r in chunk], steps=s.steps, settings=s.sampler,
                               size=s.image_size, seed=seeds, batch_size=s.batch_size)
        for record, image in zip(chunk, images):
            _save_png(image, out / "generated" / f"{record.study_id}.png")
    generated = {}
    with open(out / "reports.jsonl") as f:
        for line in f:
            row = json.loads(line)
            generated[str(row["id"])] = row["report"]
    return generated


def _report_block(preds: list[str], refs: list[str], ref_labels: list[dict]) -> dict:
    return report_metrics(preds, refs, label_reports(preds), ref_labels)


def run_benchmark(pipe, data_dir: str | Path, out_dir: str | Path, s: BenchmarkSettings | None = None,
                  model_name: str = "") -> dict:
    s = s or BenchmarkSettings()
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = sorted(load_mimic(data_dir, splits=(s.split,)), key=lambda r: r.study_id)
    if s.limit:
        records = records[: s.limit]
    if not records:
        raise ValueError(f"{data_dir}: no studies in split {s.split!r}")
    generated = generate_outputs(pipe, records, out, s)
    refs = [reference_report(r) for r in records]
    ref_labels = label_reports(refs)
    preds = [generated[r.study_id] for r in records]
    results: dict = {"model": model_name, "data": str(data_dir), "settings": asdict(s), "n_studies": len(records)}
    results["reports"] = {"model": _report_block(preds, refs, ref_labels)}

    # images: real test images vs images drawn from their findings, one feature network, named
    extractor = build_extractor(s.features)
    real_files = [Path(r.image_paths[0]) for r in records]
    fake_files = [out / "generated" / f"{r.study_id}.png" for r in records]
    real = extract_features(real_files, extractor, cache_dir=out / "feature_cache")
    fake = extract_features(fake_files, extractor, cache_dir=out / "feature_cache")
    images = im.image_metrics(real, fake)
    ids = [r.study_id for r in records]
    labels_by_id = {r.study_id: r.labels for r in records}
    images["per_pathology_fd"] = im.per_pathology_fd(real, ids, fake, ids, labels_by_id)
    images["features"] = asdict(extractor.spec)
    results["images"] = images

    # round trip: read the generated images back and compare with what was asked for
    readback = pipe.report([str(f) for f in fake_files], max_new_tokens=s.max_new_tokens, batch_size=s.batch_size)
    asked = label_reports([generation_prompt(r) for r in records])
    results["round_trip"] = {"label_f1_vs_prompt": label_f1(label_reports(readback), asked),
                             "label_f1_vs_reference_labels": label_f1(label_reports(readback), ref_labels)}
    if s.vae_ceiling:
        # the round trip's ceiling for this VAE and reader: a generated image is a VAE decoding, so it
        # can show no more than the VAE keeps of the real image
        recon = pipe.reconstruct([str(f) for f in real_files], size=s.image_size, batch_size=s.batch_size)
        read_recon = pipe.report(recon, max_new_tokens=s.max_new_tokens, batch_size=s.batch_size)
        results["round_trip"]["vae_ceiling_vs_prompt"] = label_f1(label_reports(read_recon), asked)

    if s.baselines:
        results["reports"].update(baseline_reports(data_dir, records, refs, ref_labels, s))
    results["seconds"] = round(time.perf_counter() - start, 1)
    _write_json(out / "metrics.json", results)
    _write_json(out / "metrics.md", markdown(results))
    return results


def baseline_reports(data_dir, records, refs, ref_labels, s: BenchmarkSettings) -> dict:
    train = sorted(load_mimic(data_dir, splits=("train",), progress=False), key=lambda r: r.study_id)
    train = train[: s.baseline_train_limit]
    train_refs = [reference_report(r) for r in train]
    common = most_common_report(train_refs)
    train_images = [load_image(p.image_paths[0]) for p in tqdm(train, desc="baseline images", unit="image")]
    test_images = [load_image(r.image_paths[0]) for r in records]
    retrieved = nearest_neighbour_reports(train_images, train_refs, test_images)
    return {"most_common_report": _report_block([common] * len(records), refs, ref_labels),
            "nearest_neighbour_pixels": _report_block(retrieved, refs, ref_labels)}


def headline(block: dict) -> dict:
    pos, neg = block["label_f1"]["uncertain_as_positive"], block["label_f1"]["uncertain_as_negative"]
    return {"micro14_pos": pos["micro_f1_14"], "micro5_pos": pos["micro_f1_5"], "macro14_pos": pos["macro_f1_14"],
            "micro14_neg": neg["micro_f1_14"], "bleu4": block["text"]["bleu_4"], "rougeL": block["text"]["rouge_l"]}


def markdown(results: dict) -> str:
    lines = [f"# Benchmark: {results['model']} on {results['data']} ({results['n_studies']} studies, "
             f"split {results['settings']['split']})", "",
             "## Reports (labels by the built-in CheXpert-style labeler)", "",
             "| system | Micro-F1-14 (unc.+) | Micro-F1-5 (unc.+) | Macro-F1-14 (unc.+) | Micro-F1-14 (unc.-) "
             "| BLEU-4 | ROUGE-L |", "|---|---|---|---|---|---|---|"]
    for name, block in results["reports"].items():
        h = headline(block)
        lines.append(f"| {name} | {h['micro14_pos']:.3f} | {h['micro5_pos']:.3f} | {h['macro14_pos']:.3f} | "
                     f"{h['micro14_neg']:.3f} | {h['bleu4']:.3f} | {h['rougeL']:.3f} |")
    img = results["images"]
    p = img["prdc"]
    lines += ["", f"## Images (features: {img['features']['name']}, {img['n_real']} real vs {img['n_fake']} "
              "generated)", "", "| FD | KD | precision | recall | density | coverage |", "|---|---|---|---|---|---|",
              f"| {img['fd']:.3f} | {img['kd']['mean']:.4f} | {p['precision']:.3f} | {p['recall']:.3f} | "
              f"{p['density']:.3f} | {p['coverage']:.3f} |"]
    rt = results["round_trip"]["label_f1_vs_prompt"]["uncertain_as_positive"]
    lines += ["", "## Round trip (report -> image -> report)", "",
              f"Micro-F1-14 of the read-back labels vs the labels asked for: {rt['micro_f1_14']:.3f} "
              f"(Micro-F1-5 {rt['micro_f1_5']:.3f})", ""]
    ceiling = results["round_trip"].get("vae_ceiling_vs_prompt")
    if ceiling is not None:
        lines += [f"Ceiling (the same reader on the VAE's reconstructions of the real images): "
                  f"{ceiling['uncertain_as_positive']['micro_f1_14']:.3f}", ""]
    return "\n".join(lines)

