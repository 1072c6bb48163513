"""Token layouts and the attention mask of UniX.

A sample is a run of segments: text (causal, und expert), a ViT image block (und expert), or a
latent block (gen expert). An image block [start_of_image][tokens][end_of_image] shares ONE RoPE
position and is bidirectional inside. A NOISY latent block is invisible to every token outside it,
so information flows text -> image only. Samples are padded into a batch, or packed several to a
row (NaViT style) with a block-diagonal mask; the same mask function serves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from unixcxr.model.config import TokenConfig

TEXT, VIT, LATENT, PAD = 0, 1, 2, 3
IGNORE = -100  # label value that carries no loss


@dataclass
class SampleLayout:
    """One sample's tokens, built by the methods below; positions restart at 0 per sample."""

    special: TokenConfig
    tokens: list[int] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    position: list[int] = field(default_factory=list)
    block: list[int] = field(default_factory=list)  # 0 = not in a bidirectional block
    noisy: list[bool] = field(default_factory=list)
    loss: list[bool] = field(default_factory=list)  # token is a target of the next-token loss
    _next_position: int = 0
    _blocks: int = 0

    def text(self, ids: list[int], loss: bool = False) -> SampleLayout:
        n = len(ids)
        self.tokens += list(ids)
        self.kind += [TEXT] * n
        self.position += range(self._next_position, self._next_position + n)
        self.block += [0] * n
        self.noisy += [False] * n
        self.loss += [loss] * n
        self._next_position += n
        return self

    def _image_block(self, kind: int, num_tokens: int, noisy: bool) -> SampleLayout:
        self._blocks += 1
        s = self.special
        self.tokens += [s.start_of_image] + [0] * num_tokens + [s.end_of_image]
        self.kind += [TEXT] + [kind] * num_tokens + [TEXT]  # the markers are text tokens (und expert)
        n = num_tokens + 2
        self.position += [self._next_position] * n
        self.block += [self._blocks] * n
        self.noisy += [noisy] * n
        self.loss += [False] * n
        self._next_position += 1
        return self

    def vit_block(self, num_tokens: int) -> SampleLayout:
        return self._image_block(VIT, num_tokens, noisy=False)

    def latent_block(self, num_tokens: int, noisy: bool = True) -> SampleLayout:
        return self._image_block(LATENT, num_tokens, noisy=noisy)

    def __len__(self) -> int:
        return len(self.tokens)

    def labels(self) -> list[int]:
        """labels[i] = the token at i + 1 when that token is a loss target (next-token prediction)."""
        out = [IGNORE] * len(self.tokens)
        for i in range(len(self.tokens) - 1):
            if self.loss[i + 1]:
                out[i] = self.tokens[i + 1]
        return out

    @property
    def next_position(self) -> int:
        return self._next_position


def prompt_ids(special: TokenConfig, text: list[int], prompt_bos: int = 1) -> list[int]:
    """[bos] x prompt_bos, the text's ids, [eos]: how a prompt enters the model. The release opens
    every prompt with two BOS (its tokenizer adds one, its code another): prompt_bos = 2."""
    return [special.bos] * prompt_bos + list(text) + [special.eos]


def understanding_layout(special: TokenConfig, num_vit_tokens: int, prompt: list[int],
                         report: list[int] | None, prompt_bos: int = 1) -> SampleLayout:
    """[soi][ViT tokens][eoi] [bos] prompt [eos] [bos] report [eos]; loss on report + eos.
    With report=None the layout ends at the answer's [bos], ready for decoding."""
    s = special
    layout = SampleLayout(s).vit_block(num_vit_tokens).text(prompt_ids(s, prompt, prompt_bos)).text([s.bos])
    if report is not None:
        layout.text([*report, s.eos], loss=True)
    return layout


def generation_layout(special: TokenConfig, report: list[int], num_latent_tokens: int | None,
                      prompt_bos: int = 1) -> SampleLayout:
    """[bos] report [eos] [soi][noisy latents][eoi]; an empty report is the unconditional prompt.
    With num_latent_tokens=None only the cacheable text prefix is built."""
    layout = SampleLayout(special).text(prompt_ids(special, report, prompt_bos))
    if num_latent_tokens is not None:
        layout.latent_block(num_latent_tokens)
    return layout


@dataclass
class SequenceBatch:
    """Padded or packed token layouts, all [B, L]."""

    tokens: torch.Tensor
    kind: torch.Tensor
    position: torch.Tensor
    block: torch.Tensor  # unique per row: packed samples never share a block id
    segment: torch.Tensor  # sample index inside the row, -1 for padding
    noisy: torch.Tensor
    labels: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.tokens.shape

    def to(self, device) -> SequenceBatch:
        return SequenceBatch(**{k: v.to(device) for k, v in self.__dict__.items()})

    def attention_mask(self) -> torch.Tensor:
        return attention_mask(self.segment, self.block, self.noisy)

    def is_plain_causal(self) -> bool:
        """True when a causal mask alone is exact (no padding, packing or image blocks)."""
        return bool((self.segment == 0).all() and (self.block == 0).all())


def attention_mask(segment: torch.Tensor, block: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """[B, L] layouts -> boolean mask [B, 1, L, L], True where query row may attend to key column."""
    L = segment.shape[1]
    idx = torch.arange(L, device=segment.device)
    causal = idx[:, None] >= idx[None, :]
    same_segment = (segment[:, :, None] == segment[:, None, :]) & (segment[:, None, :] >= 0)
    same_block = (block[:, :, None] == block[:, None, :]) & (block[:, None, :] > 0)
    hidden = noisy[:, None, :] & ~same_block  # a noisy block's keys are seen only from inside it
    mask = same_segment & (causal | same_block) & ~hidden
    mask |= torch.eye(L, dtype=torch.bool, device=segment.device)  # padding rows attend to themselves
    return mask[:, None]


def collate(layouts: list[SampleLayout], left_pad: bool = False, pad_to: int | None = None) -> SequenceBatch:
    """One sample per row. Understanding training pads right; prompts for decoding pad left so that
    every row's next token lands in the same column, and so do generation batches, so that every
    row's latent block sits at the same columns (the block routing of routing.Routing)."""
    L = max(pad_to or 0, max(len(x) for x in layouts))
    rows = [_row([x], L, left_pad) for x in layouts]
    return _stack(rows)


def pack(layouts: list[SampleLayout], row_length: int) -> tuple[SequenceBatch, list[int]]:
    """Several samples per row (first-fit decreasing), block-diagonal attention, positions restart
    per sample. Throughput without padding waste; the losses equal those of the samples one by one.
    Returns the batch and the order in which the samples were placed (row-major), which is the order
    their images / latents must be given in."""
    too_long = [len(x) for x in layouts if len(x) > row_length]
    if too_long:
        raise ValueError(f"samples of length {too_long} do not fit rows of {row_length} tokens")
    bins: list[list[int]] = []
    space: list[int] = []
    for idx in sorted(range(len(layouts)), key=lambda i: len(layouts[i]), reverse=True):
        n = len(layouts[idx])
        for b, free in enumerate(space):
            if n <= free:
                bins[b].append(idx)
                space[b] -= n
                break
        else:
            bins.append([idx])
            space.append(row_length - n)
    rows = [_row([layouts[i] for i in b], row_length, left_pad=False) for b in bins]
    return _stack(rows), [i for b in bins for i in b]


def _row(samples: list[SampleLayout], length: int, left_pad: bool) -> dict[str, list]:
    row = {k: [] for k in ("tokens", "kind", "position", "block", "segment", "noisy", "labels")}
    block_offset = 0
    for i, s in enumerate(samples):
        row["tokens"] += s.tokens
        row["kind"] += s.kind
        row["position"] += s.position
        row["block"] += [b + block_offset if b else 0 for b in s.block]
        row["segment"] += [i] * len(s)
        row["noisy"] += s.noisy
        row["labels"] += s.labels()
        block_offset += s._blocks
    n_pad = length - len(row["tokens"])
    pad = {"tokens": samples[0].special.pad, "kind": PAD, "position": 0, "block": 0, "segment": -1,
           "noisy": False, "labels": IGNORE}
    for k, v in pad.items():
        row[k] = [v] * n_pad + row[k] if left_pad else row[k] + [v] * n_pad
    return row


def _stack(rows: list[dict[str, list]]) -> SequenceBatch:
    def t(key, dtype=torch.long):
        return torch.tensor([r[key] for r in rows], dtype=dtype)

    return SequenceBatch(tokens=t("tokens"), kind=t("kind"), position=t("position"), block=t("block"),
                         segment=t("segment"), noisy=t("noisy", torch.bool), labels=t("labels"))
