"""Image-generation metrics on feature vectors (the CheXGenBench protocol; docs/metrics.md).

- FD: Frechet distance between Gaussians fitted to real and generated features. The matrix
  square root term Tr((S1 S2)^1/2) is computed without scipy's sqrtm, exactly and stably:
  with more images than dimensions from symmetric eigendecompositions (eigenvalues of
  S1^1/2 S2 S1^1/2); with fewer - every per-pathology FD - as the nuclear norm of the small
  matrix A B^T / sqrt((n1 - 1)(n2 - 1)) of centred features, whose singular values are the
  square roots of the eigenvalues of S1 S2.
- KD: unbiased MMD^2 with the polynomial kernel (x.y / d + 1)^3, averaged over 100 random subsets
  of size min(n_real, n_fake, 1000), drawn as clean-fid's kernel_distance draws them (numpy's
  legacy generator, generated subset first): with the same seed the value equals clean-fid's.
- Precision / recall / density / coverage with k = 5 (Naeem et al., 2020, the `prdc` package): a
  point's radius is the distance to its k-th nearest neighbour in its own set (itself excluded).
The tests check FD against pytorch-fid and clean-fid, KD against clean-fid and PRDC against prdc;
`CONVENTIONS` names them in every result.
- Per-pathology FD: real images whose label is positive vs the images generated from their prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from unixcxr.labels import OBSERVATIONS, POSITIVE

KD_SUBSETS = 100
KD_DEGREE = 3
KD_MAX_SUBSET_SIZE = 1000  # clean-fid's and torch-fidelity's cap; the estimate stays unbiased, only its spread grows
KD_BATCH_ELEMENTS = 2**23  # kernel entries per batched step (3 kernels x 64 MiB in float64)
PRDC_K = 5
DISTANCE_BLOCK = 1024  # rows of a distance matrix computed at once (memory: block x n x 8 bytes)
MIN_IMAGES_PER_PATHOLOGY = 2  # a covariance needs two points; few images make FD very biased (n is reported)
CONVENTIONS = {
    "fd": "Frechet distance of Gaussians fitted to the features (unbiased covariances), as pytorch-fid's "
          "calculate_frechet_distance and clean-fid's frechet_distance",
    "kd": f"clean-fid's kernel_distance (KID): unbiased MMD^2, kernel (x.y / dim + 1)^{KD_DEGREE}, mean over random "
          f"subsets of min(n_real, n_fake, {KD_MAX_SUBSET_SIZE}) images; std over the subsets",
    "prdc": "prdc's compute_prdc (Naeem et al. 2020): k-th nearest-neighbour balls, strict inequality",
    "per_pathology_fd": "fd on the real images labelled positive and the images generated from their prompts",
}


# ---------------------------------------------------------------- Frechet distance
def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least 2 feature vectors of shape (N, D), got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2)."""
    eigvals, eigvecs = np.linalg.eigh(sigma1)
    sqrt_sigma1 = (eigvecs * np.sqrt(np.clip(eigvals, 0, None))) @ eigvecs.T
    middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    trace_sqrt_product = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product)


def fd(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance between two feature sets (choosing the cheaper exact route)."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    if min(len(real), len(fake)) > real.shape[1]:
        return frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))
    if min(len(real), len(fake)) < 2:
        raise ValueError(f"FD needs at least 2 images per set, got {len(real)} and {len(fake)}")
    a, b = real - real.mean(0), fake - fake.mean(0)  # (n1, D), (n2, D)
    n1, n2 = len(a) - 1, len(b) - 1
    trace_sqrt_product = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    diff = real.mean(0) - fake.mean(0)
    return float(diff @ diff + (a * a).sum() / n1 + (b * b).sum() / n2 - 2 * trace_sqrt_product)


# ---------------------------------------------------------------- kernel distance
def kernel_distance(real: np.ndarray, fake: np.ndarray, subsets: int = KD_SUBSETS, subset_size: int | None = None,
                    seed: int = 0) -> dict[str, float]:
    """Unbiased polynomial-kernel MMD^2: mean and std over random subsets.

    Subsets are drawn like clean-fid's kernel_distance(real, fake) after np.random.seed(seed) (a
    generated subset, then a real one, from numpy's legacy generator), so the mean is clean-fid's
    number on the same features - but from a private generator, leaving numpy's global state alone.
    """
    real, fake = _tensor(real), _tensor(fake)
    m = subset_size or min(len(real), len(fake), KD_MAX_SUBSET_SIZE)
    if m < 2 or m > min(len(real), len(fake)):
        raise ValueError(f"KD subset size {m} must be in [2, min(n_real, n_fake) = {min(len(real), len(fake))}]")
    dim, rng = real.shape[1], np.random.RandomState(seed)
    picks = []
    for _ in range(subsets):
        fake_pick = rng.choice(len(fake), m, replace=False)
        picks.append((rng.choice(len(real), m, replace=False), fake_pick))
    values = []
    per_batch = max(1, KD_BATCH_ELEMENTS // (m * m))  # subsets computed together, as one batched matmul
    for start in range(0, subsets, per_batch):
        chunk = picks[start : start + per_batch]
        x = real[torch.from_numpy(np.stack([r for r, _ in chunk]))]  # (S, m, D)
        y = fake[torch.from_numpy(np.stack([f for _, f in chunk]))]
        k_xx = (x @ x.transpose(1, 2) / dim + 1) ** KD_DEGREE  # (S, m, m)
        k_yy = (y @ y.transpose(1, 2) / dim + 1) ** KD_DEGREE
        k_xy = (x @ y.transpose(1, 2) / dim + 1) ** KD_DEGREE
        diagonals = k_xx.diagonal(dim1=1, dim2=2).sum(1) + k_yy.diagonal(dim1=1, dim2=2).sum(1)
        within = (k_xx.sum((1, 2)) + k_yy.sum((1, 2)) - diagonals) / (m * (m - 1))
        values += (within - 2 * k_xy.sum((1, 2)) / m**2).tolist()
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "subsets": subsets, "subset_size": m}


# ---------------------------------------------------------------- precision / recall / density / coverage
def _tensor(features: np.ndarray) -> torch.Tensor:
    """float64 torch tensor: torch's thread pool, not a second BLAS pool fighting it for the cores."""
    return torch.as_tensor(np.asarray(features), dtype=torch.float64)


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (len(a), len(b))."""
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return squared.clamp_min(0).sqrt()


def _kth_neighbour_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest neighbour in x (itself, at distance 0, excluded)."""
    blocks = [_distances(x[s : s + DISTANCE_BLOCK], x).kthvalue(k + 1, dim=1).values
              for s in range(0, len(x), DISTANCE_BLOCK)]
    return torch.cat(blocks)


def prdc(real: np.ndarray, fake: np.ndarray, k: int = PRDC_K) -> dict[str, float]:
    """Precision, recall, density and coverage of fake features against real ones."""
    real, fake = _tensor(real), _tensor(fake)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"PRDC with k={k} needs more than {k} real and fake images, got {len(real)} and {len(fake)}")
    real_radii, fake_radii = _kth_neighbour_radii(real, k), _kth_neighbour_radii(fake, k)
    inside_real_balls = torch.zeros(len(fake), dtype=torch.float64)  # per fake: how many real balls hold it
    recalled = covered = 0
    for start in range(0, len(real), DISTANCE_BLOCK):
        block = _distances(real[start : start + DISTANCE_BLOCK], fake)  # (b, F)
        radii = real_radii[start : start + DISTANCE_BLOCK, None]  # (b, 1)
        inside_real_balls += (block < radii).sum(dim=0)
        recalled += int((block < fake_radii[None, :]).any(dim=1).sum())
        covered += int((block.min(dim=1).values < radii[:, 0]).sum())
    return {
        "precision": float((inside_real_balls > 0).double().mean()),
        "recall": recalled / len(real),
        "density": float(inside_real_balls.mean() / k),
        "coverage": covered / len(real),
        "k": k,
    }


# ---------------------------------------------------------------- per pathology and everything at once
def per_pathology_fd(real: np.ndarray, real_ids: Sequence[str], fake: np.ndarray, fake_ids: Sequence[str],
                     labels: dict[str, dict]) -> dict[str, dict]:
    """FD per observation: real images labelled positive vs the fakes generated from their prompts.

    `labels` maps a real image id to its label dict; a fake belongs to the real image of the same id.
    """
    fake_rows: dict[str, list[int]] = {}
    for row, key in enumerate(fake_ids):
        fake_rows.setdefault(key, []).append(row)
    results = {}
    for name in OBSERVATIONS:
        real_sel = [i for i, key in enumerate(real_ids) if labels.get(key, {}).get(name) == POSITIVE]
        fake_sel = [j for i in real_sel for j in fake_rows.get(real_ids[i], [])]
        entry = {"n_real": len(real_sel), "n_fake": len(fake_sel), "fd": None}
        if min(len(real_sel), len(fake_sel)) >= MIN_IMAGES_PER_PATHOLOGY:
            entry["fd"] = fd(real[real_sel], fake[fake_sel])
        results[name] = entry
    return results


def image_metrics(real: np.ndarray, fake: np.ndarray, kd_subsets: int = KD_SUBSETS, k: int = PRDC_K,
                  seed: int = 0) -> dict:
    """FD, KD and PRDC of one real and one generated feature set."""
    return {
        "n_real": len(real),
        "n_fake": len(fake),
        "fd": fd(real, fake),
        "kd": kernel_distance(real, fake, subsets=kd_subsets, seed=seed),
        "prdc": prdc(real, fake, k=k),
        "conventions": CONVENTIONS,
    }


def markdown_table(results: dict) -> str:
    """Headline numbers (and per-pathology FD when present) as Markdown."""
    p, kd, spec = results["prdc"], results["kd"], results["features"]
    lines = [
        "| features | n real | n fake | FD | KD | precision | recall | density | coverage |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {spec['name']} | {results['n_real']} | {results['n_fake']} | {results['fd']:.3f} | {kd['mean']:.4f} | "
        f"{p['precision']:.3f} | {p['recall']:.3f} | {p['density']:.3f} | {p['coverage']:.3f} |",
    ]
    if results.get("per_pathology_fd"):
        lines += ["", "| observation | n real | n fake | FD |", "|---|---|---|---|"]
        for name, entry in results["per_pathology_fd"].items():
            value = "-" if entry["fd"] is None else f"{entry['fd']:.3f}"
            lines.append(f"| {name} | {entry['n_real']} | {entry['n_fake']} | {value} |")
    lines += ["", f"Features: {spec['network']}; weights: {spec['source']}; {spec['image_size']} px. "
              "Numbers from different feature networks are not comparable."]
    return "\n".join(lines) + "\n"
