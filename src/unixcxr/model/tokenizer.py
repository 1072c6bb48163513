"""Report tokenizer: a byte-level BPE (HuggingFace `tokenizers`) that we train on the report
corpus for CPU-sized models, or the released DeepSeek tokenizer.json loaded as is.

Byte-level BPE means every string round-trips exactly (no unknown tokens), whatever a report
contains. The five special ids the sequence layout needs travel as one `SpecialTokens` value:
for our own tokenizers they are the first five ids, fixed by their names; for an external
tokenizer they are given explicitly, because its file does not say which of its tokens plays
which role (the released UniX ids are not even all named in it)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from unixcxr.files import atomic_output
from unixcxr.model.config import TokenConfig

DEFAULT_VOCAB_SIZE = 4096  # CPU presets; the released model uses DeepSeek's 102,400
DEFAULT_MIN_FREQUENCY = 2  # a merge seen once is noise (a typo, an id)


def check_vocab_size(vocab_size: int) -> None:
    """A byte-level BPE holds at least its 256-byte alphabet and the special tokens."""
    smallest = len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIAL_TOKEN_NAMES)
    if vocab_size < smallest:
        raise TokenizerError(f"vocab_size {vocab_size} is below the byte alphabet plus specials "
                             f"({smallest}); use e.g. {DEFAULT_VOCAB_SIZE}")
TOKENIZER_FILE = "tokenizer.json"
# What transformers' AutoTokenizer reads beside tokenizer.json (written by transformers_files())
TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE = "tokenizer_config.json", "special_tokens_map.json"
TRANSFORMERS_ROLES = {"bos": "bos_token", "eos": "eos_token", "pad": "pad_token"}  # the rest: additional


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the tokens the sequence layout inserts; never produced by encode()."""

    bos: int
    eos: int
    pad: int
    start_of_image: int
    end_of_image: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(self.as_dict().values())


# Names our own tokenizers give the special tokens; training assigns them ids 0..4 in this order.
SPECIAL_TOKEN_NAMES: dict[str, str] = {
    "bos": "<|bos|>", "eos": "<|eos|>", "pad": "<|pad|>",
    "start_of_image": "<|start_of_image|>", "end_of_image": "<|end_of_image|>",
}
# The released UniX ids (DeepSeek tokenizer) are kept once, as the model TokenConfig defaults:
# bos 100000, eos 100001, start_of_image 100003, end_of_image 100580, and pad 100002 (our
# choice: a free id that is NOT eos, since padding masked by id must never hide the eos the
# model has to learn to emit; padded positions are masked from attention and loss anyway).
RELEASED_SPECIAL_TOKENS = SpecialTokens(**dataclasses.asdict(TokenConfig()))


class TokenizerError(ValueError):
    """A tokenizer file or corpus that cannot be used; the message names the file and the fix."""


class ReportTokenizer:
    """encode / decode of report text with known special ids. Wraps a `tokenizers.Tokenizer`."""

    def __init__(self, tokenizer: Tokenizer, special: SpecialTokens):
        if len(special.ids) != len(special.as_dict()):
            raise TokenizerError(f"special token ids must be distinct, got {special.as_dict()}")
        tokenizer.encode_special_tokens = True  # "<|eos|>" typed in a report is text, not a control id
        self.tokenizer = tokenizer
        self.special = special

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        min_frequency: int = DEFAULT_MIN_FREQUENCY,
        show_progress: bool = False,
    ) -> ReportTokenizer:
        """A byte-level BPE learned from `texts`, with the five special tokens at ids 0..4."""
        names = list(SPECIAL_TOKEN_NAMES.values())
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        check_vocab_size(vocab_size)
        if min_frequency < 1:
            raise TokenizerError(f"min_frequency must be at least 1, got {min_frequency}")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=names, initial_alphabet=alphabet,
                                      show_progress=show_progress)
        seen = _CountingIterator(texts)
        tokenizer.train_from_iterator(seen, trainer)
        if seen.count == 0:
            raise TokenizerError("the training corpus is empty; point it at a folder with report files")
        return cls(tokenizer, _special_ids_by_name(tokenizer, "the trained tokenizer"))

    @classmethod
    def load(cls, path: str | os.PathLike, special: SpecialTokens | None = None) -> ReportTokenizer:
        """Read a tokenizer.json (a file, or a folder holding one). Without `special`, the ids are
        looked up by our token names; pass RELEASED_SPECIAL_TOKENS for the DeepSeek tokenizer."""
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # the Rust library raises bare Exception subclasses
            raise TokenizerError(f"{path}: not a readable tokenizer.json ({err}); train one with "
                                 "`unixcxr tokenizer train DATA_DIR -o tokenizer.json`") from err
        return cls(tokenizer, special or _special_ids_by_name(tokenizer, str(path)))

    def save(self, path: str | os.PathLike) -> Path:
        """Write tokenizer.json atomically (a crash never leaves half a file next to a model)."""
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        with atomic_output(path) as tmp:
            tmp.write_text(self.tokenizer.to_str(pretty=True), encoding="utf-8")
        return path

    def transformers_files(self, model_max_length: int) -> dict[str, dict]:
        """tokenizer_config.json and special_tokens_map.json, so that transformers'
        AutoTokenizer.from_pretrained(folder) reads the folder's tokenizer.json as we do: the same ids
        for a text (no special token added: the sequence layout adds those), the same text back, and
        our special tokens under their roles. A special id the file has no token for (the released
        pad) is left out."""
        named = {role: self.tokenizer.id_to_token(i) for role, i in self.special.as_dict().items()}
        special = {TRANSFORMERS_ROLES[r]: name for r, name in named.items() if r in TRANSFORMERS_ROLES and name}
        extra = [name for r, name in named.items() if r not in TRANSFORMERS_ROLES and name]
        special_map = {**special, "additional_special_tokens": extra}
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **special_map, "model_max_length": model_max_length,
                  "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
                  "split_special_tokens": True}  # "<|eos|>" typed in a report is text, as in encode()
        return {TOKENIZER_CONFIG_FILE: config, SPECIAL_TOKENS_MAP_FILE: special_map}

    # --- use -----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Rows the embedding table needs: the file's vocabulary, widened to hold explicitly
        given special ids that lie beyond it (as the released pad does)."""
        return max(self.tokenizer.get_vocab_size(with_added_tokens=True), max(self.special.ids) + 1)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without any special token (the sequence layout adds those)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """encode() over many texts, parallel inside the Rust library."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, skipping every special id (generated reports stop at eos, and may
        carry pad)."""
        return self.tokenizer.decode([i for i in ids if i not in self.special.ids], skip_special_tokens=True)

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]


class _CountingIterator:
    """Passes texts through to the trainer while counting them, to reject an empty corpus."""

    def __init__(self, texts: Iterable[str]):
        self._texts, self.count = iter(texts), 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        text = next(self._texts)
        self.count += 1
        return text


def _special_ids_by_name(tokenizer: Tokenizer, source: str) -> SpecialTokens:
    ids = {role: tokenizer.token_to_id(name) for role, name in SPECIAL_TOKEN_NAMES.items()}
    missing = [SPECIAL_TOKEN_NAMES[role] for role, i in ids.items() if i is None]
    if missing:
        raise TokenizerError(f"{source}: no special token(s) {', '.join(missing)}; for an external tokenizer "
                             "(e.g. the released DeepSeek one) pass its ids explicitly: "
                             "ReportTokenizer.load(path, special=RELEASED_SPECIAL_TOKENS)")
    return SpecialTokens(**ids)
