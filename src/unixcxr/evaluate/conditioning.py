"""Does the generator listen to the text? A conditioning check any working text-to-image path passes.

On the `effusion-side` SynthCXR variant every study shows a large left, a large right or no pleural
effusion and nothing else, so the prompt alone decides a large, unmistakable feature. A side reader
(multinomial logistic regression on 16 x 16 average-pooled pixels) is fitted on the real training
films, whose side the data set's truth file records, and must read the real test films almost
perfectly; it then reads films the model draws from the test studies' own prompts. A generator that
ignores the text scores about 1/3 (the share of its most common guess); one that draws what it is
told scores near the reader's accuracy on real films."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unixcxr.data.images import letterbox, to_uint8
from unixcxr.data.sources import DataSource, Sample

SIDES = ("none", "left", "right")
POOL = 16  # films are average-pooled to POOL x POOL before the regression
TRUTH_FILE = "synthcxr-truth.jsonl"


def truth_sides(data_dir: str | Path) -> dict[str, str]:
    """dicom id -> "none" / "left" / "right" for a SynthCXR folder (its truth file)."""
    path = Path(data_dir) / TRUTH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no SynthCXR truth file; the conditioning check needs "
                                "`unixcxr synth DIR --variant effusion-side`")
    sides = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        effusions = [f["side"] for f in row["findings"] if f["observation"] == "Pleural Effusion"]
        others = [f["observation"] for f in row["findings"] if f["observation"] != "Pleural Effusion"]
        if others or len(effusions) > 1 or (effusions and effusions[0] not in SIDES):
            raise ValueError(f"{path}: study {row['study_id']} shows {others or effusions}; the conditioning check "
                             "needs the effusion-side variant")
        sides[row["dicom_id"]] = effusions[0] if effusions else "none"
    return sides


def pooled(films: np.ndarray) -> torch.Tensor:
    """uint8 [N, S, S] (or float in [0, 1]) -> [N, POOL * POOL] features."""
    x = torch.as_tensor(np.asarray(films, dtype=np.float32))
    x = x / 255.0 if x.max() > 1.0 else x
    return F.adaptive_avg_pool2d(x[:, None], POOL).flatten(1)


@dataclass
class SideReader:
    """Multinomial logistic regression on pooled pixels (standardised), fitted by L-BFGS."""

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, films: np.ndarray, sides: list[str], l2: float = 1e-3, steps: int = 200) -> SideReader:
        x = pooled(films)
        mean, std = x.mean(0), x.std(0) + 1e-6
        x = (x - mean) / std
        y = torch.tensor([SIDES.index(s) for s in sides])
        weight = torch.zeros(x.shape[1], len(SIDES), requires_grad=True)
        bias = torch.zeros(len(SIDES), requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ weight + bias, y) + l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return cls(weight.detach(), bias.detach(), mean, std)

    def predict(self, films: np.ndarray) -> list[str]:
        logits = ((pooled(films) - self.mean) / self.std) @ self.weight + self.bias
        return [SIDES[i] for i in logits.argmax(1).tolist()]


def films_of(samples: list[Sample], size: int) -> np.ndarray:
    return np.stack([to_uint8(letterbox(s.image.read(min_size=size), size)) for s in samples])


def accuracy(predicted: list[str], wanted: list[str]) -> dict:
    """Share correct overall and per wanted side, and the confusion counts (wanted -> predicted)."""
    confusion = {w: {p: 0 for p in SIDES} for w in SIDES}
    for p, w in zip(predicted, wanted):
        confusion[w][p] += 1
    per_side = {w: (confusion[w][w] / sum(confusion[w].values()) if sum(confusion[w].values()) else None)
                for w in SIDES}
    return {"accuracy": sum(p == w for p, w in zip(predicted, wanted)) / max(1, len(wanted)),
            "per_side": per_side, "confusion": confusion, "n": len(wanted)}


def conditioning_check(pipe, data_dir: str | Path, limit: int | None = None, steps: int = 25, seed: int = 0,
                       settings: str | None = None, batch_size: int = 8, size: int | None = None) -> dict:
    """Fit the side reader on the real training films, score it on the real test films, then score
    films the model draws from the test studies' prompts (one seed per study) at `size` pixels (the
    model's generation size by default; give the resolution it was trained at)."""
    sides = truth_sides(data_dir)
    source = DataSource(data_dir)
    size = pipe.latent_grid(size) * pipe.config.vae.downsample
    train, test = source.samples("train"), source.samples("test")[:limit]
    reader = SideReader.fit(films_of(train, size), [sides[s.image_id] for s in train])
    wanted = [sides[s.image_id] for s in test]
    real = accuracy(reader.predict(films_of(test, size)), wanted)
    images = pipe.generate([s.prompt for s in test], steps=steps, seed=[seed + i for i in range(len(test))],
                           settings=settings, batch_size=batch_size, size=size)
    drawn = np.stack([np.asarray(img.convert("L")) for img in images])
    return {"reader_on_real": real, "reader_on_generated": accuracy(reader.predict(drawn), wanted),
            "size": size, "steps": steps, "settings": settings}
