"""Overfit one SR model to (decoded LR, HR) patch pairs.

:func:`train` is a pure function of a :class:`TrainSpec`: it reads the sample
file, writes the state dict atomically and returns a :class:`TrainResult`.  That
makes it the unit a process pool or Ray fans out, and safe to retry.

Samples are a file of :mod:`sr_models.samples` (LR windows, HR residuals over
lanczos, group labels).  The loss is L1 on the central P*s x P*s output.

Data-aware sampling (JSTDO): with ``group_weights`` a batch draws group g with
probability w_g / sum(w), then a patch of that group uniformly, so hard groups
can be seen more often than their share of patches.  A dynamic model
(``arch.name == "dydca"``) is called with the labels and routes each patch to
its branch.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fitcast.metrics import Y_WEIGHTS, psnr_from_mse
from sr_models.archs import build_from_spec
from sr_models.samples import read_samples


@dataclass(frozen=True)
class TrainSpec:
    samples: Path
    out: Path
    arch: dict[str, Any]
    overlap: int
    iterations: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    lr_min: float = 1e-5
    seed: int = 0
    threads: int = 0  # 0: leave torch's default
    # bf16 autocast and NHWC activations; None: chosen for the machine (sr_models.tuning)
    bf16: bool | None = None
    channels_last: bool | None = None
    compile: bool = False  # torch.compile the network (needs a C++ compiler; measured, not the default)
    init: Path | None = None  # warm start from this state dict
    # "l1": L1 over RGB; "l1-y": L1 on BT.601 luma (what PSNR-Y measures) plus 0.25 x L1 over RGB
    loss: str = "l1"
    group_weights: tuple[float, ...] | None = None  # None: every patch equally likely
    # "cpu", "cuda", or "auto" (cuda when torch sees a GPU).  Data and model move there whole:
    # the sample sets are a few hundred MB at most.
    device: str = "cpu"
    # A wall-clock budget: ``iterations`` is then the most it runs; after ``RATE_PROBE`` iterations
    # the rate measured on this machine fixes how many fit in ``seconds``, never fewer than
    # ``min_iterations`` (the cosine schedule spans the iterations it will run).
    seconds: float | None = None
    min_iterations: int = 1


RATE_PROBE = (5, 25)  # iterations timed between (after the first ones' warm-up) for a time budget


def within_seconds(specs: list[TrainSpec], seconds: float, *, floor: float) -> list[TrainSpec]:
    """``specs`` sharing a wall-clock budget of ``seconds`` in proportion to their iterations, each
    running at least ``floor`` (a fraction) of its iterations."""
    total = sum(s.iterations for s in specs) or 1
    return [replace(s, seconds=seconds * s.iterations / total, min_iterations=max(1, round(s.iterations * floor)))
            for s in specs]


@dataclass
class TrainResult:
    out: Path
    iterations: int
    seconds: float
    it_per_s: float
    samples: int
    loss_first: float
    loss_last: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    precision: str = "fp32"  # what it trained in: "bf16" (autocast) or "fp32"
    layout: str = "nchw"  # "nhwc" or "nchw"
    planned: int | None = None  # with a time budget: the most it could have run, and the budget
    budget_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def load_samples(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A samples file (:mod:`sr_models.samples`) as tensors: LR in [0, 1] (NHWC memory), residual
    in units of 255, group labels."""
    lr, res, group = read_samples(path)
    lr_t = torch.from_numpy(lr).permute(0, 3, 1, 2).float().div_(255.0)
    res_t = torch.from_numpy(res).permute(0, 3, 1, 2).float().div_(255.0)
    group_t = torch.from_numpy(group.astype(np.int64))
    return lr_t.contiguous(memory_format=torch.channels_last), res_t.contiguous(), group_t


def sampling_weights(group: torch.Tensor, weights: tuple[float, ...] | None) -> torch.Tensor | None:
    """Per-patch probabilities that give group g a w_g / sum(w) share of every batch."""
    if weights is None:
        return None
    counts = torch.bincount(group, minlength=len(weights)).double()
    w = torch.tensor(weights, dtype=torch.float64)
    if len(w) < int(group.max()) + 1:
        raise ValueError(f"{len(w)} group weights for {int(group.max()) + 1} groups")
    present = counts > 0
    per_group = torch.where(present, w / counts.clamp(min=1), torch.zeros_like(w))
    p = per_group[group]
    return p / p.sum()


def train(spec: TrainSpec, progress: Callable[[int, int, float], None] | None = None) -> TrainResult:
    """Overfit the network described by ``spec.arch`` to ``spec.samples``."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    lr_x, res_y, group = load_samples(spec.samples)
    probs = sampling_weights(group, spec.group_weights)
    n = lr_x.shape[0]
    if n == 0:
        raise ValueError(f"{spec.samples}: no samples")
    scale = int(spec.arch["scale"])
    o = spec.overlap * scale
    ps = res_y.shape[-1]

    model = build_from_spec(spec.arch)
    if spec.init is not None:
        model.load_state_dict(torch.load(spec.init, map_location="cpu", weights_only=True))
    device = resolve_device(spec.device)
    bf16, channels_last = resolve_precision(spec, device)
    lr_x, res_y, group = lr_x.to(device), res_y.to(device), group.to(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    lr_x = lr_x.contiguous(memory_format=layout)
    model = model.to(device=device, memory_format=layout).train()
    forward = torch.compile(model) if spec.compile else model
    routed = spec.arch.get("name") == "dydca"
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    total = max(1, spec.iterations)

    def lr_at(i: int) -> float:
        return spec.lr_min + 0.5 * (spec.lr - spec.lr_min) * (1 + math.cos(math.pi * i / total))

    timed = spec.seconds is not None and total > RATE_PROBE[1]
    probe_t0 = 0.0

    curve: list[tuple[int, float]] = []
    first = last = float("nan")
    running = 0.0
    t0 = time.perf_counter()
    bs = min(spec.batch_size, n)
    it = 0
    while it < total:
        if timed and it in RATE_PROBE:
            if device.type == "cuda":
                torch.cuda.synchronize()
            if it == RATE_PROBE[0]:
                probe_t0 = time.perf_counter()
            else:
                total = fitting_iterations(spec, it_per_s=(it - RATE_PROBE[0]) / (time.perf_counter() - probe_t0),
                                           spent=time.perf_counter() - t0)
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        if probs is None:
            idx = torch.randint(0, n, (bs,), generator=gen)
        else:
            idx = torch.multinomial(probs, bs, replacement=True, generator=gen)
        idx = idx.to(device, non_blocking=True)
        x, y = lr_x[idx], res_y[idx]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = forward(x, group[idx]) if routed else forward(x)
        out = out.float()[:, :, o : o + ps, o : o + ps]
        loss = _loss(out, y, spec.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # Reading the loss synchronises with a GPU: sample it every 10 iterations.
        if it % 10 == 0 or it + 1 == total:
            value = float(loss.detach())
            running = value if it == 0 else 0.8 * running + 0.2 * value
            if it == 0:
                first = value
        if (it + 1) % 50 == 0 or it + 1 == total:
            curve.append((it + 1, running))
            if progress is not None:
                progress(it + 1, total, running)
        last = running
        it += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0

    from fitcast.storage import atomic_write_bytes

    buf = io.BytesIO()
    torch.save({k: v.cpu() for k, v in model.eval().state_dict().items()}, buf)
    atomic_write_bytes(spec.out, buf.getvalue())
    return TrainResult(
        out=spec.out,
        iterations=total,
        seconds=seconds,
        it_per_s=total / seconds if seconds > 0 else float("inf"),
        samples=n,
        loss_first=first,
        loss_last=last,
        curve=curve,
        precision="bf16" if bf16 else "fp32",
        layout="nhwc" if channels_last else "nchw",
        planned=spec.iterations if timed else None,
        budget_s=spec.seconds if timed else None,
    )


def fitting_iterations(spec: TrainSpec, *, it_per_s: float, spent: float) -> int:
    """How many iterations a time-budgeted spec runs: what fits in what is left of its seconds at
    the measured rate, between ``min_iterations`` and ``iterations`` (and past the rate probe)."""
    assert spec.seconds is not None
    fit = RATE_PROBE[1] + int(max(0.0, spec.seconds - spent) * it_per_s)
    return max(RATE_PROBE[1] + 1, min(spec.iterations, max(spec.min_iterations, fit)))


_Y = torch.from_numpy(Y_WEIGHTS).view(1, 3, 1, 1)


def _loss(out: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(out, target)
    if kind == "l1-y":
        d = out - target
        return (d * _Y.to(d.device)).sum(1).abs().mean() + 0.25 * d.abs().mean()
    raise ValueError(f"unknown loss {kind!r}")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when torch sees a GPU, else cpu; a named device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("training device 'cuda' asked for, but torch sees no GPU")
    return torch.device(name)


def resolve_precision(spec: TrainSpec, device: torch.device) -> tuple[bool, bool]:
    """(bf16, channels_last) of ``spec``, the machine's choice where it leaves them ``None``."""
    if spec.bf16 is not None and spec.channels_last is not None:
        return spec.bf16, spec.channels_last
    from sr_models.tuning import train_defaults

    chosen = train_defaults(str(device), bf16=spec.bf16, channels_last=spec.channels_last)
    return bool(chosen.bf16.value), bool(chosen.channels_last.value)


def _psnr_y_of_error(err_rgb: np.ndarray) -> float:
    """PSNR-Y (0..255 scale) of an RGB error ``[n, 3, h, w]`` in 0..255 units."""
    ey = np.tensordot(Y_WEIGHTS.astype(np.float64), err_rgb.astype(np.float64), axes=([0], [1]))
    return psnr_from_mse(float(np.mean(ey**2)))


@torch.no_grad()
def held_out_gain(model_path: Path, arch: dict[str, Any], overlap: int, samples: Path) -> float:
    """PSNR-Y gain over lanczos on a samples file the model did not train on: (lanczos +
    predicted residual) against (lanczos + true residual), over every patch of the file."""
    lr, res, group = load_samples(samples)
    net = build_from_spec(arch)
    net.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
    net.eval()
    o, ps = overlap * int(arch["scale"]), res.shape[-1]
    preds = []
    for i in range(0, len(lr), 256):
        x = lr[i : i + 256].contiguous()
        out = net(x, group[i : i + 256]) if arch["name"] == "dydca" else net(x)
        preds.append(out[:, :, o : o + ps, o : o + ps])
    pred = torch.cat(preds).numpy() * 255.0
    true = res.numpy() * 255.0
    return _psnr_y_of_error(pred - true) - _psnr_y_of_error(-true)
