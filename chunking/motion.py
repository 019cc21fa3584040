"""Motion candidates for reuse: where each patch's content was in the last frame.

Dense optical flow (OpenCV's DIS, on the frames brought to the LR size) from the current
frame to the last one gives, for every pixel, where it came from; a patch's vector is the
median over its pixels, scaled to whole HR pixels.  The encoder measures whether moving the last
frame's detail along it beats the
other routes, so a wrong vector costs nothing but the time to try it.
"""

from __future__ import annotations

import cv2
import numpy as np

from fitcast.grid import Grid
from fitcast.upscale import MAX_MOTION


class MotionEstimator:
    """Per-patch motion vectors between consecutive HR frames of one grid."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)

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
