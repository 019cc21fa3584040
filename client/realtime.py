"""Real time: frames due at a fixed rate, a queue of frames rendered ahead, and graceful
degradation instead of stalls.

Level 0 plays the routes as the asset gives them.  Level L gives up the L least valuable
kinds of model work: for an unplanned asset the L easiest groups (the highest labels) go to
lanczos; for a planned one the L easiest models' patches keep the detail they had.  The
policy watches how far the player is behind the schedule, not single frames (a planned
asset's first frame of a segment is long on purpose, paid for by the queue): behind by half
an interval, one level down at once; ahead by ``ahead`` intervals for ``recover_after``
frames in a row, one level back up.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

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
