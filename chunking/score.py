"""Patch difficulty scorers: lower score = harder to upscale.

The default scorer is PSNR-Y of lanczos(LR patch) against the HR patch, computed
on the whole-frame lanczos upscale (which is what the client adds the models'
residuals to), over the HR pixels of each patch that lie inside the frame.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
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


class PatchErrors:
    """Per-patch squared Y errors of one frame's ``base`` plus residual blocks against ``hr``,
    patch by patch: what :func:`patch_sse_y` gives for ``saturate(base + residual)`` on the
    patches asked for, without composing a whole frame (the encoder's plan stage scores a
    dozen candidate residuals a frame, most of them on a few patches).  Pixels outside the
    frame count nothing."""

    def __init__(self, base: np.ndarray, hr: np.ndarray, grid: Grid) -> None:
        self.grid = grid
        ps = grid.hr_patch
        self.base, self.hr = self._blocks(base), self._blocks(hr)  # [gh * gw, Ps, Ps, 3], row-major
        self.valid = np.ascontiguousarray(grid.valid_mask(), np.float32).reshape(grid.patches, ps, ps)
        self._base_error: np.ndarray | None = None  # Y(base) - Y(hr) blocks, for at_luma

    def _blocks(self, frame: np.ndarray) -> np.ndarray:
        g, ps = self.grid, self.grid.hr_patch
        full = np.zeros((g.gh * ps, g.gw * ps, 3), np.uint8)
        full[: frame.shape[0], : frame.shape[1]] = frame
        return np.ascontiguousarray(full.reshape(g.gh, ps, g.gw, ps, 3).transpose(0, 2, 1, 3, 4)).reshape(
            g.patches, ps, ps, 3)

    def of_base(self) -> np.ndarray:
        """``float64[gh, gw]``: the base alone (no residual)."""
        return self._sse(self.base, self.hr, self.valid, None).reshape(self.grid.shape)

    def of_all(self, residual: np.ndarray) -> np.ndarray:
        """``float64[gh, gw]`` with ``residual`` int16 ``[gh * gw, Ps, Ps, 3]`` (row-major) on every patch."""
        return self._sse(self.base, self.hr, self.valid, residual).reshape(self.grid.shape)

    def at(self, rows: np.ndarray, cols: np.ndarray, residual: np.ndarray | None) -> np.ndarray:
        """``float64[n]`` of the patches (rows, cols) with ``residual`` int16 ``[n, Ps, Ps, 3]`` (None: none)."""
        if len(rows) == 0:
            return np.zeros(0)
        idx = rows * self.grid.gw + cols
        return self._sse(self.base[idx], self.hr[idx], self.valid[idx], residual)

    def at_luma(self, rows: np.ndarray, cols: np.ndarray, luma: np.ndarray) -> np.ndarray:
        """``float64[n]`` of the patches (rows, cols) with a residual given by its luma ``luma``
        ``float32[n, Ps, Ps]`` (Y of the RGB residual, without the offset): luma is linear in RGB,
        so the error is the base's plus the residual's, except where ``base + residual`` saturates
        (counted as if it did not: an estimate where the base is near black or white)."""
        if len(rows) == 0:
            return np.zeros(0)
        if self._base_error is None:
            n, ps = self.grid.patches, self.grid.hr_patch
            self._base_error = y_error(self.base.reshape(n * ps, ps, 3), self.hr.reshape(n * ps, ps, 3)).reshape(
                n, ps, ps)
        idx = rows * self.grid.gw + cols
        d = self._base_error[idx] + luma
        return np.einsum("nij,nij,nij->n", d, d, self.valid[idx], dtype=np.float64)

    def _sse(self, base: np.ndarray, hr: np.ndarray, valid: np.ndarray, residual: np.ndarray | None) -> np.ndarray:
        """``float64[n]`` of blocks ``base``/``hr`` ``[n, Ps, Ps, 3]`` with ``residual``, ``valid`` ``[n, Ps, Ps]``."""
        n, ps = base.shape[0], self.grid.hr_patch
        base, hr = base.reshape(n * ps, ps, 3), hr.reshape(n * ps, ps, 3)
        pred = base if residual is None else cv2.add(base, np.ascontiguousarray(residual).reshape(n * ps, ps, 3),
                                                     dtype=cv2.CV_8U)
        d = y_error(pred, hr)
        return cv2.multiply(cv2.multiply(d, d), valid.reshape(n * ps, ps)).reshape(n, ps * ps).sum(axis=1,
                                                                                                   dtype=np.float64)


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
