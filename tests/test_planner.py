"""The planner's choices on stated errors and costs (no timings): budgets, do-no-harm, the queue."""

import numpy as np
import pytest

from chunking.planner import LANCZOS_CODE, REUSE_CODE, PlanClock, choose_routes, predicted_ms
from fitcast.profile import RouteCosts

COSTS = RouteCosts(frame_ms=2.0, move_ms=0.05, zero_ms=0.01, call_ms=(0.5, 0.5), window_ms=(1.0, 0.25))


def _frame(rng, shape=(4, 5)):
    lanczos = rng.uniform(100, 200, shape)
    small = lanczos * rng.uniform(0.6, 0.9, shape)  # model 1: cheap, some gain
    big = small * rng.uniform(0.7, 0.95, shape)  # model 0: dear, more gain
    return lanczos, np.stack([big, small])


def test_no_budget_means_no_model_and_the_best_free_route():
    rng = np.random.default_rng(0)
    lanczos, models = _frame(rng)
    reuse = np.stack([lanczos * 0.5, lanczos * 0.4])
    vectors = np.zeros((2, 4, 5, 2), np.int8)
    vectors[1] = 3  # the second candidate moves detail
    choice = choose_routes(lanczos, reuse, vectors, models, COSTS, budget_ms=0.0)
    assert (choice.codes == REUSE_CODE).all() and (choice.motion == 3).all()  # moved reuse is better here
    assert choice.predicted_ms == pytest.approx(2.0 + 20 * 0.05)
    none = choose_routes(lanczos, reuse[:0], vectors[:0], models, COSTS, budget_ms=0.0)  # a segment's first frame
    assert (none.codes == LANCZOS_CODE).all()


def test_models_go_where_they_remove_most_error_per_millisecond_within_the_budget():
    rng = np.random.default_rng(1)
    lanczos, models = _frame(rng)
    for budget in (3.0, 6.0, 12.0, 40.0):
        choice = choose_routes(lanczos, np.zeros((0, 4, 5)), np.zeros((0, 4, 5, 2), np.int8), models, COSTS,
                               budget_ms=budget)
        assert choice.predicted_ms <= budget + 1e-9
        assert choice.predicted_ms == pytest.approx(predicted_ms(COSTS, choice.codes, choice.motion))
        err = np.where(choice.codes == 2, models[0], np.where(choice.codes == 3, models[1], lanczos)).sum()
        assert choice.error == pytest.approx(err)
    # enough for every patch on the dear model: the convex hull upgrades each patch all the way
    rich = choose_routes(lanczos, np.zeros((0, 4, 5)), np.zeros((0, 4, 5, 2), np.int8), models, COSTS, budget_ms=1e3)
    assert (rich.codes == 2).all()
    # a budget for a few windows: the cheap model's best ratios come first
    poor = choose_routes(lanczos, np.zeros((0, 4, 5)), np.zeros((0, 4, 5, 2), np.int8), models, COSTS, budget_ms=3.5)
    assert (poor.codes == 3).sum() >= 1 and (poor.codes == 2).sum() == 0


def test_a_model_never_replaces_a_better_free_route():
    rng = np.random.default_rng(2)
    lanczos, models = _frame(rng)
    reuse = (models.min(axis=0) * 0.5)[None]  # reuse beats every model everywhere
    choice = choose_routes(lanczos, reuse, np.zeros((1, 4, 5, 2), np.int8), models, COSTS, budget_ms=1e3)
    assert (choice.codes == REUSE_CODE).all() and choice.predicted_ms == pytest.approx(2.0)
    worse = np.stack([lanczos * 1.1, lanczos * 1.2])  # models that only harm
    choice = choose_routes(lanczos, np.zeros((0, 4, 5)), np.zeros((0, 4, 5, 2), np.int8), worse, COSTS, budget_ms=1e3)
    assert (choice.codes == LANCZOS_CODE).all()


def test_the_queue_pays_for_a_segments_first_frame_and_nothing_is_late():
    clock = PlanClock(100 / 3, queue=8, prebuffer=4, headroom=0.15)
    costs = []
    for t in range(90):
        first = t % 30 == 0
        budget = clock.budget(t, first_of_segment=first)
        cost = budget if first else min(budget, 100 / 3 * 0.85)  # spend all that is offered
        costs.append(cost)
        assert not clock.finish(t, cost), t
    assert costs[30] > 4 * 100 / 3 and costs[60] > 4 * 100 / 3  # a first frame gets the lead the others built
    assert max(costs[1:30]) <= 100 / 3 * 0.85 + 1e-9
    # a frame that costs more than offered is reported late
    clock2 = PlanClock(100 / 3, queue=2, prebuffer=0, headroom=0.0)
    clock2.finish(0, 10.0)
    assert clock2.finish(1, 100.0)


def test_model_patches_are_ranked_in_the_order_the_budget_took_them():
    rng = np.random.default_rng(3)
    lanczos, models = _frame(rng)
    single = models[1:]  # one model: a patch's rank is the rank of its error removed per millisecond
    costs = RouteCosts(frame_ms=2.0, move_ms=0.05, zero_ms=0.01, call_ms=(0.5,), window_ms=(0.25,))
    choice = choose_routes(lanczos, np.zeros((0, 4, 5)), np.zeros((0, 4, 5, 2), np.int8), single, costs,
                           budget_ms=2.0 + 20 * 0.01 + 0.5 + 8 * (0.25 - 0.01) + 1e-6)  # 8 windows
    on = choice.codes == 2
    assert on.sum() == 8 and choice.order.dtype == np.uint16
    assert (choice.order[~on] == 0).all() and sorted(choice.order[on].tolist()) == list(range(1, 9))
    removed = (lanczos - single[0])[on]
    assert list(np.argsort(choice.order[on])) == list(np.argsort(-removed, kind="stable"))
    # two models: a patch upgraded twice ranks where its last upgrade was taken
    both = choose_routes(lanczos, np.zeros((0, 4, 5)), np.zeros((0, 4, 5, 2), np.int8), models, COSTS, budget_ms=12.0)
    chosen = both.codes >= 2
    assert sorted(both.order[chosen].tolist()) == list(range(1, int(chosen.sum()) + 1))


def test_each_patch_tries_its_own_vector_its_neighbours_and_the_one_it_took_last_frame(monkeypatch):
    from chunking.motion import MotionEstimator
    from fitcast.grid import Grid

    est = MotionEstimator(Grid(96, 64, 32, 4, 2))  # 3 x 2 patches
    own = np.zeros((2, 3, 2), np.int8)
    own[0, 1] = (2, -4)  # one patch moves: its neighbours may take its vector, it may take theirs
    monkeypatch.setattr(est, "vectors", lambda last, current: own)
    frame = np.zeros((128, 192, 3), np.uint8)
    fields = est.candidates(frame, frame)
    assert np.array_equal(fields[0], own)
    # the patch left of the mover tries the mover's vector (its right neighbour's), and so on
    assert any((f[0, 0] == (2, -4)).all() for f in fields) and any((f[1, 1] == (2, -4)).all() for f in fields)
    assert len({f.tobytes() for f in fields}) == len(fields) and all(f.any() for f in fields)  # no repeats, no zeros
    last = np.full((2, 3, 2), 3, np.int8)
    with_last = est.candidates(frame, frame, last)
    assert np.array_equal(with_last[-1], last) and len(with_last) == len(fields) + 1
    monkeypatch.setattr(est, "vectors", lambda last, current: np.zeros((2, 3, 2), np.int8))
    assert est.candidates(frame, frame).shape == (0, 2, 3, 2)  # nothing moves: reuse in place only
