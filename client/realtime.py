"""Real time: frames due at a fixed rate, a queue of frames rendered ahead, and graceful
degradation instead of stalls.

Two safety nets, for the two kinds of asset:

- An unplanned asset (:class:`DegradePolicy`): level 0 plays the routes as the asset gives
  them; level L sends the L easiest groups (the highest labels) to lanczos.  The policy watches
  how far the player is behind the schedule: behind by half an interval, one level down at
  once; ahead by ``ahead`` intervals for ``recover_after`` frames in a row, one level back up.
- A planned asset (:class:`WorkShedder`): the plan says what each frame runs, made for a device
  profile; before each frame the player compares what the frame will cost *here* (measured on
  the frames before) with the time the schedule gives it (the planner's own clock), and sheds
  the plan's least valuable model patches of that frame only, until it fits.  Shed patches
  keep the detail they had, and the next frame runs its whole plan again if it has the time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fitcast.manifest import LANCZOS


@dataclass
class DegradePolicy:
    interval: float  # seconds per frame at the target rate
    k: int  # levels below full quality (groups, or a plan's models)
    level: int = 0
    late_after: float = 0.5  # degrade when behind the schedule by this many intervals
    ahead: float = 2.0  # recover when ahead by this many intervals ...
    recover_after: int = 15  # ... for this many frames in a row
    events: list[dict] = field(default_factory=list)
    _calm: int = 0

    def routes(self, routes: Mapping[str, str]) -> dict[str, str]:
        """The routes to use at the current level."""
        if self.level == 0:
            return dict(routes)
        cut = self.k - self.level  # labels >= cut go to lanczos
        return {label: (LANCZOS if int(label) >= cut else target) for label, target in routes.items()}

    def observe(self, frame: int, behind: float, seconds: float) -> None:
        """Frame ``frame`` took ``seconds`` and finished ``behind`` seconds after it was due
        (negative: ahead of the screen)."""
        if behind > self.late_after * self.interval and self.level < self.k:
            self.level += 1
            self._calm = 0
            self.events.append({"frame": frame, "level": self.level, "reason": "behind",
                                "behind_ms": round(behind * 1000, 2), "frame_ms": round(seconds * 1000, 2)})
        elif behind < -self.ahead * self.interval and self.level > 0:
            self._calm += 1
            if self._calm >= self.recover_after:
                self.level -= 1
                self._calm = 0
                self.events.append({"frame": frame, "level": self.level, "reason": "recovered",
                                    "behind_ms": round(behind * 1000, 2), "frame_ms": round(seconds * 1000, 2)})
        else:
            self._calm = 0


@dataclass
class PresentationClock:
    """Frames are due at a fixed rate and the renderer may work at most ``queue`` frames ahead
    of the screen (the frames it has finished wait in a queue of that depth).

    Frame 0 is shown ``prebuffer`` intervals after it is ready (the start-up buffer a player
    fills before it starts) and fixes the schedule: frame i is due at ``start + i * interval``.
    Frame i can only start once frame ``i - queue`` has left the queue, at its due time.  A frame
    finished more than one interval after it was due is
    dropped (a real player skips it) and the schedule resumes from it.  This is the model the
    encoder's planner budgets with (``chunking.planner.PlanClock``).
    """

    interval: float  # seconds per frame
    queue: int = 8
    prebuffer: int = 4
    start: float | None = None
    dropped: int = 0

    def due(self, index: int) -> float:
        assert self.start is not None
        return self.start + index * self.interval

    def wait_for_slot(self, index: int) -> float:
        """Sleep until frame ``index`` may start; return the seconds waited."""
        if self.start is None or index < self.queue:
            return 0.0
        wait = self.due(index - self.queue) - time.perf_counter()
        if wait <= 0:
            return 0.0
        time.sleep(wait)
        return wait

    def pause(self, seconds: float) -> None:
        """Move the schedule on by ``seconds`` the player spent on something other than playing
        (measuring PSNR against a reference): measuring does not make frames late."""
        if self.start is not None:
            self.start += seconds

    def allowance(self, index: int, now: float, *, first_of_segment: bool, headroom: float) -> float | None:
        """Seconds frame ``index`` may take if it starts ``now``: what is left until it is due,
        less ``headroom`` of an interval; for an ordinary frame at most one interval (keeping up
        with the screen without eating the lead that a segment's first frame, long by plan,
        spends).  None before the schedule starts (the first frame)."""
        if self.start is None:
            return None
        available = self.due(index) - now
        spend = available - self.interval * headroom
        return spend if first_of_segment else min(spend, self.interval)

    def done(self, index: int, now: float) -> float:
        """Frame ``index`` is ready at ``now``: how far behind its due time it is (seconds,
        negative when ahead).  More than an interval behind is a dropped frame."""
        if self.start is None:
            self.start = now + (self.prebuffer - index) * self.interval
        late = now - self.due(index)
        if late > self.interval:
            self.dropped += 1
            self.start += late  # a real player skips ahead; the schedule resumes from here
        return late


@dataclass
class CallCost:
    """Milliseconds of one model call on ``n`` windows, fitted as ``call + per_window * n`` to
    the calls seen, the older ones forgotten at ``decay`` a call (least squares on weighted sums)."""

    decay: float = 0.2
    sums: np.ndarray = field(default_factory=lambda: np.zeros(5))  # weights of 1, n, n^2, ms, n*ms

    def add(self, n: int, ms: float) -> None:
        self.sums = self.sums * (1.0 - self.decay) + np.array([1.0, n, n * n, ms, n * ms])

    def coefficients(self) -> tuple[float, float]:
        """(call ms, ms per window); with calls of one size only, all of it per window."""
        s1, sn, snn, st, snt = self.sums
        spread = s1 * snn - sn * sn
        if sn <= 0:
            return 0.0, 0.0
        if spread > 1e-3 * s1 * snn:
            per = (s1 * snt - sn * st) / spread
            call = (st - per * sn) / s1
            if per > 0 and call >= 0:
                return float(call), float(per)
        return 0.0, float(st / sn)


@dataclass
class WorkShedder:
    """The safety net of a planned asset: each frame's model work cut to the time it has here.

    The plan fits each frame into the budget of the device profile it was made for; the device
    at hand may be slower (another CPU, a busy one, a virtual machine in a slow hour).  The
    shedder learns, from the frames played, what each model's calls cost (:class:`CallCost`)
    and the frame's other work (moving and resetting patches, the paste) as a moving average.
    Before a frame, :meth:`shed` estimates its cost; when that exceeds the time the schedule
    gives it, the model patches the plan ranks last (the least error removed per millisecond)
    are shed until the estimate fits.  Shed patches keep the detail they had; nothing carries
    over, so the next frame runs its whole plan when it has the time.
    """

    models: dict[int, str]  # route code -> model id
    alpha: float = 0.2  # weight of the newest frame in the moving average of the other work
    calls: dict[str, CallCost] = field(default_factory=dict)
    other_ms: float | None = None
    frames_shed: int = 0
    windows_shed: int = 0
    windows_planned: int = 0

    def shed(self, codes: np.ndarray, order: np.ndarray | None, allowed_ms: float | None) -> np.ndarray | None:
        """Bool ``[gh, gw]`` of the model patches not to run this frame (None: run the plan).
        ``order`` ranks model patches (1: the most valuable; a plan without ranks sheds the
        last route's patches first)."""
        flat = codes.ravel()
        on_model = np.isin(flat, list(self.models))
        candidates = np.flatnonzero(on_model)
        self.windows_planned += candidates.size
        if allowed_ms is None or candidates.size == 0 or self.other_ms is None:
            return None
        fits = {code: self.calls[m].coefficients() if m in self.calls else (0.0, 0.0)
                for code, m in self.models.items()}
        used = np.unique(flat[candidates])
        estimate = self.other_ms + sum(fits[c][0] + fits[c][1] * int((flat == c).sum()) for c in used.tolist())
        need = estimate - allowed_ms
        if need <= 0:
            return None
        rank = (order.ravel()[candidates] if order is not None else flat[candidates]).astype(np.int64)
        worst_first = candidates[np.argsort(-rank, kind="stable")]
        saving = np.array([fits[c][1] for c in flat[worst_first].tolist()])
        for c in used.tolist():  # the call itself is saved with the model's last patch
            saving[np.flatnonzero(flat[worst_first] == c)[-1]] += fits[c][0]
        k = min(int(np.searchsorted(np.cumsum(saving), need)) + 1, worst_first.size)
        mask = np.zeros(codes.size, bool)
        mask[worst_first[:k]] = True
        self.frames_shed += 1
        self.windows_shed += k
        return mask.reshape(codes.shape)

    def observe(self, frame_ms: float, model_seconds: Sequence[tuple[str, int, float]]) -> None:
        """What the frame just rendered cost: ``frame_ms`` in all, and (model, windows, seconds)
        of every model run."""
        model_ms = 0.0
        for model, windows, seconds in model_seconds:
            model_ms += seconds * 1000.0
            self.calls.setdefault(model, CallCost()).add(windows, seconds * 1000.0)
        other = max(0.0, frame_ms - model_ms)
        self.other_ms = other if self.other_ms is None else self.other_ms + self.alpha * (other - self.other_ms)

    def summary(self) -> dict[str, float | int]:
        return {"frames": self.frames_shed, "windows": self.windows_shed, "planned_windows": self.windows_planned,
                "share": round(self.windows_shed / self.windows_planned, 4) if self.windows_planned else 0.0}


@dataclass
class Pacing:
    """A paced player's real time: the schedule, and the safety net for its kind of asset
    (:class:`DegradePolicy` for an unplanned one, :class:`WorkShedder` for a planned one)."""

    clock: PresentationClock
    policy: DegradePolicy | None = None
    shedder: WorkShedder | None = None
    headroom: float = 0.0  # the plan's: what each frame's allowance keeps back (WorkShedder)

    def allowed_ms(self, index: int, now: float, *, first_of_segment: bool) -> float | None:
        """Milliseconds frame ``index`` may take from ``now`` (planned assets; None: no limit)."""
        if self.shedder is None:
            return None
        allowed = self.clock.allowance(index, now, first_of_segment=first_of_segment, headroom=self.headroom)
        return None if allowed is None else allowed * 1000.0

    def done(self, index: int, now: float, *, frame_seconds: float, render_seconds: float,
             model_seconds: Sequence[tuple[str, int, float]]) -> None:
        """Frame ``index`` is ready at ``now``: the schedule moves on and the safety net learns."""
        behind = self.clock.done(index, now)
        if self.policy is not None and index > 0:  # the first frame also waited for the first segment
            self.policy.observe(index, behind, frame_seconds)
        if self.shedder is not None:  # what rendering cost here, not the wait for the feed
            self.shedder.observe(render_seconds * 1000.0, model_seconds)

    def report(self) -> dict:
        """The safety net's part of the playback report."""
        out: dict = {"degradations": self.policy.events if self.policy else []}
        if self.shedder is not None:
            out["shed"] = self.shedder.summary()
        return out
