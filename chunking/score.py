"""Patch difficulty scorers: lower score = harder to upscale.

The default scorer is PSNR-Y of lanczos(LR patch) against the HR patch, computed
on the whole-frame lanczos upscale (which is what the client adds the models'
residuals to), over the HR pixels of each patch that lie inside the frame.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from chunking.grid import Grid
from fitcast.media import upscale
from fitcast.metrics import PSNR_CAP, rgb_to_y


def patch_sse_y(pred: np.ndarray, hr: np.ndarray, grid: Grid, scale: int) -> np.ndarray:
    """Per-patch sum of squared Y errors ``float64[gh, gw]`` of two HR frames."""
    d = rgb_to_y(pred) - rgb_to_y(hr)
    d2 = (d * d)[..., None]
    blocks = grid.hr_blocks(d2, scale)[..., 0] * grid.valid_mask(scale)
    return blocks.sum(axis=(2, 3), dtype=np.float64)


def patch_pixels(grid: Grid, scale: int) -> np.ndarray:
    """Number of in-frame HR pixels of each patch ``[gh, gw]``."""
    return grid.valid_mask(scale).sum(axis=(2, 3))


def sse_to_psnr(sse: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    mse = sse / np.maximum(pixels, 1)
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-12))
    return np.minimum(psnr, PSNR_CAP).astype(np.float32)


def lanczos_psnr_y(lr: np.ndarray, hr: np.ndarray, grid: Grid, scale: int, base: np.ndarray | None = None) -> np.ndarray:
    """PSNR-Y of the lanczos upscale per patch, ``float32[gh, gw]``.

    ``base`` may pass a precomputed lanczos upscale of ``lr``.
    """
    if base is None:
        base = upscale(lr, scale, "lanczos")
    return sse_to_psnr(patch_sse_y(base, hr, grid, scale), patch_pixels(grid, scale))


Scorer = Callable[..., np.ndarray]
SCORERS: dict[str, Scorer] = {"lanczos-psnr-y": lanczos_psnr_y}
