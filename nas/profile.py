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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from fitcast.profile import PROFILE_FORMAT, auto_base

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
    from fitcast.media import upscale
    from fitcast.upscale import RoutedUpscaler

    lw, lh = target.lr
    grid = Grid(lw, lh, target.patch, target.halo, target.scale)
    ps = target.patch * target.scale
    up = RoutedUpscaler(grid, {"m": _Free(ps + 2 * target.halo * target.scale)})
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 255, (lh, lw, 3), dtype=np.uint8)
    labels = np.zeros((grid.gh, grid.gw), np.uint8)
    base = upscale(lr, target.scale, "lanczos")
    return _timer(lambda: up.upscale(lr, labels, {"0": "m"}, base), runs=runs)


class _Free:
    """A model that costs nothing: a zero residual of the right shape (to time the player's own work)."""

    def __init__(self, out_side: int) -> None:
        self.side, self._out = out_side, np.zeros((0, 3, out_side, out_side), np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        if self._out.shape[0] != x.shape[0]:
            self._out = np.zeros((x.shape[0], 3, self.side, self.side), np.float32)
        return self._out


# What the planner's costs come from: every network a preset ships (each dydca branch of k = 2
# and 3, each stdo/jstdo network), timed as it is, plus a spread for networks the table lacks
# (searched ones), each at a few batch sizes.
PLAN_NETWORKS = ([8, 8], [16, 16], [16, 16, 16], [24, 24, 24], [32, 32, 32], [40, 40, 40, 40], [48, 48, 48, 48],
                 [56, 56, 56, 56, 56], [8], [16], [32], [24, 24], [48, 48])
PLAN_BATCHES = (4, 16, 64)  # a plan runs a model on a few windows a frame, a segment's first frame on many
PLAN_OUTPUTS = {2: ((1280, 720), (1920, 1080)), 3: ((1920, 1080),), 4: ((1920, 1080),)}
PLAN_PATCH = 32


@contextmanager
def feed_load(scale: int, output: tuple[int, int], fps: float = 30.0, base: str = "lanczos") -> Iterator[None]:
    """While the block runs, a thread does what the player's feed thread does beside the models:
    decode a frame and upscale its ``base`` at ``output`` size, ``fps`` times a second."""
    import io

    from fitcast.media import iter_frames, upscale

    lw, lh = output[0] // scale, output[1] // scale
    clip = _smooth_clip(lw, lh, frames=_DECODE_FRAMES)
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            for lr in iter_frames(io.BytesIO(clip), fmt="mp4"):
                t0 = time.perf_counter()
                upscale(lr, scale, base)
                if stop.wait(max(0.0, 1.0 / fps - (time.perf_counter() - t0))):
                    return

    thread = threading.Thread(target=work, name="fitcast-feed-load", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def plan_networks(scale: int, *, runtime: str, precision: str, runs: int, say: Callable[[str], None],
                  networks: tuple[list[int], ...] = PLAN_NETWORKS, base: str = "lanczos") -> list[dict[str, Any]]:
    """Whole networks timed at the plan window and a few batch sizes, in context: the median of
    runs while a feed thread decodes and upscales ``base`` beside them as the player's does (the
    planner's per-window and per-call costs are fitted on these)."""
    import torch

    from fitcast.profile import PLAN_WINDOW
    from sr_models.archs import build_from_spec

    x = np.random.default_rng(scale).random((max(PLAN_BATCHES), 3, PLAN_WINDOW, PLAN_WINDOW), dtype=np.float32)
    rows = []
    for widths in networks:
        net = build_from_spec({"name": "espcn_w", "scale": scale, "widths": list(widths)})
        torch.nn.init.normal_(net.tail.weight, std=0.05)
        session = _session_for(net, x, runtime, precision, PLAN_WINDOW)
        with feed_load(scale, PLAN_OUTPUTS[scale][0], base=base):
            times = {n: _timer(lambda s=session, n=n: s.run(x[:n]), runs=runs, statistic="median")
                     for n in PLAN_BATCHES}
        for n, ms in times.items():
            rows.append({"scale": scale, "widths": list(widths), "window": PLAN_WINDOW, "batch": n, "ms": round(ms, 4),
                         "feed_base": base})
        say(f"plan: x{scale} network {list(widths)} timed beside a {base} feed")
    return rows


def plan_player(scale: int, output: tuple[int, int], *, runs: int) -> dict[str, Any]:
    """The player's own work for a planned asset at ``output`` size: the feed thread's decode and
    base (each alone), then, beside the feed of the base the planner will take there at 30 fps
    (:func:`fitcast.profile.auto_base`), a frame that reuses everything in place, and what each
    moved patch, each patch reset to the base and each model window adds besides the network
    itself (cutting the window, converting and pasting its residual; timed with a model that
    costs nothing).  Medians, as the networks'; each per-patch cost from half the patches (a tenth
    for windows) on that route, a mix like a plan's (costs measured from every patch at once came
    out 40-65 % under what the player then took at x4 to 1080p)."""
    from fitcast.grid import Grid
    from fitcast.manifest import LANCZOS, REUSE
    from fitcast.media import upscale
    from fitcast.upscale import PlannedUpscaler

    grid = Grid(output[0] // scale, output[1] // scale, PLAN_PATCH, 4, scale)
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 255, (grid.lr_h, grid.lr_w, 3), dtype=np.uint8)
    decode = decode_ms(grid.lr_w, grid.lr_h, runs=max(3, runs // 3))
    feed = {kind: decode + _timer(lambda k=kind: upscale(lr, scale, k), runs=runs) for kind in ("lanczos", "bicubic")}
    kind = auto_base(feed["lanczos"], feed["bicubic"], 30.0)
    up = PlannedUpscaler(grid, {"m": _Free(grid.window * scale)}, [LANCZOS, REUSE, "m"])
    base = upscale(lr, scale, kind)
    n = grid.patches
    half = rng.permutation(n)[: max(1, n // 2)]
    tenth = half[: max(1, n // 10)]
    still = np.zeros((*grid.shape, 2), np.int8)
    moved = still.copy()
    moved.reshape(n, 2)[half] = 3
    reuse = np.full(grid.shape, 1, np.uint8)
    zeroed, modelled = reuse.copy(), reuse.copy()
    zeroed.reshape(n)[half] = 0
    modelled.reshape(n)[tenth] = 2
    with feed_load(scale, output, base=kind):
        def timed(codes: np.ndarray, motion: np.ndarray) -> float:
            return _timer(lambda: up.upscale(lr, base, codes, motion), runs=runs, statistic="median")

        frame = timed(reuse, still)
        move, zero, window = timed(reuse, moved), timed(zeroed, still), timed(modelled, still)
    return {"scale": scale, "output": list(output), "patch": PLAN_PATCH, "patches": n, "frame_ms": round(frame, 4),
            "move_ms": round(max(0.0, move - frame) / half.size, 5),
            "zero_ms": round(max(0.0, zero - frame) / half.size, 5),
            "window_ms": round(max(0.0, window - frame) / tenth.size, 5),
            "feed_ms": round(feed["lanczos"], 4), "feed_ms_lanczos": round(feed["lanczos"], 4),
            "feed_ms_bicubic": round(feed["bicubic"], 4), "feed_base": kind}


def decode_ms(width: int, height: int, *, runs: int) -> float:
    """Milliseconds to decode one frame of H.264 at ``width`` x ``height``: the mean over a short
    clip of smooth moving content at CRF 23 (what an LR rendition is), intra frame included."""
    import io

    from fitcast.media import iter_frames

    clip = _smooth_clip(width, height, frames=_DECODE_FRAMES)
    return _timer(lambda: sum(1 for _ in iter_frames(io.BytesIO(clip), fmt="mp4")), runs=runs) / _DECODE_FRAMES


_DECODE_FRAMES = 12


def _smooth_clip(width: int, height: int, *, frames: int) -> bytes:
    """A few frames of blurred noise panning across, x264 CRF 23, as an MP4 in memory."""
    import io

    import av
    import cv2

    field = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 255, (height * 2, width * 2, 3), dtype=np.uint8),
                             (0, 0), 3)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23"}
        for i in range(frames):
            frame = np.ascontiguousarray(field[i * 2 : i * 2 + height, i * 3 : i * 3 + width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def plan_section(*, runtime: str, precision: str, scales: tuple[int, ...], runs: int, say: Callable[[str], None],
                 networks: tuple[list[int], ...] = PLAN_NETWORKS,
                 outputs: dict[int, tuple[tuple[int, int], ...]] = PLAN_OUTPUTS) -> dict[str, Any]:
    """The plan costs of a device (``fitcast-device-profile/1``'s ``plan`` section).

    The player's own work first: at each scale its first output size's feed costs say which base
    the planner will take there at 30 fps (:func:`fitcast.profile.auto_base`), and the networks
    are timed beside that base's feed (beside a lanczos feed at x4 to 1920x1080 on a 2-core AVX2
    EPYC a window took 2.4 ms, beside a bicubic one 1.5, alone 1.4)."""
    player = [plan_player(s, out, runs=runs) for s in scales for out in outputs[s]]
    say("plan: the player's own work timed")
    rows = []
    for s in scales:
        first = next(p for p in player if p["scale"] == s)
        base = auto_base(first["feed_ms_lanczos"], first["feed_ms_bicubic"], 30.0)
        rows += plan_networks(s, runtime=runtime, precision=precision, runs=runs, say=say, networks=networks, base=base)
    return {"runtime": runtime, "precision": precision, "networks": rows, "player": player}


def profile_device(target: Target, *, runtime: str = "auto", precision: str = "int8", runs: int = 10,
                   widths: tuple[int, ...] = WIDTHS, networks: int = 10, seed: int = 0, statistic: str = "min",
                   plan_scales: tuple[int, ...] = (2,),
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the candidate layers, a sample of whole networks and the frame overhead (for the
    search), and the plan costs at ``plan_scales`` (for the encoder's planner; () for none)."""
    from fitcast.machine import machine
    from fitcast.runtime import resolve_runtime

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
            "entries": [], **({"plan": plan_section(runtime=runtime, precision=precision, scales=plan_scales, runs=runs,
                                                    say=say)} if plan_scales else {})}
