"""Export trained models to ONNX (fp32).

The graph takes ``input`` float32[N, 3, H, W] (LR RGB in [0, 1]) and returns
``residual`` float32[N, 3, sH, sW]; N, H and W are dynamic so one file serves
patch batches of any size and whole frames.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sr_models.archs import build_from_spec


def load_model(arch: dict[str, Any], state: Path | bytes) -> torch.nn.Module:
    model = build_from_spec(arch)
    src = io.BytesIO(state) if isinstance(state, bytes) else state
    model.load_state_dict(torch.load(src, map_location="cpu", weights_only=True))
    return model.eval()


def from_onnx(arch: dict[str, Any], onnx_model: bytes) -> torch.nn.Module:
    """Rebuild the PyTorch network of a shipped fp32 ONNX model (its weights are the
    graph's initializers, named as in the state dict), e.g. to export it for phones."""
    import onnx
    from onnx import numpy_helper

    spec = {key: value for key, value in arch.items() if key != "dynamic"}
    model = build_from_spec(spec)
    graph = onnx.load_from_string(onnx_model).graph
    weights = {init.name: torch.from_numpy(np.array(numpy_helper.to_array(init))) for init in graph.initializer}
    state = model.state_dict()
    missing = sorted(set(state) - set(weights))
    if missing:
        raise ValueError(f"the ONNX graph lacks weights {missing[:3]} of {spec['name']}: not an fp32 fitcast model?")
    model.load_state_dict({name: weights[name] for name in state})
    return model.eval()


def to_onnx_bytes(model: torch.nn.Module, *, sample_hw: tuple[int, int] = (40, 40), opset: int = 17,
                  in_channels: int = 3) -> bytes:
    """Serialise ``model`` as ONNX bytes with dynamic batch and spatial axes."""
    model = model.eval().float()
    x = torch.rand(2, in_channels, *sample_hw)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            buf,
            input_names=["input"],
            output_names=["residual"],
            dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "residual": {0: "n", 2: "sh", 3: "sw"}},
            opset_version=opset,
            dynamo=False,
        )
    return buf.getvalue()


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Bits of the int8 weights fitcast writes.  7-bit weights (ONNX Runtime's ``reduce_range``) never
# overflow the 16-bit pair sums of x86 int8 kernels without VNNI (vpmaddubsw: 2 x 255 x 64 < 2^15),
# so a model computes the same integers on every CPU; measured on leaf (dydca, x2): -0.001 dB
# against fp32, where 8-bit weights cost -0.035 dB on an AVX2-only CPU (and -0.29 dB on another clip).
INT8_WEIGHT_BITS = 7


def quantize_int8(model: bytes, calibration: np.ndarray, *, per_channel: bool = True,
                  weight_bits: int = INT8_WEIGHT_BITS) -> bytes:
    """Static int8 quantisation (QDQ, ONNX Runtime) calibrated on real LR windows.

    ``calibration`` is float32 NCHW in [0, 1]: windows cut from the asset's own
    decoded LR, so the activation ranges are those the player will meet.
    ``weight_bits`` is 7 (portable, see ``INT8_WEIGHT_BITS``) or 8.
    """
    if weight_bits not in (7, 8):
        raise ValueError(f"weight bits must be 7 or 8, not {weight_bits}")
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(np.array_split(calibration.astype(np.float32), max(1, len(calibration) // 32)))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {"input": np.ascontiguousarray(batch)}

    class _NoPreprocessAdvice(logging.Filter):
        # ORT's quantizer advises shape pre-processing on the root logger; these graphs are static convs
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-process" not in record.getMessage()

    quiet = _NoPreprocessAdvice()
    logging.getLogger().addFilter(quiet)
    try:
        return _quantize(model, _Reader(), per_channel=per_channel, reduce_range=weight_bits == 7)
    finally:
        logging.getLogger().removeFilter(quiet)


def _quantize(model: bytes, reader, *, per_channel: bool, reduce_range: bool) -> bytes:
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model)
        quantize_static(
            str(src),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return dst.read_bytes()
