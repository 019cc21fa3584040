import numpy as np
import pytest

from fitcast.metrics import PSNR_CAP, psnr_rgb, psnr_y, rgb_to_y, ssim_y


def test_y_is_bt601_of_8bit_rgb():
    assert rgb_to_y(np.array([0, 0, 0], np.uint8)) == pytest.approx(16.0)
    assert rgb_to_y(np.array([255, 255, 255], np.uint8)) == pytest.approx(235.0, abs=1e-3)
    assert rgb_to_y(np.array([255, 0, 0], np.uint8)) == pytest.approx(16 + 65.481, abs=1e-3)


def test_psnr_values():
    a = np.zeros((8, 8, 3), np.uint8)
    assert psnr_y(a, a) == PSNR_CAP
    b = a.copy()
    b[..., 1] = 10  # Y differs by 10 * 128.553 / 255 everywhere
    d = 10 * 128.553 / 255
    assert psnr_y(a, b) == pytest.approx(10 * np.log10(255**2 / d**2), abs=1e-4)
    assert psnr_rgb(a, b) == pytest.approx(10 * np.log10(255**2 / (100 / 3)), abs=1e-4)


def test_ssim():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert ssim_y(a, a) == pytest.approx(1.0)
    smooth = np.repeat(np.linspace(30, 220, 64)[None, :, None], 64, axis=0).repeat(3, axis=2).astype(np.uint8)

    def noisy(amp):
        return np.clip(smooth.astype(int) + rng.integers(-amp, amp + 1, smooth.shape), 0, 255).astype(np.uint8)

    small, large = ssim_y(smooth, noisy(3)), ssim_y(smooth, noisy(40))
    assert 1.0 > small > large
    assert large < 0.5  # structure-free noise on a flat ramp
    with pytest.raises(ValueError):
        ssim_y(a, a[:32])
