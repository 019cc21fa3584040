"""Device profile for the compiler-aware search: latencies measured on the runtime that will run the model.

Layers are timed *in context*, because a conv timed alone pays for writing its
whole float output, which a fused network never does: ``first[c]`` is the time of
the shallowest network ``[c]`` (3->c conv, ReLU, the tail conv, PixelShuffle) and
``step[a, b]`` is ``T([a, b]) - T([a])``, what appending a conv a->b (and moving
the tail to b) adds.  Over a chain the tail terms cancel, so a network
``[w0, ..., wn]`` costs ``first[w0] + sum(step[w_i-1, w_i])`` if costs add up; a
handful of random deeper networks is timed too, to fit and check that predictor.
Every network is exported to ONNX, quantised like the shipped models (static int8,
QDQ) and timed in the chosen runtime on one frame's worth of patch windows at the
target resolution: fusion, layout and int8 kernels are what the player gets, not
FLOPs.  The player's own per-frame work (windows, crop, paste) is timed with a
model that costs nothing (the lanczos base is left out: the player computes it in
its decode thread, beside the models).

The profile is JSON (``fitcast-device-profile/1``, the format the phone benchmark
writes too) with ``target``, ``layers``, ``networks`` and ``overhead_ms``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fitcast.profile import PROFILE_FORMAT

WIDTHS = (8, 16, 24, 32, 48)
MAX_DEPTH = 3  # hidden convs after the first


@dataclass(frozen=True)
class Target:
    scale: int
    output: tuple[int, int]  # HR width, height
    patch: int  # LR patch side
    halo: int  # LR halo each side (the deepest candidate's receptive radius)

    @property
    def lr(self) -> tuple[int, int]:
        return self.output[0] // self.scale, self.output[1] // self.scale

    @property
    def window(self) -> int:
        return self.patch + 2 * self.halo

    @property
    def patches(self) -> int:
        lw, lh = self.lr
        return math.ceil(lw / self.patch) * math.ceil(lh / self.patch)

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "output": list(self.output), "patch": self.patch, "halo": self.halo,
                "window": self.window, "patches": self.patches}


# "min" is the steadier estimate on a shared machine (noise only ever adds time); "median" is
# closer to what a player meets under load.  The predictor is fitted on whichever is chosen.
STATISTIC = {"min": np.min, "median": np.median}


def _timer(run: Callable[[], Any], *, runs: int, warmup: int = 2, statistic: str = "min") -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(STATISTIC[statistic](times) * 1000)


def _session_for(net, x: np.ndarray, runtime: str, precision: str, window: int):
    from fitcast.runtime import open_session
    from sr_models.export import quantize_int8, to_onnx_bytes

    data = to_onnx_bytes(net, sample_hw=(window, window), in_channels=x.shape[1])
    if precision == "int8":
        data = quantize_int8(data, x[: min(len(x), 64)])
    return open_session(data, runtime, window=window)


def measure_network(widths: list[int], target: Target, x: np.ndarray, *, runtime: str, precision: str,
                    runs: int, statistic: str = "min") -> float:
    """Milliseconds for one frame's patches through the whole network (exported, fused, quantised)."""
    import torch

    from sr_models.archs import build_from_spec

    net = build_from_spec({"name": "espcn_w", "scale": target.scale, "widths": list(widths)})
    torch.nn.init.normal_(net.tail.weight, std=0.05)
    session = _session_for(net, x, runtime, precision, target.window)
    return _timer(lambda: session.run(x), runs=runs, statistic=statistic)


def frame_overhead_ms(target: Target, runs: int) -> float:
    """The player's per-frame cost around the models on its critical path: windows, crop and paste.

    The lanczos base is computed by the player's decode thread, beside the models, so it is
    given here precomputed, as the player gives it."""
    from fitcast.grid import Grid
    from fitcast.upscale import RoutedUpscaler
    from fitcast.media import upscale

    lw, lh = target.lr
    grid = Grid(lw, lh, target.patch, target.halo, target.scale)
    ps = target.patch * target.scale

    class _Free:  # a model that costs nothing: returns a zero residual of the right shape
        def run(self, x: np.ndarray) -> np.ndarray:
            out = getattr(self, "_out", None)
            if out is None or out.shape[0] != x.shape[0]:
                o = ps + 2 * target.halo * target.scale
                self._out = out = np.zeros((x.shape[0], 3, o, o), np.float32)
            return out

    up = RoutedUpscaler(grid, {"m": _Free()})
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 255, (lh, lw, 3), dtype=np.uint8)
    labels = np.zeros((grid.gh, grid.gw), np.uint8)
    base = upscale(lr, target.scale, "lanczos")
    return _timer(lambda: up.upscale(lr, labels, {"0": "m"}, base), runs=runs)


def profile_device(target: Target, *, runtime: str = "auto", precision: str = "int8", runs: int = 10,
                   widths: tuple[int, ...] = WIDTHS, networks: int = 10, seed: int = 0, statistic: str = "min",
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the candidate layers, a sample of whole networks and the frame overhead."""
    from fitcast.runtime import resolve_runtime
    from fitcast.machine import machine

    runtime = resolve_runtime(runtime)
    rng = np.random.default_rng(seed)
    x = rng.random((target.patches, 3, target.window, target.window), dtype=np.float32)
    say = progress or (lambda _: None)
    def timed(w: list[int]) -> float:
        return measure_network(w, target, x, runtime=runtime, precision=precision, runs=runs, statistic=statistic)

    layers = []
    first = {c: timed([c]) for c in widths}
    for c, ms in first.items():
        layers.append({"kind": "first", "cin": 3, "cout": c, "ms": round(ms, 4)})
    say("shallowest networks measured")
    for a in widths:
        for b in widths:
            layers.append({"kind": "step", "cin": a, "cout": b, "ms": round(timed([a, b]) - first[a], 4)})
        say(f"steps from {a} channels measured")
    nets = []
    for _ in range(networks):
        depth = int(rng.integers(2, MAX_DEPTH + 1))  # deeper than the table's own networks
        w = [int(v) for v in rng.choice(widths, size=depth + 1)]
        nets.append({"widths": w, "ms": round(timed(w), 4)})
        say(f"network {w} measured")
    return {"format": PROFILE_FORMAT, "device": f"host: {machine()}", "runtime": runtime, "precision": precision,
            "statistic": statistic, "runs": runs,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "target": target.to_dict(),
            "overhead_ms": round(frame_overhead_ms(target, runs), 4), "layers": layers, "networks": nets,
            "entries": []}
