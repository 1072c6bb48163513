"""Acquisition: how one study's film differs from another of the same patient (positioning,
exposure, processing, noise, collimation, the lead side marker), and developing a density map
into an 8-bit film."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from unixcxr.data.synthcxr.config import FILM
from unixcxr.data.synthcxr.raster import F32, Grid, blur, clamp, make_grid

REFERENCE_SIZE = 256  # blur widths in FilmConfig are pixels at this size
REFERENCE_DENSITY = 1.9  # density that develops to white
GAMMA_STEPS = 4096
MARKER_CORNER = 0.03  # marker inset from the film's edge
# 5x7 bitmaps of the lead side markers ("L" sits on the patient's left = image right).
GLYPHS = {
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
}


@dataclass(frozen=True)
class Acquisition:
    rotation: float  # radians
    shift: tuple[float, float]
    zoom: float
    exposure: float
    gamma: float
    noise: float
    blur_px: float
    collimation: tuple[float, float, float, float]  # top, bottom, left, right border widths
    collimation_level: float
    marker: str  # "L", "R" or "" (none)
    black: float
    white: float

    def to_dict(self) -> dict:
        return {k: (np.round(v, 4).tolist() if not isinstance(v, str) else v) for k, v in asdict(self).items()}


def sample_acquisition(rng: np.random.Generator) -> Acquisition:
    """A random but plausible PA acquisition."""
    collimated = rng.random() < FILM.collimation_share
    collimation = tuple(float(w) for w in rng.uniform(*FILM.collimation, 4)) if collimated else (0.0,) * 4
    marker = ("L" if rng.random() < 0.8 else "R") if rng.random() < FILM.marker_share else ""
    return Acquisition(
        rotation=float(np.deg2rad(rng.uniform(*FILM.rotation_deg))),
        shift=(float(rng.uniform(*FILM.shift)), float(rng.uniform(*FILM.shift))),
        zoom=float(rng.uniform(*FILM.zoom)),
        exposure=float(rng.uniform(*FILM.exposure)),
        gamma=float(rng.uniform(*FILM.gamma)),
        noise=float(rng.uniform(*FILM.noise)),
        blur_px=float(rng.uniform(*FILM.blur_px)),
        collimation=collimation,
        collimation_level=float(rng.uniform(*FILM.collimation_level)),
        marker=marker,
        black=float(rng.uniform(*FILM.black)),
        white=float(rng.uniform(*FILM.white)),
    )


def grid_for(acq: Acquisition, size: int) -> Grid:
    return make_grid(size, acq.rotation, acq.shift, acq.zoom)


def develop(density: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Density [S, S] -> film [S, S] uint8: exponential film curve, gamma, detector blur and
    noise, window, collimation borders, side marker."""
    size = density.shape[0]
    film = F32(1.0) - np.exp(F32(-acq.exposure) * np.maximum(density, F32(0.0)))
    film = film * F32(1.0 / (1.0 - np.exp(-acq.exposure * REFERENCE_DENSITY)))
    film = _gamma_table(acq.gamma)[(clamp(film, 0.0, 1.0) * F32(GAMMA_STEPS - 1)).astype(np.int32)]
    film = blur(film, acq.blur_px * size / REFERENCE_SIZE)
    film = film + rng.standard_normal(film.shape, dtype=F32) * F32(acq.noise)
    film = F32(acq.black) + film * F32(acq.white - acq.black)
    _collimate(film, acq)
    if acq.marker:
        _stamp_marker(film, acq.marker, acq.white)
    return (clamp(film, F32(0.0), F32(1.0)) * F32(255.0) + F32(0.5)).astype(np.uint8)


def _gamma_table(gamma: float) -> np.ndarray:
    """Gamma as a lookup table: five times cheaper than a float power over the film."""
    return np.linspace(0.0, 1.0, GAMMA_STEPS, dtype=F32) ** F32(gamma)


def _collimate(film: np.ndarray, acq: Acquisition) -> None:
    size = film.shape[0]
    top, bottom, left, right = (int(round(w * size)) for w in acq.collimation)
    level = F32(acq.collimation_level)
    if top:
        film[:top] = level
    if bottom:
        film[size - bottom :] = level
    if left:
        film[:, :left] = level
    if right:
        film[:, size - right :] = level


def _stamp_marker(film: np.ndarray, letter: str, white: float) -> None:
    """The lead letter sits in the upper corner on its side: L on the image right."""
    size = film.shape[0]
    glyph = np.array([[c == "1" for c in row] for row in GLYPHS[letter]])
    scale = max(1, int(round(FILM.marker_size * size / glyph.shape[0])))
    glyph = np.kron(glyph, np.ones((scale, scale), dtype=bool))
    inset = int(round(MARKER_CORNER * size)) + 2
    row = inset
    col = size - inset - glyph.shape[1] if letter == "L" else inset
    film[row : row + glyph.shape[0], col : col + glyph.shape[1]][glyph] = F32(white)
