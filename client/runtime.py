"""Inference sessions for the shipped models: ONNX Runtime or OpenVINO.

A :class:`Session` is built once per model and kept for the whole playback
(loading costs 0.1-1 s); it takes NCHW float32 batches and returns the residual.
ONNX Runtime is a base dependency; OpenVINO is the optional extra ``openvino``
(``pip install fitcast[openvino]``) and is usually the faster of the two for
int8 (QDQ) models on x86 CPUs.  ``auto`` picks OpenVINO when it is installed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from fitcast.errors import InvalidInputError

RUNTIMES = ("auto", "ort", "openvino")


class Session(Protocol):
    def run(self, x: np.ndarray) -> np.ndarray: ...


class OrtSession:
    """ONNX Runtime CPU session with all graph optimisations on."""

    def __init__(self, model: Path | bytes, *, threads: int = 0, window: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
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
    """``auto`` -> the fastest installed runtime; a named one must be installed."""
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


def open_session(model: Path | bytes, runtime: str = "auto", *, threads: int = 0,
                 window: int | None = None) -> Session:
    """A session of ``runtime`` for ``model``; ``window`` (the LR input side) lets a
    runtime specialise for the fixed spatial shape of the patch plan."""
    runtime = resolve_runtime(runtime)
    cls = OpenVinoSession if runtime == "openvino" else OrtSession
    return cls(model, threads=threads, window=window)
