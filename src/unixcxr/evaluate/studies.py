"""The studies an evaluation works on: one sample per study, its reference report and generation
prompt, a file per image (copied out of a shard when needed), and the films generated from the
prompts (written atomically; a rerun keeps what exists, and refuses to mix films drawn with other
sampler settings into the folder)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tqdm import tqdm

from unixcxr.data.sources import Sample
from unixcxr.files import atomic_output

PNG_MAGIC = b"\x89PNG"
GENERATED = "generated"  # the films drawn from the split's prompts
SAMPLING_FILE = "sampling.json"  # beside the films: the settings they were drawn with


def first_per_study(samples: list[Sample], limit: int | None = None) -> list[Sample]:
    """One sample per study (its first image), sorted by study id; the first `limit` of them."""
    first: dict[str, Sample] = {}
    for sample in samples:
        first.setdefault(sample.study_id, sample)
    studies = sorted(first.values(), key=lambda s: s.study_id)
    return studies[:limit] if limit else studies


def reference_report(sample: Sample) -> str:
    """The cleaned-report form the model is trained and scored on."""
    return sample.report


def generation_prompt(sample: Sample) -> str:
    """Generation is prompted with the findings text, as in UniX's evaluation."""
    return sample.prompt


def image_files(samples: list[Sample], folder: Path) -> list[Path]:
    """A file per sample's image: its own file, or its bytes copied out of a shard into `folder`."""
    paths = []
    for sample in samples:
        ref = sample.image
        if ref.offset is None:
            paths.append(ref.path)
            continue
        with open(ref.path, "rb") as f:
            f.seek(ref.offset)
            data = f.read(ref.length)
        path = folder / f"{sample.id}{'.png' if data.startswith(PNG_MAGIC) else '.jpg'}"
        if not path.is_file():
            with atomic_output(path) as tmp:
                tmp.write_bytes(data)
        paths.append(path)
    return paths


def generate_images(pipe, studies: list[Sample], out: Path, s,
                    folder: str = GENERATED) -> list[Path]:
    """<folder>/<study>.png per study; existing files are kept, so rerunning resumes (with the same
    sampler settings only). s: the benchmark's settings (batch_size, seed, image_size and the sampler's)."""
    folder = out / folder
    folder.mkdir(parents=True, exist_ok=True)
    check_sampling(pipe, folder, s)
    record_sampling(pipe, folder, s)
    todo = [r for r in studies if not (folder / f"{r.study_id}.png").is_file()]
    for start in tqdm(range(0, len(todo), s.batch_size), desc="images", unit="batch", disable=not todo):
        chunk = todo[start:start + s.batch_size]
        seeds = [s.seed + studies.index(r) for r in chunk]  # an image's seed does not depend on resumption
        images = pipe.generate([generation_prompt(r) for r in chunk], steps=s.steps, settings=s.sampler,
                               cfg_text=s.cfg_text, cfg_img=s.cfg_img, cfg_interval=s.cfg_interval,
                               shift=s.shift, size=s.image_size, seed=seeds, batch_size=s.batch_size)
        for record, image in zip(chunk, images):
            with atomic_output(folder / f"{record.study_id}.png") as tmp:
                image.save(tmp, format="PNG")
    return [folder / f"{r.study_id}.png" for r in studies]


def sampling_of(pipe, s) -> dict:
    """The sampler's resolved values (the preset's, with the settings' replacements), size and seed."""
    sampler = pipe.sampler_settings(s.sampler, steps=s.steps, cfg_text=s.cfg_text, cfg_img=s.cfg_img,
                                    cfg_interval=s.cfg_interval, shift=s.shift)
    values = {**dataclasses.asdict(sampler), "image_size": s.image_size, "seed": s.seed}
    return json.loads(json.dumps(values))  # as read back from the record (tuples become lists)


def check_sampling(pipe, folder: Path, s) -> None:
    """Refuse to resume a folder of films drawn with other sampler settings than `s`'s (a folder
    from before the record is resumed as it is)."""
    record = folder / SAMPLING_FILE
    if record.is_file():
        drawn, wanted = json.loads(record.read_text()), sampling_of(pipe, s)
        changed = [f"{key} {drawn.get(key)} -> {wanted[key]}" for key in wanted if drawn.get(key) != wanted[key]]
        if changed:
            raise ValueError(f"{folder} holds films drawn with other sampler settings ({', '.join(changed)}); "
                             "give another --out, or delete that folder to draw them again")


def record_sampling(pipe, folder: Path, s) -> None:
    """Write the sampler settings beside a folder about to receive its first films."""
    if not (folder / SAMPLING_FILE).is_file() and not any(folder.glob("*.png")):
        with atomic_output(folder / SAMPLING_FILE) as tmp:
            tmp.write_text(json.dumps(sampling_of(pipe, s), indent=1) + "\n")
