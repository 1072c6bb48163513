"""A random-weight model folder to try the CLI, the web app and the HTTP API without any trained
weights (and to test and benchmark them): a tiny tokenizer trained on a few report sentences, a
UniX of a named preset with random weights, and a random VAE. Its reports and images are noise;
its wiring is the real one."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch

from unixcxr.model.config import preset
from unixcxr.model.io import save_model_folder
from unixcxr.model.tokenizer import ReportTokenizer
from unixcxr.model.unix import UniX
from unixcxr.model.vae import LatentVAE

DEMO_VOCAB_SIZE = 320  # the byte alphabet, the 5 special tokens and some merges
WEIGHT_STD = 0.15  # large enough that every path (llm2vae included) carries signal
DEMO_REPORTS = (
    "FINDINGS: The lungs are clear. There is no pleural effusion or pneumothorax. "
    "The cardiomediastinal silhouette is normal. IMPRESSION: No acute cardiopulmonary process.",
    "FINDINGS: Small left pleural effusion with adjacent atelectasis. Mild cardiomegaly. "
    "IMPRESSION: Small left effusion.",
    "FINDINGS: Right lower lobe opacity concerning for pneumonia. No pneumothorax. "
    "IMPRESSION: Right lower lobe pneumonia.",
    "As an imaging expert, review this X-ray and share the FINDINGS and IMPRESSION.",
)


def random_model(preset_name: str, vocab_size: int, seed: int = 0) -> UniX:
    """A UniX of the preset whose decoder weights are N(0, WEIGHT_STD) and whose experts differ."""
    torch.manual_seed(seed)
    config = dataclasses.replace(preset(preset_name))
    config.llm = dataclasses.replace(config.llm, vocab_size=vocab_size)
    model = UniX(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("vision"):
                p.normal_(0, WEIGHT_STD)
        model.init_gen_from_und()
        for layer in model.layers:
            for p in layer.gen.parameters():
                p.add_(torch.randn_like(p) * WEIGHT_STD / 3)
    return model


def write_demo_model_folder(folder: str | Path, preset_name: str = "tiny", seed: int = 0) -> Path:
    """Write a complete model folder (config, weights, VAE, tokenizer) with random weights."""
    tokenizer = ReportTokenizer.train(DEMO_REPORTS, vocab_size=DEMO_VOCAB_SIZE, min_frequency=1)
    model = random_model(preset_name, tokenizer.vocab_size, seed)
    model.config.tokens = dataclasses.replace(model.config.tokens, **tokenizer.special.as_dict())
    vae = LatentVAE(model.config.vae)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_file = tokenizer.save(Path(tmp) / "tokenizer.json")
        return save_model_folder(folder, model, vae, tokenizer_file,
                                 source="random weights (unixcxr.serve.demo_model): noise, for trying the tools")
