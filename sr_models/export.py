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
    import numpy as np
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


def quantize_int8(model: bytes, calibration: "np.ndarray", *, per_channel: bool = True) -> bytes:
    """Static int8 quantisation (QDQ, ONNX Runtime) calibrated on real LR windows.

    ``calibration`` is float32 NCHW in [0, 1]: windows cut from the asset's own
    decoded LR, so the activation ranges are those the player will meet.
    """
    import numpy as np
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
        return _quantize(model, _Reader(), per_channel=per_channel)
    finally:
        logging.getLogger().removeFilter(quiet)


def _quantize(model: bytes, reader, *, per_channel: bool) -> bytes:
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
            calibrate_method=CalibrationMethod.MinMax,
        )
        return dst.read_bytes()
