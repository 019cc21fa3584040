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


def test_bd_rate_of_known_curves():
    from bench.common import bd_rate, bd_text

    rate = [500.0, 1000.0, 2000.0, 4000.0]
    psnr = [34.0, 37.0, 40.0, 43.0]
    for method in ("pchip", "cubic"):
        assert bd_rate(rate, psnr, rate, psnr)[method] == pytest.approx(0.0, abs=1e-6)
        assert bd_rate(rate, psnr, [r / 2 for r in rate], psnr)[method] == pytest.approx(-50.0, abs=1e-4)
        assert bd_rate(rate, psnr, [r * 1.2 for r in rate], psnr)[method] == pytest.approx(20.0, abs=1e-4)
    assert bd_rate(rate, psnr, rate, psnr)["overlap"] == 1.0
    assert bd_rate(rate, psnr, rate, [p + 20 for p in psnr]) is None  # no common PSNR range
    assert bd_rate(rate[:3], psnr[:3], rate, psnr) is None  # four points each
    # curves that share a third of their range: the number is computed, but not published
    part = bd_rate(rate, psnr, rate, [p + 6 for p in psnr])
    assert part["overlap"] == pytest.approx(1 / 5) and not part["published"]
    assert bd_text(part).startswith("not published: overlap 20 %")
    assert "overlap 100 %" in bd_text(bd_rate(rate, psnr, [r / 2 for r in rate], psnr))


def test_vmaf_orders_a_clip_above_its_damaged_copy(leaf_piece, tmp_path):
    """libvmaf through the bundled ffmpeg: a clip against itself scores near 100, its x2
    downscale + lanczos upscale clearly lower."""
    from fitcast.media import VideoWriter, downscale, iter_frames, upscale, vmaf

    frames = list(iter_frames(leaf_piece, max_frames=8))
    h, w = frames[0].shape[:2]
    same, soft = tmp_path / "same.mp4", tmp_path / "soft.mp4"
    with VideoWriter(same, w, h, 30, crf=0) as a, VideoWriter(soft, w, h, 30, crf=0) as b:
        for f in frames:
            a.write(f)
            b.write(upscale(downscale(f, 4), 4, "lanczos"))
    high, low = vmaf(same, leaf_piece), vmaf(soft, leaf_piece)
    assert high > 95
    assert 0 <= low < high - 10, (high, low)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_separable_lanczos_gives_opencvs_pixels(scale, leaf_piece):
    """fitcast.lanczos equals cv2.resize(INTER_LANCZOS4) up to float rounding (+-1 on < 3e-4 of the
    values) on a real frame and on noise, odd sizes included."""
    import cv2

    from fitcast.lanczos import lanczos4
    from fitcast.media import iter_frames

    frame = next(iter_frames(leaf_piece))[:181, :317]  # odd sizes: the borders are replicated like OpenCV's
    noise = np.random.default_rng(scale).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for img in (frame, noise):
        ref = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_LANCZOS4)
        d = np.abs(lanczos4(img, scale).astype(int) - ref)
        assert d.max() <= 1 and (d > 0).mean() < 3e-4
