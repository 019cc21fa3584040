"""The encode's plan stage: every frame's route per patch for a device budget.

The encoder simulates the player exactly (:class:`fitcast.upscale.PlannedUpscaler`, the
player's own class), so for every frame it measures what each route would give each patch
(lanczos, the last frame's detail reused in place or moved along the content's motion,
every model) against the original, predicts what each costs on the target device (its
``fitcast profile-device`` file) and lets :mod:`chunking.planner` choose.  The chosen frame
is then composed by the very call the player makes, so the planned PSNR is what plays.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chunking.motion import MotionEstimator
from chunking.planner import PlanClock, choose_routes
from chunking.score import PatchErrors
from fitcast.errors import InvalidInputError
from fitcast.grid import Grid
from fitcast.manifest import LANCZOS, REUSE
from fitcast.media import upscale
from fitcast.metrics import psnr_y, y_of_difference
from fitcast.profile import REFERENCE_PROFILE, RouteCosts, auto_base, load_profile, route_costs
from fitcast.rendition import paired_frames
from fitcast.runtime import OrtSession
from fitcast.upscale import MAX_MOTION, KeptResiduals, PlannedUpscaler, moved_blocks


@dataclass(frozen=True)
class PlanTarget:
    """What a plan is made for: a device profile, a frame rate, the player's queue and headroom."""

    fps: float
    queue: int
    headroom: float
    profile: dict[str, Any] = field(repr=False)
    profile_sha256: str
    asked_fps: float | None  # what the options asked for (None: the source's rate)
    base: str = "lanczos"  # the upscale the models' residuals go on (see plan_target)

    @property
    def prebuffer(self) -> int:
        """The start-up buffer: half the queue (a quarter second at 30 fps with the default 8)."""
        return self.queue // 2

    @property
    def device(self) -> str:
        return str(self.profile.get("device", "unknown device"))

    def costs(self, grid: Grid, archs: list[dict[str, Any]], base: str = "lanczos") -> RouteCosts:
        return route_costs(self.profile, scale=grid.scale, output=grid.hr_size, window=grid.window,
                           patches=grid.patches, archs=archs, base=base)


def plan_target(profile_path: Path | None, *, asked_fps: float | None, source_fps: float, grid: Grid, queue: int,
                headroom: float, base: str = "auto") -> PlanTarget | None:
    """The target of a plan, or None when none is asked for (``target_fps`` 0).

    The base (``auto``): :func:`fitcast.profile.auto_base`: lanczos, unless on this device the
    lanczos base alone would take over half the frame interval in the player's feed thread; then
    bicubic, a quarter of the cost (README, speed).  Fails early (one line) when the
    device cannot decode and upscale the base at an asked rate; the default rate (the source's)
    is lowered to what the device can feed instead."""
    if asked_fps == 0:
        return None
    path = profile_path or REFERENCE_PROFILE
    profile = load_profile(path, need_layers=False)
    sha = hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()
    fps = asked_fps or source_fps

    def feed_ms(kind: str) -> float:
        return route_costs(profile, scale=grid.scale, output=grid.hr_size, window=grid.window,
                           patches=grid.patches, archs=[], base=kind).feed_ms

    if base == "auto":
        base = auto_base(feed_ms("lanczos"), feed_ms("bicubic"), fps)
    feed = feed_ms(base)
    can = 1000.0 / (feed / max(1e-6, 1.0 - headroom))
    if fps > can:
        if asked_fps is not None:
            raise InvalidInputError(f"{profile.get('device', path.name)} decodes and upscales the {base} base in "
                                    f"{feed:.1f} ms a frame at {grid.hr_size[0]}x{grid.hr_size[1]}: at most "
                                    f"{can:.1f} fps, not {fps:g} (ask for less, or --target-fps 0 for no plan)")
        fps = can
    return PlanTarget(fps, queue, headroom, profile, sha, asked_fps, base)


@dataclass
class PlannedSegment:
    codes: np.ndarray  # uint8 [frames, gh, gw]
    motion: np.ndarray  # int8 [frames, gh, gw, 2]
    predicted_ms: np.ndarray  # float32 [frames]
    psnr: list[float]
    order: np.ndarray  # uint16 [frames, gh, gw]: model patches' ranks (chunking.planner.FrameChoice.order)


@dataclass
class PlanResult:
    target: PlanTarget
    routes: list[str]
    costs: RouteCosts
    segments: list[PlannedSegment]
    late: int  # frames the profile's own costs make late (a correct plan has none)

    @property
    def frame_psnr(self) -> list[float]:
        return [p for s in self.segments for p in s.psnr]

    @property
    def predicted_ms(self) -> np.ndarray:
        return np.concatenate([s.predicted_ms for s in self.segments])

    def shares(self) -> dict[str, float]:
        """The share of patches on each route (``reuse-moved`` counts reuse with a vector)."""
        codes = np.concatenate([s.codes.ravel() for s in self.segments])
        moved = np.concatenate([s.motion.any(axis=-1).ravel() for s in self.segments])
        out = {route: float(np.mean(codes == c)) for c, route in enumerate(self.routes)}
        out["reuse-moved"] = float(np.mean((codes == self.routes.index(REUSE)) & moved))
        return out

    def summary(self) -> dict[str, float]:
        ms = self.predicted_ms
        return {"median": round(float(np.median(ms)), 3), "p95": round(float(np.percentile(ms, 95)), 3),
                "max": round(float(ms.max()), 3)}


def plan_frames(src: Any, rendition: Any, analysis: Any, models: list[Any], target: PlanTarget, *, int8: bool,
                progress: Callable[[float], None]) -> PlanResult:
    """Plan every frame (segments in order, each from a clean canvas) and compose it as the player will."""
    grid = analysis.grid
    routes = [LANCZOS, REUSE] + [m.id for m in models]
    base = target.base
    costs = target.costs(grid, [m.arch for m in models], base)
    up = PlannedUpscaler(grid, {m.id: OrtSession(m.shipped_bytes(int8)) for m in models}, routes)
    clock = PlanClock(1000.0 / target.fps, target.queue, prebuffer=target.prebuffer, headroom=target.headroom)
    motion, residuals = MotionEstimator(grid), ModelResiduals(up, [m.id for m in models])
    segments, t, late = [], 0, 0
    for _, lr_frames, hr_frames in paired_frames(src.path, src.crop, rendition.hls, rendition.segments):
        up.reset()
        codes, vectors, predicted, psnr, order = [], [], [], [], []
        for j, (lr, hr) in enumerate(zip(lr_frames, hr_frames, strict=False)):
            frame_base = upscale(lr, grid.scale, base)
            candidates = motion.candidates(hr_frames[j - 1], hr, vectors[-1]) if j else None
            errors = route_errors(residuals, lr, frame_base, hr, candidates)
            choice = choose_routes(*errors, costs, clock.budget(t, first_of_segment=j == 0))
            late += clock.finish(t, choice.predicted_ms)
            frame = up.upscale(lr, frame_base, choice.codes, choice.motion)  # what the player computes
            codes.append(choice.codes)
            vectors.append(choice.motion)
            predicted.append(choice.predicted_ms)
            order.append(choice.order)
            psnr.append(psnr_y(frame, hr))
            t += 1
            progress(t / rendition.frames)
        segments.append(PlannedSegment(np.stack(codes), np.stack(vectors), np.array(predicted, np.float32), psnr,
                                        np.stack(order)))
    return PlanResult(target, routes, costs, segments, late)


class ModelResiduals:
    """Every model's residual on every patch of the frames planned, each model run only on the
    windows that changed since the last frame (:class:`fitcast.upscale.KeptResiduals`: 84 % of
    leaf's 720p windows are unchanged frame to frame, under 6 % of tos's or cars's)."""

    def __init__(self, up: PlannedUpscaler, model_ids: list[str]) -> None:
        self.up = up
        self.kept = [KeptResiduals(up.grid, functools.partial(up.model_residuals, mid), np.int16) for mid in model_ids]

    @property
    def windows_run(self) -> int:
        """Windows the models ran on (all models together)."""
        return sum(k.windows_run for k in self.kept)

    def of(self, lr: np.ndarray) -> np.ndarray:
        """int16 ``[M, gh * gw, Ps, Ps, 3]`` (row-major patches): each model's residual on ``lr``."""
        g = self.up.grid
        every = np.arange(g.patches)
        windows = g.windows(g.pad(lr)).reshape(g.patches, g.window, g.window, 3)
        return np.stack([k.at(windows, every) for k in self.kept])


def route_errors(models: ModelResiduals, lr: np.ndarray, base: np.ndarray, hr: np.ndarray,
                 candidates: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-patch squared Y errors of every route for one frame: (lanczos ``[gh, gw]``, reuse
    ``[C, gh, gw]`` with their vectors ``[C, gh, gw, 2]`` (:func:`free_route_errors`), models
    ``[M, gh, gw]``), from the plan's upscaler (its canvas) and ``models``."""
    grid = models.up.grid
    score = PatchErrors(base, hr, grid)
    model_err = np.stack([score.of_all(r) for r in models.of(lr)]) if models.kept else np.zeros((0, *grid.shape))
    return (*free_route_errors(models.up, score, candidates), model_err)


def free_route_errors(up: PlannedUpscaler, score: PatchErrors,
                      candidates: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-patch squared Y errors of the routes that cost the player (almost) nothing, from the
    upscaler's current canvas (the last frame's detail): (lanczos ``[gh, gw]``, reuse ``[C, gh, gw]``
    with their vectors ``[C, gh, gw, 2]``).  No reuse on a segment's first frame (``candidates``
    None); else reuse in place, along each field of ``candidates`` (``[K, gh, gw, 2]``,
    :meth:`chunking.motion.MotionEstimator.candidates`) and, as a motion search refines a
    prediction, along each patch's best vector so far moved by one HR pixel in each of 8
    directions (flow at LR size, rounded to whole HR pixels, is often a pixel off) where that
    vector comes within ``REFINE_WITHIN`` times lanczos's error (elsewhere a pixel's move does not
    make reuse a contender: on leaf, tos and cars the plans are the same with and without it).
    A patch's vector is scored once: where a field repeats a vector the patch already tried, or
    the patch is not refined, its error there is ``inf`` (never chosen; neighbouring patches
    mostly share their motion).  Moved detail is scored on the canvas's luma
    (:meth:`chunking.score.PatchErrors.at_luma`: a third of the pixels to move and no RGB to
    compose; an estimate where the frame saturates): on leaf's x2 rung the plan stage took 161-169
    ms a frame against 184-193 scoring in RGB (whole clip; 134 against 197 on its first three
    segments, x4 85 against 142), planned PSNR-Y -0.0007 dB (x4: the same).
    Reuse in place is scored exactly (estimated too, it moved the x4 rung's choices: models on 16 %
    of the patches instead of 5 %)."""
    grid = up.grid
    lanczos = score.of_base()
    if candidates is None:
        return lanczos, np.zeros((0, *grid.shape)), np.zeros((0, *grid.shape, 2), np.int8)
    rows, cols = np.divmod(np.arange(grid.patches), grid.gw)
    still = np.zeros((*grid.shape, 2), np.int8)
    luma = y_of_difference(up.margined_canvas)  # the canvas's Y detail
    reuse_err, vectors = [score.of_all(up.moved(rows, cols, still[rows, cols]))], [still]

    def try_field(field: np.ndarray, where: np.ndarray) -> None:
        new = where & ~np.any([(field == v).all(axis=-1) for v in vectors], axis=0)
        r, c = np.nonzero(new)
        err = np.full(grid.shape, np.inf)
        err[r, c] = score.at_luma(r, c, moved_blocks(luma, grid.hr_patch, r, c, field[r, c]))
        reuse_err.append(err)
        vectors.append(field)

    everywhere = np.ones(grid.shape, bool)
    for vf in candidates:
        try_field(vf, everywhere)
    errors = np.stack(reuse_err)
    best = refine_from(errors, np.stack(vectors))
    promising = errors.min(axis=0) < REFINE_WITHIN * lanczos
    for step in REFINE_STEPS:
        try_field(np.clip(best + np.array(step, np.int16), -MAX_MOTION, MAX_MOTION).astype(np.int8), promising)
    return lanczos, np.stack(reuse_err), np.stack(vectors)


REFINE_WITHIN = 2.0  # a patch's best vector is refined where its error is under this times lanczos's
REFINE_STEPS = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))  # (dy, dx) HR pixels


def refine_from(errors: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """int16 ``[gh, gw, 2]``: each patch's vector of least error among ``errors`` ``[C, gh, gw]``
    for ``vectors`` ``[C, gh, gw, 2]``."""
    pick = errors.argmin(axis=0)[None, ..., None]
    return np.take_along_axis(vectors, pick, axis=0)[0].astype(np.int16)
