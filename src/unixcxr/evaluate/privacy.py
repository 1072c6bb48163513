"""Privacy of generated films: does the generator copy its training patients?

CheXGenBench (github.com/Raman1121/CheXGenBench, metrics/privacy_metrics.py) prompts the generator
with *training* prompts and compares every generated film with the training film of its prompt: a
re-identification score from a Siamese patient-verification network (Packhaeuser et al., 2022), a
pixel distance and a RAD-DINO latent distance. unixcxr keeps that protocol (training prompts, the
same Siamese checkpoint format, the same score) and adds what makes the numbers readable:

- Nearest training film. For every generated film, the most similar film of the whole training
  reference set, in two spaces: the named feature network (cosine similarity) and pixels (Pearson
  correlation of 64 px thumbnails, `baselines.thumbnails`). CheXGenBench only looks at the prompt's
  own film; a generator that copies *another* training patient would pass its test.
- Calibration. The same statistic for real held-out films (the evaluation split: patients the model
  never saw) against the same training films. A generator that copies sits above this distribution;
  one that draws new patients sits inside it.
- Memorisation rate: the fraction of generated films whose nearest-training similarity is higher
  than that of every real held-out film (the held-out maximum is the threshold). Zero for a
  generator whose films are no closer to the training set than new real patients; one for a
  generator that returns training films verbatim.
- Same patient (SynthCXR, where one patient has several studies): how often the nearest training
  film belongs to the prompt's own patient (any of its studies) and is the prompt's own study,
  against chance (the share of the training set that is the patient's).
- Re-identification (optional, `load_reid(PATH)`): the Siamese network's score, sigmoid(fc_end(
  |sigmoid(f(a)) - sigmoid(f(b))|)), of each generated film with its prompt's training film (the
  CheXGenBench number) and with the best-scoring training film; a film counts as re-identified
  above 0.5. The checkpoint is a torch state_dict of `SiameseReID` (ResNet-50 with a 128-d fc and
  fc_end, CheXGenBench's `SiameseNetwork(network='ResNet-50', in_channels=3, n_features=128)`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unixcxr.evaluate.baselines import thumbnails

PIXEL_SIDE = 64  # pixel similarity compares 64 x 64 thumbnails (Pearson correlation)
REID_SIZE, REID_FEATURES, REID_THRESHOLD = 224, 128, 0.5
BLOCK = 512  # query rows per similarity block
CONVENTIONS = {
    "features": "cosine similarity of the named feature network's vectors",
    "pixels": f"Pearson correlation of {PIXEL_SIDE} x {PIXEL_SIDE} grayscale thumbnails",
    "nearest": "per film, the highest similarity to any film of the training reference set",
    "calibration": "the same nearest-training statistic for real held-out films (the evaluation split)",
    "memorisation_rate": "fraction of generated films whose nearest-training similarity exceeds the largest "
                         "nearest-training similarity of any real held-out film",
    "same_patient": "fraction of generated films whose nearest training film is of the prompt's patient; chance = "
                    "mean share of the training reference set that is the prompt's patient",
    "reid": "Siamese patient verification (Packhaeuser et al. 2022, CheXGenBench's checkpoint format): "
            f"score = sigmoid(fc_end(|sigmoid(f(a)) - sigmoid(f(b))|)), {REID_SIZE} px, re-identified above "
            f"{REID_THRESHOLD}",
}


# ---------------------------------------------------------------- nearest neighbours
def _unit_rows(x: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


def nearest(query: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query row: (the highest cosine similarity to a reference row, that row's index)."""
    if len(query) == 0 or len(reference) == 0:
        raise ValueError(f"nearest neighbours need films on both sides, got {len(query)} and {len(reference)}")
    q, r = _unit_rows(query), _unit_rows(reference)
    sims, idx = [], []
    for start in range(0, len(q), BLOCK):
        best = (q[start : start + BLOCK] @ r.T).max(dim=1)
        sims.append(best.values)
        idx.append(best.indices)
    return torch.cat(sims).numpy(), torch.cat(idx).numpy()


def pixel_vectors(images: Sequence[np.ndarray], side: int = PIXEL_SIDE) -> np.ndarray:
    """Films -> zero-mean unit-norm thumbnails: their dot product is the Pearson correlation."""
    return thumbnails(images, side=side)


def summary(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "median": float(np.median(v)), "p05": float(np.quantile(v, 0.05)),
            "p95": float(np.quantile(v, 0.95)), "min": float(v.min()), "max": float(v.max())}


def memorisation_rate(generated: np.ndarray, heldout: np.ndarray) -> tuple[float, float]:
    """(fraction of generated nearest-training similarities above every held-out one, that threshold)."""
    threshold = float(np.max(heldout))
    return float(np.mean(np.asarray(generated) > threshold)), threshold


def space_report(generated: np.ndarray, heldout: np.ndarray, train: np.ndarray) -> dict:
    """Nearest-training statistics of generated and held-out films in one space."""
    gen_sim, gen_idx = nearest(generated, train)
    held_sim, _ = nearest(heldout, train)
    rate, threshold = memorisation_rate(gen_sim, held_sim)
    return {"generated": summary(gen_sim), "heldout": summary(held_sim),
            "median_gap": float(np.median(gen_sim) - np.median(held_sim)),
            "memorisation_rate": rate, "threshold": threshold,
            "per_film": {"similarity": gen_sim.tolist(), "nearest": gen_idx.tolist()}}


def same_patient(nearest_index: Sequence[int], prompt_rows: Sequence[int], train_subjects: Sequence[str]) -> dict:
    """How often a generated film's nearest training film is its prompt's patient / own study.

    prompt_rows: each generated film's prompt as a row of the training reference set."""
    subjects = np.asarray(train_subjects)
    counts = {s: c for s, c in zip(*np.unique(subjects, return_counts=True))}
    same = [subjects[n] == subjects[p] for n, p in zip(nearest_index, prompt_rows)]
    own = [int(n) == int(p) for n, p in zip(nearest_index, prompt_rows)]
    chance = [counts[subjects[p]] / len(subjects) for p in prompt_rows]
    multi = sum(counts[subjects[p]] > 1 for p in prompt_rows)
    return {"rate": float(np.mean(same)), "own_study_rate": float(np.mean(own)), "chance": float(np.mean(chance)),
            "prompts_with_other_studies": int(multi), "n": len(same)}


def closest_pairs(similarity: Sequence[float], nearest_index: Sequence[int],
                  k: int = 8) -> list[tuple[int, int, float]]:
    """The k (generated row, training row, similarity) pairs with the highest similarity."""
    order = np.argsort(-np.asarray(similarity), kind="stable")[:k]
    return [(int(i), int(nearest_index[i]), float(similarity[i])) for i in order]


# ---------------------------------------------------------------- re-identification (Siamese network)
class ReIDError(ValueError):
    """A re-identification checkpoint that is missing or not in the Siamese format."""


class SiameseReID(nn.Module):
    """The published CXR patient-verification network's layout: `model` = ResNet-50 whose fc maps to
    128 features (sigmoid), `fc_end` maps |difference| to one logit."""

    def __init__(self, n_features: int = REID_FEATURES):
        super().__init__()
        from torchvision.models import resnet50

        self.model = resnet50(weights=None)
        self.model.fc = nn.Linear(2048, n_features)
        self.fc_end = nn.Linear(n_features, 1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(images))

    def score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Re-identification probability of every pair: (len(a), len(b)) from embeddings."""
        return torch.sigmoid(self.fc_end((a[:, None] - b[None]).abs())[..., 0])

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.fc_end((self.embed(x1) - self.embed(x2)).abs())


def load_reid(path: str | Path) -> SiameseReID:
    """A SiameseReID from a local state_dict file; ReIDError naming the path and the fix otherwise."""
    path = Path(path)
    fix = ("pass --reid-checkpoint a torch state_dict of the Siamese patient-verification network (ResNet-50, "
           "keys model.* and fc_end.*, as CheXGenBench's ResNet-50 re-id checkpoint)")
    if not path.is_file():
        raise ReIDError(f"{path}: no such re-identification checkpoint; {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise ReIDError(f"{path}: not a readable torch checkpoint ({type(err).__name__}); {fix}") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ReIDError(f"{path}: holds a {type(state).__name__}, not a state_dict; {fix}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = SiameseReID(n_features=state["fc_end.weight"].shape[1] if "fc_end.weight" in state else REID_FEATURES)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        missing = sorted(set(model.state_dict()) - set(state))
        detail = f"{len(missing)} missing keys (e.g. {missing[0]})" if missing else "keys or shapes do not fit"
        raise ReIDError(f"{path}: not the Siamese re-identification format: {detail}; {fix}") from err
    return model.eval()


def reid_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Films in [0, 1] -> (N, 3, 224, 224), resized (not cropped) and not normalised, as CheXGenBench feeds it."""
    out = [F.interpolate(torch.as_tensor(np.asarray(im, dtype=np.float32))[None, None], size=(REID_SIZE, REID_SIZE),
                         mode="bilinear", align_corners=False, antialias=True)[0] for im in images]
    return torch.stack(out).clamp(0, 1).expand(-1, 3, -1, -1)


@torch.inference_mode()
def reid_embeddings(model: SiameseReID, images: Sequence[np.ndarray], batch_size: int = 16,
                    device: str = "cpu") -> torch.Tensor:
    model.to(device)
    chunks = [model.embed(reid_tensor(images[s : s + batch_size]).to(device)).float().cpu()
              for s in range(0, len(images), batch_size)]
    return torch.cat(chunks)


@torch.inference_mode()
def reid_report(model: SiameseReID, generated: torch.Tensor, heldout: torch.Tensor, train: torch.Tensor,
                prompt_rows: Sequence[int]) -> dict:
    """Re-identification scores from embeddings: each generated film with its prompt's training film
    (CheXGenBench's number) and with every training film (the best one); held-out films likewise."""
    def best(emb: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        values, index = [], []
        for s in range(0, len(emb), 64):
            top = model.score(emb[s : s + 64], train).max(dim=1)
            values.append(top.values)
            index.append(top.indices)
        return torch.cat(values).numpy(), torch.cat(index).numpy()

    own = model.score(generated, train[list(prompt_rows)]).diagonal().numpy()
    gen_best, gen_idx = best(generated)
    held_best, _ = best(heldout)
    rate, threshold = memorisation_rate(gen_best, held_best)
    return {"prompt_film": {**summary(own), "reidentified": float(np.mean(own > REID_THRESHOLD))},
            "best_training_film": {**summary(gen_best), "reidentified": float(np.mean(gen_best > REID_THRESHOLD))},
            "heldout_best_training_film": {**summary(held_best),
                                           "reidentified": float(np.mean(held_best > REID_THRESHOLD))},
            "memorisation_rate": rate, "threshold": threshold,
            "per_film": {"prompt_film": own.tolist(), "best": gen_best.tolist(), "nearest": gen_idx.tolist()}}


# ---------------------------------------------------------------- everything at once
def privacy_report(gen_features: np.ndarray, heldout_features: np.ndarray, train_features: np.ndarray,
                   gen_images: Sequence[np.ndarray], heldout_images: Sequence[np.ndarray],
                   train_images: Sequence[np.ndarray], prompt_rows: Sequence[int], train_subjects: Sequence[str],
                   reid: SiameseReID | None = None, device: str = "cpu") -> dict:
    """Nearest-training similarity in feature space and in pixels (and re-identification when a
    checkpoint is given) for generated films, calibrated on real held-out films."""
    result = {"n_generated": len(gen_features), "n_heldout": len(heldout_features), "n_train": len(train_features),
              "features": space_report(gen_features, heldout_features, train_features),
              "pixels": space_report(pixel_vectors(gen_images), pixel_vectors(heldout_images),
                                     pixel_vectors(train_images)),
              "conventions": CONVENTIONS}
    own = np.array([_unit_rows(gen_features[i : i + 1])[0].dot(_unit_rows(train_features[p : p + 1])[0]).item()
                    for i, p in enumerate(prompt_rows)])
    result["features"]["prompt_film"] = summary(own)
    for space in ("features", "pixels"):
        result[space]["same_patient"] = same_patient(result[space]["per_film"]["nearest"], prompt_rows, train_subjects)
    if reid is not None:
        embed = [reid_embeddings(reid, images, device=device) for images in (gen_images, heldout_images, train_images)]
        result["reid"] = reid_report(reid.cpu(), *embed, prompt_rows)  # the pair head on the CPU embeddings
        result["reid"]["same_patient"] = same_patient(result["reid"]["per_film"]["nearest"], prompt_rows,
                                                      train_subjects)
    return result
