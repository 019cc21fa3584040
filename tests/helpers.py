"""Helpers shared by the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


def wait_while_progressing(poll: Callable[[], T], *, done: Callable[[T], bool], progress: Callable[[T], Hashable],
                           stall: float = 120.0, interval: float = 0.3) -> T:
    """Call ``poll`` until ``done`` holds for its result.

    Tests bound the *work* of a job (tiny training budgets), not its wall time: this waits
    as long as ``progress(result)`` keeps changing, however slow the machine, and fails only
    when it stood still for ``stall`` seconds.
    """
    last: Hashable = object()
    moved = time.monotonic()
    while True:
        result = poll()
        if done(result):
            return result
        now = progress(result)
        if now != last:
            last, moved = now, time.monotonic()
        assert time.monotonic() - moved < stall, f"no progress for {stall:.0f} s: {result}"
        time.sleep(interval)


def asset_done(a: dict) -> bool:
    return a["status"] in ("ready", "errored")


def asset_progress(a: dict) -> Hashable:
    return (a["status"], a["progress"]["stage"], a["progress"]["fraction"])


def delivered_psnr(quality: dict) -> float:
    """The PSNR-Y a default player shows for an encode's report: the planned one (fitcast/2), else
    the routed one."""
    return quality["plan"]["psnr_y_planned"] if "plan" in quality else quality["psnr_y_sr"]
