"""One command for a whole benchmark: report generation, image generation, every metric, the
round trip and the baselines, on one split of a data set (a MIMIC-CXR-JPG layout folder or a
shards folder, optionally with cleaned reports; the generation half optionally on an annotation
split such as the CheXGenBench / LLaVA-Rad test CSV). Per-sample outputs are appended (reports) or
written atomically (images) as they are produced, so a killed run continues where it stopped;
metrics.json and metrics.md are written last."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from unixcxr.data.cleaning.records import ResumableWriter
from unixcxr.data.sources import DataSource, Sample
from unixcxr.evaluate import figures
from unixcxr.evaluate import image_metrics as im
from unixcxr.evaluate.baselines import most_common_report, nearest_neighbour_reports
from unixcxr.evaluate.image_features import build_extractor, extract_features
from unixcxr.evaluate.report_metrics import label_f1, report_metrics
from unixcxr.evaluate.studies import (  # noqa: F401 - first_per_study, generation_prompt, reference_report: public here too
    GENERATED,
    check_sampling,
    first_per_study,
    generate_images,
    generation_prompt,
    image_files,
    reference_report,
    sampling_of,
)
from unixcxr.evaluate.synthetic_use import evaluate_synthetic_use
from unixcxr.evaluate.synthetic_use import markdown as synthetic_use_markdown
from unixcxr.files import write_text
from unixcxr.labeler import label_reports

F1_COLUMNS = [(f"{kind}_f1_{n}", f"{kind.capitalize()}-F1-{n}") for kind in ("micro", "macro") for n in (14, 5)]
MAPPINGS = (("uncertain_as_negative", "unc. -"), ("uncertain_as_positive", "unc. +"))
MIN_STUDIES = im.PRDC_K + 1


@dataclass
class BenchmarkSettings:
    split: str = "test"
    limit: int | None = None  # first N studies of the split (sorted by id), None = all
    max_new_tokens: int | None = None  # None = the model's own cap (499 for the authors' weights, 256 ours)
    steps: int | None = None  # sampler grid points; None = the released 50
    sampler: str | None = None  # sampler preset; None = the model's own (released for the authors' weights)
    cfg_text: float | None = None  # these four replace the preset's values; None = the preset's
    cfg_img: float | None = None
    cfg_interval: tuple[float, float] | None = None
    shift: float | None = None
    image_size: int | None = None  # None = the model's generation size
    batch_size: int = 8
    features: str = "effnet-lite0"
    baselines: bool = True
    vae_ceiling: bool = True  # also read back the VAE's reconstructions of the real images
    baseline_train_limit: int = 2000  # training studies used by the retrieval baseline
    seed: int = 0
    generation_split: str | None = None  # CSV / JSON naming the generation half's images and prompts
    # privacy and utility (evaluate/synthetic_use.py): films drawn from training prompts
    privacy: bool = False
    privacy_n: int | None = None  # films from training prompts; None = as many as the split's generated images
    privacy_train_limit: int = 2000  # training films searched for each film's nearest neighbour
    reid_checkpoint: str | None = None  # a Siamese re-identification state_dict (evaluate/privacy.py)
    utility: bool = False
    utility_n: int | None = None  # films per training arm; None = as many as the split's generated images
    utility_steps: int = 100  # fine-tuning steps per arm
    utility_size: int = 128


def select(source: DataSource, s: BenchmarkSettings) -> tuple[list[Sample], list[Sample]]:
    """(the studies whose reports are generated, the ones whose images are); checks every file."""
    source.check_files([s.split])
    und = first_per_study(source.samples(s.split), s.limit)
    if not und:
        raise ValueError(f"{source.root}: no studies in split {s.split!r}")
    gen = und
    if s.generation_split:
        gen = first_per_study(source.annotated(s.generation_split, s.split), s.limit)
    if min(len(und), len(gen)) < MIN_STUDIES:
        raise ValueError(f"{source.root}: split {s.split!r} gives {min(len(und), len(gen))} studies; the image metrics "
                         f"need at least {MIN_STUDIES} (precision / recall with k = {im.PRDC_K} neighbours)")
    return und, gen


def _write_json(path: Path, payload) -> None:
    write_text(path, payload if isinstance(payload, str) else json.dumps(payload, indent=2))


def generate_reports(pipe, studies: list[Sample], files: list[Path], out: Path, s: BenchmarkSettings) -> list[str]:
    """reports.jsonl, one line per study; finished ones are skipped, so rerunning resumes."""
    with ResumableWriter(out / "reports.jsonl") as writer:
        todo = [(r, f) for r, f in zip(studies, files) if r.study_id not in writer.done]
        for start in tqdm(range(0, len(todo), s.batch_size), desc="reports", unit="batch", disable=not todo):
            chunk = todo[start:start + s.batch_size]
            texts = pipe.report([str(f) for _, f in chunk], max_new_tokens=s.max_new_tokens, batch_size=s.batch_size)
            for (record, _), text in zip(chunk, texts):
                writer.append({"id": record.study_id, "report": text})
    generated = {}
    with open(out / "reports.jsonl") as f:
        for line in f:
            row = json.loads(line)
            generated[str(row["id"])] = row["report"]
    return [generated[r.study_id] for r in studies]


def _report_block(preds: list[str], refs: list[str], ref_labels: list[dict]) -> dict:
    return report_metrics(preds, refs, label_reports(preds), ref_labels)


def run_benchmark(pipe, data: str | Path | DataSource, out_dir: str | Path, s: BenchmarkSettings | None = None,
                  model_name: str = "", extractor=None, reid=None) -> dict:
    """Every metric on one split; `reid` is a loaded re-identification network (privacy.load_reid)."""
    s = s or BenchmarkSettings()
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_sampling(pipe, out / GENERATED, s)  # before any work: a rerun must draw as the films there were drawn
    source = data if isinstance(data, DataSource) else DataSource(data)
    extractor = extractor or build_extractor(s.features)
    und, gen = select(source, s)
    und_files = image_files(und, out / "real")
    gen_files = image_files(gen, out / "real")
    preds = generate_reports(pipe, und, und_files, out, s)
    fake_files = generate_images(pipe, gen, out, s)
    refs = [reference_report(r) for r in und]
    ref_labels = label_reports(refs)
    results: dict = {"model": model_name, "data": str(source.root), "data_kind": source.kind,
                     "cleaned_reports": str(source.cleaned.path) if source.cleaned else None,
                     "settings": asdict(s), "n_studies": len(und), "n_generated": len(gen)}
    results["reports"] = {"model": _report_block(preds, refs, ref_labels)}

    # images: real images vs images drawn from their findings, one feature network, named
    real = extract_features(gen_files, extractor, cache_dir=out / "feature_cache")
    fake = extract_features(fake_files, extractor, cache_dir=out / "feature_cache")
    images = im.image_metrics(real, fake)
    ids = [r.study_id for r in gen]
    images["per_pathology_fd"] = im.per_pathology_fd(real, ids, fake, ids, {r.study_id: r.labels for r in gen})
    images["features"] = asdict(extractor.spec)
    images["sampler"] = sampling_of(pipe, s)
    results["images"] = images

    # round trip: read the generated images back and compare with what was asked for
    readback = pipe.report([str(f) for f in fake_files], max_new_tokens=s.max_new_tokens, batch_size=s.batch_size)
    asked = label_reports([generation_prompt(r) for r in gen])
    gen_labels = label_reports([reference_report(r) for r in gen])
    read = label_reports(readback)
    results["round_trip"] = {"label_f1_vs_prompt": label_f1(read, asked),
                             "label_f1_vs_reference_labels": label_f1(read, gen_labels),
                             "label_f1_vs_other_prompt": label_f1(read, other_studies(asked))}
    if s.vae_ceiling:
        # the round trip's ceiling for this VAE and reader: a generated image is a VAE decoding, so it
        # can show no more than the VAE keeps of the real image
        recon = pipe.reconstruct([str(f) for f in gen_files], size=s.image_size, batch_size=s.batch_size)
        read_recon = pipe.report(recon, max_new_tokens=s.max_new_tokens, batch_size=s.batch_size)
        results["round_trip"]["vae_ceiling_vs_prompt"] = label_f1(label_reports(read_recon), asked)

    if s.baselines:
        results["reports"].update(baseline_reports(source, und, refs, ref_labels, s))
    results["figures"] = {
        "per_class_f1": figures.per_class_f1_chart(results["reports"], out / figures.F1_CHART).name,
        "real_vs_generated": figures.real_vs_generated_grid(gen_files, fake_files, out / figures.GRID, ids).name,
    }
    if s.privacy or s.utility:

        extra = evaluate_synthetic_use(pipe, source, gen, gen_files, real, out, s, extractor, reid=reid)
        results["figures"].update(extra.pop("figures"))
        results.update(extra)
    results["seconds"] = round(time.perf_counter() - start, 1)
    _write_json(out / "metrics.json", results)
    _write_json(out / "metrics.md", markdown(results))
    return results


def baseline_reports(source: DataSource, studies: list[Sample], refs, ref_labels, s: BenchmarkSettings) -> dict:
    train = first_per_study(source.samples("train"), s.baseline_train_limit)
    train_refs = [reference_report(r) for r in train]
    common = most_common_report(train_refs)
    train_images = [r.image.read() for r in tqdm(train, desc="baseline images", unit="image")]
    test_images = [r.image.read() for r in studies]
    retrieved = nearest_neighbour_reports(train_images, train_refs, test_images)
    return {"most_common_report": _report_block([common] * len(studies), refs, ref_labels),
            "nearest_neighbour_pixels": _report_block(retrieved, refs, ref_labels)}


def headline(block: dict) -> dict:
    pos, neg = block["label_f1"]["uncertain_as_positive"], block["label_f1"]["uncertain_as_negative"]
    return {"micro14_pos": pos["micro_f1_14"], "micro5_pos": pos["micro_f1_5"], "macro14_pos": pos["macro_f1_14"],
            "micro14_neg": neg["micro_f1_14"], "bleu4": block["text"]["bleu_4"], "rougeL": block["text"]["rouge_l"]}


def f1_table(blocks: dict[str, dict]) -> list[str]:
    """The paper's label table: Micro / Macro x 14 / 5 observations x uncertain as negative / positive."""
    header = "| system | " + " | ".join(f"{name} ({m})" for _, m in MAPPINGS for _, name in F1_COLUMNS)
    lines = [header + " | BLEU-1 | BLEU-4 | ROUGE-L | BLEU-4 (coco) | ROUGE-L (coco) |",
             "|---" * (2 + 2 * len(F1_COLUMNS) + 4) + "|"]
    for system, block in blocks.items():
        cells = [block["label_f1"][mapping][key] for mapping, _ in MAPPINGS for key, _ in F1_COLUMNS]
        text, coco = block["text"], block["text_pycocoevalcap"]
        cells += [text["bleu_1"], text["bleu_4"], text["rouge_l"], coco["bleu_4"], coco["rouge_l"]]
        lines.append(f"| {system} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    lines += ["", "BLEU / ROUGE-L: mean sentence BLEU (nltk, smoothing 4) and ROUGE-L with beta 1 (rouge-score); "
              "(coco): corpus BLEU and ROUGE-L with beta 1.2 as pycocoevalcap computes them, the convention most "
              "report-generation papers quote. metrics.json names every number's convention."]
    return lines


def other_studies(items: list) -> list:
    """items[i] -> items[(i + n // 2) % n]: every study paired with another one (a derangement for
    n >= 2). The round trip against these labels is what a film matches in any prompt; its own
    prompt's score minus this is what the text itself buys."""
    n = len(items)
    return [items[(i + n // 2) % n] for i in range(n)] if n > 1 else list(items)


def markdown(results: dict) -> str:
    lines = [f"# Benchmark: {results['model']} on {results['data']} ({results['n_studies']} studies, "
             f"split {results['settings']['split']})", "",
             "## Reports (labels by the built-in CheXpert-style labeler)", "", *f1_table(results["reports"])]
    if results.get("figures"):
        lines += ["", f"![per-class F1]({results['figures']['per_class_f1']})"]
    img = results["images"]
    p = img["prdc"]
    drawn, sampler = "", img.get("sampler")
    if sampler:  # metrics.json from before the sampler was recorded has none
        lo, hi = sampler["cfg_interval"]
        drawn = (f"; drawn with {sampler['num_points']} sampler points, text guidance {sampler['cfg_text']:g} on "
                 f"({lo:g}, {hi:g}], shift {sampler['shift']:g}{', renorm' if sampler['renorm'] else ''}")
    lines += ["", f"## Images (features: {img['features']['name']}, {img['n_real']} real vs {img['n_fake']} "
              f"generated{drawn})", "", "| FD | KD | precision | recall | density | coverage |",
              "|---|---|---|---|---|---|",
              f"| {img['fd']:.3f} | {img['kd']['mean']:.4f} | {p['precision']:.3f} | {p['recall']:.3f} | "
              f"{p['density']:.3f} | {p['coverage']:.3f} |"]
    if results.get("figures"):
        lines += ["", f"![real films over the films generated from their reports]"
                      f"({results['figures']['real_vs_generated']})"]
    rt = results["round_trip"]["label_f1_vs_prompt"]["uncertain_as_positive"]
    lines += ["", "## Round trip (report -> image -> report)", "",
              f"Micro-F1-14 of the read-back labels vs the labels asked for: {rt['micro_f1_14']:.3f} "
              f"(Micro-F1-5 {rt['micro_f1_5']:.3f})", ""]
    other = results["round_trip"].get("label_f1_vs_other_prompt")
    if other is not None:
        base = other["uncertain_as_positive"]["micro_f1_14"]
        lines += [f"The same films scored against another study's prompt: {base:.3f} (what the text itself "
                  f"buys: {rt['micro_f1_14'] - base:+.3f})", ""]
    ceiling = results["round_trip"].get("vae_ceiling_vs_prompt")
    if ceiling is not None:
        lines += [f"Ceiling (the same reader on the VAE's reconstructions of the real images): "
                  f"{ceiling['uncertain_as_positive']['micro_f1_14']:.3f}", ""]
    if results.get("privacy") or results.get("utility"):

        lines += [*synthetic_use_markdown(results), ""]
    return "\n".join(lines)
