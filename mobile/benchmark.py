"""Benchmark a phone bundle's models on the present device or on an Android phone over adb.

    python -m mobile.benchmark BUNDLE [--adb] [--serial SERIAL] [--runner PATH] [--runs 50] -o profile.json

Host: every model file of the bundle runs in its own runtime (``.onnx`` with ONNX
Runtime, ``.pte`` with the ExecuTorch Python runtime) on one frame's worth of
patches — every patch of the LR frame, in the bundle's fixed batches — ``--runs``
times after a warm-up.  Android: the model and the runtime's own benchmark binary
are pushed to ``/data/local/tmp/fitcast`` and run there (``onnxruntime_perf_test``
for ``.onnx``, ExecuTorch's ``executor_runner`` for ``.pte``, one invocation per
run); their output is parsed.  Both print latency p50/p90 per frame, fps at the
output size and peak memory, and write the device profile JSON (the format
``nas/`` reads): ``{"format": "fitcast-device-profile/1", "device": ..., "entries": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fitcast.profile import PROFILE_FORMAT

REMOTE_DIR = "/data/local/tmp/fitcast"


@dataclass
class Entry:
    model: str
    format: str
    precision: str
    runtime: str
    arch: dict
    window: int
    batch: int
    calls_per_frame: int
    output: str  # "WxH" of the upscaled frame
    p50_ms: float  # per frame
    p90_ms: float
    fps: float  # 1000 / p50 (this model on every patch of a frame)
    peak_mb: float | None


class BenchmarkError(RuntimeError):
    """A benchmark could not run (missing runtime, adb failure, unparsable output)."""


def load_bundle(bundle: Path) -> tuple[dict, dict]:
    try:
        info = json.loads((bundle / "bundle.json").read_text())
        manifest = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise BenchmarkError(f"{bundle}: not a phone bundle ({exc})") from None
    return info, manifest


def _frame_geometry(info: dict, manifest: dict) -> tuple[int, str]:
    """(calls per frame: every patch of the frame in the bundle's batches, output size)."""
    gw, gh = manifest["patch"]["grid"]
    return math.ceil(gw * gh / info["batch"]), f"{manifest['hr'][0]}x{manifest['hr'][1]}"


def _arch_of(manifest: dict, model_id: str) -> dict:
    return next(m["arch"] for m in manifest["models"] if m["id"] == model_id)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def host_entries(bundle: Path, *, runs: int = 30, warmup: int = 3, threads: int = 0) -> list[Entry]:
    info, manifest = load_bundle(bundle)
    calls, output = _frame_geometry(info, manifest)
    batch, window = info["batch"], info["window"]
    x = np.random.default_rng(0).random((batch, 3, window, window), dtype=np.float32)
    out = []
    for f in info["files"]:
        path = bundle / f["file"]
        if f["format"] == "onnx":
            from fitcast.runtime import OrtSession

            session = OrtSession(path, threads=threads)
            run, runtime = (lambda s=session: s.run(x)), "onnxruntime"
        else:
            try:
                import torch
                from executorch.runtime import Runtime
            except ImportError:
                raise BenchmarkError("running .pte files on the host needs executorch: "
                                     "pip install 'fitcast[mobile]'") from None
            # the Program must outlive its Method (the method points into it): keep both
            program = Runtime.get().load_program(path)
            method = program.load_method("forward")
            xt = torch.from_numpy(x)
            run, runtime = (lambda p=program, m=method, xt=xt: m.execute([xt])), "executorch-xnnpack"
        for _ in range(warmup):
            run()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            for _ in range(calls):
                run()
            times.append((time.perf_counter() - t0) * 1000)
        p50, p90 = float(np.percentile(times, 50)), float(np.percentile(times, 90))
        out.append(Entry(f["model"], f["format"], f["precision"], runtime, _arch_of(manifest, f["model"]), window,
                         batch, calls, output, round(p50, 3), round(p90, 3), round(1000 / p50, 2),
                         round(_peak_mb(), 1)))
    return out


# ---- Android over adb -------------------------------------------------------------------------

_ORT_P50 = re.compile(r"P50 Latency:\s*([0-9.eE+-]+)\s*s")
_ORT_P90 = re.compile(r"P90 Latency:\s*([0-9.eE+-]+)\s*s")
_ORT_PEAK = re.compile(r"Peak working set size:\s*(\d+)\s*bytes")
_ET_RUN = re.compile(r"executed successfully\s+(\d+)\s+time\(s\) in\s+([0-9.]+)\s*ms")


def parse_ort_perf_test(text: str) -> tuple[float, float, float | None]:
    """(p50 ms, p90 ms, peak MB) of one ``onnxruntime_perf_test`` run (its latencies are per call)."""
    p50, p90 = _ORT_P50.search(text), _ORT_P90.search(text)
    if not p50 or not p90:
        raise BenchmarkError("onnxruntime_perf_test printed no P50/P90 latency")
    peak = _ORT_PEAK.search(text)
    return float(p50.group(1)) * 1000, float(p90.group(1)) * 1000, int(peak.group(1)) / 2**20 if peak else None


def parse_executor_runner(text: str) -> float:
    """Milliseconds per execution reported by ExecuTorch's ``executor_runner``."""
    match = _ET_RUN.search(text)
    if not match:
        raise BenchmarkError("executor_runner printed no 'executed successfully ... in X ms' line")
    return float(match.group(2)) / int(match.group(1))


class Adb:
    def __init__(self, serial: str | None = None, exe: str = "adb") -> None:
        found = shutil.which(exe)
        if found is None:
            raise BenchmarkError("adb is not on PATH (Android platform-tools)")
        self.base = [found] + (["-s", serial] if serial else [])

    def __call__(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise BenchmarkError(f"adb {' '.join(args[:2])} failed: {(proc.stderr or proc.stdout).strip()[-200:]}")
        return proc.stdout

    def device_name(self) -> str:
        model = self("shell", "getprop", "ro.product.model").strip()
        abi = self("shell", "getprop", "ro.product.cpu.abi").strip()
        return f"{model} ({abi})"


def adb_entries(bundle: Path, *, runners: dict[str, Path], serial: str | None = None, runs: int = 30,
                threads: int = 4) -> tuple[str, list[Entry]]:
    info, manifest = load_bundle(bundle)
    calls, output = _frame_geometry(info, manifest)
    adb = Adb(serial)
    device = adb.device_name()
    adb("shell", "mkdir", "-p", REMOTE_DIR)
    remote_runner = {}
    for fmt, local in runners.items():
        remote_runner[fmt] = f"{REMOTE_DIR}/{local.name}"
        adb("push", str(local), remote_runner[fmt])
        adb("shell", "chmod", "755", remote_runner[fmt])
    out = []
    for f in info["files"]:
        if f["format"] not in remote_runner:
            continue
        remote_model = f"{REMOTE_DIR}/{Path(f['file']).name}"
        adb("push", str(bundle / f["file"]), remote_model)
        if f["format"] == "onnx":
            text = adb("shell", remote_runner["onnx"], "-e", "cpu", "-r", str(runs), "-x", str(threads), "-I",
                       remote_model)
            p50, p90, peak = parse_ort_perf_test(text)
            runtime = "onnxruntime"
            # the binary feeds its own input of the model's shape: one call per batch of patches
            p50, p90 = p50 * calls, p90 * calls
        else:
            per_run = [parse_executor_runner(adb("shell", remote_runner["pte"], "--model_path", remote_model,
                                                 "--num_executions", "1")) * calls for _ in range(runs)]
            p50, p90, peak = float(np.percentile(per_run, 50)), float(np.percentile(per_run, 90)), None
            runtime = "executorch-xnnpack"
        out.append(Entry(f["model"], f["format"], f["precision"], runtime, _arch_of(manifest, f["model"]),
                         info["window"], info["batch"], calls, output, round(p50, 3), round(p90, 3),
                         round(1000 / p50, 2), None if peak is None else round(peak, 1)))
    return device, out


def write_profile(path: Path, device: str, entries: list[Entry]) -> dict:
    doc = {"format": PROFILE_FORMAT, "device": device, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "entries": [asdict(e) for e in entries]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return doc


def print_table(device: str, entries: list[Entry]) -> None:
    print(f"device: {device}")
    print(f"{'model':<14} {'format':<6} {'prec':<5} {'runtime':<19} {'p50 ms':>8} {'p90 ms':>8} {'fps':>7} "
          f"{'peak MB':>8}  output")
    for e in entries:
        peak = f"{e.peak_mb:.0f}" if e.peak_mb is not None else "-"
        print(f"{e.model:<14} {e.format:<6} {e.precision:<5} {e.runtime:<19} {e.p50_ms:>8.2f} {e.p90_ms:>8.2f} "
              f"{e.fps:>7.1f} {peak:>8}  {e.output}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fitcast-phone-bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("bundle", type=Path, help="a phone bundle from `fitcast export`")
    ap.add_argument("-o", "--output", type=Path, default=Path("device-profile.json"), help="the profile to write")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per model")
    ap.add_argument("--adb", action="store_true", help="run on the Android phone adb sees")
    ap.add_argument("--serial", default=None, help="the phone's adb serial (when several are attached)")
    ap.add_argument("--ort-runner", type=Path, default=None, help="onnxruntime_perf_test built for the phone")
    ap.add_argument("--pte-runner", type=Path, default=None, help="ExecuTorch executor_runner built for the phone")
    args = ap.parse_args(argv)
    try:
        if args.adb:
            runners = {k: v for k, v in (("onnx", args.ort_runner), ("pte", args.pte_runner)) if v is not None}
            if not runners:
                raise BenchmarkError("--adb needs --ort-runner and/or --pte-runner (binaries built for the phone)")
            for path in runners.values():
                if not path.is_file():
                    raise BenchmarkError(f"{path}: no such runner binary")
            device, entries = adb_entries(args.bundle, runners=runners, serial=args.serial, runs=args.runs)
        else:
            device, entries = _host_device(), host_entries(args.bundle, runs=args.runs)
    except (BenchmarkError, subprocess.TimeoutExpired) as exc:
        print(f"mobile.benchmark: error: {exc}", file=sys.stderr)
        return 2
    write_profile(args.output, device, entries)
    print_table(device, entries)
    print(f"profile written to {args.output}")
    return 0


def _host_device() -> str:
    from fitcast.machine import machine

    return f"host: {machine()}"


if __name__ == "__main__":
    raise SystemExit(main())
