"""Does it listen? One noise seed, contrasting reports, one film each: if the generator uses the text the
films differ where the reports do, and the reader finds in each what its report asked for. The same
probe on the untrained twin shows what text use looks like when there is none."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unixcxr.files import atomic_output
from unixcxr.labeler import label_reports

PROBES = (
    ("normal", "The lungs are clear. No pleural effusion or pneumothorax. The heart size is normal."),
    ("cardiomegaly", "The heart is severely enlarged. No pleural effusion or pneumothorax."),
    ("large effusion", "Large right pleural effusion. The heart size is normal."),
    ("pneumothorax", "Large left pneumothorax. No pleural effusion."),
    ("consolidation", "Dense consolidation in the right lower lobe. No pleural effusion."),
    ("support devices", "An endotracheal tube and a right internal jugular central venous catheter are in place."),
)


def positives(labels: dict) -> list[str]:
    """The observations a label row calls present or uncertain."""
    return [name for name, value in labels.items() if value in (1, -1)]


def listen_probe(pipe, reader, out: Path, seed: int = 0, steps: int | None = None, size: int | None = None,
                 settings: str | None = None) -> dict:
    """Draw every PROBES report from one seed with `pipe`, read each film with `reader` (a pipeline that
    writes reports) and save the films as OUT/<i>.png. Returns per probe the labels asked for and read,
    and the text sensitivity: the mean absolute difference (0-255) of each film from the probes' mean."""
    out.mkdir(parents=True, exist_ok=True)
    texts = [text for _, text in PROBES]
    images = pipe.generate(texts, steps=steps, seed=[seed] * len(texts), size=size, settings=settings)
    films = np.stack([np.asarray(img.convert("L"), dtype=np.float32) for img in images])
    read = reader.report(images)
    asked, found = label_reports(texts), label_reports(read)
    rows = []
    for i, ((name, text), image) in enumerate(zip(PROBES, images)):
        with atomic_output(out / f"{i}.png") as tmp:
            image.save(tmp, format="PNG")
        rows.append({"probe": name, "text": text, "image": f"{i}.png", "asked": positives(asked[i]),
                     "read": positives(found[i]), "report": read[i]})
    spread = float(np.abs(films - films.mean(0)).mean())
    hits = sum(bool(set(r["asked"]) & set(r["read"])) for r in rows if r["asked"])
    return {"seed": seed, "rows": rows, "text_sensitivity": spread, "asked_found": hits,
            "asked": sum(bool(r["asked"]) for r in rows)}
