"""The training fan-out gives the same models on every executor backend."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch

from fitcast.media import downscale, iter_frames, upscale
from server.compute import InlineExecutor, LocalPoolExecutor, make_executor
from sr_models.archs import build_from_spec
from sr_models.samples import save_samples
from sr_models.train import TrainSpec, train

ARCH = {"name": "espcn_r", "scale": 2, "channels": 8, "body": 1}


@pytest.fixture(scope="module")
def specs(tmp_path_factory, leaf_piece) -> list[TrainSpec]:
    """Three small trainings on real (LR window, HR - lanczos) pairs from the leaf piece."""
    d = tmp_path_factory.mktemp("fanout")
    r = build_from_spec(ARCH).receptive_radius
    p, w = 16, 16 + 2 * r
    lr_w, res_w = [], []
    for hr in iter_frames(leaf_piece, max_frames=2, crop=(0, 0, 1280, 720)):
        lr = downscale(hr, 2)
        base = upscale(lr, 2, "lanczos")
        for y in range(r, 360 - w, 37):
            for x in range(r, 640 - w, 41):
                lr_w.append(lr[y : y + w, x : x + w])
                hy, hx = 2 * (y + r), 2 * (x + r)
                res_w.append(hr[hy : hy + 2 * p, hx : hx + 2 * p].astype(np.int16)
                             - base[hy : hy + 2 * p, hx : hx + 2 * p])
    samples = d / "samples.npz"
    save_samples(samples, np.stack(lr_w), np.stack(res_w))
    return [TrainSpec(samples=samples, out=d / f"m{i}.pt", arch=ARCH, overlap=r, iterations=15, batch_size=8,
                      seed=i, threads=1, device="cpu") for i in range(3)]


def _run(executor, specs, tag) -> dict[int, dict[str, torch.Tensor]]:
    mine = [dataclasses.replace(s, out=s.out.with_name(f"{tag}_{s.out.name}")) for s in specs]
    results = dict(executor.map_unordered(train, mine))
    assert sorted(results) == [0, 1, 2]
    return {i: torch.load(results[i].out, weights_only=True) for i in results}


def _same(a, b) -> None:
    for i in a:
        for name, tensor in a[i].items():
            assert torch.equal(tensor, b[i][name]), (i, name)


def test_inline_and_process_pool_train_the_same_models(specs):
    inline = _run(InlineExecutor(), specs, "inline")
    _same(inline, _run(LocalPoolExecutor(2), specs, "pool"))
    first = next(iter(inline[0]))
    assert not torch.equal(inline[0][first], inline[1][first])  # different seeds: the check can tell models apart


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'fitcast[ray]')")
def test_ray_trains_the_same_models_as_inline(specs):
    executor = make_executor("ray", 2)
    try:
        _same(_run(InlineExecutor(), specs, "inline2"), _run(executor, specs, "ray"))
    finally:
        executor.shutdown()


def test_unknown_executor_is_refused():
    with pytest.raises(ValueError, match="inline, process or ray"):
        make_executor("dask")


def test_a_time_budget_stops_training_at_what_fits_on_this_machine(specs, tmp_path):
    """With a wall-clock budget the iterations are what fits in it at the rate measured after the
    first ones, within [min_iterations, iterations]; the result says what was planned."""
    spec = dataclasses.replace(specs[0], out=tmp_path / "timed.pt", iterations=100_000, seconds=1.0, min_iterations=40)
    result = train(spec)
    assert 40 <= result.iterations < 100_000 and result.planned == 100_000 and result.budget_s == 1.0
    assert result.seconds < 20  # a budget of one second, not 100,000 iterations
    floor = train(dataclasses.replace(spec, out=tmp_path / "floor.pt", seconds=1e-3, min_iterations=60))
    assert floor.iterations == 60  # never below the floor
    free = train(dataclasses.replace(spec, out=tmp_path / "free.pt", iterations=50, seconds=None))
    assert free.iterations == 50 and free.planned is None and free.budget_s is None


def test_specs_share_a_budget_by_their_iterations():
    from sr_models.train import within_seconds

    a = TrainSpec(samples="s", out="a", arch=ARCH, overlap=1, iterations=3000)
    b = dataclasses.replace(a, out="b", iterations=1000)
    shared = within_seconds([a, b], 400.0, floor=0.5)
    assert [s.seconds for s in shared] == [300.0, 100.0]
    assert [s.min_iterations for s in shared] == [1500, 500] and [s.iterations for s in shared] == [3000, 1000]
