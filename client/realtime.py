"""The real-time policy: a deadline per frame, and graceful degradation instead of stalls.

Level 0 plays the routes as the manifest gives them.  Level L sends the L
easiest groups (the highest labels) to lanczos, so the cheapest quality is
given up first; level k is lanczos everywhere.  The policy watches a moving
average of the frame time against the frame interval: above it, one level down
at once; comfortably below it for a while, one level back up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from fitcast.manifest import LANCZOS


@dataclass
class DegradePolicy:
    interval: float  # seconds per frame at the target rate
    k: int
    level: int = 0
    ema: float | None = None
    alpha: float = 0.3
    recover_below: float = 0.6  # recover when the average frame time is under 60 % of the interval
    recover_after: int = 15  # ... for this many frames in a row
    events: list[dict] = field(default_factory=list)
    _calm: int = 0

    def routes(self, routes: Mapping[str, str]) -> dict[str, str]:
        """The routes to use at the current level."""
        if self.level == 0:
            return dict(routes)
        cut = self.k - self.level  # labels >= cut go to lanczos
        return {label: (LANCZOS if int(label) >= cut else target) for label, target in routes.items()}

    def observe(self, frame: int, seconds: float) -> None:
        self.ema = seconds if self.ema is None else (1 - self.alpha) * self.ema + self.alpha * seconds
        if self.ema > self.interval and self.level < self.k:
            self.level += 1
            self._calm = 0
            self.ema = None  # measure the new level afresh
            self.events.append({"frame": frame, "level": self.level, "reason": "behind",
                                "frame_ms": round(seconds * 1000, 2)})
        elif self.ema < self.recover_below * self.interval and self.level > 0:
            self._calm += 1
            if self._calm >= self.recover_after:
                self.level -= 1
                self._calm = 0
                self.events.append({"frame": frame, "level": self.level, "reason": "recovered",
                                    "frame_ms": round(seconds * 1000, 2)})
        else:
            self._calm = 0


@dataclass
class Clock:
    """Presentation deadlines at a fixed rate: frame i is due at ``start + (i + 1) * interval``."""

    interval: float
    start: float | None = None
    dropped: int = 0

    def done(self, index: int, now: float) -> bool:
        """Record that frame ``index`` is ready at ``now``; True if it missed its slot (a dropped frame)."""
        if self.start is None:
            self.start = now - self.interval
        late = now - (self.start + (index + 1) * self.interval)
        if late > self.interval:
            self.dropped += 1
            self.start += late  # a real player skips ahead; the schedule resumes from here
            return True
        return False
