"""The renovation changed no behaviour: the tiny leaf encode (``leaf_asset``) gives the manifest
and quality numbers pinned before the code moved (``tests/data/pinned_leaf_tiny.json``).

Structure is pinned exactly; sizes and quality within what another CPU's float rounding can
move (training runs in other kernels on AVX-512 than on AVX2).  ``FITCAST_REPIN=1`` rewrites
the pin from the current code (only ever on purpose, with the reason in the commit).
"""

import json
import os
from pathlib import Path

import pytest

PIN = Path(__file__).with_name("data") / "pinned_leaf_tiny.json"
MODEL_KEYS = ("id", "arch", "params", "macs_per_lr_px", "precision", "group", "encoding", "residual", "weight_bits")
SEGMENT_KEYS = ("index", "uri", "start", "duration", "frames", "routes")
TOP_KEYS = ("format", "scale", "hr", "lr", "fps", "crop", "init_uri", "patch", "method", "k", "scorer")
QUALITY = {"psnr_y_lanczos": 0.01, "psnr_y_bicubic": 0.01, "psnr_y_sr": 0.1, "psnr_y_sr_fp32": 0.1,
           "ssim_y_lanczos": 1e-4, "ssim_y_sr": 1e-3}


def snapshot(asset: Path) -> dict:
    m = json.loads((asset / "sr" / "manifest.json").read_text())
    r = json.loads((asset / "report" / "quality.json").read_text())
    return {
        "manifest": {k: m[k] for k in TOP_KEYS},
        "models": [{k: e.get(k) for k in MODEL_KEYS} for e in m["models"]],
        "segments": [{k: s[k] for k in SEGMENT_KEYS} | {"quality": s["quality"]} for s in m["segments"]],
        "bits": m["bits"],
        "quality": {k: r[k] for k in QUALITY} | {"frames": r["frames"], "precision": r["precision"]},
    }


def test_tiny_encode_matches_the_pin(leaf_asset):
    now = snapshot(leaf_asset)
    if os.environ.get("FITCAST_REPIN") == "1":
        PIN.write_text(json.dumps(now, indent=1) + "\n")
    pin = json.loads(PIN.read_text())
    assert now["manifest"] == pin["manifest"]
    assert now["models"] == pin["models"]
    assert [{k: s[k] for k in SEGMENT_KEYS} for s in now["segments"]] == \
           [{k: s[k] for k in SEGMENT_KEYS} for s in pin["segments"]]
    for got, want in zip(now["segments"], pin["segments"], strict=False):
        assert got["quality"]["psnr_y_lanczos"] == pytest.approx(want["quality"]["psnr_y_lanczos"], abs=0.01)
        assert got["quality"]["psnr_y_sr"] == pytest.approx(want["quality"]["psnr_y_sr"], abs=0.1)
    assert now["bits"]["video"] == pytest.approx(pin["bits"]["video"], rel=0.02)
    assert now["bits"]["models"] == pytest.approx(pin["bits"]["models"], rel=0.15)
    assert now["bits"]["labels"] == pytest.approx(pin["bits"]["labels"], rel=0.05)
    for key, tol in QUALITY.items():
        assert now["quality"][key] == pytest.approx(pin["quality"][key], abs=tol), key
    assert now["quality"]["frames"] == pin["quality"]["frames"]
    assert now["quality"]["precision"] == pin["quality"]["precision"]
