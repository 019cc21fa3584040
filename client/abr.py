"""Adaptive bitrate: the network a ladder plays over, and the rule that picks each segment's rung.

:class:`BandwidthTrace` shapes fetches: a download of ``b`` bits that starts at ``t`` ends when
the trace's capacity from ``t`` on has carried ``b`` bits (kbit/s per second of the trace, the
last value holding after its end).  Playback runs on that network clock, so a run over a trace
is reproducible whatever the machine's own network.

:class:`SrThroughputRule` is the throughput rule of dash.js (``ThroughputRule``: the harmonic
mean of the last few segments' throughput, times a safety factor, bounds the rate) made aware of
super-resolution: among the rungs the estimate affords it takes the one whose *delivered*
quality (the SR'd PSNR-Y the ladder states for that very segment) is highest, not the one with
most bits, so a low rung that SR lifts above the next one wins at that one's price.  A rung's
models are fetched once, before its first segment: a switch to a rung whose models are not
here yet is taken only if the models and the segment download before the buffer falls below
one segment.  Below that reserve the rule takes the cheapest rung it can play at once (its
models already here, or none needed).  A download that, from the rate seen in its first half
second, would outlast the buffer is given up for the cheapest rung's segment (dash.js's
``AbandonRequestsRule``): a sudden drop costs half a second, not a stall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from fitcast.errors import InvalidInputError
from fitcast.ladder import Ladder, Rung, RungSegment

MAX_TRACE_SECONDS = 86_400
ABANDON_AFTER = 0.5  # seconds into a download at which the player judges whether it will stall


@dataclass(frozen=True)
class BandwidthTrace:
    """Capacity in kbit/s for each second from the start (the last value holds after the end)."""

    kbps: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.kbps or len(self.kbps) > MAX_TRACE_SECONDS:
            raise InvalidInputError(f"a bandwidth trace has 1 to {MAX_TRACE_SECONDS} values (kbit/s per second)")
        if any(not math.isfinite(v) or v <= 0 for v in self.kbps):
            raise InvalidInputError("every value of a bandwidth trace is a positive number of kbit/s")

    @classmethod
    def constant(cls, kbps: float) -> BandwidthTrace:
        return cls((float(kbps),))

    @classmethod
    def from_file(cls, path: Path) -> BandwidthTrace:
        """One kbit/s value per second: whitespace- or comma-separated; ``#`` starts a comment."""
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"{path}: cannot read the bandwidth trace ({exc})") from None
        values = []
        for line in text.splitlines():
            for token in line.split("#", 1)[0].replace(",", " ").split():
                try:
                    values.append(float(token))
                except ValueError:
                    raise InvalidInputError(f"{path}: {token!r} is not a number of kbit/s") from None
        return cls(tuple(values))

    def at(self, t: float) -> float:
        """Capacity at time ``t`` (kbit/s)."""
        return self.kbps[min(int(max(t, 0.0)), len(self.kbps) - 1)]

    def bits_between(self, start: float, end: float) -> float:
        """Bits the trace carries from ``start`` to ``end``."""
        total, t = 0.0, start
        while t < end:
            step = min(end, math.floor(t) + 1.0) - t
            total += self.at(t) * 1000.0 * step
            t += step
        return total

    def download_seconds(self, start: float, bits: float) -> float:
        """Seconds a download of ``bits`` started at ``start`` takes."""
        t, left = start, float(bits)
        while left > 0:
            rate = self.at(t) * 1000.0
            second_end = math.floor(t) + 1.0 if int(t) < len(self.kbps) - 1 else math.inf
            can = rate * (second_end - t)
            if can >= left:
                t += left / rate
                break
            left -= can
            t = second_end
        return t - start


@dataclass
class SrThroughputRule:
    """The rung for each segment (see the module doc): ``safety`` of the harmonic-mean
    throughput of the last ``window`` downloads bounds the rate; the delivered quality decides
    among the affordable rungs."""

    safety: float = 0.8
    window: int = 4
    samples: list[float] = field(default_factory=list)  # kbit/s of each download

    def observe(self, bits: float, seconds: float) -> None:
        self.samples.append(bits / 1000.0 / max(seconds, 1e-6))

    def estimate(self) -> float | None:
        """Harmonic mean of the last ``window`` throughputs (kbit/s); None before the first."""
        last = self.samples[-self.window:]
        return len(last) / sum(1.0 / s for s in last) if last else None

    def choose(self, ladder: Ladder, index: int, *, buffer_s: float, fetched: set[str]) -> tuple[Rung, str]:
        """The rung of segment ``index`` and why, given the buffer (seconds of video ready) and the
        rungs whose models are here already."""
        rungs = ladder.rungs
        reserve = rungs[0].segments[index].duration
        estimate = self.estimate()
        if estimate is None:
            return _cheapest(rungs, index, fetched), "start: no throughput measured yet"
        if buffer_s < reserve:
            return _cheapest(rungs, index, fetched), f"buffer {buffer_s:.1f} s below one segment"
        budget = self.safety * estimate
        affordable = []
        for rung in rungs:
            seg = rung.segments[index]
            if _segment_bits(seg) / seg.duration / 1000.0 > budget:
                continue
            once = 0 if rung.name in fetched else rung.bits.models
            if once and buffer_s - (once + _segment_bits(seg)) / 1000.0 / estimate < reserve:
                continue  # its models would drain the buffer
            affordable.append(rung)
        if not affordable:
            return _cheapest(rungs, index, fetched), f"nothing fits {budget:.0f} kbit/s"
        best = max(affordable, key=lambda r: (round(r.segments[index].psnr_y, 2), -_segment_bits(r.segments[index])))
        return best, f"best delivered PSNR-Y within {budget:.0f} kbit/s"


def _segment_bits(seg: RungSegment) -> int:
    return (seg.bytes + seg.sr_bytes) * 8


def _cheapest(rungs: list[Rung], index: int, fetched: set[str]) -> Rung:
    """The rung whose next download is smallest (its models counted until they are here)."""
    return min(rungs, key=lambda r: _segment_bits(r.segments[index]) + (0 if r.name in fetched else r.bits.models))


@dataclass
class NetworkClock:
    """Playback on the trace's clock: downloads in turn, a buffer that drains in real time while
    the next one downloads, stalls when it runs dry, and a cap on what is fetched ahead."""

    trace: BandwidthTrace
    max_buffer: float = 12.0  # seconds of video fetched ahead at most
    now: float = 0.0
    buffer: float = 0.0
    playing: bool = False
    startup: float = 0.0
    stall: float = 0.0
    stalls: list[float] = field(default_factory=list)

    def download(self, bits: float) -> float:
        """Fetch ``bits`` now; return the seconds it took (the buffer drains meanwhile)."""
        seconds = self.trace.download_seconds(self.now, bits)
        self.spend(seconds)
        return seconds

    def spend(self, seconds: float) -> None:
        """``seconds`` of network time pass (the buffer drains; what it cannot cover stalls)."""
        if self.playing:
            if seconds > self.buffer:
                self.stalls.append(seconds - self.buffer)
                self.stall += seconds - self.buffer
                self.buffer = 0.0
            else:
                self.buffer -= seconds
        self.now += seconds

    def add(self, duration: float) -> None:
        """A segment of ``duration`` seconds is ready; playback starts with the first."""
        self.buffer += duration
        if not self.playing:
            self.playing, self.startup = True, self.now
        if self.buffer > self.max_buffer:  # wait for room: the screen plays meanwhile
            self.now += self.buffer - self.max_buffer
            self.buffer = self.max_buffer


@dataclass(frozen=True)
class Step:
    """One segment's decision and download."""

    index: int
    at: float  # when its download started, on the trace's clock
    rung: Rung
    why: str
    bits: int  # the segment, its label and plan maps, and the rung's models the first time
    seconds: float  # the download on the trace's clock (with the time of one it abandoned)
    buffer_before: float
    models_fetched: bool
    abandoned: str | None = None  # the rung whose download was given up for this one


class AbrSession:
    """Segments in turn over a trace: the rule's choice (or a fixed rung), the download on the
    network clock, the buffer.  The player renders each step's segment; this needs no frames, so
    a rule can be checked on a synthetic ladder and trace."""

    def __init__(self, ladder: Ladder, trace: BandwidthTrace, *, rule: SrThroughputRule | None = None,
                 max_buffer: float = 12.0, rung: str | None = None) -> None:
        self.ladder, self.rule, self.fixed = ladder, rule or SrThroughputRule(), rung
        self.clock = NetworkClock(trace, max_buffer=max_buffer)
        self.fetched: set[str] = set()
        if rung is not None:
            ladder.rung(rung)  # refuses an unknown name with the names there are

    def step(self, index: int) -> Step:
        if self.fixed is not None:
            rung, why = self.ladder.rung(self.fixed), "asked"
        else:
            rung, why = self.rule.choose(self.ladder, index, buffer_s=self.clock.buffer, fetched=self.fetched)
        before, at = self.clock.buffer, self.clock.now
        bits = self._bits(rung, index)
        abandoned = None
        if self.fixed is None and self._would_stall(bits):  # dash.js AbandonRequestsRule: give it up early
            judged = min(ABANDON_AFTER, self.clock.buffer / 2)
            self.rule.observe(self.clock.trace.bits_between(self.clock.now, self.clock.now + judged), judged)
            self.clock.spend(judged)
            abandoned, rung = rung.name, _cheapest(self.ladder.rungs, index, self.fetched)
            why = f"{why}; abandoned {abandoned} after {judged:.2f} s (it would have stalled)"
            bits = self._bits(rung, index)
        first = rung.name not in self.fetched
        seconds = self.clock.download(bits)
        self.rule.observe(bits, seconds)
        self.fetched.add(rung.name)
        fetched_in = self.clock.now - at  # an abandoned download's time included
        self.clock.add(rung.segments[index].duration)
        return Step(index, at, rung, why, bits, fetched_in, before, first and rung.bits.models > 0, abandoned)

    def _bits(self, rung: Rung, index: int) -> int:
        return _segment_bits(rung.segments[index]) + (0 if rung.name in self.fetched else rung.bits.models)

    def _would_stall(self, bits: int) -> bool:
        """Whether the download started now would outlast the buffer, judged as a player judges it:
        from the rate it sees in the first moments of the download."""
        if not self.clock.playing or self.clock.buffer <= 0:
            return False
        judged = min(ABANDON_AFTER, self.clock.buffer / 2)
        seen = self.clock.trace.bits_between(self.clock.now, self.clock.now + judged) / judged
        return bits / seen > self.clock.buffer

    def run(self) -> list[Step]:
        """Every segment, without rendering."""
        return [self.step(i) for i in range(self.ladder.segment_count)]
