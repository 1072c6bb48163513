"""The 14 CheXpert observations: one source of truth for their names and order
(see docs/metrics.md). Label values: 1 positive, 0 negative, -1 uncertain, None blank."""

from __future__ import annotations

OBSERVATIONS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)

TOP5: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

POSITIVE, NEGATIVE, UNCERTAIN, BLANK = 1, 0, -1, None
