"""Drawing primitives shared by the anatomy, findings and devices.

Everything is drawn in *patient coordinates*: x and v run over [0, 1] across the film as a
radiologist views it (x to the image right = the patient's LEFT, v downwards). A `Grid` holds
the patient coordinates of every pixel after the acquisition's rotation / shift / zoom, so a
mask is one vectorised expression over the whole frame, and `Grid.to_pixels` sends curve points
the other way for splatting. Widths are given in patient units and soft edges span one pixel,
so the same study renders alike at any size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from unixcxr.data.synthcxr.config import RASTER

F32 = np.float32


@dataclass(frozen=True)
class Grid:
    """Patient coordinates of each pixel: x, v have shape [S, S]; `px` is one pixel in patient
    units (soft edges use it); `affine` maps patient (x, v, 1) to pixel (col, row)."""

    x: np.ndarray
    v: np.ndarray
    px: float
    affine: np.ndarray  # [2, 3]

    @property
    def size(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """[N, 2] patient (x, v) -> [N, 2] pixel (col, row)."""
        return points @ self.affine[:, :2].T + self.affine[:, 2]


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels and the patient coordinates inside it: local structures are
    computed only where they can appear, which is what keeps rendering fast."""

    rows: slice
    cols: slice
    grid: Grid  # its x, v cover just this window (its size is not the film's)

    def paste(self, full: np.ndarray, values: np.ndarray, op=np.add) -> np.ndarray:
        """Combine `values` into `full` (in place) at this window; returns `full`."""
        region = full[self.rows, self.cols]
        full[self.rows, self.cols] = op(region, values)
        return full


def window(grid: Grid, x0: float, x1: float, v0: float, v1: float) -> Window:
    """The pixels whose patient coordinates may fall in [x0, x1] x [v0, v1]."""
    (a, b, tx), (c, d, tv) = grid.affine.tolist()
    cols = [a * x + b * v + tx for x in (x0, x1) for v in (v0, v1)]
    rows = [c * x + d * v + tv for x in (x0, x1) for v in (v0, v1)]
    height, width = grid.shape
    r0, r1 = min(max(int(min(rows)) - 2, 0), height), min(max(int(max(rows)) + 3, 0), height)
    c0, c1 = min(max(int(min(cols)) - 2, 0), width), min(max(int(max(cols)) + 3, 0), width)
    rows_slice, cols_slice = slice(r0, r1), slice(c0, c1)
    sub = Grid(x=grid.x[rows_slice, cols_slice], v=grid.v[rows_slice, cols_slice], px=grid.px, affine=grid.affine)
    return Window(rows_slice, cols_slice, sub)


def local_layer(grid: Grid, bbox: tuple[float, float, float, float], draw) -> np.ndarray:
    """A full-frame layer that is non-zero only inside bbox (x0, x1, v0, v1)."""
    out = np.zeros(grid.shape, dtype=F32)
    win = window(grid, *bbox)
    if win.grid.x.size:
        out[win.rows, win.cols] = draw(win.grid)
    return out


def make_grid(size: int, rotation: float = 0.0, shift: tuple[float, float] = (0.0, 0.0),
              zoom: float = 1.0) -> Grid:
    """Grid for a film rotated by `rotation` radians about its centre, shifted by `shift` (film
    units) and magnified by `zoom`."""
    cos, sin = np.cos(rotation), np.sin(rotation)
    # image -> patient: p = c + R (q - c - t) / zoom ; patient -> image: q = c + t + zoom R^T (p - c)
    rot = np.array([[cos, -sin], [sin, cos]])
    centre, offset = np.array([0.5, 0.5]), np.asarray(shift, dtype=float)
    q = (np.arange(size, dtype=F32) + F32(0.5)) / F32(size)
    qx = (q - F32(centre[0] + offset[0]))[None, :]  # [1, S] film columns
    qv = (q - F32(centre[1] + offset[1]))[:, None]  # [S, 1] film rows
    x = F32(centre[0]) + F32(rot[0, 0] / zoom) * qx + F32(rot[0, 1] / zoom) * qv  # [S, S]
    v = F32(centre[1]) + F32(rot[1, 0] / zoom) * qx + F32(rot[1, 1] / zoom) * qv
    forward = zoom * rot.T  # patient offset -> film offset
    film = np.concatenate([forward, (centre + offset - forward @ centre)[:, None]], axis=1)
    affine = film * size - np.array([[0, 0, 0.5], [0, 0, 0.5]])  # film units -> pixel centres
    return Grid(x=x, v=v, px=1.0 / (size * zoom), affine=affine)


def ramp(signed: np.ndarray, width: float) -> np.ndarray:
    """Soft step: 0 where `signed` < -width/2, 1 where > width/2 (anti-aliased mask edges).
    Written with in-place ufuncs: it is the most called function of the renderer."""
    out = signed * F32(1.0 / width)
    out += F32(0.5)
    np.maximum(out, F32(0.0), out=out)
    return np.minimum(out, F32(1.0), out=out)


def clamp(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """np.clip keeping float32: the bounds are cast, so the result is not upcast."""
    return np.clip(values, F32(low), F32(high))


def fraction(values: np.ndarray) -> np.ndarray:
    """values mod 1 (twenty times faster than np.mod on float32 arrays)."""
    return values - np.floor(values)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-like blur of standard deviation `sigma` pixels from 3-tap binomial passes (each
    adds variance 1/2, the last one the remainder): a fraction of scipy's cost at small sigma."""
    variance = sigma * sigma
    out = image
    while variance > 1e-6:
        a = F32(min(variance, 0.5) / 2.0)  # [a, 1 - 2a, a] adds variance 2a
        for axis in (0, 1):
            out = _three_tap(out, a, axis)
        variance -= 2.0 * float(a)
    return out


def _three_tap(image: np.ndarray, a: np.float32, axis: int) -> np.ndarray:
    x = np.moveaxis(image, axis, 0)
    out = x * (F32(1.0) - F32(2.0) * a)
    out[1:] += a * x[:-1]
    out[:-1] += a * x[1:]
    out[0] += a * x[0]  # edges: repeat the border pixel
    out[-1] += a * x[-1]
    return np.moveaxis(out, 0, axis)


def chord(offset: np.ndarray, half_width: float) -> np.ndarray:
    """Path length through a cylinder of radius `half_width` at lateral `offset`, in [0, 1]:
    why soft tissue and lungs look thinner (darker / brighter) towards their edges."""
    t = offset * F32(1.0 / half_width)
    return np.sqrt(np.maximum(F32(1.0) - t * t, F32(0.0)))


def ellipse(grid: Grid, cx: float, cv: float, rx: float, rv: float, tilt: float = 0.0) -> np.ndarray:
    """Soft mask of a (tilted) ellipse."""
    cos, sin = np.cos(tilt), np.sin(tilt)
    dx, dv = grid.x - F32(cx), grid.v - F32(cv)
    a = (dx * F32(cos) + dv * F32(sin)) * F32(1.0 / rx)
    b = (dv * F32(cos) - dx * F32(sin)) * F32(1.0 / rv)
    radius = np.sqrt(a * a + b * b)
    return ramp((F32(1.0) - radius) * F32(min(rx, rv)), grid.px)


def segment_distance(grid: Grid, start, end) -> np.ndarray:
    """Distance of every pixel to the segment start-end (patient units)."""
    (x0, v0), (x1, v1) = start, end
    ex, ev = x1 - x0, v1 - v0
    t = ((grid.x - F32(x0)) * F32(ex) + (grid.v - F32(v0)) * F32(ev)) * F32(1.0 / max(ex * ex + ev * ev, 1e-12))
    t = clamp(t, F32(0.0), F32(1.0))
    return np.hypot(grid.x - F32(x0) - t * F32(ex), grid.v - F32(v0) - t * F32(ev))


def curve_points(control: np.ndarray, grid: Grid) -> np.ndarray:
    """Points along a smooth curve THROUGH the control points (Catmull-Rom), dense enough
    (half a pixel apart) to splat as a line: tubes and leads follow anatomical waypoints."""
    control = np.asarray(control, dtype=float)
    padded = np.concatenate([2 * control[:1] - control[1:2], control, 2 * control[-1:] - control[-2:-1]])
    pieces = []
    for i in range(len(control) - 1):
        p0, p1, p2, p3 = padded[i : i + 4]
        count = max(2, int(np.ceil(np.hypot(*(p2 - p1)) / (grid.px * RASTER.line_step_px))) + 1)
        t = np.linspace(0.0, 1.0, count)[:, None]
        pieces.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                             + (3 * p1 - p0 - 3 * p2 + p3) * t**3))  # fmt: skip
    return np.concatenate(pieces)


def splat(grid: Grid, points: np.ndarray, weights: np.ndarray | float, width: float) -> np.ndarray:
    """Draw point clouds (typically dense curve samples) as soft lines of patient `width`:
    accumulate weights per pixel, then one Gaussian blur of the points' bounding box. A line
    of weight 1 per sample peaks at about 1, whatever the size."""
    size = grid.size
    canvas = np.zeros((size, size), dtype=F32)
    pix = grid.to_pixels(np.asarray(points, dtype=float).reshape(-1, 2))
    col, row = np.rint(pix[:, 0]).astype(np.int64), np.rint(pix[:, 1]).astype(np.int64)
    keep = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    if not keep.any():
        return canvas
    weights = np.broadcast_to(np.asarray(weights, dtype=float), col.shape)[keep]
    col, row = col[keep], row[keep]
    sigma = max(RASTER.min_sigma_px, width / grid.px / RASTER.fwhm_per_sigma)
    pad = int(np.ceil(RASTER.blur_truncate * sigma)) + 1
    r0, r1 = max(0, row.min() - pad), min(size, row.max() + pad + 1)
    c0, c1 = max(0, col.min() - pad), min(size, col.max() + pad + 1)
    h, w = r1 - r0, c1 - c0
    local = np.bincount((row - r0) * w + (col - c0), weights=weights, minlength=h * w).astype(F32)
    local = local.reshape(h, w)
    if sigma <= RASTER.binomial_max_sigma_px:
        canvas[r0:r1, c0:c1] = blur(local, sigma)
    else:
        canvas[r0:r1, c0:c1] = gaussian_filter(local, sigma, truncate=RASTER.blur_truncate, mode="constant")
    return canvas * F32(RASTER.line_step_px * np.sqrt(2 * np.pi) * sigma)


def smooth_noise(rng: np.random.Generator, grid: Grid, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1] with about `cells` blobs across the film, drawn on a coarse
    lattice (size-independent content) and upsampled bicubically onto the grid's pixels."""
    coarse = rng.random((cells + 1, cells + 1)).astype(F32)
    image = Image.fromarray(coarse, mode="F").resize((grid.size, grid.size), Image.Resampling.BICUBIC)
    field = np.asarray(image, dtype=F32)
    lo, hi = field.min(), field.max()
    return (field - lo) * F32(1.0 / max(hi - lo, 1e-6))
