"""The model card (README.md) of a model folder, as the Hugging Face Hub and its users read one: YAML
front matter (licence, library, tags, and under `unixcxr` the facts the card is written from), then
what the model is, what it was trained on, how it scored (with the labeler and the feature network
that produced each number named) and how to load it with unixcxr, diffusers and transformers.

The facts live in the front matter, so a card can be rewritten with more of them later (the demo
adds its evaluation once it has one) without anything else to keep beside it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from unixcxr.model.config import UniXConfig

CARD = "README.md"
UNKNOWN_LICENSE = "unknown"  # the Hub's value for "not stated": the weights' terms follow their data
DEFAULT_LABELER = "unixcxr's rule-based CheXpert-style labeler (unixcxr.evaluate.labeler)"
TAGS = ["medical", "chest-x-ray", "radiology-report-generation", "text-to-image", "flow-matching",
        "mixture-of-transformers", "unixcxr"]
NOTICE = ("Research software: its reports and images are machine-generated and must not be used for "
          "diagnosis or treatment.")
FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)


def evaluation_facts(results: dict) -> dict:
    """The headline numbers of a `unixcxr evaluate` metrics record (evaluate/suite.py), each
    with what produced it. Missing parts are left out rather than guessed."""
    facts: dict = {"data": results.get("data"), "split": (results.get("settings") or {}).get("split"),
                   "studies": results.get("n_studies"),
                   "labeler": results.get("labeler") or DEFAULT_LABELER}
    block = ((results.get("reports") or {}).get("model") or {})
    f1 = (block.get("label_f1") or {}).get("uncertain_as_positive") or {}
    text = block.get("text") or {}
    facts["reports"] = {k: v for k, v in {
        "micro_f1_14": f1.get("micro_f1_14"), "macro_f1_14": f1.get("macro_f1_14"),
        "micro_f1_5": f1.get("micro_f1_5"), "bleu_4": text.get("bleu_4"), "rouge_l": text.get("rouge_l"),
    }.items() if v is not None}
    images = results.get("images") or {}
    if images:
        features = images.get("features") or {}
        facts["images"] = {k: v for k, v in {
            "feature_network": features.get("network") or features.get("name"),
            "features": features.get("name"), "fd": images.get("fd"),
            "kd": (images.get("kd") or {}).get("mean"), **(images.get("prdc") or {}),
            "n_real": images.get("n_real"), "n_generated": images.get("n_fake"),
        }.items() if v is not None}
    round_trip = ((results.get("round_trip") or {}).get("label_f1_vs_prompt") or {}).get("uncertain_as_positive")
    if round_trip:
        facts["round_trip_micro_f1_14"] = round_trip.get("micro_f1_14")
    return {k: v for k, v in facts.items() if v not in (None, {})}


def card_facts(config: UniXConfig, version: str, parameters: int, source: str, license: str | None = None,
               training: dict | None = None, evaluation: dict | None = None) -> dict:
    """Everything a card says, as plain data (the front matter's `unixcxr` block)."""
    facts = {"version": version, "name": config.name, "parameters": parameters, "source": source,
             "license": license or UNKNOWN_LICENSE}
    if training:
        facts["training"] = training
    if evaluation:
        facts["evaluation"] = evaluation
    return facts


def read_front_matter(folder: str | Path) -> dict:
    """The YAML front matter of a folder's README.md ({} without one): any Hub card's, ours included."""
    path = Path(folder) / CARD
    if not path.is_file():
        return {}
    match = FRONT_MATTER.match(path.read_text(encoding="utf-8"))
    try:
        meta = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def read_card_facts(folder: str | Path) -> dict:
    """The facts of our card in a folder ({} when it has none, or none of ours)."""
    facts = read_front_matter(folder).get("unixcxr")
    return dict(facts) if isinstance(facts, dict) else {}


def _number(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _training_section(training: dict | None, source: str) -> list[str]:
    if not training:
        return [f"Not recorded with this folder ({source})."]
    lines = [f"Recipe `{training.get('recipe', '?')}` (preset `{training.get('preset', '?')}`) on "
             f"`{training.get('data', '?')}` ({training.get('data_kind', 'data')}).", ""]
    splits = training.get("studies") or {}
    if splits:
        lines += ["Samples per split: " + ", ".join(f"{k} {v}" for k, v in splits.items()) + ".", ""]
    stages = training.get("stages") or {}
    if stages:
        lines += ["| stage | steps |", "|---|---|", *(f"| {k} | {v} |" for k, v in stages.items()), ""]
    return lines


def _evaluation_section(evaluation: dict | None, folder_hint: str) -> list[str]:
    if not evaluation:
        return ["No evaluation is recorded with this folder. `unixcxr evaluate --model "
                f"{folder_hint} --data DATA --out EVAL` measures one (label F1, BLEU, ROUGE-L, FD, KD, PRDC)."]
    lines = [f"On `{evaluation.get('data', '?')}`, split {evaluation.get('split', '?')}, "
             f"{evaluation.get('studies', '?')} studies.", ""]
    reports = evaluation.get("reports") or {}
    if reports:
        lines += [f"Reports, labels by {evaluation.get('labeler', DEFAULT_LABELER)} (uncertain as positive):", "",
                  "| " + " | ".join(reports) + " |", "|---" * len(reports) + "|",
                  "| " + " | ".join(_number(v) for v in reports.values()) + " |", ""]
    images = dict(evaluation.get("images") or {})
    if images:
        network = images.pop("feature_network", None)
        features = images.pop("features", None)
        lines += [f"Generated images vs real ones, features of {network or '?'} (`{features or '?'}`):", "",
                  "| " + " | ".join(images) + " |", "|---" * len(images) + "|",
                  "| " + " | ".join(_number(v) for v in images.values()) + " |", ""]
    if "round_trip_micro_f1_14" in evaluation:
        lines += [f"Round trip (report -> image -> report, read by this model): Micro-F1-14 "
                  f"{_number(evaluation['round_trip_micro_f1_14'])}.", ""]
    return lines


def render_card(config: UniXConfig, facts: dict, folder: str = "MODEL_FOLDER") -> str:
    """README.md text of a model folder (`folder`: the path its examples load) from its config and facts."""
    meta = {"license": facts.get("license", UNKNOWN_LICENSE), "library_name": "unixcxr",
            "pipeline_tag": "any-to-any", "tags": TAGS, "unixcxr": facts}
    c, name = config, facts.get("name", config.name)
    millions = facts.get("parameters", 0) / 1e6
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
        f"# {name}: a UniX chest X-ray model", "",
        "One Mixture-of-Transformers that writes radiology reports from chest X-rays (autoregressive text) "
        "and draws chest X-rays from reports (latent flow matching).", "", NOTICE, "",
        "## Model", "",
        f"- {millions:.1f} M parameters; decoder of {c.llm.num_layers} layers, width {c.llm.hidden_size}, "
        f"vocabulary {c.llm.vocab_size}, two experts (understanding, generation)",
        f"- vision encoder `{c.vision.encoder}` at {c.vision.image_size} px; VAE with {c.vae.latent_channels} "
        f"latent channels, {c.vae.downsample}x downsampling; images drawn at {c.gen.image_size} px by default",
        f"- conventions: sampler preset `{c.conventions.settings}`, guidance rule `{c.conventions.guidance}`, "
        f"preprocessing `{c.conventions.preprocess}`, reports up to {c.conventions.max_new_tokens} tokens",
        f"- written by unixcxr {facts.get('version', '?')}; source: {facts.get('source', '?')}", "",
        "## Training", "", *_training_section(facts.get("training"), facts.get("source", "?")), "",
        "## Evaluation", "", *_evaluation_section(facts.get("evaluation"), folder), "",
        "## Use", "", "```python", "import torch",
        "from unixcxr.pipeline import UniXPipeline", "",
        f'pipe = UniXPipeline.from_pretrained("{folder}", torch_dtype=torch.float32)',
        'print(pipe.report("cxr.png").reports[0])',
        'out = pipe.generate("FINDINGS: Small left pleural effusion.", num_inference_steps=49, guidance_scale=2.0,',
        "                    generator=torch.Generator().manual_seed(0))",
        'out.images[0].save("drawn.png")', "",
        "# the parts, read by the field's own libraries",
        "from diffusers import AutoencoderKL",
        "from transformers import AutoTokenizer", "",
        f'vae = AutoencoderKL.from_pretrained("{folder}", subfolder="vae")  # z = scaling_factor * (z_raw - '
        "shift_factor)",
        f'tokenizer = AutoTokenizer.from_pretrained("{folder}")', "```", "",
        "## Licence", "",
        f"`{meta['license']}`. The weights carry the terms of the data they were trained on"
        + (" (not stated for this folder)." if meta["license"] == UNKNOWN_LICENSE else "."), "",
    ]
    return "\n".join(lines)
