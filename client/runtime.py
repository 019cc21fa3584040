"""Inference sessions for the shipped models (ONNX Runtime).

A :class:`Session` is built once per model and kept for the whole playback
(loading costs 0.1-1 s); it takes NCHW float32 batches and returns the residual.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from fitcast.errors import InvalidInputError

RUNTIMES = ("ort",)


class Session(Protocol):
    def run(self, x: np.ndarray) -> np.ndarray: ...


class OrtSession:
    """ONNX Runtime CPU session with all graph optimisations on."""

    def __init__(self, model: Path | bytes, *, threads: int = 0) -> None:
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


def open_session(model: Path | bytes, runtime: str = "ort", *, threads: int = 0) -> Session:
    if runtime in ("ort", "auto"):
        return OrtSession(model, threads=threads)
    raise InvalidInputError(f"unknown runtime {runtime!r}; available: {', '.join(RUNTIMES)}")
