"""Lanczos-4 upscaling by an integer factor, separable and polyphase: OpenCV's pixels, 2.3x faster.

OpenCV's ``resize(..., INTER_LANCZOS4)`` is the lanczos base every fitcast model adds
its residual to, but it is not vectorised: 27 ms of one core for a 1280x720 frame (x2)
on a 2-core EPYC, most of a 33 ms frame.  Upscaling by an integer factor ``s`` has only
``s`` filter phases per axis, so the same 8-tap kernels (OpenCV's coefficients, rounded
to its 11-bit fixed point) run as ``s`` vertical and ``s`` horizontal separable passes
of ``cv2.filter2D`` in float32, rows interleaved, with a transpose between the passes
(interleaving rows is cheap, interleaving columns is not).  Measured against OpenCV on
random and real frames: equal except for +-1 on 1e-5 to 1e-4 of the values (float32
rounding where OpenCV's fixed point lands on a half); 12.3 against 25.6 ms on one core of a
2-core EPYC (x2 to 1280x720), 23 against 44 ms (x4 to 1920x1080).
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache

import cv2
import numpy as np

_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE
_S45 = 0.70710678118654752440084436210485
_CS = ((1, 0), (-_S45, -_S45), (0, 1), (_S45, -_S45), (-1, 0), (_S45, _S45), (0, -1), (-_S45, _S45))


def _lanczos4_coeffs(x: float) -> np.ndarray:
    """OpenCV's ``interpolateLanczos4``: the 8 weights of taps -3..+4 for a fractional offset ``x``."""
    if x < np.finfo(np.float32).eps:
        out = np.zeros(8, np.float32)
        out[3] = 1.0
        return out
    y0 = -(x + 3) * math.pi * 0.25
    s0, c0 = math.sin(y0), math.cos(y0)
    coeffs = np.array([(_CS[i][0] * s0 + _CS[i][1] * c0) / ((-(x + 3 - i) * math.pi * 0.25) ** 2) for i in range(8)],
                      np.float32)
    return coeffs * (np.float32(1.0) / coeffs.sum(dtype=np.float32))


@lru_cache(maxsize=8)
def _phases(scale: int) -> tuple[tuple[int, np.ndarray], ...]:
    """(anchor, fixed-point kernel as float32) of each output phase of an integer upscale."""
    phases = []
    for p in range(scale):
        fx = (p + 0.5) / scale - 0.5  # source coordinate of output pixel p (pixel centres aligned)
        sx = math.floor(fx)
        kernel = np.rint(_lanczos4_coeffs(float(np.float32(fx - sx))) * _COEF_SCALE).astype(np.float32)
        phases.append((3 - sx, kernel))
    return tuple(phases)


class _Workspace:
    """The float32 intermediates of one (shape, scale), kept between calls: on the VMs measured,
    allocating them afresh (page faults on every first touch) cost more than the filtering."""

    def __init__(self, shape: tuple[int, int, int], scale: int) -> None:
        h, w, c = shape
        self.src = np.empty((h, w, c), np.float32)
        self.tall = np.empty((h * scale, w, c), np.float32)
        self.turned = np.empty((w, h * scale, c), np.float32)
        self.wide = np.empty((w * scale, h * scale, c), np.float32)
        self.wide8 = np.empty((w * scale, h * scale, c), np.uint8)
        phases = _phases(scale)
        self.first = [(anchor, kernel.reshape(8, 1)) for anchor, kernel in phases]
        self.second = [(anchor, (kernel / np.float32(_COEF_SCALE**2)).reshape(8, 1)) for anchor, kernel in phases]


_local = threading.local()


def _workspace(shape: tuple[int, int, int], scale: int) -> _Workspace:
    spaces = _local.__dict__.setdefault("spaces", {})
    key = (shape, scale)
    if key not in spaces:
        if len(spaces) >= 4:
            spaces.clear()
        spaces[key] = _Workspace(shape, scale)
    return spaces[key]


def _upsample_rows(src: np.ndarray, dst: np.ndarray, scale: int, kernels: list[tuple[int, np.ndarray]]) -> None:
    """``src`` (float32 [h, w, c]) upsampled ``scale`` times along its rows into ``dst`` (each phase
    written straight into its interleaved rows)."""
    for p, (anchor, kernel) in enumerate(kernels):
        cv2.filter2D(src, cv2.CV_32F, kernel, dst=dst[p::scale], anchor=(0, anchor), borderType=cv2.BORDER_REPLICATE)


def lanczos4(img: np.ndarray, scale: int) -> np.ndarray:
    """Upscale a uint8 ``[h, w, c]`` image by the integer ``scale`` with OpenCV's Lanczos-4 weights
    (a new array; the intermediates are reused per thread)."""
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"expected a uint8 [h, w, c] image, got {img.dtype}{list(img.shape)}")
    if scale == 1:
        return img.copy()
    ws = _workspace(img.shape, scale)
    np.copyto(ws.src, img)
    _upsample_rows(ws.src, ws.tall, scale, ws.first)
    cv2.transpose(ws.tall, dst=ws.turned)
    _upsample_rows(ws.turned, ws.wide, scale, ws.second)
    cv2.add(ws.wide, 0.0, dst=ws.wide8, dtype=cv2.CV_8U)  # type: ignore[call-overload]  # rounds and saturates
    return cv2.transpose(ws.wide8)
