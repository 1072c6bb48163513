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
from unixcxr.evaluate.image_metrics import KD_MAX_SUBSET_SIZE, fd, gaussian_stats, image_metrics, kernel_distance, prdc
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


# ---------------------------------------------------------------- images: pytorch-fid, clean-fid, prdc
def _features(n: int, dim: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Correlated, non-negative features (like pooled ReLU activations) with a random covariance."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    return np.abs(rng.standard_normal((n, dim)) @ mixing * scale + shift)


@pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")  # scipy, inside the references
@pytest.mark.parametrize("n_real, n_fake, dim, rel", [
    (500, 400, 64, 1e-10),  # more images than dimensions: the eigendecomposition route
    (2000, 1500, 256, 1e-10),
    (30, 25, 64, 1e-6),  # fewer (every per-pathology FD): singular covariances, where scipy's sqrtm loses digits
])
def test_fd_equals_pytorch_fid_and_clean_fid(n_real, n_fake, dim, rel):
    from cleanfid.fid import frechet_distance as clean_fid_fd
    from pytorch_fid.fid_score import calculate_frechet_distance

    real, fake = _features(n_real, dim, 0), _features(n_fake, dim, 1, shift=0.1, scale=1.2)
    stats = (*gaussian_stats(real), *gaussian_stats(fake))
    ours = fd(real, fake)
    assert ours == pytest.approx(calculate_frechet_distance(*stats), rel=rel, abs=0)
    assert ours == pytest.approx(clean_fid_fd(*stats), rel=rel, abs=0)


@pytest.mark.parametrize("n_real, n_fake, subsets", [(300, 200, 100), (1100, 1050, 10)])  # the second: 1000 cap
def test_kd_equals_clean_fid_kernel_distance_with_the_same_seed(n_real, n_fake, subsets):
    from cleanfid.fid import kernel_distance as clean_fid_kd

    real, fake = _features(n_real, 32, 2), _features(n_fake, 32, 3, shift=0.05)
    state = np.random.get_state()
    try:
        np.random.seed(7)
        expected = clean_fid_kd(real, fake, num_subsets=subsets)
        np.random.seed(7)
        expected_float32 = clean_fid_kd(real.astype(np.float32), fake.astype(np.float32), num_subsets=subsets)
    finally:
        np.random.set_state(state)
    ours = kernel_distance(real, fake, subsets=subsets, seed=7)
    assert ours["subset_size"] == min(n_real, n_fake, KD_MAX_SUBSET_SIZE) and ours["subsets"] == subsets
    assert ours["mean"] == pytest.approx(expected, rel=1e-12, abs=0)
    assert ours["mean"] == pytest.approx(expected_float32, rel=1e-5)  # clean-fid in the features' own float32
    assert np.random.get_state()[1][0] == state[1][0]  # numpy's global generator untouched


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_prdc_equals_the_prdc_package(dtype):
    from prdc import compute_prdc

    real = _features(400, 48, 4).astype(dtype)
    fake = np.concatenate([real[:60], _features(240, 48, 5, shift=0.2)]).astype(dtype)  # 60 memorised films
    for k in (3, 5):
        expected = compute_prdc(real, fake, nearest_k=k)
        ours = prdc(real, fake, k=k)
        for name in ("precision", "recall", "coverage"):  # fractions of the same counts: equal to the last bit
            assert ours[name] == float(expected[name]), name
        assert ours["density"] == pytest.approx(float(expected["density"]), rel=1e-12, abs=0)  # k divides elsewhere
        assert 0 < ours["coverage"] < 1 and 0 < ours["precision"] < 1  # neither trivial case


def test_image_results_name_the_reference_of_every_number():
    real, fake = _features(60, 8, 6), _features(50, 8, 7)
    conventions = image_metrics(real, fake, kd_subsets=5)["conventions"]
    assert "pytorch-fid" in conventions["fd"] and "clean-fid" in conventions["kd"] and "prdc" in conventions["prdc"]
