"""Quality metrics, one implementation for server, client and benchmarks.

PSNR-Y follows the SR papers: Y of BT.601 ``rgb2ycbcr`` computed from 8-bit RGB
(Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255), full frame, no border shave,
per frame capped at 100 dB, then the mean over frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

PSNR_CAP = 100.0
_Y_COEF = np.array([65.481, 128.553, 24.966], dtype=np.float32) / 255.0


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma (16..235 range, float32) of 8-bit RGB ``[..., 3]``."""
    return rgb.astype(np.float32) @ _Y_COEF + 16.0


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    if mse <= 0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(peak * peak / mse))


def mse_y(a: np.ndarray, b: np.ndarray) -> float:
    _same_shape(a, b)
    d = rgb_to_y(a) - rgb_to_y(b)
    return float(np.mean(d * d, dtype=np.float64))


def psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR-Y of one frame pair (8-bit RGB), capped at 100 dB."""
    return psnr_from_mse(mse_y(a, b))


def psnr_rgb(a: np.ndarray, b: np.ndarray, shave: int = 0) -> float:
    """RGB PSNR as the STDO code reports it; ``shave`` crops a border first."""
    _same_shape(a, b)
    if shave:
        a = a[shave:-shave, shave:-shave]
        b = b[shave:-shave, shave:-shave]
    d = a.astype(np.float32) - b.astype(np.float32)
    return psnr_from_mse(float(np.mean(d * d, dtype=np.float64)))


def ssim_y(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM on Y (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, K1=.01, K2=.03)."""
    _same_shape(a, b)
    x = rgb_to_y(a).astype(np.float64)
    y = rgb_to_y(b).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")


@dataclass
class Mean:
    """Running mean of per-frame values (PSNR is averaged per frame, not per pixel)."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(float(value))

    @property
    def value(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    def __len__(self) -> int:
        return len(self.values)
