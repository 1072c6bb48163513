"""BLEU-1..4 and ROUGE-L in the convention of pycocoevalcap (the MS-COCO caption scorers that most
report-generation papers quote), written here so the product needs neither that package nor Java.

Why not call the package: its BLEU file is licensed "not for commercial use", it prints while
scoring, and its ROUGE-L is a quadratic pure-Python loop. The tests check that these functions
return pycocoevalcap 1.2's numbers on the same token strings.

The two conventions differ from today's (nltk / rouge-score, `report_metrics`) in three ways:
- BLEU is a corpus score: clipped n-gram matches and candidate n-gram counts are summed over all
  reports first, then turned into one precision per order; the brevity penalty compares the total
  candidate length with the total reference length. nltk's sentence BLEU scores each report
  (smoothed) and averages. pycocoevalcap adds 1e-15 / 1e-9 to numerators / denominators so that a
  zero count gives a score near 0 instead of an error; we do the same to return equal numbers.
- ROUGE-L weighs recall with beta = 1.2 (F = (1 + b^2) P R / (R + b^2 P)); rouge-score uses beta 1.
- Tokens: pycocoevalcap splits on spaces. We feed it our `tokenize` (lower-case words and
  punctuation marks) joined by single spaces, so both conventions see the same tokens.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

BLEU_MAX_ORDER = 4
ROUGE_BETA = 1.2
TINY, SMALL = 1e-15, 1e-9  # pycocoevalcap's guards against zero counts and zero lengths


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(zip(*(tokens[i:] for i in range(n))))


def corpus_bleu(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]],
                max_order: int = BLEU_MAX_ORDER) -> dict[str, float]:
    """Corpus BLEU-1..max_order of tokenised candidates against one tokenised reference each."""
    correct, guess = [0] * max_order, [0] * max_order
    hyp_len = ref_len = 0
    for hyp, ref in zip(hyps, refs):
        hyp_len, ref_len = hyp_len + len(hyp), ref_len + len(ref)
        for n in range(1, max_order + 1):
            ref_counts = _ngrams(ref, n)
            correct[n - 1] += sum(min(count, ref_counts[gram]) for gram, count in _ngrams(hyp, n).items())
            guess[n - 1] += max(0, len(hyp) - n + 1)
    ratio = (hyp_len + TINY) / (ref_len + SMALL)
    brevity = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores, product = {}, 1.0
    for n in range(1, max_order + 1):
        product *= (correct[n - 1] + TINY) / (guess[n - 1] + SMALL)
        scores[f"bleu_{n}"] = product ** (1 / n) * brevity
    return scores


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison-Dix): one big-integer step
    per token of `a` instead of a len(a) x len(b) table: 0.07 s against 3.6 s for pycocoevalcap's table
    on 3,927 IU report pairs."""
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    row = full  # a 0 bit marks a column where the LCS grew
    for token in a:
        match = masks.get(token)
        if match:
            step = row & match
            row = ((row + step) | (row - step)) & full
    return len(b) - row.bit_count()


def rouge_l_beta(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], beta: float = ROUGE_BETA) -> float:
    """Mean over reports of the LCS F-measure with recall weighted by beta (pycocoevalcap's Rouge).

    An empty text is one empty token, as pycocoevalcap's split(" ") makes it: two empty texts agree.
    """
    scores = []
    for hyp, ref in zip(hyps, refs):
        hyp, ref = list(hyp) or [""], list(ref) or [""]
        lcs = lcs_length(hyp, ref)
        precision, recall = lcs / len(hyp), lcs / len(ref)
        if precision and recall:
            scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
        else:
            scores.append(0.0)
    return float(np.mean(scores))
