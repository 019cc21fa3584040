"""Fewer bits per shipped weight (sr_models.compact): the grid, its exact int8 export, the choice,
and what an encode ships."""

from __future__ import annotations

import lzma

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from fitcast.manifest import compress_model


def _int8_weights(data: bytes) -> list[np.ndarray]:
    graph = onnx.load_from_string(data).graph
    return [numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]


@pytest.fixture(scope="module")
def trained(leaf_asset, leaf_piece):
    """The leaf asset's first model as a torch network, and real training pairs of its frames
    (decoded LR windows, HR residuals over lanczos) cut as the encoder cuts them."""
    from fitcast.asset import open_asset
    from fitcast.rendition import paired_frames, segments_of
    from sr_models.export import from_onnx
    from sr_models.samples import patch_pairs

    asset = open_asset(str(leaf_asset))
    m = asset.manifest
    entry = m.model(m.models[0].id, "fp32")
    net = from_onnx(entry.arch, asset.read_model(entry))
    grid = m.grid()
    windows, residuals = [], []
    hls = leaf_asset / "hls"
    for _seg, lrs, hrs in paired_frames(leaf_piece, tuple(m.crop), hls, segments_of(hls)):
        for lr, hr in list(zip(lrs, hrs, strict=True))[::5]:
            _, _, w, r = patch_pairs(lr, hr, grid, np.ones((grid.gh, grid.gw), bool))
            windows.append(w)
            residuals.append(r)
    return net, np.concatenate(windows), np.concatenate(residuals), grid


@pytest.mark.parametrize("bits", [6, 4, 3])
def test_snapped_weights_lie_on_the_grid_and_the_int8_export_carries_it_exactly(trained, bits):
    from sr_models.compact import snap_weights
    from sr_models.export import quantize_int8, to_onnx_bytes

    net, windows, _, grid = trained
    snapped = snap_weights(net, bits)
    levels = 2 ** (bits - 1)
    for name, w in snapped.state_dict().items():
        if w.ndim == 4:
            step = w.abs().amax(dim=(1, 2, 3), keepdim=True) / levels
            k = (w / step).numpy()
            assert np.allclose(k, np.round(k), atol=1e-3) and np.abs(k).max() <= levels + 1e-3, name
    calib = np.ascontiguousarray(windows[:64].transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
    full = quantize_int8(to_onnx_bytes(net, sample_hw=(grid.window, grid.window)), calib)
    small = quantize_int8(to_onnx_bytes(snapped, sample_hw=(grid.window, grid.window)), calib)
    weights = _int8_weights(small)
    assert weights and all(np.all(w % (64 // levels) == 0) for w in weights)  # k * 64 / L: exact
    assert max(int(np.abs(w).max()) for w in weights) == 64
    # what is sent and counted: at least a quarter bit less per weight for each bit dropped
    n = sum(w.size for w in weights)
    assert len(compress_model(small)) <= len(compress_model(full)) - (7 - bits) * n / 32


def test_seven_bits_is_the_unchanged_network_and_other_bits_are_refused(trained):
    import torch

    from sr_models.compact import snap_weights

    net = trained[0]
    same = snap_weights(net, 7)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), same.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="weight bits"):
        snap_weights(net, 2)


def test_the_gain_on_training_windows_is_measured_against_lanczos(trained):
    from sr_models.compact import gain_db, snap_weights

    net, windows, residuals, grid = trained
    gain = gain_db(net, windows, residuals, overlap=grid.overlap, scale=grid.scale)
    assert gain > 0.05  # the model helps on its own frames
    assert gain_db(snap_weights(net, 7), windows, residuals, overlap=grid.overlap, scale=grid.scale) == gain
    zero = snap_weights(net, 7)
    for p in zero.parameters():  # a network that adds nothing is lanczos: no gain
        p.data.zero_()
    assert gain_db(zero, windows, residuals, overlap=grid.overlap, scale=grid.scale) == pytest.approx(0, abs=1e-9)


GAINS = {7: 1.00, 6: 0.99, 5: 0.96, 4: 0.85, 3: 0.50}  # dB over the frame: fewer bits, less gain
SIZES = {7: 50_000, 6: 43_000, 5: 36_000, 4: 29_000, 3: 22_000}  # bytes shipped


def test_bits_are_weighed_against_the_rate_they_cost():
    from sr_models.compact import best_bits

    # beside a large video the model's bytes are nothing: keep the gain
    assert best_bits(GAINS, SIZES, other_bytes=20_000_000) == 7
    # a low rung whose models are a large part of its rate gives up a little gain for many bits,
    # but not the gain that 3 bits lose
    assert best_bits(GAINS, SIZES, other_bytes=100_000) in (5, 4)
    # the same worth: fewer bits
    assert best_bits({7: 1.0, 6: 1.0}, {7: 10, 6: 10}, other_bytes=1000) == 6


def test_a_models_gain_counts_over_the_frame_by_the_error_its_patches_carry():
    from sr_models.compact import frame_gains

    gains = {7: 3.0, 5: 2.0}
    # a model serving every patch: its gain is the frame's
    assert frame_gains(gains, own=10.0, rest=0.0) == pytest.approx(gains)
    # serving patches that carry 90 % of the error, it moves the frame more than one carrying 10 %
    hard, easy = frame_gains(gains, own=9.0, rest=1.0), frame_gains(gains, own=1.0, rest=9.0)
    assert gains[7] > hard[7] > easy[7] > 0
    assert hard[7] - hard[5] > easy[7] - easy[5] > 0  # so its bits weigh more too
    # the frame's error after: own * 10^(-gain/10) + rest
    assert frame_gains({7: 10.0}, own=5.0, rest=5.0)[7] == pytest.approx(10 * np.log10(10 / 5.5))


def test_an_encode_ships_the_bits_it_chose(ladder_dir):
    """Every int8 model of a default encode (the ladder's SR rungs) says its bits, and its weights
    lie on that grid."""
    from fitcast.manifest import parse

    seen = 0
    for manifest in sorted((ladder_dir / "rungs").glob("*/sr/manifest.json")):
        m = parse(manifest.read_text())
        for e in m.models:
            if e.precision != "int8":
                continue
            assert e.weight_bits is not None and 3 <= e.weight_bits <= 7
            weights = _int8_weights(lzma.decompress((manifest.parent / e.uri).read_bytes()))
            assert all(np.all(w % (2 ** (7 - e.weight_bits)) == 0) for w in weights)
            seen += 1
    assert seen >= 2
