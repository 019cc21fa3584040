"""Per-patch routed upscaling: lanczos for the whole frame, then each model adds
its residual to the patches whose label routes to it, batched per model.

The same functions compose the frame in the encoder (for the quality report and
the do-no-harm gate), the web comparison, nas, mobile and the player, so all see
identical pixels.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable, Mapping

import cv2
import numpy as np

from fitcast.grid import Grid
from fitcast.manifest import LANCZOS, REUSE, Manifest
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

    ``keep_unchanged``: run a model only on windows whose pixels changed since it last ran there
    (:class:`KeptResiduals`; the encoder's evaluate stage).
    """

    def __init__(self, grid: Grid, sessions: Mapping[str, Session], base: str = LANCZOS, *,
                 keep_unchanged: bool = False) -> None:
        self.grid = grid
        self.base = base
        self.sessions = dict(sessions)
        self.canvas = FrameCanvas(grid)
        n, w, ps = grid.patches, grid.window, grid.hr_patch
        self.buffers = {mid: np.empty((n, 3, w, w), np.float32) for mid in self.sessions}
        self.residuals = np.empty((n, ps, ps, 3), np.float32)
        self.kept = ({mid: KeptResiduals(grid, functools.partial(self._residual, mid)) for mid in self.sessions}
                     if keep_unchanged else None)

    @classmethod
    def for_manifest(cls, manifest: Manifest, sessions: Mapping[str, Session]) -> RoutedUpscaler:
        return cls(manifest.grid(), sessions, manifest.base)

    def _residual(self, model_id: str, windows: np.ndarray) -> np.ndarray:
        return run_residual(self.sessions[model_id], windows, self.grid, self.buffers[model_id], self.residuals)

    def upscale(self, lr: np.ndarray, labels: np.ndarray, routes: Mapping[str, str],
                base: np.ndarray | None = None) -> np.ndarray:
        """Return the HR frame (a view into a reused buffer: copy it to keep it).

        ``base`` may pass the base upscale of ``lr`` (``self.base``: lanczos unless the asset says
        otherwise) when the caller already has it.
        """
        self.canvas.set_base(upscale(lr, self.grid.scale, self.base) if base is None else base)
        plan = routes_by_model(routes)
        if plan:
            windows = self.grid.windows(self.grid.pad(lr))
            for model_id, wanted in plan.items():
                rows, cols = np.nonzero(np.isin(labels, wanted))
                if rows.size == 0:
                    continue
                if self.kept is None:
                    residual = self._residual(model_id, windows[rows, cols])
                else:
                    residual = self.kept[model_id].at(windows[rows, cols], rows * self.grid.gw + cols)
                blocks = self.canvas.blocks
                blocks[rows, cols] = add_residual(blocks[rows, cols], residual)
        return self.canvas.frame


class KeptResiduals:
    """One model's last window and residual at every patch of a grid: the model runs only on
    windows whose pixels changed since it last ran there (the same window gives the same residual;
    static content, where the decoder copies skipped blocks bit for bit, keeps most of them).
    ``run`` maps windows ``[n, W, W, 3]`` to residuals ``[n, Ps, Ps, 3]`` of ``dtype``."""

    def __init__(self, grid: Grid, run: Callable[[np.ndarray], np.ndarray], dtype: type = np.float32) -> None:
        n, w, ps = grid.patches, grid.window, grid.hr_patch
        self.run = run
        self.windows = np.zeros((n, w, w, 3), np.uint8)
        self.residual: np.ndarray = np.zeros((n, ps, ps, 3), dtype)
        self.valid = np.zeros(n, bool)
        self.windows_run = 0

    def at(self, windows: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """``[len(idx), Ps, Ps, 3]``: the residuals of ``windows`` ``[len(idx), W, W, 3]``, the
        windows of the patches ``idx`` (row-major), run where the window changed."""
        stale = ~self.valid[idx] | (windows != self.windows[idx]).reshape(idx.size, -1).any(axis=1)
        run = idx[stale]
        if run.size:
            fresh = windows[stale]
            self.residual[run] = self.run(np.ascontiguousarray(fresh))
            self.windows[run], self.valid[run] = fresh, True
            self.windows_run += int(run.size)
        return self.residual[idx]


def select_patches(base: np.ndarray, sr: np.ndarray, labels: np.ndarray, routes: Mapping[str, str],
                   grid: Grid) -> np.ndarray:
    """Per patch: ``sr`` where its group routes to a model, ``base`` (lanczos) elsewhere: the
    frame :meth:`RoutedUpscaler.upscale` gives for ``routes``, from an all-model frame."""
    use_model = np.array([routes[str(g)] != LANCZOS for g in range(len(routes))])[labels]
    ps = grid.hr_patch
    mask = np.repeat(np.repeat(use_model, ps, axis=0), ps, axis=1)[: base.shape[0], : base.shape[1]]
    return np.where(mask[..., None], sr, base)


# The largest shift (HR pixels, each axis) a reused patch may take its detail from.
MAX_MOTION = 64


def residual_to_int16(residual: np.ndarray) -> np.ndarray:
    """Model residuals (float32, HR units of 0..255) rounded to int16, as the residual canvas holds
    them (adding the rounded residual to an integer base gives the same pixels as rounding after)."""
    n, ps = residual.shape[0], residual.shape[1]
    flat = np.ascontiguousarray(residual, dtype=np.float32).reshape(n * ps, ps, 3)
    return cv2.add(flat, 0.0, dtype=cv2.CV_16S).reshape(residual.shape)  # type: ignore[call-overload]


def moved_blocks(margined: np.ndarray, ps: int, rows: np.ndarray, cols: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Blocks ``[n, ..., Ps, Ps]`` of a canvas in a ``MAX_MOTION`` margin (``[H, W, ...]``) at patches
    (rows, cols) moved by ``motion`` ``[n, 2]`` (dy, dx HR pixels, clipped to the margin)."""
    m = MAX_MOTION
    dy = np.clip(motion[:, 0].astype(np.int64), -m, m)
    dx = np.clip(motion[:, 1].astype(np.int64), -m, m)
    view = np.lib.stride_tricks.sliding_window_view(margined, (ps, ps), axis=(0, 1))
    return view[m + rows * ps + dy, m + cols * ps + dx]


class PlannedUpscaler:
    """Upscale the frames of a *planned* asset: each patch of each frame takes the route its
    plan names, and detail can be carried over from the last frame instead of recomputed.

    The state between frames is the **residual canvas** R (int16, HR): what the last frame
    added to its lanczos base.  For each frame and patch, the plan's code is a route:

    - ``lanczos``: R[p] = 0;
    - ``reuse``: R[p] = the last frame's R at p moved by the patch's motion vector (dy, dx HR
      pixels; (0, 0) leaves it as it is): the detail follows the content;
    - a model id: R[p] = that model's residual for the patch (models run once per frame on the
      batch of their patches).

    The frame is then ``saturate(base + R)``.  A segment's first frame starts from R = 0 (its
    plan never says reuse), so segments decode alone and seeking gives the pixels of playing
    through.  The encoder plans with this very class, so the player reproduces its pixels.
    """

    def __init__(self, grid: Grid, sessions: Mapping[str, Session], routes: list[str]) -> None:
        self.grid = grid
        self.sessions = dict(sessions)
        self.routes = list(routes)
        self.models = [(code, r) for code, r in enumerate(self.routes) if r not in (LANCZOS, REUSE)]
        missing = [r for _, r in self.models if r not in self.sessions]
        if missing:
            raise ValueError(f"no session for the planned models {missing}")
        self.lanczos_code = self.routes.index(LANCZOS) if LANCZOS in self.routes else -1
        self.reuse_code = self.routes.index(REUSE) if REUSE in self.routes else -1
        ps, m = grid.hr_patch, MAX_MOTION
        # the canvas sits in a zero margin: detail moved in from outside the frame is none
        self._full = np.zeros((grid.gh * ps + 2 * m, grid.gw * ps + 2 * m, 3), np.int16)
        self.canvas = self._full[m : m + grid.gh * ps, m : m + grid.gw * ps]
        self.blocks = self.canvas.reshape(grid.gh, ps, grid.gw, ps, 3).transpose(0, 2, 1, 3, 4)
        n, w = grid.patches, grid.window
        self.buffers = {mid: np.empty((n, 3, w, w), np.float32) for mid in self.sessions}
        self._residuals = np.empty((n, ps, ps, 3), np.float32)
        self.out = np.empty((grid.lr_h * grid.scale, grid.lr_w * grid.scale, 3), np.uint8)
        self.model_seconds: list[tuple[str, int, float]] = []  # of the last frame (see upscale)

    def reset(self) -> None:
        """Start of a segment: no detail to carry over."""
        self.canvas[:] = 0

    def model_residuals(self, model_id: str, windows: np.ndarray) -> np.ndarray:
        """int16 residual blocks ``[n, Ps, Ps, 3]`` of ``model_id`` for LR ``windows`` ``[n, W, W, 3]``."""
        res = run_residual(self.sessions[model_id], windows, self.grid, self.buffers[model_id], self._residuals)
        return residual_to_int16(res)

    def moved(self, rows: np.ndarray, cols: np.ndarray, motion: np.ndarray) -> np.ndarray:
        """The current canvas's blocks at (rows, cols) moved by ``motion`` ``[n, 2]`` (dy, dx): a copy."""
        return moved_blocks(self._full, self.grid.hr_patch, rows, cols, motion).transpose(0, 2, 3, 1).copy()

    @property
    def margined_canvas(self) -> np.ndarray:
        """The canvas in its zero margin of ``MAX_MOTION`` pixels (read it, never write it)."""
        return self._full

    def upscale(self, lr: np.ndarray, base: np.ndarray, codes: np.ndarray, motion: np.ndarray | None = None,
                *, shed: np.ndarray | None = None) -> np.ndarray:
        """The HR frame for ``codes`` (uint8 ``[gh, gw]``, indices into ``routes``) and ``motion``
        (int8 ``[gh, gw, 2]``, used by reuse); a view into a reused buffer: copy it to keep it.
        ``shed`` (bool ``[gh, gw]``, the player's safety net) marks model patches whose model is
        not run this frame: they keep the detail they had.  ``model_seconds`` then lists
        (model, windows, seconds) of every model run."""
        self.model_seconds = []
        if motion is not None and self.reuse_code >= 0:
            rows, cols = np.nonzero((codes == self.reuse_code) & motion.any(axis=-1))
            if rows.size:  # read every moved block before anything is overwritten
                self.blocks[rows, cols] = self.moved(rows, cols, motion[rows, cols])
        if self.lanczos_code >= 0:
            self.blocks[codes == self.lanczos_code] = 0
        if self.models:
            windows = None
            for code, model_id in self.models:
                mask = codes == code
                if shed is not None:
                    mask &= ~shed
                rows, cols = np.nonzero(mask)
                if rows.size == 0:
                    continue
                if windows is None:
                    windows = self.grid.windows(self.grid.pad(lr))
                t0 = time.perf_counter()
                self.blocks[rows, cols] = self.model_residuals(model_id, windows[rows, cols])
                self.model_seconds.append((model_id, int(rows.size), time.perf_counter() - t0))
        h, w = self.out.shape[:2]
        return cv2.add(base, self.canvas[:h, :w], dst=self.out, dtype=cv2.CV_8U)
