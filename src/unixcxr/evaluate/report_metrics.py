"""Report-generation metrics as the UniX evaluation defines them (docs/metrics.md).

Label F1: both reports are labelled (14 CheXpert observations), labels are mapped to binary twice -
"uncertain as negative" (positive iff 1) and "uncertain as positive" (positive iff 1 or -1); blank
and 0 are negative. Per class, TP / FP / FN are summed over all reports and
F1_c = TP / (TP + 0.5 (FP + FN)); a class with no positives anywhere scores 0. Micro-F1 pools
TP / FP / FN over the classes first, Macro-F1 averages the per-class F1; both over all 14
observations and over the top 5. Example-based P / R / F1 are per-report set scores over the 14
observations averaged over reports (sklearn's average="samples" with zero_division=0: a report
with nothing predicted has precision 0, one with nothing true has recall 0).

Text metrics in two conventions, both on the same tokens (lower-case words and punctuation marks,
no nltk data needed); `CONVENTIONS` names each number in every result:
- "text" (this project's first convention, kept): BLEU-1..4 as nltk sentence_bleu with smoothing
  method 4 averaged over reports, ROUGE-L F (rouge-score, beta 1, no stemming) averaged.
- "text_pycocoevalcap" (what most report-generation papers quote): corpus BLEU-1..4 and ROUGE-L
  with beta 1.2, as pycocoevalcap computes them (`coco_text`; equal to the package in the tests).
RadGraph F1 (partial reward) only when the user supplies a RadGraph model folder.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unixcxr.evaluate import coco_text
from unixcxr.labels import OBSERVATIONS, POSITIVE, TOP5, UNCERTAIN

MAPPINGS = {"uncertain_as_negative": (POSITIVE,), "uncertain_as_positive": (POSITIVE, UNCERTAIN)}
BLEU_ORDERS = (1, 2, 3, 4)
RADGRAPH_REWARD = "partial"  # the reward level usually reported as "RadGraph F1"
_TOKEN = re.compile(r"\w+|[^\w\s]")
TOKENS = "lower-cased words and punctuation marks (unixcxr tokenize)"
CONVENTIONS = {
    "label_f1": "per class TP / FP / FN summed over reports, F1 = TP / (TP + 0.5 (FP + FN)), a class with no "
                "positives anywhere 0; micro pools the counts, macro averages the classes (UniX / CheXbert papers)",
    "text": {"bleu_n": f"nltk sentence_bleu on {TOKENS}, smoothing method 4, averaged over reports (an empty "
                       "report 0)",
             "rouge_l": "rouge-score ROUGE-L F (beta 1, no stemming, its own tokenizer), averaged over reports",
             "radgraph_f1": "radgraph package F1RadGraph, partial reward, averaged over reports"},
    "text_pycocoevalcap": {"bleu_n": "pycocoevalcap Bleu(4): corpus BLEU-n, n-gram counts and lengths summed over "
                                     "reports, one brevity penalty",
                           "rouge_l": "pycocoevalcap Rouge: LCS F-measure with beta 1.2, averaged over reports",
                           "tokens": f"{TOKENS} joined by single spaces (pycocoevalcap splits on spaces)"},
}
TEXT_CONVENTION_NAMES = {"text": "sentence BLEU (nltk), ROUGE-L beta 1 (rouge-score)",
                         "text_pycocoevalcap": "corpus BLEU, ROUGE-L beta 1.2 (pycocoevalcap)"}


# ---------------------------------------------------------------- label F1
def binarize(labels: Sequence[dict], positive_values: Sequence[int]) -> np.ndarray:
    """(N, 14) bool matrix: True where the observation counts as positive under the mapping."""
    return np.array([[row.get(name) in positive_values for name in OBSERVATIONS] for row in labels], dtype=bool)


def f1_score(tp: float, fp: float, fn: float) -> float:
    """TP / (TP + 0.5 (FP + FN)); 0 when there is nothing to count."""
    denominator = tp + 0.5 * (fp + fn)
    return float(tp / denominator) if denominator > 0 else 0.0


def _mapping_scores(pred: np.ndarray, ref: np.ndarray) -> dict:
    tp = (pred & ref).sum(axis=0)  # (14,)
    fp = (pred & ~ref).sum(axis=0)
    fn = (~pred & ref).sum(axis=0)
    per_class = {name: f1_score(tp[i], fp[i], fn[i]) for i, name in enumerate(OBSERVATIONS)}
    top5 = [OBSERVATIONS.index(name) for name in TOP5]
    hits, predicted, true = (pred & ref).sum(axis=1), pred.sum(axis=1), ref.sum(axis=1)  # per report
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / np.maximum(predicted, 1), 0.0)
        recall = np.where(true > 0, hits / np.maximum(true, 1), 0.0)
        f1 = np.where(predicted + true > 0, 2 * hits / np.maximum(predicted + true, 1), 0.0)
    return {
        "micro_f1_14": f1_score(tp.sum(), fp.sum(), fn.sum()),
        "micro_f1_5": f1_score(tp[top5].sum(), fp[top5].sum(), fn[top5].sum()),
        "macro_f1_14": float(np.mean(list(per_class.values()))),
        "macro_f1_5": float(np.mean([per_class[name] for name in TOP5])),
        "per_class_f1": per_class,
        "example_based": {"precision": float(precision.mean()), "recall": float(recall.mean()),
                          "f1": float(f1.mean())},
    }


def label_f1(pred_labels: Sequence[dict], ref_labels: Sequence[dict]) -> dict:
    """CheXbert-style F1 scores of generated vs reference labels, under both uncertain mappings."""
    if len(pred_labels) != len(ref_labels):
        raise ValueError(f"{len(pred_labels)} generated vs {len(ref_labels)} reference label rows")
    if not pred_labels:
        raise ValueError("no reports to score")
    return {
        mapping: _mapping_scores(binarize(pred_labels, values), binarize(ref_labels, values))
        for mapping, values in MAPPINGS.items()
    }


# ---------------------------------------------------------------- text metrics
def tokenize(text: str) -> list[str]:
    """Lower-case words and punctuation marks; needs no tokenizer data download."""
    return _TOKEN.findall(text.lower())


def bleu_scores(preds: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Mean sentence BLEU-1..4 (smoothing method 4) over report pairs; an empty report scores 0."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    smoothing = SmoothingFunction().method4
    weights = [(1.0 / n,) * n for n in BLEU_ORDERS]  # all orders from one n-gram count (nltk >= 3.7): 2x faster
    totals = np.zeros(len(BLEU_ORDERS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns on reports too short for 4-grams
        for pred, ref in zip(preds, refs):
            hyp, target = tokenize(pred), tokenize(ref)
            if not hyp or not target:
                continue
            totals += sentence_bleu([target], hyp, weights=weights, smoothing_function=smoothing)
    return {f"bleu_{n}": float(total / len(preds)) for n, total in zip(BLEU_ORDERS, totals)}


def rouge_l(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (rouge-score, no stemming)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    scores = [scorer.score(target=ref, prediction=pred)["rougeL"].fmeasure for pred, ref in zip(preds, refs)]
    return float(np.mean(scores))


def pycocoevalcap_scores(preds: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 and ROUGE-L (beta 1.2) as pycocoevalcap computes them, on our tokens."""
    hyps, targets = [tokenize(t) for t in preds], [tokenize(t) for t in refs]
    return {**coco_text.corpus_bleu(hyps, targets), "rouge_l": coco_text.rouge_l_beta(hyps, targets)}


def radgraph_f1(preds: Sequence[str], refs: Sequence[str], model_dir: str | Path, model_type: str) -> float:
    """Mean RadGraph F1 (partial reward) with the `radgraph` package and a local model folder.

    `model_dir` must already hold `<model_type>/config.json` (the package would otherwise try to
    download it); Hugging Face is put in offline mode so nothing is fetched at run time.
    """
    model_dir = Path(model_dir)
    if not (model_dir / model_type / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir / model_type}: no RadGraph model (config.json) there; pass the folder "
                                f"that holds the extracted '{model_type}' model with --radgraph")
    try:
        from radgraph import F1RadGraph
    except ImportError as err:
        raise ImportError("RadGraph F1 needs the `radgraph` package: pip install radgraph") from err
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scorer = F1RadGraph(reward_level=RADGRAPH_REWARD, model_type=model_type,
                        model_cache_dir=str(model_dir), tokenizer_cache_dir=str(model_dir))
    mean_reward, *_ = scorer(refs=list(refs), hyps=list(preds))
    return float(mean_reward)


# ---------------------------------------------------------------- everything at once
def report_metrics(
    preds: Sequence[str],
    refs: Sequence[str],
    pred_labels: Sequence[dict],
    ref_labels: Sequence[dict],
    radgraph: tuple[Path, str] | None = None,
) -> dict:
    """Every report metric of the UniX evaluation (docs/metrics.md) for matched (generated, reference) report pairs."""
    if not (len(preds) == len(refs) == len(pred_labels) == len(ref_labels)):
        raise ValueError("generated reports, reference reports and their labels must have equal lengths")
    results = {"n_reports": len(preds), "label_f1": label_f1(pred_labels, ref_labels)}
    results["text"] = {**bleu_scores(preds, refs), "rouge_l": rouge_l(preds, refs)}
    results["text_pycocoevalcap"] = pycocoevalcap_scores(preds, refs)
    results["conventions"] = CONVENTIONS
    if radgraph is None:
        results["text"]["radgraph_f1"] = None
        results["notes"] = ["RadGraph F1 omitted: no RadGraph model given (--radgraph DIR)"]
    else:
        results["text"]["radgraph_f1"] = radgraph_f1(preds, refs, *radgraph)
    return results


def markdown_table(results: dict) -> str:
    """The headline numbers as a Markdown table (percent, like the papers)."""
    lines = ["| mapping | Micro-F1-14 | Micro-F1-5 | Macro-F1-14 | Macro-F1-5 | ex. P | ex. R | ex. F1 |",
             "|---|---|---|---|---|---|---|---|"]
    for mapping, s in results["label_f1"].items():
        ex = s["example_based"]
        cells = [s["micro_f1_14"], s["micro_f1_5"], s["macro_f1_14"], s["macro_f1_5"], ex["precision"],
                 ex["recall"], ex["f1"]]
        lines.append(f"| {mapping.replace('_', ' ')} | " + " | ".join(f"{100 * c:.1f}" for c in cells) + " |")
    names = [*(f"bleu_{n}" for n in BLEU_ORDERS), "rouge_l", "radgraph_f1"]
    lines += ["", "| convention | " + " | ".join(n.replace("_", "-").upper() for n in names) + " |",
              "|" + "---|" * (len(names) + 1)]
    for key, convention in TEXT_CONVENTION_NAMES.items():
        text = results.get(key, {})
        lines.append(f"| {convention} | "
                     + " | ".join("-" if text.get(n) is None else f"{100 * text[n]:.1f}" for n in names) + " |")
    per_class = "\n".join(
        f"| {name} | {100 * results['label_f1']['uncertain_as_negative']['per_class_f1'][name]:.1f} | "
        f"{100 * results['label_f1']['uncertain_as_positive']['per_class_f1'][name]:.1f} |"
        for name in OBSERVATIONS
    )
    lines += ["", "| observation | F1 (unc. neg.) | F1 (unc. pos.) |", "|---|---|---|", per_class]
    lines += ["", f"{results['n_reports']} report pairs, labels by {results.get('labeler', 'the rule-based labeler')}."]
    lines += [f"Note: {note}" for note in results.get("notes", [])]
    return "\n".join(lines) + "\n"
