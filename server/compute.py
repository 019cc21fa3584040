"""The executor behind the training fan-out.

Task functions are pure (a small dataclass in, files written atomically, a
result dataclass out), so the same fan-out runs inline, on a local process pool
or on Ray (the optional extra ``ray``: ``pip install 'fitcast[ray]'``, then
``FITCAST_EXECUTOR=ray``); this is the only module that talks to a distributed
engine.  Tasks read and write files by path, so on a Ray *cluster* the asset
store must be a filesystem every node mounts at the same path.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Protocol, TypeVar

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


class RayExecutor:
    """Tasks on Ray: a local instance started here (``address=None``, ``workers`` CPUs) or an
    existing cluster (``address="ray://host:10001"`` or ``"auto"``)."""

    def __init__(self, workers: int = 1, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise RuntimeError("executor 'ray' needs Ray: pip install 'fitcast[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[int, R]]:
        ray = self._ray
        task = ray.remote(num_cpus=1, max_retries=2)(fn)
        index = {task.remote(item): i for i, item in enumerate(items)}
        pending = list(index)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield index[ref], ray.get(ref)

    def shutdown(self) -> None:
        self._ray.shutdown()


def make_executor(kind: str = "inline", workers: int = 1, *, address: str | None = None) -> Executor:
    if kind == "inline":
        return InlineExecutor()
    if kind == "process":
        return LocalPoolExecutor(workers)
    if kind == "ray":
        return RayExecutor(workers, address)
    raise ValueError(f"unknown executor {kind!r}: inline, process or ray")
