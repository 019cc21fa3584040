"""Phone export (.onnx and ExecuTorch .pte, parity-checked) and the device benchmark, host and adb paths."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import pytest

pytest.importorskip("executorch", reason="phone export needs executorch: pip install 'fitcast[mobile]'")

from mobile.benchmark import PROFILE_FORMAT  # noqa: E402
from mobile.benchmark import main as benchmark_main
from mobile.export import PARITY_DB, export_asset  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, leaf_asset) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    report = export_asset(str(leaf_asset), out, batch=8)
    assert report.ok, report.to_dict()
    return out


def test_export_gives_onnx_and_pte_that_pass_parity(bundle, leaf_asset):
    info = json.loads((bundle / "bundle.json").read_text())
    manifest = json.loads((leaf_asset / "sr" / "manifest.json").read_text())
    model_ids = {m["id"] for m in manifest["models"]}
    got = {(f["model"], f["format"], f["precision"]) for f in info["files"]}
    assert got == {(mid, fmt, p) for mid in model_ids for fmt in ("onnx", "pte") for p in ("fp32", "int8")}
    for f in info["files"]:
        data = (bundle / f["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]
        assert f["parity_db"] >= PARITY_DB[f["precision"]], f
        if f["format"] == "pte":
            assert data[4:8] == b"ET12"  # an ExecuTorch program (flatbuffer identifier)
            assert f["outside_delegate"] == [], f  # the whole conv net runs in XNNPACK
    int8 = [f for f in info["files"] if f["format"] == "pte" and f["precision"] == "int8"]
    fp32 = {f["model"]: f for f in info["files"] if f["format"] == "pte" and f["precision"] == "fp32"}
    assert all(f["bytes"] < fp32[f["model"]]["bytes"] for f in int8)
    assert info["window"] == manifest["patch"]["size"] + 2 * manifest["patch"]["overlap"]
    assert (bundle / "README.md").read_text().startswith("# fitcast phone bundle")


def test_host_benchmark_writes_a_device_profile(bundle, tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert benchmark_main([str(bundle), "-o", str(out), "--runs", "3"]) == 0
    profile = json.loads(out.read_text())
    assert profile["format"] == PROFILE_FORMAT and profile["device"].startswith("host:")
    assert len(profile["entries"]) == 8
    for e in profile["entries"]:
        assert 0 < e["p50_ms"] <= e["p90_ms"] and e["fps"] == pytest.approx(1000 / e["p50_ms"], rel=0.01)
        assert e["output"] == "1280x720" and e["calls_per_frame"] == -(-(20 * 12) // 8)
    assert "p50 ms" in capsys.readouterr().out


FAKE_ADB = r'''#!{python}
import json, sys
args = sys.argv[1:]
with open({log!r}, "a") as fh:
    fh.write(json.dumps(args) + "\n")
if args[:2] == ["-s", "PHONE1"]:
    args = args[2:]
cmd = " ".join(args)
if "getprop ro.product.model" in cmd:
    print("Pixel 8")
elif "getprop ro.product.cpu.abi" in cmd:
    print("arm64-v8a")
elif "executor_runner" in cmd:
    print("I 00:00:00.001 executorch:executor_runner.cpp:180] Model executed successfully 1 time(s) in 12.500000 ms.")
elif "onnxruntime_perf_test" in cmd:
    print("Session creation time cost: 0.05 s\nTotal inference requests: 30\nAverage inference time cost: 9.1 ms\n"
          "P50 Latency: 0.009 s\nP90 Latency: 0.0105 s\nP95 Latency: 0.011 s\nPeak working set size: 52428800 bytes")
'''


def test_adb_path_pushes_runs_and_parses(bundle, tmp_path, monkeypatch):
    bindir, log = tmp_path / "bin", tmp_path / "adb.log"
    bindir.mkdir()
    adb = bindir / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable, log=str(log)))
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    runners = {}
    for name in ("executor_runner", "onnxruntime_perf_test"):
        runners[name] = tmp_path / name
        runners[name].write_bytes(b"\x7fELF fake")
    out = tmp_path / "phone.json"
    rc = benchmark_main([str(bundle), "--adb", "--serial", "PHONE1", "--runs", "4", "-o", str(out),
                         "--pte-runner", str(runners["executor_runner"]),
                         "--ort-runner", str(runners["onnxruntime_perf_test"])])
    assert rc == 0
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(c[:2] == ["-s", "PHONE1"] for c in calls)
    calls = [c[2:] for c in calls]
    assert calls[2] == ["shell", "mkdir", "-p", "/data/local/tmp/fitcast"]
    assert ["push", str(runners["executor_runner"]), "/data/local/tmp/fitcast/executor_runner"] in calls
    assert ["shell", "chmod", "755", "/data/local/tmp/fitcast/onnxruntime_perf_test"] in calls
    pte_runs = [c for c in calls if c[:2] == ["shell", "/data/local/tmp/fitcast/executor_runner"]]
    info = json.loads((bundle / "bundle.json").read_text())
    n_pte = sum(f["format"] == "pte" for f in info["files"])
    assert len(pte_runs) == 4 * n_pte  # one invocation per run
    assert all(c[2] == "--model_path" and c[3].endswith(".pte") for c in pte_runs)
    # every model was pushed before it ran
    for f in info["files"]:
        assert ["push", str(bundle / f["file"]), f"/data/local/tmp/fitcast/{Path(f['file']).name}"] in calls
    profile = json.loads(out.read_text())
    assert profile["device"] == "Pixel 8 (arm64-v8a)"
    calls_per_frame = -(-(20 * 12) // 8)
    for e in profile["entries"]:
        if e["format"] == "pte":
            assert e["p50_ms"] == pytest.approx(12.5 * calls_per_frame) and e["peak_mb"] is None
        else:
            assert e["p50_ms"] == pytest.approx(9.0 * calls_per_frame)
            assert e["p90_ms"] == pytest.approx(10.5 * calls_per_frame) and e["peak_mb"] == 50.0


def test_adb_missing_is_a_one_line_error(bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    runner = tmp_path / "executor_runner"
    runner.write_bytes(b"x")
    assert benchmark_main([str(bundle), "--adb", "--pte-runner", str(runner)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mobile.benchmark: error:") and "adb" in err and "\n" not in err
