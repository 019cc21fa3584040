"""The executor behind the training fan-out.

Task functions are pure (a small dataclass in, files written atomically, a
result dataclass out), so the same fan-out runs inline, on a local process pool
or - later - on a distributed engine; this is the only module that may talk to
one.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[int, R]]:
        """Run ``fn`` over ``items``; yield ``(index, result)`` as each finishes."""
        ...


class InlineExecutor:
    """Runs tasks one after another in this process."""

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[int, R]]:
        for i, item in enumerate(items):
            yield i, fn(item)


class LocalPoolExecutor:
    """A local process pool (spawned workers, so torch threads start clean)."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[int, R]]:
        items = list(items)
        if self.workers == 1 or len(items) <= 1:
            yield from InlineExecutor().map_unordered(fn, items)
            return
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(self.workers, len(items)), mp_context=ctx) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            for fut in as_completed(futures):
                yield futures[fut], fut.result()


def make_executor(kind: str = "inline", workers: int = 1) -> Executor:
    if kind == "inline":
        return InlineExecutor()
    if kind == "process":
        return LocalPoolExecutor(workers)
    raise ValueError(f"unknown executor {kind!r}: inline or process")
