"""Attention and RoPE inside a training step, at the CPU recipe's shapes (small preset, the real
builders' micro-batches): a generation batch's attention split at its causal text prefix
(`attention.prefix_attention`: the text queries run over the text keys alone and, the und expert being
frozen, without autograd) vs one masked SDPA over the whole row; and `apply_rotary` (in-place
halves, inverse-rotation backward) vs the textbook rotate-half formula. Cases alternate inside every
round and the best of the rounds is kept (a shared host's noise only ever adds time); outputs are
compared. Whole-step A/Bs of the same changes move by less than this host's noise (1.00-1.08x).

    python -m benchmarks.bench_attention [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from benchmarks.bench_train import builders, recipe_micro_batches
from benchmarks.common import machine, print_table
from unixcxr.model.attention import causal_prefix, prefix_attention
from unixcxr.model.config import preset
from unixcxr.model.embedders import RotaryEmbedding, apply_rotary
from unixcxr.model.sequence import LATENT


def rotate_half_reference(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def best_of(cases: dict, rounds: int) -> dict[str, float]:
    best = {name: float("inf") for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def attention_cases(config, stage: str, micro: int):
    """q, k, v with gradients for the stage's first micro-batch; the full and the split attention."""
    batch = builders(config)[stage](0, 0, list(range(micro))).data.batch.sequence
    mask = batch.attention_mask()
    prefix = causal_prefix(mask, batch.kind == LATENT)
    llm = config.llm
    B, L = batch.shape
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, n, L, llm.head_dim, requires_grad=True)
               for n in (llm.num_heads, llm.num_kv_heads, llm.num_kv_heads))
    grad = torch.randn(B, llm.num_heads, L, llm.head_dim)
    gqa = llm.num_heads != llm.num_kv_heads

    def full():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        out.backward(grad)
        return out

    def split():
        out = prefix_attention(q, k, v, mask, prefix, freeze_und=True)
        out.backward(grad)
        return out

    difference = (full() - split()).abs().max().item()
    return {"full": full, "split": split}, (B, L, prefix), difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (CI smoke run)")
    args = parser.parse_args()
    rounds = 3 if args.quick else 12
    config = preset("small")
    micros = recipe_micro_batches()
    rows = [("machine", machine())]
    for stage in ("gen_pretrain", "gen_finetune"):
        cases, (B, L, prefix), diff = attention_cases(config, stage, micros[stage])
        t = best_of(cases, rounds)
        rows.append((f"{stage}: {B} rows of {L}, text prefix {prefix}",
                     f"full {t['full'] * 1e3:.1f} ms, split {t['split'] * 1e3:.1f} ms a layer (forward + backward): "
                     f"{t['full'] / t['split']:.2f}x; max |difference| {diff:.1e}"))

    llm = config.llm
    batch = builders(config)["und_sft"](0, 0, list(range(micros["und_sft"]))).data.batch.sequence
    B, L = batch.shape
    cos, sin = RotaryEmbedding(llm.head_dim, llm.rope_theta)(batch.position, torch.float32)
    torch.manual_seed(1)
    qkv = torch.randn(B, L, (llm.num_heads + 2 * llm.num_kv_heads) * llm.head_dim, requires_grad=True)
    grad_q = torch.randn(B, L, llm.num_heads, llm.head_dim)
    grad_k = torch.randn(B, L, llm.num_kv_heads, llm.head_dim)

    def rope_step(rotate, backward: bool):
        def run():
            q, k, v = qkv.split([llm.num_heads * llm.head_dim, llm.num_kv_heads * llm.head_dim,
                                 llm.num_kv_heads * llm.head_dim], dim=-1)
            q, k = q.unflatten(-1, (llm.num_heads, llm.head_dim)), k.unflatten(-1, (llm.num_kv_heads, llm.head_dim))
            if not backward:
                with torch.no_grad():
                    return rotate(q, cos, sin), rotate(k, cos, sin)
            out = rotate(q, cos, sin), rotate(k, cos, sin)
            torch.autograd.backward([*out, v], [grad_q, grad_k, torch.zeros_like(v)])
            return out
        return run

    t = best_of({"ref": rope_step(rotate_half_reference, False), "ours": rope_step(apply_rotary, False),
                 "ref_b": rope_step(rotate_half_reference, True), "ours_b": rope_step(apply_rotary, True)}, rounds)
    diff = max((a - b).abs().max().item() for a, b in zip(rope_step(rotate_half_reference, False)(),
                                                         rope_step(apply_rotary, False)()))
    rows.append((f"RoPE, und_sft queries and keys ({B} rows of {L})",
                 f"forward {t['ref'] * 1e3:.2f} -> {t['ours'] * 1e3:.2f} ms ({t['ref'] / t['ours']:.2f}x), "
                 f"with backward {t['ref_b'] * 1e3:.2f} -> {t['ours_b'] * 1e3:.2f} ms "
                 f"({t['ref_b'] / t['ours_b']:.2f}x); "
                 f"max |difference| {diff:.1e}"))
    print_table("attention and RoPE in a training step (small preset, fp32)", rows)


if __name__ == "__main__":
    main()
