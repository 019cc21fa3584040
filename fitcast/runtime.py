"""Inference sessions for the shipped models: ONNX Runtime or OpenVINO.

A :class:`Session` is built once per model and kept for the whole playback
(loading costs 0.1-1 s); it takes NCHW float32 batches and returns the residual.
ONNX Runtime is a base dependency; OpenVINO is the optional extra ``openvino``
(``pip install fitcast[openvino]``) and is usually the faster of the two for
int8 (QDQ) models on x86 CPUs.  ``auto`` picks OpenVINO when it is installed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from fitcast.errors import InvalidInputError
from fitcast.machine import Choice, Cpu, MeasurementCache

RUNTIMES = ("auto", "ort", "openvino")
PRECISIONS = ("auto", "int8", "fp32")


class Session(Protocol):
    def run(self, x: np.ndarray) -> np.ndarray: ...


class OrtSession:
    """ONNX Runtime CPU session with all graph optimisations on."""

    def __init__(self, model: Path | bytes, *, threads: int = 0, window: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or Cpu.detect().cores
        opts.inter_op_num_threads = 1
        src = str(model) if isinstance(model, Path) else model
        self._session = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: x})[0]


class OpenVinoSession:
    """OpenVINO CPU session, compiled for latency (one stream, all cores).

    OpenVINO reads the ONNX bytes directly (QDQ int8 graphs become its own int8
    kernels).  Batches change size from frame to frame (the number of patches of
    a group varies), so the model keeps a dynamic batch dimension; the spatial
    shape is fixed by the patch grid.
    """

    def __init__(self, model: Path | bytes, *, threads: int = 0, window: int | None = None) -> None:
        import openvino as ov

        core = ov.Core()
        net = core.read_model(str(model) if isinstance(model, Path) else bytes(model))
        if window:  # static spatial shape: OpenVINO plans its kernels for it once
            channels = net.input(0).get_partial_shape()[1]
            net.reshape(ov.PartialShape([-1, channels, window, window]))
        # f32: on CPUs with bf16 units OpenVINO would otherwise run fp32 graphs in bf16,
        # which moves the output by ~0.1 (of 255) against the encoder's own measurement.
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        self._compiled = core.compile_model(net, "CPU", config)
        self._request = self._compiled.create_infer_request()

    def run(self, x: np.ndarray) -> np.ndarray:
        self._request.infer([np.ascontiguousarray(x)])
        # The output tensor is reused by the next call: copy out what the caller keeps.
        return self._request.get_output_tensor(0).data


def available_runtimes() -> list[str]:
    """Runtimes importable here, fastest first."""
    found = []
    if importlib.util.find_spec("openvino") is not None:
        found.append("openvino")
    if importlib.util.find_spec("onnxruntime") is not None:
        found.append("ort")
    return found


def resolve_runtime(runtime: str) -> str:
    """``auto`` -> the first installed runtime (OpenVINO, then ONNX Runtime); a named one must be
    installed.  :func:`runtime_choice` decides ``auto`` by measurement where both are installed."""
    if runtime not in RUNTIMES:
        raise InvalidInputError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    present = available_runtimes()
    if runtime == "auto":
        if not present:
            raise InvalidInputError("no inference runtime is installed (pip install onnxruntime)")
        return present[0]
    if runtime not in present:
        hint = "pip install 'fitcast[openvino]'" if runtime == "openvino" else "pip install onnxruntime"
        raise InvalidInputError(f"runtime {runtime!r} is not installed ({hint})")
    return runtime


def runtime_versions() -> dict[str, str]:
    names = {"ort": "onnxruntime", "openvino": "openvino"}
    out = {}
    for rt in available_runtimes():
        try:
            out[rt] = importlib.metadata.version(names[rt])
        except importlib.metadata.PackageNotFoundError:
            out[rt] = "?"
    return out


def time_runtimes(model: bytes, window: int, batch: int, *, runtimes: Iterable[str],
                  rounds: int = 3) -> dict[str, float]:
    """Median seconds of one batch of ``batch`` windows through ``model`` in each runtime,
    measured in alternation after a warm-up run."""
    x = np.random.default_rng(0).random((batch, 3, window, window), dtype=np.float32)
    sessions = {rt: open_session(model, rt, window=window) for rt in runtimes}
    for session in sessions.values():
        session.run(x)
    times: dict[str, list[float]] = {rt: [] for rt in sessions}
    for _ in range(rounds):
        for rt, session in sessions.items():
            t0 = time.perf_counter()
            session.run(x)
            times[rt].append(time.perf_counter() - t0)
    return {rt: float(np.median(ts)) for rt, ts in times.items()}


def runtime_choice(runtime: str = "auto", *, precision: str = "int8",
                   probe: Callable[[list[str]], dict[str, float]] | None = None,
                   cache: MeasurementCache | None = None) -> Choice:
    """The runtime the player uses: as asked, the only one installed, or the faster of the two
    as measured on this machine (``probe(runtimes)`` -> seconds each; cached per machine, per
    precision and per runtime versions).  Without a probe and no cached measurement, the first
    installed (OpenVINO) is taken and the choice says it was not measured."""
    if runtime != "auto":
        return Choice(resolve_runtime(runtime), "flag", "asked for")
    present = available_runtimes()
    if len(present) <= 1:
        return Choice(resolve_runtime("auto"), "default", "the only runtime installed")
    versions = runtime_versions()
    key = f"runtime/{precision}/" + "/".join(f"{rt}-{versions[rt]}" for rt in sorted(present))
    cache = cache or MeasurementCache()
    times = cache.get(key)
    cached = times is not None
    if times is None and probe is not None:
        times = probe(present)
        cache.put(key, times)
    if not times:
        return Choice(present[0], "default", f"not measured on this machine yet ({precision}); "
                                             "the first play of an asset measures both runtimes")
    best = min(times, key=times.get)
    other = max(times, key=times.get)
    how = "cached measurement" if cached else "measured now"
    return Choice(best, "measured", f"{times[other] / max(times[best], 1e-9):.2f}x faster than {other} for "
                                    f"{precision} ({how}: {times[best] * 1e3:.1f} against {times[other] * 1e3:.1f} ms "
                                    "a batch)")


def precision_choice(requested: str, shipped: dict[str, int | None], cpu: Cpu | None = None) -> Choice:
    """The model precision the player runs.

    ``shipped`` maps each precision the asset ships to its int8 weight bits (``None`` for
    fp32; an int8 model without the field has 8-bit weights).  ``auto`` takes int8 unless its
    weights are 8-bit on a CPU whose int8 kernels saturate (x86 without VNNI): there a model
    with 7-bit weights is exact, one with 8-bit weights is not (measured -0.03 to -0.29 dB).
    """
    if requested not in PRECISIONS:
        raise InvalidInputError(f"unknown precision {requested!r}; choose one of: {', '.join(PRECISIONS)}")
    if requested != "auto":
        if requested not in shipped:
            raise InvalidInputError(f"the asset ships no {requested} models (it has: {', '.join(sorted(shipped))})")
        return Choice(requested, "flag", "asked for")
    if "int8" not in shipped:
        return Choice("fp32", "default", "the asset ships fp32 models only")
    cpu = cpu or Cpu.detect()
    bits = shipped["int8"] or 8
    if bits > 7 and cpu.int8_saturates and "fp32" in shipped:
        return Choice("fp32", "capability", "the asset's int8 models have 8-bit weights, which saturate in int8 "
                                            "kernels without VNNI (this CPU): fp32 is exact")
    why = "7-bit weights: exact on every CPU" if bits <= 7 else "this CPU has int8 dot products (VNNI)"
    return Choice("int8", "capability" if bits > 7 else "default", f"int8 ({why})")


def open_session(model: Path | bytes, runtime: str = "auto", *, threads: int = 0,
                 window: int | None = None) -> Session:
    """A session of ``runtime`` for ``model``; ``window`` (the LR input side) lets a
    runtime specialise for the fixed spatial shape of the patch plan."""
    runtime = resolve_runtime(runtime)
    cls = OpenVinoSession if runtime == "openvino" else OrtSession
    return cls(model, threads=threads, window=window)
