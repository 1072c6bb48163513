"""What a user may hand the pipeline as an image (a path, a Pillow image, an array or a tensor), turned
into what the two preprocessing paths read: grayscale floats in [0, 1] for ours, 8-bit Pillow images
for the authors'."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unixcxr.data.images import (
    DEFAULT_MAX_PIXELS,
    EIGHT_BIT_MAX,
    LUMA_WEIGHTS,
    ImageLoadError,
    is_dicom,
    load_image,
    open_pillow,
    pil_to_unit,
)

ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


def to_unit_image(image: ImageInput, size: int | None = None,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any image a user hands us -> grayscale float32 [H, W] in [0, 1]. Paths go through
    data.images (PNG, JPEG, DICOM; files over max_pixels refused from their header); arrays may be
    [H, W] or [H, W, 3|4], integer or in [0, 1]."""
    if isinstance(image, str | os.PathLike):
        return load_image(image, min_size=size, max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        return pil_to_unit(image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a path, PIL image or array, got {type(image).__name__}")
    arr = image
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / np.iinfo(arr.dtype).max
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3] @ LUMA_WEIGHTS
    if arr.ndim != 2 or min(arr.shape) == 0:
        raise ValueError(f"expected a grayscale [H, W] or colour [H, W, 3] image array, got shape {image.shape}")
    if arr.min() >= 0.0 and arr.max() <= 1.0:  # a decoded film already is: no 100 MB copy of a large one
        return arr
    return np.clip(arr, 0.0, 1.0)


EIGHT_BIT_MODES = ("L", "RGB", "RGBA", "LA", "P")


def to_pil_image8(image: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Any image a user hands us -> an 8-bit Pillow image, for the authors' preprocessing, which
    reads 8-bit files as they are (colour kept, no EXIF rotation). What they cannot read (DICOM,
    16-bit or float pixels) is scaled to [0, 1] by data.images and rounded to 8 bits."""
    if isinstance(image, str | os.PathLike) and Path(image).is_file() and not is_dicom(image):
        try:
            with open_pillow(Path(image), max_pixels) as img:
                img.load()
                if img.mode in EIGHT_BIT_MODES:
                    return img.copy()
        except (OSError, ImageLoadError):
            pass  # load_image below names the file and the problem
    elif isinstance(image, Image.Image) and image.mode in EIGHT_BIT_MODES:
        return image
    elif isinstance(image, np.ndarray | torch.Tensor):
        arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image
        if arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
            return Image.fromarray(arr)
    unit = to_unit_image(image, max_pixels=max_pixels)
    return Image.fromarray(np.round(unit * EIGHT_BIT_MAX).astype(np.uint8))
