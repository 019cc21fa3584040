"""Patch difficulty scorers: lower score = harder to upscale.

The default scorer is PSNR-Y of lanczos(LR patch) against the HR patch, computed
on the whole-frame lanczos upscale (which is what the client adds the models'
residuals to), over the HR pixels of each patch that lie inside the frame.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fitcast.grid import Grid
from fitcast.media import upscale
from fitcast.metrics import psnr_from_mse, y_error


def patch_sse_y(pred: np.ndarray, hr: np.ndarray, grid: Grid) -> np.ndarray:
    """Per-patch sum of squared Y errors ``float64[gh, gw]`` of two HR frames (pixels outside
    the frame count nothing)."""
    d = y_error(pred, hr)
    d2 = d * d
    ps = grid.hr_patch
    full = np.zeros((grid.gh * ps, grid.gw * ps), np.float32)
    full[: d2.shape[0], : d2.shape[1]] = d2
    return full.reshape(grid.gh, ps, grid.gw, ps).sum(axis=(1, 3), dtype=np.float64)


def patch_pixels(grid: Grid) -> np.ndarray:
    """Number of in-frame HR pixels of each patch ``[gh, gw]``."""
    return grid.valid_mask().sum(axis=(2, 3))


def lanczos_psnr_y(lr: np.ndarray, hr: np.ndarray, grid: Grid, base: np.ndarray | None = None) -> np.ndarray:
    """PSNR-Y of the lanczos upscale per patch, ``float32[gh, gw]``.

    ``base`` may pass a precomputed lanczos upscale of ``lr``.
    """
    if base is None:
        base = upscale(lr, grid.scale, "lanczos")
    sse = patch_sse_y(base, hr, grid)
    return psnr_from_mse(sse / np.maximum(patch_pixels(grid), 1)).astype(np.float32)


Scorer = Callable[..., np.ndarray]
SCORERS: dict[str, Scorer] = {"lanczos-psnr-y": lanczos_psnr_y}
