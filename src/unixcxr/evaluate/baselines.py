"""Report-generation baselines that a trained model must clearly beat (measured in the same run):
the most common training report, and retrieval of the training report whose image is nearest in
raw pixels."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

THUMBNAIL = 32  # raw-pixel retrieval compares images at this side length


def most_common_report(train_reports: Sequence[str]) -> str:
    """The mode of the training reports (whitespace-normalised); ties go to the first seen."""
    if not train_reports:
        raise ValueError("no training reports")
    counts = Counter(" ".join(r.split()) for r in train_reports)
    return counts.most_common(1)[0][0]


def thumbnails(images: Sequence[np.ndarray], side: int = THUMBNAIL) -> np.ndarray:
    """Grey images (any size, values in [0, 1] or uint8) -> [N, side * side] float32, zero-mean unit-norm rows."""
    from PIL import Image

    rows = []
    for img in images:
        arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 3:
            arr = arr.mean(axis=-1)
        if arr.max() > 1.0:
            arr = arr / 255.0
        small = np.asarray(Image.fromarray(arr).resize((side, side), Image.BILINEAR), dtype=np.float32).ravel()
        small = small - small.mean()
        rows.append(small / (np.linalg.norm(small) + 1e-8))
    return np.stack(rows)


def nearest_neighbour_reports(train_images: Sequence[np.ndarray], train_reports: Sequence[str],
                              test_images: Sequence[np.ndarray]) -> list[str]:
    """For each test image, the report of the training image with the highest pixel correlation."""
    if len(train_images) != len(train_reports):
        raise ValueError(f"{len(train_images)} training images but {len(train_reports)} reports")
    train = thumbnails(train_images)
    test = thumbnails(test_images)
    nearest = (test @ train.T).argmax(axis=1)
    return [train_reports[i] for i in nearest]
