"""The planned player's safety net on stated costs (no timings): what a frame is allowed, what
it is estimated to cost, and which model patches go first when it does not fit."""

import numpy as np
import pytest

from client.realtime import CallCost, PresentationClock, WorkShedder
from fitcast.grid import load_plan, save_plan


def test_a_model_calls_cost_is_fitted_from_the_calls_seen():
    fit = CallCost()
    for n in (4, 16, 9, 30, 12, 25):
        fit.add(n, 3.0 + 1.25 * n)
    call, per = fit.coefficients()
    assert call == pytest.approx(3.0, abs=1e-6) and per == pytest.approx(1.25, abs=1e-6)
    same = CallCost()
    for _ in range(5):
        same.add(10, 20.0)  # one batch size only: all of it per window
    assert same.coefficients() == pytest.approx((0.0, 2.0))


def test_the_clock_allows_an_interval_to_an_ordinary_frame_and_the_lead_to_a_segments_first():
    clock = PresentationClock(interval=0.040, queue=8, prebuffer=4)
    assert clock.allowance(0, 0.0, first_of_segment=True, headroom=0.15) is None  # no schedule yet
    clock.done(0, 1.0)  # frame 0 ready at 1.0 s: shown 4 intervals later, frame i due at 1.16 + 0.04 i
    now = 1.01
    assert clock.allowance(1, now, first_of_segment=False, headroom=0.15) == pytest.approx(0.040)
    assert clock.allowance(1, now, first_of_segment=True, headroom=0.15) == pytest.approx(1.20 - now - 0.006)
    late = 1.19  # frame 1 starts with 10 ms left before it is due
    assert clock.allowance(1, late, first_of_segment=False, headroom=0.15) == pytest.approx(0.010 - 0.006)


def _shedder(per_window=(2.0, 0.5), other=5.0):
    shedder = WorkShedder({2: "big", 3: "small"})
    shedder.observe(other + 4 * per_window[0] + 4 * per_window[1], [("big", 4, 4 * per_window[0] / 1000),
                                                                     ("small", 4, 4 * per_window[1] / 1000)])
    return shedder


def test_a_frame_that_fits_runs_its_whole_plan():
    codes = np.array([[2, 2, 3], [0, 1, 3]], np.uint8)
    order = np.array([[1, 2, 3], [0, 0, 4]], np.uint16)
    shedder = _shedder()
    assert shedder.shed(codes, order, allowed_ms=5.0 + 2 * 2.0 + 2 * 0.5) is None
    assert shedder.shed(codes, order, allowed_ms=None) is None  # before the schedule starts
    assert shedder.summary()["windows"] == 0


def test_the_plans_last_ranked_patches_are_shed_first_and_only_as_many_as_needed():
    codes = np.array([[2, 2, 3], [0, 1, 3]], np.uint8)
    order = np.array([[1, 3, 2], [0, 0, 4]], np.uint16)
    shedder = _shedder()
    # 10 ms estimated (5 + 2 x 2 + 2 x 0.5); 9.7 allowed: shedding rank 4 (a small, 0.5 ms) does it
    shed = shedder.shed(codes, order, allowed_ms=9.7)
    assert shed.tolist() == [[False, False, False], [False, False, True]]
    # 8.6 allowed: rank 4, then rank 3 (a big, 2 ms) -> 7.5 ms
    shed = shedder.shed(codes, order, allowed_ms=8.6)
    assert shed.tolist() == [[False, True, False], [False, False, True]]
    # nothing but the other work fits: every model patch goes, never a free route's
    shed = shedder.shed(codes, order, allowed_ms=1.0)
    assert shed.tolist() == [[True, True, True], [False, False, True]]
    assert shedder.summary()["frames"] == 3 and shedder.summary()["windows"] == 1 + 2 + 4
    # a plan without ranks (made before them): the last route's patches go first
    shed = shedder.shed(codes, None, allowed_ms=9.7)
    assert shed.tolist() == [[False, False, True], [False, False, False]]


def test_a_plan_carries_its_ranks_and_an_older_plan_reads_without_them():
    codes = np.zeros((2, 3, 4), np.uint8)
    codes[0, 1, 2] = 2
    motion = np.zeros((2, 3, 4, 2), np.int8)
    order = np.zeros((2, 3, 4), np.uint16)
    order[0, 1, 2] = 1
    plan = load_plan(save_plan(codes, motion, np.ones(2), order), frames=2, shape=(3, 4), routes=3)
    assert (plan.order == order).all() and (plan.codes == codes).all()
    older = load_plan(save_plan(codes, motion, np.ones(2)), frames=2, shape=(3, 4), routes=3)
    assert older.order is None
    with pytest.raises(ValueError):
        save_plan(codes, motion, np.ones(2), order.astype(np.uint8))
