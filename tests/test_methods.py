"""The three methods of the papers: stdo (per group), jstdo (joint, data-aware sampling), dydca (dynamic branches)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from client.player import PlayOptions, play
from fitcast.asset import Fetcher
from fitcast.errors import InvalidInputError
from fitcast.options import EncodeOptions
from helpers import delivered_psnr
from server.pipeline import encode
from sr_models.archs import build_model
from sr_models.recipes import PRESETS, RECIPES, default_group_weights, recipe_for
from sr_models.train import sampling_weights


def test_data_aware_sampling_gives_each_group_its_weighted_share():
    group = torch.tensor([0] * 10 + [1] * 90)
    p = sampling_weights(group, (2.0, 1.0))
    assert float(p[group == 0].sum()) == pytest.approx(2 / 3)
    assert float(p[group == 1].sum()) == pytest.approx(1 / 3)
    assert sampling_weights(group, None) is None
    assert default_group_weights(3) == (2.0, 1.5, 1.0)


def test_dynamic_model_routes_each_patch_to_its_branch():
    torch.manual_seed(0)
    net = build_model("dydca", scale=2, k=3).eval()
    for branch in net.branches:
        torch.nn.init.normal_(branch.tail.weight, std=0.05)
    assert [b.channels for b in net.branches] == sorted([b.channels for b in net.branches], reverse=True)
    x = torch.rand(6, 3, 20, 20)
    labels = torch.tensor([2, 0, 1, 1, 0, 2])
    with torch.no_grad():
        out = net(x, labels)
        for i in range(6):
            assert torch.allclose(out[i], net.branch(int(labels[i]))(x[i : i + 1])[0], atol=1e-6)


def test_group_weights_are_validated():
    with pytest.raises(InvalidInputError, match="group weights"):
        EncodeOptions.parse(k=2, method="jstdo", group_weights=(1.0,))
    with pytest.raises(InvalidInputError, match="group weights"):
        EncodeOptions.parse(k=2, method="jstdo", group_weights=(1.0, -1.0))


def test_jstdo_end_to_end_on_a_real_clip(bear_piece, tmp_path):
    """One jointly trained model (jstdo) through encode and play. stdo is the shared ``leaf_asset``
    fixture; dydca, the default method, is the command-line test in ``test_e2e.py``."""
    out = tmp_path / "jstdo"
    m = encode(bear_piece, out, EncodeOptions(method="jstdo", k=2, preset="fast", iterations=100, segment_seconds=0.5,
                                              target_fps=0))
    assert m.method == "jstdo"
    assert sorted((e.id, e.precision) for e in m.models) == [("jstdo", "fp32"), ("jstdo", "int8")]
    q = json.loads((out / "report" / "quality.json").read_text())
    r = play(str(out), PlayOptions(reference=bear_piece), fetcher=Fetcher(cache_dir=tmp_path / "cache"))
    assert r["psnr_y_sr"] == pytest.approx(delivered_psnr(q), abs=0.02)
    # 100 iterations already beat lanczos on this detailed clip (measured +0.38 dB here)
    assert r["psnr_y_sr"] > r["psnr_y_lanczos"] + 0.15
    assert np.isfinite(q["seconds"]["train"])


def test_generic_and_warm_start_options_are_validated():
    with pytest.raises(InvalidInputError, match="no generic model for x3"):
        recipe_for(EncodeOptions(scale=3, method="generic"))
    with pytest.raises(InvalidInputError, match="warm start"):
        EncodeOptions.parse(method="dydca", warm_start=True)
    with pytest.raises(InvalidInputError, match="stdo or jstdo"):
        EncodeOptions.parse(method="generic", arch={"name": "espcn_r", "scale": 2, "channels": 8, "body": 0})
    with pytest.raises(InvalidInputError, match="scale"):
        EncodeOptions.parse(scale=5)

    # auto: warm start wherever the preset's network is the generic one
    def warm(**kw) -> bool:
        options = EncodeOptions(**kw)
        return RECIPES[options.method].warm_start(options, PRESETS[options.preset])

    assert warm(method="jstdo") is True
    assert warm(method="stdo", scale=4) is True
    assert warm(method="jstdo", preset="fast") is False
    assert warm(method="jstdo", scale=3) is False  # none ships for x3
    assert warm(method="dydca") is False
    assert warm(method="jstdo", warm_start=False) is False


def test_generic_method_ships_the_packaged_model_untrained(chaplin_piece, tmp_path):
    """--method generic: the shipped generic weights, not trained on this clip (the baseline),
    calibrated to int8 on its patches and gated per segment like every method."""
    from sr_models.export import from_onnx
    from sr_models.generic import generic_arch, generic_weights

    out = tmp_path / "generic"
    m = encode(chaplin_piece, out, EncodeOptions(method="generic", k=2, segment_seconds=0.5, target_fps=0))
    assert m.method == "generic"
    assert sorted((e.id, e.precision) for e in m.models) == [("generic", "fp32"), ("generic", "int8")]
    q = json.loads((out / "report" / "quality.json").read_text())
    assert q["train"] == [] and q["arch"] == generic_arch(2)
    fp32 = next(e for e in m.models if e.precision == "fp32")
    fetcher = Fetcher(cache_dir=tmp_path / "cache")
    from fitcast.asset import open_asset

    net = from_onnx(fp32.arch, open_asset(str(out), fetcher).read_model(fp32))
    shipped = torch.load(generic_weights(2), weights_only=True)
    for name, value in net.state_dict().items():
        assert torch.equal(value, shipped[name]), name
    r = play(str(out), PlayOptions(reference=chaplin_piece), fetcher=fetcher)
    assert r["psnr_y_sr"] == pytest.approx(delivered_psnr(q), abs=0.02)
    assert r["psnr_y_sr"] >= r["psnr_y_lanczos"]


def test_warm_start_from_the_generic_model_learns_faster(chaplin_piece, tmp_path):
    """The same tiny budget (20 iterations) from the generic model beats training from scratch
    (fp32 only: precision is not what this compares)."""
    gains = {}
    for warm in (False, True):
        out = tmp_path / f"warm{warm}"
        encode(chaplin_piece, out, EncodeOptions(method="jstdo", k=2, segment_seconds=0.5, iterations=20,
                                                 warm_start=warm, target_fps=0, int8=False))
        q = json.loads((out / "report" / "quality.json").read_text())
        assert q["warm_start"] is warm
        gains[warm] = q["psnr_y_sr_fp32"] - q["psnr_y_lanczos"]
    assert gains[True] > gains[False] + 0.1, gains  # measured +2.39 vs 0.00 dB (scratch gated to lanczos)


def test_generic_training_script_writes_loadable_weights_and_a_card(tmp_path):
    """scripts/train_generic.py (what made sr_models/weights), on a tiny budget."""
    import subprocess
    import sys

    from sr_models.generic import generic_arch

    out = tmp_path / "weights"
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_generic.py"
    subprocess.run([sys.executable, str(script), "--scales", "2", "--iterations", "20",
                    "--per-clip", "40", "--max-seconds", "0.5", "--out", str(out)], check=True, timeout=300,
                   capture_output=True)
    card = json.loads((out / "generic-x2.json").read_text())
    assert card["arch"] == generic_arch(2) and card["iterations"] == 20
    assert not {"leaf_720p_pyscenedetect.mp4", "goldeneye_1280x544_pyscenedetect.mp4", "bear_480p_cotracker.mp4",
                "tos_800x332_mdn.webm"} & set(card["train_clips"])  # never the benchmark's clips
    assert card["held_out_clip"] not in card["train_clips"]
    net = build_model("espcn_r", scale=2, channels=32, body=2)
    net.load_state_dict(torch.load(out / "generic-x2.pt", weights_only=True))
