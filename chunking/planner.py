"""Plan each frame's routes for a device budget: the most quality per millisecond.

For one frame the encoder knows, for every patch, the squared error of every route the
player could take (lanczos, detail reused from the last frame along each candidate motion
vector, each model) and, from the device profile, what each costs.  :func:`choose_routes`
picks per patch: the best free route (lanczos, or reuse where it is not the segment's first
frame), then upgrades patches to models in order of error removed per millisecond, along
each patch's lower convex hull of (cost, error) (the greedy answer to this multiple-choice
knapsack), while the frame's budget lasts.  A model is never chosen where it does not beat
the free route: do no harm, per patch.

:class:`PlanClock` gives each frame its budget: frames are shown at a fixed interval and the
player may render up to ``queue`` frames ahead, so time saved on easy frames (the planner
leaves ``headroom`` of each) pays for the expensive first frame of a segment, which has
nothing to reuse.  With the profile's costs, a plan never makes a frame late.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fitcast.profile import RouteCosts

LANCZOS_CODE, REUSE_CODE = 0, 1  # route codes; models follow from 2


@dataclass
class FrameChoice:
    codes: np.ndarray  # uint8 [gh, gw]
    motion: np.ndarray  # int8 [gh, gw, 2]
    predicted_ms: float
    error: float  # the chosen routes' summed squared error (the planner's objective)
    # uint16 [gh, gw]: on model patches, 1 + the rank of the patch's last upgrade in the order the
    # budget took them (1: the most error removed per millisecond); 0 elsewhere.  A player short of
    # time sheds the highest ranks first (``client.realtime.WorkShedder``).
    order: np.ndarray


def choose_routes(lanczos_err: np.ndarray, reuse_err: np.ndarray, reuse_motion: np.ndarray, model_err: np.ndarray,
                  costs: RouteCosts, budget_ms: float) -> FrameChoice:
    """Routes of one frame.

    ``lanczos_err`` ``[gh, gw]``; ``reuse_err`` ``[C, gh, gw]`` for C candidate motion fields
    ``reuse_motion`` ``[C, gh, gw, 2]`` (C = 0 on a segment's first frame); ``model_err``
    ``[M, gh, gw]``.  Errors are summed squared Y errors of the patch's HR pixels.
    """
    shape = lanczos_err.shape
    n = lanczos_err.size
    # 1. the best free route of every patch
    free_err = lanczos_err.reshape(n).astype(np.float64)
    codes = np.full(n, LANCZOS_CODE, np.uint8)
    motion = np.zeros((n, 2), np.int8)
    free_cost = np.full(n, costs.zero_ms)
    for c in range(reuse_err.shape[0]):
        err = reuse_err[c].reshape(n)
        mv = reuse_motion[c].reshape(n, 2)
        cost = np.where(mv.any(axis=1), costs.move_ms, 0.0)
        better = err < free_err
        free_err = np.where(better, err, free_err)
        codes[better], motion[better], free_cost[better] = REUSE_CODE, mv[better], cost[better]
    # 2. each patch's upgrades to models, along the lower convex hull of (cost, error)
    steps = _hull_steps(free_err, model_err.reshape(model_err.shape[0], n), costs.window_ms)
    # 3. the best error removed per millisecond first, while the budget lasts
    spent = costs.frame_ms + float(free_cost.sum())
    used = np.zeros(len(costs.window_ms), bool)
    at = np.full(n, -1)  # the model each patch has now
    err = free_err.copy()
    order = np.zeros(n, np.int64)
    taken = 0
    for patch, frm, model, d_err, d_cost in steps:
        if at[patch] != frm:
            continue  # the step before it on this patch's hull was not taken
        extra = d_cost + (0.0 if used[model] else costs.call_ms[model]) - (free_cost[patch] if frm < 0 else 0.0)
        if spent + extra > budget_ms:
            continue
        spent += extra
        used[model] = True
        at[patch] = model
        err[patch] -= d_err
        codes[patch], motion[patch] = model + 2, 0
        taken += 1
        order[patch] = taken
    choice_codes, choice_motion = codes.reshape(shape), motion.reshape(*shape, 2)
    ranks = _dense_ranks(order).reshape(shape)
    return FrameChoice(choice_codes, choice_motion, predicted_ms(costs, choice_codes, choice_motion), float(err.sum()),
                       ranks)


def _dense_ranks(order: np.ndarray) -> np.ndarray:
    """``order`` (0: no model, else the step that last upgraded the patch) as ranks 1..K, uint16."""
    out = np.zeros(order.shape, np.uint16)
    chosen = np.flatnonzero(order)
    out[chosen[np.argsort(order[chosen], kind="stable")]] = np.minimum(np.arange(1, chosen.size + 1), 0xFFFF)
    return out


def predicted_ms(costs: RouteCosts, codes: np.ndarray, motion: np.ndarray) -> float:
    """Predicted milliseconds of a frame planned as ``codes`` / ``motion``."""
    counts = [int((codes == m + 2).sum()) for m in range(len(costs.window_ms))]
    moved = int(((codes == REUSE_CODE) & motion.any(axis=-1)).sum())
    return costs.frame(counts, moved=moved, zeroed=int((codes == LANCZOS_CODE).sum()))


def _hull_steps(free_err: np.ndarray, model_err: np.ndarray, window_ms: tuple[float, ...]) -> list[tuple]:
    """(patch, from model (-1: the free route), to model, error removed, cost added) of every
    upgrade step, best ratio first.

    Per patch, the models that lower the error are ordered by cost and kept on the lower convex
    hull of (cost, error) from the free route, so each patch's steps have falling ratios and a
    global sort by ratio takes them in order."""
    order = np.argsort(np.asarray(window_ms), kind="stable")
    steps = []
    for patch in np.flatnonzero((model_err < free_err).any(axis=0)):
        hull = [(-1, 0.0, float(free_err[patch]))]  # (model, cost, error)
        for m in order:
            e = float(model_err[m, patch])
            if e >= hull[-1][2]:
                continue  # costs more and removes nothing more
            point = (int(m), float(window_ms[m]), e)
            while len(hull) >= 2 and _ratio(hull[-2], hull[-1]) <= _ratio(hull[-1], point):
                hull.pop()
            hull.append(point)
        for a, b in zip(hull[:-1], hull[1:], strict=False):
            steps.append((int(patch), a[0], b[0], a[2] - b[2], b[1] - a[1], _ratio(a, b)))
    steps.sort(key=lambda s: -s[5])
    return [s[:5] for s in steps]


def _ratio(a: tuple, b: tuple) -> float:
    return (a[2] - b[2]) / max(b[1] - a[1], 1e-9)


class PlanClock:
    """Frame budgets for a player that shows a frame every ``interval_ms`` and may render up to
    ``queue`` frames ahead of the one on screen.

    Frame 0 is shown ``prebuffer`` intervals after it is ready (the player's start-up buffer)
    and fixes the schedule: frame t is due at ``due(t) = T0 + (t + prebuffer) * interval``.
    Rendering of frame t starts when frame t-1 is done and a queue slot is free (frame
    t-queue has been shown): ``start(t) = max(done(t-1), due(t-queue))``.  This is the model
    the player keeps (``client.realtime.PresentationClock``).
    """

    def __init__(self, interval_ms: float, queue: int, *, prebuffer: int, headroom: float = 0.15) -> None:
        self.interval, self.queue, self.headroom = interval_ms, max(1, queue), headroom
        self.prebuffer = max(0, min(prebuffer, self.queue))
        self.done: list[float] = []

    def due(self, t: int) -> float:
        return self.done[0] + (t + self.prebuffer) * self.interval

    def start(self, t: int) -> float:
        if t == 0:
            return 0.0
        ready = self.done[t - 1]
        return max(ready, self.due(t - self.queue)) if t >= self.queue else ready

    def budget(self, t: int, *, first_of_segment: bool) -> float:
        """What frame t may cost: ``1 - headroom`` of an interval on an ordinary frame (the rest
        builds a lead in the queue), the lead itself on a segment's first frame."""
        if t == 0:
            return self.queue * self.interval * (1.0 - self.headroom)  # start-up: the queue fills
        available = self.due(t) - self.start(t)
        ordinary = self.interval * (1.0 - self.headroom)
        return max(0.0, available - self.interval * self.headroom) if first_of_segment else min(available, ordinary)

    def finish(self, t: int, cost_ms: float) -> bool:
        """Record frame t's cost; True when it would be late."""
        assert t == len(self.done)
        self.done.append(self.start(t) + cost_ms)
        return t > 0 and self.done[t] > self.due(t) + 1e-9
