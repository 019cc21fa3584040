"""How to train on this machine: precision, memory layout and threads, chosen by the hardware.

- **Precision**: bf16 autocast where the CPU has bf16 in hardware (measured 1.7-2x the
  iterations per second of fp32 at the same quality on an AVX-512/bf16 EPYC) and on a GPU;
  fp32 elsewhere (an AVX2-only Zen 3 EPYC ran the same training 12x *slower* in emulated bf16).
- **Layout**: NHWC or NCHW activations, whichever a short measurement on this machine finds
  faster at the chosen precision (NHWC won by 10-14 % on the AVX-512 EPYC, NCHW by 18 % in
  fp32 on the AVX2 one): capability flags cannot tell, so it is timed once (a few seconds)
  and cached per machine.
- **Threads**: torch's default (one per physical core) unless a setting says otherwise.

A :class:`TrainSpec` field left at ``None`` takes the choice; a value given wins.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fitcast.machine import Choice, Cpu, MeasurementCache

# The network the layout measurement trains: the generic/balanced one, on its real window.
PROBE_ARCH = {"name": "espcn_r", "scale": 2, "channels": 32, "body": 2}
PROBE_WINDOW, PROBE_BATCH = 40, 32


@dataclass(frozen=True)
class TrainDefaults:
    bf16: Choice
    channels_last: Choice
    threads: Choice

    def to_dict(self) -> dict[str, Any]:
        return {"bf16": self.bf16.to_dict(), "channels_last": self.channels_last.to_dict(),
                "threads": self.threads.to_dict()}


def precision_choice(device: str, cpu: Cpu, override: bool | None = None) -> Choice:
    """bf16 autocast or fp32 for training on ``device`` ("cpu" or "cuda...")."""
    if override is not None:
        return Choice(override, "setting", "given")
    if device.startswith("cuda"):
        return Choice(True, "capability", "GPU: bf16 autocast")
    if cpu.native_bf16:
        return Choice(True, "capability", "the CPU has native bf16 (avx512_bf16/amx_bf16)")
    return Choice(False, "capability", "no native bf16 on this CPU: emulated bf16 is an order of magnitude "
                                       "slower than fp32")


def _step_timer(channels_last: bool, bf16: bool, iterations: int) -> float:
    """Median seconds per training step of the probe network in one layout."""
    import torch
    import torch.nn.functional as F

    from sr_models.archs import build_from_spec

    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = build_from_spec(PROBE_ARCH).to(memory_format=fmt).train()
    torch.nn.init.normal_(net.tail.weight, std=0.01, generator=gen)
    x = torch.rand(PROBE_BATCH, 3, PROBE_WINDOW, PROBE_WINDOW, generator=gen).contiguous(memory_format=fmt)
    y = torch.rand(PROBE_BATCH, 3, 2 * PROBE_WINDOW, 2 * PROBE_WINDOW, generator=gen)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    times = []
    for i in range(iterations + 2):  # two warm-up steps
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        loss = F.l1_loss(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def measure_layouts(bf16: bool, *, rounds: int = 2, iterations: int = 3,
                    timer: Callable[[bool, bool, int], float] = _step_timer) -> dict[str, float]:
    """Median step seconds of NHWC and NCHW, measured in alternation (``rounds`` each)."""
    nhwc, nchw = [], []
    for _ in range(rounds):
        nhwc.append(timer(True, bf16, iterations))
        nchw.append(timer(False, bf16, iterations))
    nhwc.sort()
    nchw.sort()
    return {"nhwc": nhwc[len(nhwc) // 2], "nchw": nchw[len(nchw) // 2]}


def layout_key(bf16: bool) -> str:
    import torch

    return f"train-layout/{'bf16' if bf16 else 'fp32'}/torch-{torch.__version__}"


def layout_choice(device: str, bf16: bool, override: bool | None = None, *, cache: MeasurementCache | None = None,
                  timer: Callable[[bool, bool, int], float] = _step_timer, measure: bool = True) -> Choice:
    """channels_last (NHWC) or not, for training at ``bf16`` on ``device``; measured once per
    machine (``measure=False``: only a cached measurement, else ``None``)."""
    if override is not None:
        return Choice(override, "setting", "given")
    if device.startswith("cuda"):
        return Choice(True, "default", "GPU: NHWC (tensor-core friendly)")
    cache = cache or MeasurementCache()
    key = layout_key(bf16)
    if not measure and cache.get(key) is None:
        return Choice(None, "measured", "not measured on this machine yet (the first encode measures it)")
    times, cached = cache.measure(key, lambda: measure_layouts(bf16, timer=timer))
    nhwc = times["nhwc"] <= times["nchw"]
    ratio = max(times.values()) / max(min(times.values()), 1e-9)
    how = "cached measurement" if cached else "measured now"
    return Choice(nhwc, "measured", f"{'NHWC' if nhwc else 'NCHW'} was {ratio:.2f}x faster per step "
                                    f"({how}: {times['nhwc'] * 1e3:.0f} ms NHWC, {times['nchw'] * 1e3:.0f} ms NCHW)")


def threads_choice(cpu: Cpu, override: int = 0) -> Choice:
    if override:
        return Choice(override, "setting", "given")
    import torch

    return Choice(torch.get_num_threads(), "default", f"torch's default ({cpu.cores} physical cores here)")


def train_defaults(device: str = "cpu", *, bf16: bool | None = None, channels_last: bool | None = None,
                   threads: int = 0, cpu: Cpu | None = None, cache: MeasurementCache | None = None) -> TrainDefaults:
    """The training choices for ``device`` on this machine (``None`` = choose)."""
    cpu = cpu or Cpu.detect()
    precision = precision_choice(device, cpu, bf16)
    layout = layout_choice(device, bool(precision.value), channels_last, cache=cache)
    return TrainDefaults(bf16=precision, channels_last=layout, threads=threads_choice(cpu, threads))
