"""Defaults chosen by the machine: capability parsing and every choice, on stated capabilities
(no timings are asserted: measurements are stubbed where a choice depends on one)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from fitcast.machine import Cpu, MeasurementCache
from fitcast.runtime import precision_choice as play_precision
from fitcast.runtime import runtime_choice
from sr_models.tuning import layout_choice, measure_layouts, precision_choice

AVX512_BF16 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
physical id\t: 0
core id\t: 0
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16
processor\t: 1
model name\t: AMD EPYC 9R14
physical id\t: 0
core id\t: 1
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16
"""
AVX2_ONLY = AVX512_BF16.replace(" avx512f avx512_vnni avx512_bf16", "").replace("9R14", "7B13")
SMT = AVX2_ONLY.replace("core id\t: 1", "core id\t: 0")  # two threads of one core
ARM = "processor\t: 0\nFeatures\t: fp asimd asimddp bf16 i8mm\nCPU implementer\t: 0x41\n"


def cpu(text: str, arch: str = "x86_64", logical: int = 2) -> Cpu:
    return Cpu.from_cpuinfo(text, arch=arch, logical=logical)


def test_cpuinfo_parsing():
    big, small = cpu(AVX512_BF16), cpu(AVX2_ONLY)
    assert big.model == "AMD EPYC 9R14" and big.cores == 2
    assert big.native_bf16 and big.int8_dot and not big.int8_saturates
    assert not small.native_bf16 and not small.int8_dot and small.int8_saturates
    assert "avx512_bf16" in big.summary() and "avx512" not in small.summary()
    assert big.fingerprint != small.fingerprint
    assert cpu(SMT).cores == 1 and cpu(SMT).logical == 2
    arm = cpu(ARM, arch="aarch64", logical=1)
    assert arm.native_bf16 and arm.int8_dot and not arm.int8_saturates


def test_training_precision_follows_native_bf16():
    assert precision_choice("cpu", cpu(AVX512_BF16)).value is True
    fp32 = precision_choice("cpu", cpu(AVX2_ONLY))
    assert fp32.value is False and fp32.source == "capability" and "bf16" in fp32.reason
    assert precision_choice("cuda", cpu(AVX2_ONLY)).value is True
    assert precision_choice("cpu", cpu(AVX2_ONLY), override=True).value is True  # a setting wins


def test_training_layout_is_measured_once_and_cached(tmp_path):
    calls = []

    def timer(channels_last: bool, bf16: bool, iterations: int) -> float:
        calls.append((channels_last, bf16))
        return 0.10 if channels_last else 0.08  # NCHW faster on this imaginary machine

    cache = MeasurementCache(tmp_path, cpu=cpu(AVX2_ONLY))
    first = layout_choice("cpu", False, cache=cache, timer=timer)
    assert first.value is False and first.source == "measured" and "measured now" in first.reason
    n = len(calls)
    assert n > 0 and {c[1] for c in calls} == {False}
    again = layout_choice("cpu", False, cache=cache, timer=timer)
    assert again.value is False and "cached" in again.reason and len(calls) == n
    # another machine (fingerprint) measures for itself; bf16 is a separate measurement
    other = MeasurementCache(tmp_path, cpu=cpu(AVX512_BF16))
    assert layout_choice("cpu", True, cache=other, timer=lambda cl, b, i: 0.05 if cl else 0.06).value is True
    assert layout_choice("cpu", False, True, cache=cache, timer=timer).value is True  # a setting wins
    assert layout_choice("cpu", True, cache=cache, timer=timer, measure=False).value is None


def test_measure_layouts_alternates_and_takes_medians():
    order = []

    def timer(channels_last, bf16, iterations):
        order.append(channels_last)
        return {True: [0.3, 0.1, 0.2], False: [0.5, 0.4, 0.6]}[channels_last][order.count(channels_last) - 1]

    times = measure_layouts(False, rounds=3, timer=timer)
    assert order == [True, False] * 3
    assert times == {"nhwc": 0.2, "nchw": 0.5}


def test_player_precision_by_weight_bits_and_cpu():
    avx2, vnni = cpu(AVX2_ONLY), cpu(AVX512_BF16)
    seven = {"int8": 7, "fp32": None}
    eight = {"int8": None, "fp32": None}  # an asset made before weight_bits existed
    assert play_precision("auto", seven, avx2).value == "int8"
    assert play_precision("auto", seven, vnni).value == "int8"
    legacy = play_precision("auto", eight, avx2)
    assert legacy.value == "fp32" and "saturate" in legacy.reason
    assert play_precision("auto", eight, vnni).value == "int8"
    assert play_precision("auto", {"fp32": None}, avx2).value == "fp32"
    assert play_precision("int8", eight, avx2).value == "int8"  # asked for: honoured
    with pytest.raises(ValueError, match="ships no int8"):
        play_precision("int8", {"fp32": None}, avx2)


def test_runtime_choice_measures_once_per_machine(tmp_path, monkeypatch):
    import fitcast.runtime as rt

    monkeypatch.setattr(rt, "available_runtimes", lambda: ["openvino", "ort"])
    monkeypatch.setattr(rt, "runtime_versions", lambda: {"openvino": "1", "ort": "2"})
    cache = MeasurementCache(tmp_path, cpu=cpu(AVX2_ONLY))
    probes = []

    def probe(runtimes):
        probes.append(tuple(runtimes))
        return {"openvino": 0.2, "ort": 0.1}

    chosen = runtime_choice("auto", precision="int8", probe=probe, cache=cache)
    assert chosen.value == "ort" and chosen.source == "measured" and probes == [("openvino", "ort")]
    assert runtime_choice("auto", precision="int8", probe=probe, cache=cache).value == "ort" and len(probes) == 1
    unmeasured = runtime_choice("auto", precision="fp32", cache=cache)  # no probe, nothing cached
    assert unmeasured.value == "openvino" and "not measured" in unmeasured.reason
    monkeypatch.setattr(rt, "available_runtimes", lambda: ["ort"])
    assert runtime_choice("auto", precision="int8", probe=probe, cache=cache).value == "ort"
    assert runtime_choice("ort", cache=cache).source == "flag"


def test_cache_survives_a_corrupt_file(tmp_path):
    cache = MeasurementCache(tmp_path, cpu=cpu(AVX2_ONLY))
    cache.path.parent.mkdir(parents=True, exist_ok=True)
    cache.path.write_text("{not json")
    assert cache.get("x") is None
    value, cached = cache.measure("x", lambda: {"a": 1})
    assert value == {"a": 1} and not cached
    assert cache.measure("x", lambda: pytest.fail("measured twice"))[1]


def test_doctor_reports_machine_and_every_choice(tmp_path):
    env = {"FITCAST_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "fitcast", "doctor", "--json"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    here = Cpu.detect()
    assert report["machine"]["fingerprint"] == here.fingerprint
    assert report["machine"]["native_bf16"] == here.native_bf16
    enc, ply = report["encode"], report["play"]
    assert enc["train_precision"]["value"] == ("bf16" if here.native_bf16 else "fp32")
    assert enc["train_layout"]["value"] in ("nhwc", "nchw") and enc["train_layout"]["source"] == "measured"
    assert enc["int8_weight_bits"]["value"] == 7
    assert ply["runtime_int8"]["value"] in ply["runtimes_installed"]
    assert ply["precision_new_assets"]["value"] == "int8"
    # the measurements were cached: a second run measures nothing and agrees
    text = subprocess.run([sys.executable, "-m", "fitcast", "doctor", "--no-measure"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "cached measurement" in text.stdout and enc["train_layout"]["value"] in text.stdout
    assert here.model in text.stdout


def test_shipped_int8_models_have_7_bit_weights(leaf_asset):
    import lzma

    import onnx
    from onnx import numpy_helper

    from fitcast.manifest import parse

    m = parse((leaf_asset / "sr" / "manifest.json").read_text())
    int8 = [e for e in m.models if e.precision == "int8"]
    assert int8 and all(e.weight_bits == 7 for e in int8)
    for e in int8:
        graph = onnx.load_from_string(lzma.decompress((leaf_asset / "sr" / e.uri).read_bytes())).graph
        weights = [numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
        assert weights and all(w.min() >= -64 and w.max() <= 64 for w in weights)  # 2 x 255 x 64 < 2^15
        assert max(int(np.abs(w).max()) for w in weights) > 32  # the 7 bits are used


@pytest.fixture(scope="module")
def legacy_asset(leaf_asset, tmp_path_factory):
    """The leaf asset as an encode before 7-bit weights made it: int8 models with 8-bit weights
    and no ``weight_bits`` in the manifest."""
    import shutil

    from fitcast.asset import open_asset
    from fitcast.manifest import compress_model, parse
    from fitcast.storage import put_content
    from mobile.export import calibration_windows
    from sr_models.export import quantize_int8

    out = tmp_path_factory.mktemp("legacy") / "leaf"
    shutil.copytree(leaf_asset, out)
    asset = open_asset(str(out))
    m = asset.manifest
    for e in m.models:
        if e.precision != "int8":
            continue
        fp32 = asset.read_model(m.model(e.id, "fp32"))
        blob = compress_model(quantize_int8(fp32, calibration_windows(asset, m, group=e.group), weight_bits=8))
        path, digest = put_content(out / "sr" / "models", blob, "onnx.xz")
        e.uri, e.sha256, e.bytes, e.weight_bits = f"models/{path.name}", digest, len(blob), None
    doc = json.loads(m.to_json())
    for entry in doc["models"]:
        entry.pop("weight_bits", None)
    (out / "sr" / "manifest.json").write_text(json.dumps(doc))
    assert all(e.weight_bits is None for e in parse(json.dumps(doc)).models)
    return out


def test_asset_with_8_bit_weights_plays_in_the_exact_precision(legacy_asset, leaf_piece, tmp_path):
    from client.player import PlayOptions, play
    from fitcast.asset import Fetcher

    r = play(str(legacy_asset), PlayOptions(reference=leaf_piece, max_frames=8),
             fetcher=Fetcher(cache_dir=tmp_path / "cache"))
    expect = "fp32" if Cpu.detect().int8_saturates else "int8"
    assert r["precision"] == expect and r["choices"]["precision"]["value"] == expect
    assert r["psnr_y_sr"] > r["psnr_y_lanczos"]


def test_export_requantises_8_bit_weights_and_passes_parity(legacy_asset, tmp_path):
    from mobile.export import PARITY_DB, export_asset

    report = export_asset(str(legacy_asset), tmp_path / "bundle", formats=("onnx",), precisions=("int8",))
    assert report.files and report.ok
    assert all(f.parity_db >= PARITY_DB["int8"] for f in report.files)
