"""Our metrics against the packages the field computes them with, on the same inputs.

Text: pycocoevalcap 1.2's Bleu(4) and Rouge on real radiologist text (the Indiana University
reports inside torchxrayvision, read in place; nothing of them is stored here), paired report i
with report i + 1 so that every amount of overlap occurs. Images: pytorch-fid's and clean-fid's
Frechet distance, clean-fid's kernel distance and the prdc package on the same feature vectors.
The reference packages come with the `refmetrics` extra (part of `dev`); the product never imports
them.
"""

from __future__ import annotations

import numpy as np
import pytest

from unixcxr.evaluate import coco_text
from unixcxr.evaluate.report_metrics import bleu_scores, pycocoevalcap_scores, report_metrics, rouge_l, tokenize

IU_STEP = 4  # every 4th IU report: ~1,000 pairs, under a second per scorer
CONVENTION_PAIRS = 200  # nltk's sentence BLEU is the slow one


@pytest.fixture(scope="module")
def iu_pairs() -> tuple[list[str], list[str]]:
    from unixcxr.data.iu import iter_iu_reports

    texts = [f"{r.findings} {r.impression}".strip() for i, r in enumerate(iter_iu_reports()) if i % IU_STEP == 0]
    refs = [t for t in texts if t]
    preds = refs[1:] + refs[:1]
    preds[3] = refs[3]  # one exact copy, one empty generated report
    preds[5] = ""
    return preds, refs


def _coco_inputs(preds, refs) -> tuple[dict, dict]:
    """pycocoevalcap's input format: {id: [text]} for references and candidates, tokens space-joined."""
    gts = {i: [" ".join(tokenize(r))] for i, r in enumerate(refs)}
    res = {i: [" ".join(tokenize(p))] for i, p in enumerate(preds)}
    return gts, res


# ---------------------------------------------------------------- text: pycocoevalcap
def test_corpus_bleu_equals_pycocoevalcap_on_real_reports(iu_pairs):
    from pycocoevalcap.bleu.bleu import Bleu

    preds, refs = iu_pairs
    expected, _ = Bleu(4).compute_score(*_coco_inputs(preds, refs), verbose=0)
    ours = pycocoevalcap_scores(preds, refs)
    assert [ours[f"bleu_{n}"] for n in (1, 2, 3, 4)] == pytest.approx(expected, rel=1e-12, abs=0)


def test_corpus_bleu_brevity_penalty_equals_pycocoevalcap_when_candidates_are_short(iu_pairs):
    from pycocoevalcap.bleu.bleu import Bleu

    preds, refs = iu_pairs
    halves = [" ".join(tokenize(p)[: len(tokenize(p)) // 2]) for p in preds]  # total length ratio ~0.5
    expected, _ = Bleu(4).compute_score(*_coco_inputs(halves, refs), verbose=0)
    ours = pycocoevalcap_scores(halves, refs)
    assert [ours[f"bleu_{n}"] for n in (1, 2, 3, 4)] == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.parametrize("preds, refs", [
    (["the heart is normal ."], ["the heart size is normal ."]),  # no 4-gram in common: tiny, not 0
    (["", ""], ["no effusion .", "lungs are clear ."]),  # nothing generated: 0 without dividing by 0
    (["no acute disease ."], ["no"]),  # candidate longer than the reference: no brevity penalty
])
def test_corpus_bleu_equals_pycocoevalcap_on_degenerate_corpora(preds, refs):
    from pycocoevalcap.bleu.bleu import Bleu

    expected, _ = Bleu(4).compute_score(*_coco_inputs(preds, refs), verbose=0)
    ours = pycocoevalcap_scores(preds, refs)
    assert [ours[f"bleu_{n}"] for n in (1, 2, 3, 4)] == pytest.approx(expected, rel=1e-12, abs=0)


def test_rouge_l_with_beta_1_2_equals_pycocoevalcap_on_real_reports(iu_pairs):
    from pycocoevalcap.rouge.rouge import Rouge

    preds, refs = iu_pairs
    expected, _ = Rouge().compute_score(*_coco_inputs(preds, refs))
    assert pycocoevalcap_scores(preds, refs)["rouge_l"] == pytest.approx(float(expected), rel=1e-12, abs=0)


def test_bit_parallel_lcs_equals_pycocoevalcaps_table():
    from pycocoevalcap.rouge.rouge import my_lcs

    rng = np.random.default_rng(0)
    for _ in range(300):
        a = [str(t) for t in rng.integers(0, 6, rng.integers(0, 90))]
        b = [str(t) for t in rng.integers(0, 6, rng.integers(0, 90))]
        assert coco_text.lcs_length(a, b) == my_lcs(a, b) == coco_text.lcs_length(b, a)


def test_the_two_text_conventions_are_different_numbers(iu_pairs):
    """Corpus BLEU is not the mean sentence BLEU, beta 1.2 is not beta 1: the record names which is which."""
    preds, refs = (side[:CONVENTION_PAIRS] for side in iu_pairs)
    coco = pycocoevalcap_scores(preds, refs)
    assert abs(coco["bleu_4"] - bleu_scores(preds, refs)["bleu_4"]) > 0.005
    assert abs(coco["rouge_l"] - rouge_l(preds, refs)) > 0.005
    labels = [{}] * len(preds)
    results = report_metrics(preds, refs, labels, labels)
    assert results["text_pycocoevalcap"] == coco
    assert "corpus" in results["conventions"]["text_pycocoevalcap"]["bleu_n"]
    assert "sentence_bleu" in results["conventions"]["text"]["bleu_n"]
    assert "beta 1.2" in results["conventions"]["text_pycocoevalcap"]["rouge_l"]
