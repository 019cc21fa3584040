import numpy as np
import pytest

from chunking.groups import assign_groups
from chunking.score import lanczos_psnr_y, patch_sse_y
from fitcast.errors import InvalidInputError
from fitcast.grid import Grid, load_labels, save_labels
from fitcast.media import downscale, iter_frames, upscale
from fitcast.metrics import psnr_y


def test_groups_are_equal_count_quantiles_hardest_first():
    rng = np.random.default_rng(1)
    scores = rng.normal(40, 5, size=(7, 9, 11)).astype(np.float32)
    labels, thresholds = assign_groups(scores, 4)
    assert labels.shape == scores.shape and labels.dtype == np.uint8
    counts = np.bincount(labels.ravel(), minlength=4)
    assert counts.max() - counts.min() <= 1
    # every score of group g is <= every score of group g+1: label 0 is the hardest (lowest PSNR)
    for g in range(3):
        assert scores[labels == g].max() <= scores[labels == g + 1].min()
        assert thresholds[g] == pytest.approx(scores[labels == g].max())
    assert thresholds == sorted(thresholds)


def test_group_ties_are_broken_deterministically_by_position():
    scores = np.full((2, 3, 4), 50.0)
    labels, _ = assign_groups(scores, 2)
    assert (labels.ravel() == np.repeat([0, 1], 12)).all()
    again, _ = assign_groups(scores.copy(), 2)
    assert (labels == again).all()


def test_groups_reject_bad_k():
    with pytest.raises(InvalidInputError):
        assign_groups(np.zeros(3), 0)
    with pytest.raises(InvalidInputError):
        assign_groups(np.zeros(3), 4)


def test_label_map_round_trip():
    labels = np.random.default_rng(0).integers(0, 4, size=(30, 12, 20), dtype=np.uint8)
    data = save_labels(labels)
    assert len(data) < labels.nbytes
    back = load_labels(data)
    assert back.dtype == np.uint8 and (back == labels).all()
    with pytest.raises(InvalidInputError):
        load_labels(b"not an npz")
    with pytest.raises(ValueError):
        save_labels(labels.astype(np.int32))


def test_grid_windows_are_the_padded_crops():
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 255, size=(45, 70, 3), dtype=np.uint8)
    grid = Grid(70, 45, patch=16, overlap=3)
    assert grid.shape == (3, 5)
    padded = np.pad(lr, ((3, 3 + 3 * 16 - 45), (3, 3 + 5 * 16 - 70), (0, 0)), mode="edge")
    win = grid.windows(grid.pad(lr))
    for r in range(3):
        for c in range(5):
            expect = padded[r * 16 : r * 16 + 22, c * 16 : c * 16 + 22]
            assert (win[r, c] == expect).all()
    # the centre of a window is the patch itself
    assert (win[1, 2][3:19, 3:19] == lr[16:32, 32:48]).all()


def test_patch_scores_match_frame_psnr(leaf_piece):
    hr = next(iter_frames(leaf_piece))
    lr = downscale(hr, 2)
    grid = Grid(lr.shape[1], lr.shape[0], patch=32, scale=2)
    scores = lanczos_psnr_y(lr, hr, grid)
    assert scores.shape == grid.shape
    base = upscale(lr, 2)
    # patch (1, 2) by hand
    block = (slice(64, 128), slice(128, 192))
    assert scores[1, 2] == pytest.approx(psnr_y(base[block], hr[block]), abs=1e-3)
    # real content varies: the hardest and easiest patches differ by several dB
    assert scores.max() - scores.min() > 5


def test_patch_errors_of_a_ragged_grid_count_only_pixels_in_the_frame():
    """The last row and column of patches stick out of the frame: what lies outside counts nothing."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 255, size=(90, 140, 3), dtype=np.uint8)  # HR of a 70x45 LR frame at x2
    b = rng.integers(0, 255, size=(90, 140, 3), dtype=np.uint8)
    grid = Grid(70, 45, patch=16, scale=2)
    sse = patch_sse_y(a, b, grid)
    assert sse.shape == grid.shape == (3, 5)
    from fitcast.metrics import mse_y

    assert sse.sum() == pytest.approx(mse_y(a, b) * a.shape[0] * a.shape[1], rel=1e-5)
    block = (slice(64, 90), slice(128, 140))  # patch (2, 4): 26 x 12 HR pixels inside the frame
    assert sse[2, 4] == pytest.approx(mse_y(a[block], b[block]) * 26 * 12, rel=1e-5)
