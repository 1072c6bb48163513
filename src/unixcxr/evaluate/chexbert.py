"""The CheXbert report labeler (Smit et al., 2020) from user-supplied weights.

Architecture as published: a BERT-base encoder (Hugging Face `transformers`) whose [CLS] state
feeds 14 linear heads - 13 with 4 classes (blank, positive, negative, uncertain) and No Finding
with 2 (blank, positive). It loads the released checkpoint layout: a dict whose
`model_state_dict` holds `module.bert.*` and `module.linear_heads.N.*` (saved from DataParallel).

Reports are cleaned as in CheXbert (strip, newlines and runs of spaces to one space) and read up
to 512 *tokens* ([CLS] + 510 word pieces + [SEP]), as CheXbert itself does. The released UniX
evaluation code cut reports at 512 *characters* instead, which silently drops the end of long
reports (often the impression); that bug is not reproduced here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from unixcxr.labels import BLANK, NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN

MAX_TOKENS = 512  # BERT's position limit: [CLS] + 510 word pieces + [SEP]
HEAD_CLASSES = 4  # blank, positive, negative, uncertain
NO_FINDING_CLASSES = 2  # blank, positive
CLASS_TO_LABEL = (BLANK, POSITIVE, NEGATIVE, UNCERTAIN)  # head output index -> our label value
DROPOUT = 0.1
_STALE_KEYS = ("bert.embeddings.position_ids",)  # a buffer older transformers versions saved
_SPACES = re.compile(r"\s+")


class CheXbertError(RuntimeError):
    """Missing or mismatched CheXbert files; the message names the file and the fix."""


class CheXbert(nn.Module):
    """BERT encoder + one linear head per observation on the [CLS] hidden state."""

    def __init__(self, config):
        super().__init__()
        from transformers import BertModel

        self.bert = BertModel(config)
        self.dropout = nn.Dropout(DROPOUT)
        hidden = config.hidden_size
        heads = [nn.Linear(hidden, HEAD_CLASSES) for _ in OBSERVATIONS[:-1]]
        self.linear_heads = nn.ModuleList([*heads, nn.Linear(hidden, NO_FINDING_CLASSES)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.bert(input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        cls = self.dropout(hidden[:, 0])  # (B, H)
        return [head(cls) for head in self.linear_heads]  # 13 x (B, 4) and (B, 2)


def _require_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError as err:
        raise CheXbertError(
            "the CheXbert backend needs the `transformers` package: pip install 'unixcxr[eval]' "
            "(or pip install transformers)"
        ) from err


def load_chexbert(checkpoint: str | Path, bert_dir: str | Path) -> tuple[CheXbert, object]:
    """(model in eval mode, tokenizer) from a CheXbert checkpoint and a bert-base-uncased folder."""
    _require_transformers()
    from transformers import BertConfig, BertTokenizerFast

    checkpoint, bert_dir = Path(checkpoint), Path(bert_dir)
    if not checkpoint.is_file():
        raise CheXbertError(f"CheXbert checkpoint not found: {checkpoint} (pass the released chexbert.pth "
                            f"with --chexbert)")
    if not bert_dir.is_dir():
        raise CheXbertError(f"BERT folder not found: {bert_dir} (pass a bert-base-uncased folder with --bert)")
    missing = [name for name in ("config.json", "vocab.txt") if not (bert_dir / name).is_file()]
    if missing:
        raise CheXbertError(f"{bert_dir}: missing {', '.join(missing)}; the --bert folder must hold the "
                            f"bert-base-uncased config.json and vocab.txt")
    model = CheXbert(BertConfig.from_pretrained(bert_dir))
    model.load_state_dict(_released_state_dict(checkpoint, model))
    tokenizer = BertTokenizerFast.from_pretrained(bert_dir)
    return model.eval(), tokenizer


def _released_state_dict(checkpoint: Path, model: CheXbert) -> dict[str, torch.Tensor]:
    """The checkpoint's weights renamed to our module names, checked key by key."""
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheXbertError(f"{checkpoint}: cannot read it as a torch checkpoint ({err})") from err
    state = saved.get("model_state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise CheXbertError(f"{checkpoint}: expected a dict with 'model_state_dict' (the released CheXbert layout)")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    state = {key: value for key, value in state.items() if key not in _STALE_KEYS}
    expected = set(model.state_dict()) - set(_STALE_KEYS)
    absent, unknown = sorted(expected - set(state)), sorted(set(state) - expected)
    if absent or unknown:
        raise CheXbertError(
            f"{checkpoint}: weights do not match the CheXbert architecture for this BERT config "
            f"(missing {absent[:3]}{'...' if len(absent) > 3 else ''}, "
            f"unexpected {unknown[:3]}{'...' if len(unknown) > 3 else ''}); check --bert is bert-base-uncased"
        )
    buffers = {k: v for k, v in model.state_dict().items() if k in _STALE_KEYS}
    return {**state, **buffers}


def clean_for_chexbert(text: str) -> str:
    """CheXbert's own report cleaning: one line, single spaces."""
    return _SPACES.sub(" ", text.strip())


class CheXbertLabeler:
    """Label reports with a CheXbert checkpoint: `labeler.label_reports(texts)`."""

    def __init__(self, checkpoint: str | Path, bert_dir: str | Path, device: str = "cpu"):
        self.model, self.tokenizer = load_chexbert(checkpoint, bert_dir)
        try:
            self.device = torch.device(device)
            self.model.to(self.device)
        except (RuntimeError, AssertionError) as err:
            raise CheXbertError(f"cannot use device {device!r} ({err}); try --device cpu") from err

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per report, at most MAX_TOKENS each ([CLS] ... [SEP])."""
        cleaned = [clean_for_chexbert(t) for t in texts]
        return self.tokenizer(cleaned, truncation=True, max_length=MAX_TOKENS)["input_ids"]

    @torch.inference_mode()
    def label_reports(self, texts: Sequence[str], batch_size: int = 16, progress: bool = False) -> list[dict]:
        """{observation: 1, 0, -1 or None} per report, in input order."""
        ids = self.encode(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        labels: list[dict | None] = [None] * len(ids)
        for begin in tqdm(range(0, len(order), batch_size), desc="CheXbert", unit="batch", disable=not progress):
            batch = order[begin : begin + batch_size]
            width = max(len(ids[i]) for i in batch)
            input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            logits = self.model(input_ids.to(self.device), mask.to(self.device))
            classes = torch.stack([head.argmax(dim=1) for head in logits], dim=1).cpu()  # (B, 14)
            for row, i in enumerate(batch):
                labels[i] = {name: CLASS_TO_LABEL[int(c)] for name, c in zip(OBSERVATIONS, classes[row])}
        return labels
