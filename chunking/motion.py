"""Motion candidates for reuse: where each patch's content was in the last frame.

Dense optical flow (OpenCV's DIS, on the frames brought to the LR size) from the current
frame to the last one gives, for every pixel, where it came from; a patch's vector is the
median over its pixels, scaled to whole HR pixels.  A patch's own median misses where it
straddles two motions (an edge of a moving object, a background seen through), so, as a
video codec predicts a block's motion from its neighbours and from the last frame (the
spatial and temporal candidates of H.265's merge mode), each patch also tries its 8
neighbours' vectors and the vector it took in the last frame, and the encoder then moves each
patch's best one by a pixel in 8 directions (``server.planning.route_errors``).  The encoder
measures whether moving the last frame's detail along each beats the other routes, so a wrong
vector costs nothing but the time to try it.
"""

from __future__ import annotations

import cv2
import numpy as np

from fitcast.grid import Grid
from fitcast.upscale import MAX_MOTION

NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))  # (dy, dx) in patches


class MotionEstimator:
    """Per-patch motion vectors between consecutive HR frames of one grid."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)

    def candidates(self, last: np.ndarray, current: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
        """int8 ``[C, gh, gw, 2]`` candidate fields: each patch's own vector (:meth:`vectors`), its
        8 neighbours' (edge patches repeat their own) and ``previous`` (the vectors the patches
        took in the last frame) when given.  Fields that are all zero or repeat an earlier one are
        left out (reuse in place is always tried)."""
        own = self.vectors(last, current)
        gh, gw = own.shape[:2]
        pad = np.pad(own, ((1, 1), (1, 1), (0, 0)), mode="edge")
        fields = [own] + [pad[1 + dy : 1 + dy + gh, 1 + dx : 1 + dx + gw] for dy, dx in NEIGHBOURS]
        if previous is not None:
            fields.append(previous)
        out: list[np.ndarray] = []
        for f in fields:
            if f.any() and not any(np.array_equal(f, g) for g in out):
                out.append(np.ascontiguousarray(f))
        return np.stack(out) if out else np.zeros((0, gh, gw, 2), np.int8)

    def vectors(self, last: np.ndarray, current: np.ndarray) -> np.ndarray:
        """int8 ``[gh, gw, 2]`` (dy, dx): patch p of ``current`` is best matched at p + (dy, dx) in
        ``last`` (both RGB uint8, HR); clipped to the reuse route's reach."""
        g, p = self.grid, self.grid.patch
        flow = self._dis.calc(self._gray(current), self._gray(last), None)  # current(x) ~ last(x + flow(x))
        full = np.pad(flow, ((0, g.gh * p - g.lr_h), (0, g.gw * p - g.lr_w), (0, 0)), mode="edge")
        blocks = full.reshape(g.gh, p, g.gw, p, 2).transpose(0, 2, 1, 3, 4).reshape(g.gh, g.gw, p * p, 2)
        median = np.median(blocks, axis=2)[..., ::-1] * g.scale  # (dy, dx) per patch, HR pixels
        return np.rint(median).clip(-MAX_MOTION, MAX_MOTION).astype(np.int8)

    def _gray(self, rgb: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return cv2.resize(gray, (self.grid.lr_w, self.grid.lr_h), interpolation=cv2.INTER_AREA)
