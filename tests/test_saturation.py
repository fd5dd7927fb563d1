"""Table-driven tests of the paper's exact analysis against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from satmon import (
    HeldoutSeries,
    Run,
    analyze_saturation,
    analyze_seeds,
    average_runs,
    data_gap,
    group_average,
    heldout_at,
    saturation_step,
)

NAN = math.nan
INF = math.inf


def ramp_then_flat(rise: int, flat: int, top: float = 1.0) -> list[float]:
    """Linear rise to ``top`` over ``rise`` steps, then ``flat`` steps at ``top``."""
    return [top * t / rise for t in range(1, rise + 1)] + [top] * flat


# (rewards, steps, eps, end_margin, expected t_sat, why)
SATURATION_CASES = [
    (ramp_then_flat(10, 60), None, 0.99, 50, 10, "reaches the max at step 10"),
    ([0.5] * 40, None, 0.99, 50, INF, "run shorter than the end margin"),
    ([0.5] * 51, None, 0.99, 50, 1, "T - 50 = 1: only step 1 can qualify"),
    ([0.1] * 60 + [1.0] * 50, None, 0.99, 50, INF, "max inside the last 50 steps only"),
    ([0.1] * 59 + [1.0] * 51, None, 0.99, 50, 60, "max starts exactly at T - 50"),
    ([0.2, 0.5, 0.5, 0.4] + [0.3] * 60, None, 0.99, 50, 2, "tie for the max: earliest wins"),
    ([0.2, 0.495, 0.5] + [0.3] * 60, None, 0.99, 50, 2, "0.495 >= 0.99 * 0.5 qualifies"),
    ([0.2, 0.494, 0.5] + [0.3] * 60, None, 0.99, 50, 3, "0.494 < 0.495 does not"),
    ([0.2, 0.494, 0.5] + [0.3] * 60, None, 0.98, 50, 2, "eps is a parameter"),
    ([0.1] * 30 + [1.0] * 30, None, 0.99, 10, 31, "end margin is a parameter"),
    ([0.1] * 30 + [1.0] * 30, None, 0.99, 0, 31, "zero end margin"),
    ([0.1, NAN, 0.8, 2.0, NAN] + [0.5] * 60, None, 0.99, 50, 4,
     "NaN neither sets the max nor qualifies"),
    ([0.1, INF, 0.8, 0.8] + [0.5] * 60, None, 0.99, 50, 3, "inf treated like NaN"),
    ([0.0, 0.6, 1.2, 1.3] + [0.2] * 60, None, 0.99, 50, 4, "unbounded proxy reward"),
    ([0.1, 0.9, 1.0, 1.0], [10, 100, 200, 300], 0.99, 50, 200,
     "step labels, not positions: logged every 100"),
    ([0.1, 0.9, 1.0, 1.0], [10, 100, 260, 300], 0.99, 50, INF,
     "the max at 260 > T - 50 = 250 cannot be t_sat"),
    ([0.0] * 70, None, 0.99, 50, 1, "all zero: max 0, step 1 qualifies (0 >= 0)"),
]


@pytest.mark.parametrize("rewards, steps, eps, margin, expected, why", SATURATION_CASES,
                         ids=[c[-1] for c in SATURATION_CASES])
def test_saturation_step_table(rewards, steps, eps, margin, expected, why):
    got = saturation_step(rewards, steps, eps=eps, end_margin=margin)
    assert got == expected, why
    if math.isfinite(got):
        assert isinstance(got, int)


def test_resumed_run_with_duplicated_steps_uses_later_values():
    # Steps 1..70 logged, then a resume re-logs 50..70 with different values; later wins.
    first = ramp_then_flat(20, 50, top=0.8)          # saturates at 20 with max 0.8
    resumed = [1.0] * 21                              # steps 50..70 at 1.0: new max
    steps = list(range(1, 71)) + list(range(50, 71))
    run = Run(train_reward=(steps, first + resumed))
    assert run.train_reward.cleaning.duplicate_steps == tuple(range(50, 71))
    # max 1.0 first reached at step 50 > T - 50 = 20 -> never saturated
    assert analyze_saturation(run).t_sat == INF
    with pytest.raises(ValueError, match="strictly increasing"):
        saturation_step(first + resumed, steps)


@pytest.mark.parametrize("bad, match", [
    ([], "empty"),
    ([NAN, NAN], "no finite value"),
    ([-0.5, -0.2] + [-0.3] * 60, "maximum is -0.2"),
])
def test_saturation_step_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        saturation_step(bad)


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": 0.0}, "'eps' parameter must be a float in \\(0, 1\\]. Got 0.0"),
    ({"eps": 1.5}, "'eps'"),
    ({"end_margin": -1}, "'end_margin' parameter must be an int >= 0. Got -1"),
    ({"end_margin": 2.5}, "'end_margin'"),
])
def test_saturation_step_parameter_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        saturation_step([0.1, 0.2], **kwargs)


# (eval steps, values, step, policy, expected value, used steps)
HELDOUT_AT_CASES = [
    ([0, 25, 50], [0.2, 0.4, 0.5], 25, "nearest", 0.4, (25,)),
    ([0, 25, 50], [0.2, 0.4, 0.5], 30, "nearest", 0.4, (25,)),
    ([0, 25, 50], [0.2, 0.4, 0.5], 40, "nearest", 0.5, (50,)),
    ([0, 20, 40], [0.2, 0.4, 0.5], 30, "nearest", 0.4, (20,)),      # tie -> earlier
    ([0, 25, 50], [0.2, 0.4, 0.5], 30, "interpolate", 0.42, (25, 50)),
    ([0, 25, 50], [0.2, 0.4, 0.5], 30, "previous", 0.4, (25,)),
    ([0, 25, 50], [0.2, 0.4, 0.5], 49, "previous", 0.4, (25,)),
    ([0, 25, 50], [0.2, 0.4, 0.5], 60, "interpolate", 0.5, (50,)),   # no extrapolation
    ([10, 25], [0.2, 0.4], 5, "nearest", 0.2, (10,)),
]


@pytest.mark.parametrize("steps, values, step, policy, expected, used", HELDOUT_AT_CASES)
def test_heldout_at_policies(steps, values, step, policy, expected, used):
    s = HeldoutSeries("m", steps, values)
    got = heldout_at(s, step, policy)
    assert got.value == pytest.approx(expected)
    assert got.used_steps == used


def test_heldout_at_previous_before_first_evaluation_is_nan_with_note():
    got = heldout_at(HeldoutSeries("m", [10, 20], [0.1, 0.2]), 5, "previous")
    assert math.isnan(got.value) and "no evaluation at or before step 5" in got.note


def test_gains_hand_computed_when_t_sat_is_not_an_evaluated_step():
    # t_sat = 30 (ramp to 1.0 at step 30, T = 100); held-out every 25 steps.
    rewards = ramp_then_flat(30, 70)
    run = Run(train_reward=(range(1, 101), rewards),
              heldout={"math": ([0, 25, 50, 75, 100], [0.20, 0.40, 0.45, 0.52, 0.50], 500)})
    nearest = analyze_saturation(run, heldout_policy="nearest")
    assert nearest.t_sat == 30
    g = nearest.gains["math"]
    assert g.at_saturation == pytest.approx(0.40) and g.at_saturation_steps == (25,)
    assert g.delta_sat == pytest.approx(0.20)                 # 0.40 - 0.20
    assert g.delta_post == pytest.approx(0.12)                # max(0.45, 0.52, 0.50) - 0.40
    assert g.best_post_step == 75
    interp = analyze_saturation(run, heldout_policy="interpolate").gains["math"]
    assert interp.at_saturation == pytest.approx(0.41)        # 0.40 + 5/25 * 0.05
    assert interp.delta_sat == pytest.approx(0.21)
    assert interp.delta_post == pytest.approx(0.11)
    assert nearest.pre_saturation_length == 29                # steps 1..29
    assert nearest.post_saturation_length == 71               # steps 30..100


def test_gains_never_saturated_are_undefined_and_reported():
    run = Run(train_reward=(range(1, 41), np.linspace(0.1, 0.9, 40)),
              heldout={"math": ([0, 20, 40], [0.2, 0.3, 0.4])})
    a = analyze_saturation(run)
    assert a.t_sat == INF and not a.saturated
    assert math.isnan(a.gains["math"].delta_sat)
    assert a.pre_saturation_length == 40 and a.post_saturation_length == 0
    d = a.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["saturated"] is False and d["t_sat"] is None
    assert "never saturated" in a.summary()


def test_delta_post_is_zero_when_heldout_only_falls_after_saturation():
    run = Run(train_reward=(range(1, 101), ramp_then_flat(10, 90)),
              heldout={"m": ([0, 10, 50, 100], [0.3, 0.5, 0.45, 0.4])})
    g = analyze_saturation(run).gains["m"]
    assert g.delta_sat == pytest.approx(0.2) and g.delta_post == 0.0 and g.best_post_step is None


def test_baseline_without_step_zero_is_noted():
    run = Run(train_reward=(range(1, 101), ramp_then_flat(10, 90)),
              heldout={"m": ([5, 50], [0.3, 0.5])})
    g = analyze_saturation(run).gains["m"]
    assert g.baseline_step == 5 and any("no evaluation at step 0" in n for n in g.notes)


def test_run_without_heldout_reports_it():
    a = analyze_saturation(Run(train_reward=(range(1, 101), ramp_then_flat(10, 90))))
    assert a.gains == {} and "no held-out series" in a.summary()


def test_missing_heldout_name_lists_available():
    run = Run(train_reward=(range(1, 101), ramp_then_flat(10, 90)),
              heldout={"gsm8k": ([0, 50], [0.3, 0.5])})
    with pytest.raises(KeyError, match=r"no held-out series 'math'.*\['gsm8k'\]"):
        analyze_saturation(run, heldout=["math"])


def test_nan_heldout_points_are_dropped_by_cleaning():
    run = Run(train_reward=(range(1, 101), ramp_then_flat(10, 90)),
              heldout={"m": ([0, 10, 20], [0.3, None, 0.5])})
    g = analyze_saturation(run).gains["m"]
    assert g.at_saturation_steps == (0,)  # step 10 was NaN; 10 is nearer 0 than 20 (tie->earlier)
    assert run.heldout["m"].cleaning.non_finite_steps == (10,)


def test_data_gap_and_group_averages():
    small = Run(train_reward=(range(1, 101), ramp_then_flat(20, 80)), name="n8",
                heldout={"math": ([0, 20, 40], [0.2, 0.3, 0.3]),
                         "gpqa": ([0, 20, 40], [0.1, 0.12, 0.12]),
                         "graph": ([0, 20, 40], [0.5, 0.5, 0.5])})
    large = Run(train_reward=(range(1, 101), ramp_then_flat(60, 40)), name="n64",
                heldout={"math": ([0, 20, 40], [0.2, 0.35, 0.5]),
                         "gpqa": ([0, 20, 40], [0.1, 0.2, 0.3]),
                         "graph": ([0, 20, 40], [0.5, 0.55, 0.6])})
    gap = data_gap(large, small, groups={"in_domain": ["math"],
                                         "out_of_domain": ["gpqa", "graph"]})
    assert gap.t_sat_small == 20
    assert gap.gaps == pytest.approx({"math": 0.05, "gpqa": 0.08, "graph": 0.05})
    assert gap.groups["in_domain"] == pytest.approx(0.05)
    assert gap.groups["out_of_domain"] == pytest.approx(0.065)
    json.dumps(gap.to_dict(), allow_nan=False)
    with pytest.raises(KeyError, match="not among the benchmarks analysed"):
        group_average(gap.gaps, {"ood": ["aime"]})


def test_seed_average_and_per_seed_analysis():
    a = Run(train_reward=(range(1, 101), ramp_then_flat(20, 80)), name="s0",
            heldout={"m": ([0, 50, 100], [0.2, 0.4, 0.4], 100)})
    b = Run(train_reward=(range(1, 101), ramp_then_flat(40, 60)), name="s1",
            heldout={"m": ([0, 50, 100], [0.2, 0.5, 0.6], 100)})
    avg = average_runs([a, b])
    assert avg.train_reward.values[19] == pytest.approx((1.0 + 0.5) / 2)
    assert avg.heldout["m"].values.tolist() == pytest.approx([0.2, 0.45, 0.5])
    assert avg.heldout["m"].sample_size == 200
    res = analyze_seeds([a, b])
    assert res.t_sat_values().tolist() == [20, 40]
    assert res.averaged.t_sat == 40
    json.dumps(res.to_dict(), allow_nan=False)
    assert "Seed-averaged" in res.summary()


def test_summary_and_html_carry_the_numbers():
    run = Run(train_reward=(range(1, 101), ramp_then_flat(30, 70)), name="r",
              heldout={"math": ([0, 25, 50], [0.2, 0.4, 0.5])})
    a = analyze_saturation(run)
    assert "t_sat = 30" in a.summary() and "0.2" in a.summary()
    assert "<table>" in a._repr_html_() and "math" in a._repr_html_()
