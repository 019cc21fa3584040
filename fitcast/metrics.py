"""Quality metrics, one implementation for server, client, nas, mobile and benchmarks (DESIGN §6).

PSNR-Y follows the SR papers: Y of BT.601 ``rgb2ycbcr`` computed from 8-bit RGB
(Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255), full frame, no border shave,
per frame capped at 100 dB, then the mean over frames.  Every PSNR in fitcast is
:func:`psnr_from_mse` of some mean squared error.
"""

from __future__ import annotations

import cv2
import numpy as np

PSNR_CAP = 100.0
# BT.601 luma weights of 8-bit RGB (Y = 16 + RGB . Y_WEIGHTS); also the l1-y training loss's.
Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float32) / 255.0
_Y_ROW = Y_WEIGHTS.reshape(1, 3)


def psnr_from_mse(mse, peak: float = 255.0):
    """PSNR (dB) of a mean squared error, capped at :data:`PSNR_CAP` (so a perfect match is 100).

    Works on a float (returns a float) and elementwise on an array."""
    arr = np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore"):
        psnr = np.where(arr > 0, 10.0 * np.log10(peak * peak / np.maximum(arr, 1e-300)), PSNR_CAP)
    psnr = np.minimum(psnr, PSNR_CAP)
    return float(psnr) if psnr.ndim == 0 else psnr


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma (16..235 range, float32) of 8-bit RGB ``[..., 3]``."""
    return rgb.astype(np.float32) @ Y_WEIGHTS + 16.0


def y_of_difference(d: np.ndarray) -> np.ndarray:
    """The luma of an RGB difference or residual ``[h, w, 3]`` (no offset), float32 ``[h, w]``."""
    return cv2.transform(d.astype(np.float32, copy=False), _Y_ROW)


def y_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Y(a) - Y(b), float32 ``[h, w]``, of two 8-bit RGB frames (luma is linear in RGB, so the
    difference is taken first, exactly, then weighted)."""
    _same_shape(a, b)
    return y_of_difference(cv2.subtract(a, b, dtype=cv2.CV_32F))


def mse_y(a: np.ndarray, b: np.ndarray) -> float:
    d = y_error(a, b)
    return float(cv2.norm(d, cv2.NORM_L2SQR)) / d.size


def psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR-Y of one frame pair (8-bit RGB), capped at 100 dB."""
    return psnr_from_mse(mse_y(a, b))


def psnr_rgb(a: np.ndarray, b: np.ndarray, shave: int = 0) -> float:
    """RGB PSNR as the STDO code reports it; ``shave`` crops a border first."""
    _same_shape(a, b)
    if shave:
        a = a[shave:-shave, shave:-shave]
        b = b[shave:-shave, shave:-shave]
    d = cv2.subtract(a, b, dtype=cv2.CV_32F)
    return psnr_from_mse(float(cv2.norm(d, cv2.NORM_L2SQR)) / d.size)


def ssim_y(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM on Y (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, K1=.01, K2=.03).

    float32, with the luma centred on 128 before the second moments (variances do not move
    with the centre, and the squares stay small enough for float32)."""
    _same_shape(a, b)
    x = cv2.transform(a.astype(np.float32), _Y_ROW) - 112.0  # Y - 128
    y = cv2.transform(b.astype(np.float32), _Y_ROW) - 112.0
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mxc, myc = blur(x), blur(y)
    sxx = blur(cv2.multiply(x, x)) - cv2.multiply(mxc, mxc)
    syy = blur(cv2.multiply(y, y)) - cv2.multiply(myc, myc)
    sxy = blur(cv2.multiply(x, y)) - cv2.multiply(mxc, myc)
    mx, my = mxc + 128.0, myc + 128.0
    num = cv2.multiply(2.0 * cv2.multiply(mx, my) + c1, 2.0 * sxy + c2)
    den = cv2.multiply(cv2.multiply(mx, mx) + cv2.multiply(my, my) + c1, sxx + syy + c2)
    return float(cv2.mean(cv2.divide(num, den))[0])


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
