"""The device profile (``fitcast-device-profile/1``): what a device's runtime costs, measured.

Written by ``fitcast profile-device`` (``nas.profile``: this machine's candidate layers and
networks, the player's overhead; ``mobile.benchmark``: a phone bundle's models) and read
by the architecture search and the encoder.  One format constant, one reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fitcast.errors import InvalidInputError

PROFILE_FORMAT = "fitcast-device-profile/1"
# What the encoder plans for when no profile is named: `fitcast profile-device --plan-scales 2,3,4`
# on a 2-core x86 (the reference player's class of device), shipped with the package.
REFERENCE_PROFILE = Path(__file__).with_name("profiles") / "reference-x86-2core.json"


def load_profile(path: Path, *, need_layers: bool = True) -> dict[str, Any]:
    """Read a device profile; with ``need_layers`` it must hold the layer table of a machine
    profile (not only a bundle's entries)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path}: not a readable device profile ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InvalidInputError(f"{path}: format {got!r}, expected {PROFILE_FORMAT}")
    if need_layers and not doc.get("layers"):
        raise InvalidInputError(f"{path}: has no layer table (profile it with `fitcast profile-device` "
                                "without a bundle)")
    return doc


# ----------------------------------------------------------------------------- plan costs
# A machine profile's "plan" section holds what the encoder's planner needs to predict a frame
# of *any* asset on the device: whole networks timed at a few batch sizes (per scale) and the
# player's own per-frame work at a few output sizes.  ``RouteCosts`` is that prediction for one
# asset: the costs the planner spends its budget on.

PLAN_WINDOW = 40  # LR window side the plan networks are timed at (32-pixel patches, halo 4)


@dataclass(frozen=True)
class RouteCosts:
    """Predicted milliseconds of one frame's work on the target device."""

    frame_ms: float  # every frame, on the player's critical path: the canvas add and the bookkeeping
    move_ms: float  # per patch whose detail moves (reuse with a non-zero vector)
    zero_ms: float  # per patch reset to lanczos
    call_ms: tuple[float, ...]  # per model run (once per frame it has patches)
    window_ms: tuple[float, ...]  # per patch window through each model, the player's paste included
    feed_ms: float = 0.0  # decode and the lanczos base, beside the models (another thread)

    def frame(self, counts: list[int], *, moved: int, zeroed: int) -> float:
        """Predicted milliseconds of a frame with ``counts[m]`` windows through model m."""
        ms = self.frame_ms + self.zero_ms * zeroed + self.move_ms * moved
        return ms + sum(c + n * w for c, w, n in zip(self.call_ms, self.window_ms, counts, strict=False) if n)


# The player's feed thread decodes and upscales the base beside the models; a base that takes more
# than this share of the frame interval there starves them (measured on a 2-core AVX2 EPYC, x4 to
# 1920x1080: with lanczos the feed took 39 ms a frame beside the models, 28 ms alone), so the
# planner takes bicubic instead, and the profile times the networks beside the base it will take.
FEED_SHARE = 0.5


def auto_base(feed_lanczos_ms: float, feed_bicubic_ms: float, fps: float) -> str:
    """The base a planned asset's residuals go on at ``fps``: lanczos, unless its feed would take
    over :data:`FEED_SHARE` of the interval and bicubic's was measured."""
    return "bicubic" if feed_lanczos_ms > FEED_SHARE * 1000.0 / fps and feed_bicubic_ms > 0 else "lanczos"


def conv_macs_per_lr_px(widths: list[int], scale: int) -> int:
    """Multiply-accumulates per LR pixel of the 3x3 conv chain 3 -> widths... -> 3s^2 of fitcast's
    networks (the one formula: the models, the search, its latency predictor and the planner)."""
    chans = [3, *widths, 3 * scale * scale]
    return 9 * sum(a * b for a, b in zip(chans[:-1], chans[1:], strict=False))


def network_features(widths: list[int], scale: int) -> np.ndarray:
    """What a network's time per window depends on: 1, MACs per LR pixel / 1000, convolutions,
    summed hidden widths (the activations written and read)."""
    return np.array([1.0, conv_macs_per_lr_px(widths, scale) / 1000.0, len(widths) + 1.0, float(sum(widths))])


def arch_widths(arch: dict[str, Any]) -> list[int]:
    """The hidden widths of a shipped network (``espcn_r``: channels x (body + 1); ``espcn_w``)."""
    if "widths" in arch:
        return [int(w) for w in arch["widths"]]
    return [int(arch["channels"])] * (int(arch["body"]) + 1)


def fit_network_costs(rows: list[dict[str, Any]]) -> tuple[float, np.ndarray]:
    """Least squares ``ms = call + batch * (window / PLAN_WINDOW)^2 * features . beta`` over timed
    networks (rows of ``scale, widths, window, batch, ms``); returns (call ms, beta)."""
    x = np.stack([np.concatenate([[1.0], r["batch"] * (r["window"] / PLAN_WINDOW) ** 2
                                  * network_features(r["widths"], r["scale"])]) for r in rows])
    y = np.array([r["ms"] for r in rows])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return max(0.0, float(coef[0])), coef[1:]


def route_costs(profile: dict[str, Any], *, scale: int, output: tuple[int, int], window: int, patches: int,
                archs: list[dict[str, Any]], base: str = "lanczos") -> RouteCosts:
    """The costs of one asset's routes on the profiled device (the profile's ``plan`` section)."""
    plan = profile.get("plan")
    if not plan:
        raise InvalidInputError("the device profile has no plan costs: measure it with a newer "
                                "`fitcast profile-device` (without a bundle)")
    rows = [r for r in plan["networks"] if int(r["scale"]) == scale]
    if len(rows) < 6:
        raise InvalidInputError(f"the device profile has too few networks timed at x{scale} "
                                f"(profile-device --plan-scales {scale})")
    model_costs = [network_cost(rows, arch_widths(a), scale, window) for a in archs]
    frames = [f for f in plan["player"] if int(f["scale"]) == scale] or plan["player"]
    pixels = output[0] * output[1]
    near = min(frames, key=lambda f: abs(np.log(f["output"][0] * f["output"][1] / pixels)))
    grow = pixels / (near["output"][0] * near["output"][1])  # frame work scales with its pixels
    per_patch = near["patches"] / max(1, patches) * grow  # patch work with the pixels of one patch
    paste = near.get("window_ms", 0.0) * per_patch  # the player's work per window besides the network
    return RouteCosts(frame_ms=near["frame_ms"] * grow, move_ms=near["move_ms"] * per_patch,
                      zero_ms=near["zero_ms"] * per_patch, call_ms=tuple(c for c, _ in model_costs),
                      window_ms=tuple(w + paste for _, w in model_costs),
                      feed_ms=near.get(f"feed_ms_{base}", near["feed_ms"] if base == "lanczos" else 0.0) * grow)


def network_cost(rows: list[dict[str, Any]], widths: list[int], scale: int, window: int) -> tuple[float, float]:
    """(call ms, ms per window) of a network at ``window`` on the profiled device: a line through
    its own timings when the profile timed these widths (every preset's networks), else the
    least-squares model over all timed networks; per-window cost grows with the window's area."""
    own = [r for r in rows if int(r["scale"]) == scale and [int(w) for w in r["widths"]] == list(widths)]
    area = (window / PLAN_WINDOW) ** 2
    if len(own) >= 2:
        n = np.array([r["batch"] for r in own], float)
        ms = np.array([r["ms"] for r in own], float)
        slope, call = np.polyfit(n, ms, 1)
        if call < 0:  # a line through the origin
            slope, call = float(n @ ms / (n @ n)), 0.0
        return float(call), float(slope) * area
    call, beta = fit_network_costs([r for r in rows if int(r["scale"]) == scale])
    return call, max(1e-3, float(network_features(widths, scale) @ beta)) * area
