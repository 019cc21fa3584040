"""Per-patch routed upscaling: lanczos for the whole frame, then each model adds
its residual to the patches whose label routes to it, batched per model.

The same functions compose the frame in the encoder (for the quality report and
the do-no-harm gate), the web comparison, nas, mobile and the player, so all see
identical pixels.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping

import cv2
import numpy as np

from fitcast.grid import Grid
from fitcast.manifest import LANCZOS, Manifest
from fitcast.media import upscale
from fitcast.runtime import Session


_INV255 = np.float32(1.0 / 255.0)


def windows_to_input(windows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 windows ``[n, W, W, 3]`` -> float32 NCHW in [0, 1], into ``out`` when given."""
    if out is None:
        out = np.empty((windows.shape[0], windows.shape[3], windows.shape[1], windows.shape[2]), np.float32)
    np.multiply(windows.transpose(0, 3, 1, 2), _INV255, out=out)
    return out


def run_residual(session: Session, windows: np.ndarray, grid: Grid, buffer: np.ndarray | None = None,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Residual (HR units of 0..255) for the central P*s square of each window: ``[n, Ps, Ps, 3]``.

    ``buffer`` is a preallocated float32 ``[>= n, 3, W, W]`` input buffer and ``out`` a
    float32 ``[>= n, Ps, Ps, 3]`` output buffer (the static plan's); crop, NCHW->NHWC and
    the x255 happen in one pass into ``out``.
    """
    n = windows.shape[0]
    x = windows_to_input(windows, None if buffer is None else buffer[:n])
    y = session.run(x)
    o, ps = grid.overlap * grid.scale, grid.hr_patch
    dst = np.empty((n, ps, ps, 3), np.float32) if out is None else out[:n]
    np.multiply(y[:, :, o : o + ps, o : o + ps].transpose(0, 2, 3, 1), np.float32(255.0), out=dst)
    return dst


def add_residual(base_blocks: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """uint8 HR patches = round(clip(base + residual)), in one saturating pass (OpenCV)."""
    base = np.ascontiguousarray(base_blocks)
    res = np.ascontiguousarray(residual, dtype=np.float32)
    flat = base.shape[-2]
    out = cv2.add(base.reshape(-1, flat, 3), res.reshape(-1, flat, 3), dtype=cv2.CV_8U)
    return out.reshape(base.shape)


class FrameCanvas:
    """An HR output buffer padded to the patch grid, with a block view for pasting."""

    def __init__(self, grid: Grid) -> None:
        ps = grid.hr_patch
        self.grid = grid
        self.w, self.h = grid.hr_size
        self.buf = np.zeros((grid.gh * ps, grid.gw * ps, 3), dtype=np.uint8)
        self.blocks = self.buf.reshape(grid.gh, ps, grid.gw, ps, 3).transpose(0, 2, 1, 3, 4)

    def set_base(self, base: np.ndarray) -> None:
        self.buf[: self.h, : self.w] = base

    @property
    def frame(self) -> np.ndarray:
        return self.buf[: self.h, : self.w]


def routes_by_model(routes: Mapping[str, str]) -> dict[str, list[int]]:
    """{"0": "m0", "1": "lanczos", "2": "m0"} -> {"m0": [0, 2]} (lanczos routes need no work)."""
    out: dict[str, list[int]] = defaultdict(list)
    for label, target in routes.items():
        if target != LANCZOS:
            out[target].append(int(label))
    return dict(out)


class RoutedUpscaler:
    """Upscale LR frames of one asset: lanczos base plus routed model residuals.

    The static execution plan: sessions are built by the caller once; the HR
    canvas and one input buffer per model (room for every patch of a frame) are
    allocated here once and reused for every frame; each model runs once per
    frame on the batch of its patches.
    """

    def __init__(self, grid: Grid, sessions: Mapping[str, Session]) -> None:
        self.grid = grid
        self.sessions = dict(sessions)
        self.canvas = FrameCanvas(grid)
        n, w, ps = grid.patches, grid.window, grid.hr_patch
        self.buffers = {mid: np.empty((n, 3, w, w), np.float32) for mid in self.sessions}
        self.residuals = np.empty((n, ps, ps, 3), np.float32)

    @classmethod
    def for_manifest(cls, manifest: Manifest, sessions: Mapping[str, Session]) -> "RoutedUpscaler":
        return cls(manifest.grid(), sessions)

    def upscale(self, lr: np.ndarray, labels: np.ndarray, routes: Mapping[str, str],
                base: np.ndarray | None = None) -> np.ndarray:
        """Return the HR frame (a view into a reused buffer: copy it to keep it).

        ``base`` may pass the lanczos upscale of ``lr`` when the caller already has it.
        """
        self.canvas.set_base(upscale(lr, self.grid.scale, "lanczos") if base is None else base)
        plan = routes_by_model(routes)
        if plan:
            windows = self.grid.windows(self.grid.pad(lr))
            for model_id, wanted in plan.items():
                rows, cols = np.nonzero(np.isin(labels, wanted))
                if rows.size == 0:
                    continue
                residual = run_residual(self.sessions[model_id], windows[rows, cols], self.grid,
                                        self.buffers[model_id], self.residuals)
                blocks = self.canvas.blocks
                blocks[rows, cols] = add_residual(blocks[rows, cols], residual)
        return self.canvas.frame


def select_patches(base: np.ndarray, sr: np.ndarray, labels: np.ndarray, routes: Mapping[str, str],
                   grid: Grid) -> np.ndarray:
    """Per patch: ``sr`` where its group routes to a model, ``base`` (lanczos) elsewhere: the
    frame :meth:`RoutedUpscaler.upscale` gives for ``routes``, from an all-model frame."""
    use_model = np.array([routes[str(g)] != LANCZOS for g in range(len(routes))])[labels]
    ps = grid.hr_patch
    mask = np.repeat(np.repeat(use_model, ps, axis=0), ps, axis=1)[: base.shape[0], : base.shape[1]]
    return np.where(mask[..., None], sr, base)
