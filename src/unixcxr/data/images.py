"""Radiograph image I/O: any file a user may hand us (PNG, JPEG, DICOM) becomes one
grayscale float array in [0, 1] where 0 is black (air) and 1 is white (bone), so every later
step (letterbox, model tensors, shards) sees the same photometry whatever the source.

DICOM goes through pydicom's own modality and VOI transforms; MONOCHROME1 images (where a
high stored value means black) are inverted here, once."""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
import pydicom.errors
import pydicom.pixels
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:  # torch is imported where tensors are made: the CLI starts fast
    import torch

DICOM_MAGIC_OFFSET, DICOM_MAGIC = 128, b"DICM"
DICOM_SUFFIXES = (".dcm", ".dicom")
EIGHT_BIT_MAX, SIXTEEN_BIT_MAX = 255.0, 65535.0
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, for colour DICOM
RESAMPLE = Image.Resampling.BICUBIC
# Largest image decoded (width x height x frames), checked from the file's header before any pixel
# is decoded: a 160 KB PNG can claim 13000 x 13000 and take gigabytes to decode. The largest chest
# radiographs (43 x 43 cm detectors at 100 um) are about 19 MP, so 50 MP leaves room for anything real.
DEFAULT_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class ImageNorm:
    """Per-channel normalisation of the understanding encoder's input (the same value for
    all three channels, since a radiograph is grayscale)."""

    mean: float
    std: float


UNDERSTANDING_SIZE = 384
UNDERSTANDING_NORM = ImageNorm(mean=0.555895, std=0.336385)  # UniX release, computed on MIMIC-CXR


class ImageLoadError(ValueError):
    """A file that cannot be read as a radiograph; the message names the file and the fix."""


def _fail(path: Path, problem: str, fix: str = "") -> ImageLoadError:
    hint = fix or "check that it is a complete PNG, JPEG or DICOM file (re-export or re-download it)"
    return ImageLoadError(f"{path}: {problem}; {hint}")


def is_dicom(path: str | os.PathLike) -> bool:
    """True for DICOM files, recognised by suffix or by the 'DICM' preamble marker (many
    archives store DICOM without a suffix)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as f:
        f.seek(DICOM_MAGIC_OFFSET)
        return f.read(len(DICOM_MAGIC)) == DICOM_MAGIC


def check_pixels(path: str | os.PathLike, width: int, height: int, frames: int = 1,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """ImageLoadError when the header's size is over the pixel limit (None: no limit)."""
    if max_pixels is not None and width * height * frames > max_pixels:
        size = f"{width} x {height}" + (f" x {frames} frames" if frames > 1 else "")
        raise _fail(Path(path), f"{size} = {width * height * frames / 1e6:.0f} MP is over the limit of "
                    f"{max_pixels / 1e6:g} MP", "downscale the image, or raise the limit (--max-megapixels) "
                    "if it is a real radiograph")


def load_image(path: str | os.PathLike, min_size: int | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a radiograph as float32 [H, W] in [0, 1] (0 = black).

    min_size: when the caller will shrink the image anyway, JPEGs are decoded at the smallest
    DCT scale (1/2, 1/4, 1/8) that still keeps both sides >= min_size, which is several
    times faster on full-size MIMIC JPEGs. max_pixels: refuse, from the header alone, an image
    larger than that (a decompression bomb) before decoding it."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file", "check the path (and the data folder layout)")
    if path.stat().st_size == 0:
        raise _fail(path, "file is empty")
    if is_dicom(path):
        return load_dicom(path, max_pixels)
    return _load_pillow(path, min_size, max_pixels)


def open_pillow(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Image.open with the pixel limit checked from the header (nothing decoded yet); Pillow's own
    bomb check, at 2x its warning size, becomes the same message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit is the policy
            img = Image.open(path)
    except Image.DecompressionBombError as err:  # over twice Pillow's own limit: its message has the count
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(found.group(1)) / 1e6:.0f} MP" if found else "the image"
        raise _fail(path, f"{size} is over Pillow's decompression-bomb limit of "
                    f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP", "downscale the image") from err
    except UnidentifiedImageError as err:
        raise _fail(path, "not a PNG, JPEG or DICOM image") from err
    try:
        check_pixels(path, *img.size, max_pixels=max_pixels)  # Pillow decodes one frame
    except ImageLoadError:
        img.close()
        raise
    return img


def _load_pillow(path: Path, min_size: int | None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    try:
        with open_pillow(path, max_pixels) as img:
            if min_size is not None and img.format == "JPEG":
                img.draft("L", (min_size, min_size))
            img = ImageOps.exif_transpose(img)
            img.load()  # decode now, so a truncated file fails here and not later
            return pil_to_unit(img)
    except ImageLoadError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise _fail(path, f"corrupt or truncated image ({err})") from err


def pil_to_unit(img: Image.Image) -> np.ndarray:
    """Scale by the format's bit depth, not by the image's own range, so the exposure the
    file encodes is kept."""
    # in place: a 25 MP film is 100 MB as floats, and every temporary copy is another 100 MB
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float32)
        top = SIXTEEN_BIT_MAX if arr.max(initial=0) <= SIXTEEN_BIT_MAX else float(arr.max())
        arr /= top
        return np.clip(arr, 0.0, 1.0, out=arr)
    if img.mode == "F":
        arr = np.array(img, dtype=np.float32)
        return np.clip(arr, 0.0, 1.0, out=arr)
    if img.mode != "L":
        img = img.convert("L")
    arr = np.asarray(img, dtype=np.float32)
    arr /= EIGHT_BIT_MAX
    return arr


def load_dicom(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a DICOM radiograph: stored values -> modality values (rescale slope/intercept or
    modality LUT) -> display values (VOI LUT or window) -> [0, 1], inverted for MONOCHROME1.
    Multi-frame files give their first frame (pydicom decodes them all: every frame counts
    towards max_pixels, checked from the header before any pixel is decoded)."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
        rows, columns, frames = (int(ds.get(tag) or default) for tag, default in
                                 (("Rows", 0), ("Columns", 0), ("NumberOfFrames", 1)))
        check_pixels(path, columns, rows, frames, max_pixels)
        stored = ds.pixel_array
    except ImageLoadError:
        raise
    except (pydicom.errors.InvalidDicomError, AttributeError, KeyError) as err:
        raise _fail(path, f"DICOM without readable pixel data ({err})") from err
    except (NotImplementedError, RuntimeError) as err:
        fix = "install a decoder for its transfer syntax: pip install pylibjpeg pylibjpeg-openjpeg"
        raise _fail(path, f"compressed DICOM pydicom cannot decode here ({err})", fix) from err
    except (OSError, ValueError, EOFError) as err:
        raise _fail(path, f"corrupt or truncated DICOM ({err})") from err
    if ds.get("NumberOfFrames", 1) > 1:
        stored = stored[0]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if not photometric.startswith("MONOCHROME"):  # pydicom has already converted YBR to RGB
        top = float(2 ** int(ds.get("BitsStored", 8)) - 1)
        return np.clip(stored.astype(np.float32) @ LUMA_WEIGHTS / top, 0.0, 1.0)
    unit = _dicom_display_to_unit(stored, ds)
    return 1.0 - unit if photometric == "MONOCHROME1" else unit


def _dicom_display_to_unit(stored: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Map to [0, 1] over the display range that the VOI transform produces. pydicom is asked
    for that range itself (by pushing the extreme inputs through the same transform), so
    windowing, VOI LUT sequences and signed data all follow pydicom's rules."""
    values = pydicom.pixels.apply_modality_lut(stored, ds)
    has_voi = "VOILUTSequence" in ds or "WindowCenter" in ds
    if has_voi:
        display = pydicom.pixels.apply_voi_lut(values, ds)
        lo, hi = (float(v) for v in pydicom.pixels.apply_voi_lut(_extremes(values.dtype), ds))
    else:
        display = values
    if not has_voi or hi <= lo:
        lo, hi = float(display.min()), float(display.max())
    if hi <= lo:
        return np.zeros(display.shape, np.float32)
    return np.clip((display.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)


def _extremes(dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.array([info.min, info.max], dtype=dtype)
    huge = np.finfo(np.float32).max
    return np.array([-huge, huge], dtype=np.float64)


def letterbox(img: np.ndarray, size: int, pad_value: float | None = None) -> np.ndarray:
    """Fit [H, W] into a square [size, size] keeping the aspect ratio: the longer side is
    resized to `size`, the shorter side is centred and padded. Padding defaults to the image's
    own black level (its minimum), so the border looks like the collimated background."""
    if img.ndim != 2 or min(img.shape) == 0:
        raise ValueError(f"letterbox expects a non-empty 2-D grayscale array, got shape {img.shape}")
    fill = float(img.min()) if pad_value is None else pad_value  # before resizing (no ringing)
    height, width = img.shape
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_h, new_w) != (height, width):
        resized = Image.fromarray(img.astype(np.float32, copy=False)).resize((new_w, new_h), RESAMPLE)
        img = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    if new_h == new_w == size:
        return img.astype(np.float32, copy=False)
    out = np.full((size, size), fill, dtype=np.float32)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = img
    return out


def _as_array(img: np.ndarray | str | os.PathLike, size: int) -> np.ndarray:
    if isinstance(img, np.ndarray):
        return img
    return load_image(img, min_size=size)


def to_understanding_tensor(
    img: np.ndarray | str | os.PathLike, size: int = UNDERSTANDING_SIZE, norm: ImageNorm = UNDERSTANDING_NORM
) -> torch.Tensor:
    """The vision encoder's input: letterboxed, 3 identical channels, normalised. [3, S, S]."""
    import torch

    square = torch.from_numpy(letterbox(_as_array(img, size), size))
    return ((square - norm.mean) / norm.std).expand(3, size, size).contiguous()


def to_vae_tensor(img: np.ndarray | str | os.PathLike, size: int) -> torch.Tensor:
    """The VAE's input: letterboxed, 3 identical channels, in [-1, 1]. [3, S, S]."""
    import torch

    square = torch.from_numpy(letterbox(_as_array(img, size), size))
    return (square * 2.0 - 1.0).expand(3, size, size).contiguous()


# --- the authors' preprocessing (model conventions.preprocess == "released") ------------------------
# Their code reads the 8-bit RGB image and resizes it as 8-bit with Pillow. Their evaluation
# (eval/base/worker.py) shrinks it to fit the square with a LANCZOS thumbnail (never enlarging) and
# pastes it centred on a white canvas; their demo (data/transforms.py) resizes it bicubically so that
# the short side reaches the size, then the long side back to at most the size, both snapped to
# stride multiples: a non-square image stays non-square there.
RELEASED_CANVAS = (255, 255, 255, 0)  # white, transparent: the alpha is dropped when made RGB
RELEASED_MAX_PIXELS = 14 * 14 * 9 * 1024  # their transform's pixel cap (never reached at 384 px)


def released_evaluation_square(img: Image.Image, size: int) -> Image.Image:
    """The authors' evaluation input: [size, size] RGB, the image letterboxed on white."""
    rgba = img.convert("RGBA")
    rgba.thumbnail((size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (size, size), RELEASED_CANVAS)
    canvas.paste(rgba, ((size - rgba.size[0]) // 2, (size - rgba.size[1]) // 2), rgba)
    return canvas.convert("RGB")


def _snap(value: float, stride: int) -> int:
    return max(stride, int(round(value / stride) * stride))


def released_demo_size(width: int, height: int, size: int, stride: int) -> tuple[int, int]:
    """(width, height) the authors' demo transform resizes to: short side to `size`, long side then
    capped at `size`, each side rounded to a multiple of `stride` (Python rounding, as theirs)."""
    def scaled(w, h, scale):
        return _snap(round(w * scale), stride), _snap(round(h * scale), stride)

    scale = max(min(size / max(width, height), 1.0), size / min(width, height))
    w, h = scaled(width, height, scale)
    if w * h > RELEASED_MAX_PIXELS:
        w, h = scaled(w, h, RELEASED_MAX_PIXELS / (w * h))
    if max(w, h) > size:
        w, h = scaled(w, h, size / max(w, h))
    return w, h


def released_demo_image(img: Image.Image, size: int, stride: int) -> Image.Image:
    """The authors' demo input: the RGB image resized bicubically in 8 bits (see released_demo_size)."""
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    target = released_demo_size(*rgb.size, size, stride)
    return rgb if target == rgb.size else rgb.resize(target, RESAMPLE)


def released_tensor(rgb: Image.Image, norm: ImageNorm) -> torch.Tensor:
    """An 8-bit RGB image -> [3, H, W] float32: / 255, then (x - mean) / std, as their transform."""
    import torch

    x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div(EIGHT_BIT_MAX)
    return (x - norm.mean) / norm.std


def to_uint8(img: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 with rounding, for writing PNG/JPEG."""
    return (np.clip(img, 0.0, 1.0) * EIGHT_BIT_MAX + 0.5).astype(np.uint8)
