"""``fitcast doctor``: this machine, what fitcast detected, and what each command will use and why.

The choices are the very functions the commands call (``sr_models.tuning`` for training,
``fitcast.runtime`` for the player), so what the doctor prints is what runs.  Measurements
that capability flags cannot replace (training layout, the faster runtime) are taken once,
in a few seconds, and cached per machine; ``measure=False`` reports only what is cached.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any

from fitcast.machine import Choice, Cpu, MeasurementCache

LIBRARIES = ("torch", "onnxruntime", "openvino", "executorch", "av", "imageio-ffmpeg", "ray")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _runtime_probe(precision: str):
    """A probe for ``runtime_choice``: the balanced network on one 720p frame of windows
    (needs torch to build it; None without)."""
    if importlib.util.find_spec("torch") is None:
        return None

    def probe(runtimes: list[str]) -> dict[str, float]:
        import numpy as np

        from fitcast.runtime import time_runtimes
        from sr_models.archs import build_from_spec
        from sr_models.export import quantize_int8, to_onnx_bytes
        from sr_models.tuning import PROBE_ARCH, PROBE_WINDOW

        net = build_from_spec(PROBE_ARCH)
        model = to_onnx_bytes(net, sample_hw=(PROBE_WINDOW, PROBE_WINDOW))
        if precision == "int8":
            calib = np.random.default_rng(0).random((64, 3, PROBE_WINDOW, PROBE_WINDOW), dtype=np.float32)
            model = quantize_int8(model, calib)
        return time_runtimes(model, PROBE_WINDOW, 240, runtimes=runtimes, rounds=2)  # a 720p frame at x2

    return probe


def diagnose(*, measure: bool = True, cache: MeasurementCache | None = None) -> dict[str, Any]:
    """Everything ``fitcast doctor`` prints, as a dict."""
    cpu = Cpu.detect()
    cache = cache or MeasurementCache(cpu=cpu)
    out: dict[str, Any] = {
        "machine": cpu.to_dict() | {"summary": cpu.summary(),
                                    "int8_saturates": cpu.int8_saturates},
        "libraries": {name: _version(name) for name in LIBRARIES},
        "cache": str(cache.path),
    }
    encode: dict[str, Any] = {}
    if importlib.util.find_spec("torch") is not None:
        import torch

        from sr_models.export import INT8_WEIGHT_BITS
        from sr_models.tuning import layout_choice, precision_choice, threads_choice

        device = "cuda" if torch.cuda.is_available() else "cpu"
        encode["train_device"] = Choice(device, "capability", "a GPU torch can use" if device == "cuda"
                                        else "no GPU visible to torch").to_dict()
        bf16 = precision_choice(device, cpu)
        encode["train_precision"] = Choice("bf16" if bf16.value else "fp32", bf16.source, bf16.reason).to_dict()
        layout = layout_choice(device, bool(bf16.value), cache=cache, measure=measure)
        value = None if layout.value is None else ("nhwc" if layout.value else "nchw")
        encode["train_layout"] = Choice(value, layout.source, layout.reason).to_dict()
        encode["train_threads"] = threads_choice(cpu).to_dict()
        encode["int8_weight_bits"] = Choice(INT8_WEIGHT_BITS, "default", "chosen for the viewer's CPU, not this "
                                            "one: 7-bit weights are exact in int8 kernels with and without VNNI "
                                            "(-0.001 dB against fp32 measured, 8-bit: -0.035 to -0.29 dB "
                                            "without VNNI)").to_dict()
    else:
        encode["available"] = False
        encode["reason"] = "torch is not installed: this is a viewer install (pip install 'fitcast[server]')"
    out["encode"] = encode

    from fitcast.runtime import available_runtimes, runtime_choice
    from fitcast.runtime import precision_choice as play_precision

    play: dict[str, Any] = {"runtimes_installed": available_runtimes()}
    play["precision_new_assets"] = play_precision("auto", {"int8": 7, "fp32": None}, cpu).to_dict()
    play["precision_assets_with_8bit_weights"] = play_precision("auto", {"int8": 8, "fp32": None}, cpu).to_dict()
    for precision in ("int8", "fp32"):  # int8, the default, is measured now; fp32 at its first play
        probe = _runtime_probe(precision) if measure and precision == "int8" else None
        play[f"runtime_{precision}"] = runtime_choice("auto", precision=precision, probe=probe, cache=cache).to_dict()
    play["threads"] = Choice(cpu.cores, "capability", "one inference thread per physical core").to_dict()
    out["play"] = play
    return out


def render(report: dict[str, Any]) -> str:
    """The report as text lines: one per detection and per choice, with its reason."""
    m = report["machine"]
    lines = [
        f"machine   {m['summary']}",
        f"          native bf16: {'yes' if m['native_bf16'] else 'no'}; int8 dot products (VNNI/AMX/DotProd): "
        f"{'yes' if m['int8_dot'] else 'no'}"
        + ("; int8 kernels saturate with 8-bit weights" if m["int8_saturates"] else ""),
        "libraries " + ", ".join(f"{k} {v}" for k, v in report["libraries"].items() if v),
        f"cache     {report['cache']}",
    ]
    for section in ("encode", "play"):
        lines.append(f"{section}:")
        for key, value in report[section].items():
            if isinstance(value, dict) and "value" in value:
                lines.append(f"  {key:<36} {value['value']!s:<8} [{value['source']}] {value['reason']}")
            else:
                lines.append(f"  {key:<36} {value}")
    return "\n".join(lines)
