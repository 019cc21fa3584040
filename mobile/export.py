"""Export an encoded asset's models for phones: ONNX and ExecuTorch ``.pte`` (XNNPACK), fp32 and int8.

Every ``.pte`` has a *static* input shape ``[batch, 3, window, window]``: the phone
player runs each model (a Dy-DCA branch is its own model) on its patches in
fixed-size batches, padding the last one — the static execution plan.  The
PyTorch networks are rebuilt from the asset's fp32 ONNX files (their weights are
the graph initializers), int8 ``.pte`` files are calibrated on windows cut from
the asset's own decoded LR segments, and every exported file is checked against
the PyTorch fp32 output on those windows: PSNR >= 50 dB for fp32, >= 40 dB for
int8 (images in [0, 1]).  Operators that XNNPACK did not take are reported.

Needs the extras ``server`` (torch, onnx) and ``mobile`` (executorch).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fitcast.asset import open_asset
from fitcast.errors import InvalidInputError
from fitcast.manifest import Manifest, ModelEntry
from fitcast.media import decode_segment
from fitcast.metrics import psnr_from_mse
from fitcast.upscale import windows_to_input

BUNDLE_FORMAT = "fitcast-phone-bundle/1"
PARITY_DB = {"fp32": 50.0, "int8": 40.0}


@dataclass
class ExportedFile:
    model: str  # the manifest's model id
    format: str  # "onnx" | "pte"
    precision: str  # "fp32" | "int8"
    file: str  # relative to the bundle
    bytes: int
    sha256: str
    group: int | None
    parity_db: float  # PSNR against the PyTorch fp32 output on the asset's windows
    outside_delegate: list[str] = field(default_factory=list)  # ops XNNPACK did not take (pte only)


@dataclass
class ExportReport:
    asset_id: str
    batch: int
    window: int
    scale: int
    files: list[ExportedFile]

    @property
    def ok(self) -> bool:
        return all(f.parity_db >= PARITY_DB[f.precision] for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"format": BUNDLE_FORMAT, "asset_id": self.asset_id, "batch": self.batch, "window": self.window,
                "scale": self.scale, "parity_thresholds_db": PARITY_DB, "ok": self.ok,
                "files": [asdict(f) for f in self.files]}


def psnr01(out: np.ndarray, ref: np.ndarray) -> float:
    """PSNR of ``out`` against ``ref`` with a peak of 1 (residuals of images in [0, 1])."""
    return psnr_from_mse(float(np.mean((out.astype(np.float64) - ref.astype(np.float64)) ** 2)), peak=1.0)


def calibration_windows(asset, m: Manifest, *, group: int | None, limit: int = 256, seed: int = 0) -> np.ndarray:
    """float32 NCHW windows of the asset's decoded LR (those labelled ``group`` when given)."""
    grid = m.grid()
    init = asset.init()
    picked: list[np.ndarray] = []
    for seg in m.segments:
        frames = decode_segment(init, asset.segment(seg))
        labels = asset.labels(seg)
        for lr, lab in zip(frames[::4], labels[::4], strict=False):
            windows = grid.windows(grid.pad(lr))
            rows, cols = np.nonzero(lab == group) if group is not None else np.nonzero(np.ones_like(lab))
            picked.append(np.ascontiguousarray(windows[rows, cols]))
        if sum(len(p) for p in picked) >= limit * 2:
            break
    allw = np.concatenate(picked)
    rng = np.random.default_rng(seed)
    take = rng.permutation(len(allw))[:limit]
    return windows_to_input(allw[take])


def _fixed_batches(x: np.ndarray, batch: int) -> list[np.ndarray]:
    n = -(-len(x) // batch) * batch
    padded = np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)]) if n > len(x) else x
    return [np.ascontiguousarray(padded[i : i + batch]) for i in range(0, n, batch)]


def to_pte(net, *, batch: int, window: int, calibration: np.ndarray | None) -> tuple[bytes, list[str]]:
    """Lower ``net`` to an ExecuTorch program with the XNNPACK delegate (int8 when
    ``calibration`` is given); return the program and the ops left outside the delegate."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    example = (torch.rand(batch, 3, window, window),)
    if calibration is not None:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        module = torch.export.export(net, example).module()
        quantizer = XNNPACKQuantizer()
        if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()):
            # nothing for the conv + batch-norm patterns to match, and matching them exports a pattern
            # graph per variant (≈ 6 s a model): annotate the patterns that can occur
            quantizer.SUPPORTED_PATTERNS = [p for p in quantizer.SUPPORTED_PATTERNS if "_bn" not in p.name]
        quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True))
        module = prepare_pt2e(module, quantizer)
        with torch.no_grad():
            for chunk in _fixed_batches(calibration, batch):
                module(torch.from_numpy(chunk))
        net = convert_pt2e(module)
    edge = to_edge_transform_and_lower(torch.export.export(net, example), partitioner=[XnnpackPartitioner()])
    outside = sorted({str(node.target) for node in edge.exported_program().graph_module.graph.nodes
                      if node.op == "call_function" and "executorch_call_delegate" not in str(node.target)
                      and "getitem" not in str(node.target)})
    return edge.to_executorch().buffer, outside


def run_pte(program: bytes, x: np.ndarray, batch: int) -> np.ndarray:
    """Run an ExecuTorch program over ``x`` in fixed batches (the Python runtime of the host)."""
    import torch
    from executorch.runtime import Runtime

    loaded = Runtime.get().load_program(program)  # must outlive the method that points into it
    method = loaded.load_method("forward")
    outs = [method.execute([torch.from_numpy(chunk)])[0].numpy().copy() for chunk in _fixed_batches(x, batch)]
    del method, loaded
    return np.concatenate(outs)[: len(x)]


def export_asset(location: str, out_dir: Path, *, batch: int = 16, formats: tuple[str, ...] = ("onnx", "pte"),
                 precisions: tuple[str, ...] = ("fp32", "int8"),
                 progress: Callable[[str, float], None] | None = None) -> ExportReport:
    """Write the phone bundle of the asset at ``location`` into ``out_dir``; return the report."""
    import torch

    from fitcast.runtime import OrtSession
    from sr_models.export import INT8_WEIGHT_BITS, from_onnx, quantize_int8

    if batch < 1:
        raise InvalidInputError(f"batch must be at least 1, not {batch}")
    bad = set(formats) - {"onnx", "pte"} or set(precisions) - {"fp32", "int8"}
    if bad:
        raise InvalidInputError(f"unknown format or precision: {', '.join(sorted(bad))}")
    asset = open_asset(location)
    m = asset.manifest
    window = m.grid().window
    models_dir = out_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    files: list[ExportedFile] = []

    def write(entry: ModelEntry, fmt: str, precision: str, data: bytes, parity: float, outside=()) -> None:
        digest = hashlib.sha256(data).hexdigest()
        name = f"{entry.id}.{precision}.{fmt}"
        (models_dir / name).write_bytes(data)
        files.append(ExportedFile(entry.id, fmt, precision, f"models/{name}", len(data), digest, entry.group,
                                  round(parity, 2), list(outside)))

    fp32_entries = [e for e in m.models if e.precision == "fp32"]
    for done, entry in enumerate(fp32_entries):
        if progress is not None:
            progress(entry.id, done / len(fp32_entries))
        fp32_onnx = asset.read_model(entry)
        net = from_onnx(entry.arch, fp32_onnx)
        x = calibration_windows(asset, m, group=entry.group)
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        if "onnx" in formats:
            if "fp32" in precisions:
                write(entry, "onnx", "fp32", fp32_onnx, psnr01(OrtSession(fp32_onnx).run(x), ref))
            int8_entry = next((e for e in m.models if e.id == entry.id and e.precision == "int8"), None)
            if "int8" in precisions and int8_entry is not None:
                data = asset.read_model(int8_entry)
                if (int8_entry.weight_bits or 8) > INT8_WEIGHT_BITS:
                    # made before 7-bit weights: 8-bit weights saturate in int8 kernels without
                    # int8 dot products, so the bundle gets the portable quantisation instead
                    data = quantize_int8(fp32_onnx, x)
                write(entry, "onnx", "int8", data, psnr01(OrtSession(data).run(x), ref))
        if "pte" in formats:
            for precision in precisions:
                program, outside = to_pte(net, batch=batch, window=window,
                                          calibration=x if precision == "int8" else None)
                write(entry, "pte", precision, program, psnr01(run_pte(program, x, batch), ref), outside)

    report = ExportReport(m.asset_id, batch, window, m.scale, files)
    (out_dir / "manifest.json").write_text(m.model_dump_json(indent=2))
    (out_dir / "bundle.json").write_text(json.dumps(report.to_dict(), indent=2))
    shutil.copyfile(Path(__file__).with_name("PHONE.md"), out_dir / "README.md")
    return report
