"""The pre-RL probe as an optional prior of the monitor (``GainPrior.with_probe``).

Off by default (decisions identical to a monitor that never heard of the probe); on, it moves
only the flat-vs-gain prior mass of the one posterior the halt reads, by a bounded ratio, so a
"memorizing" probe can only halt a flat run earlier and a "generalizing" one only later.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from satmon.datasets import make_run
from satmon.monitor.posterior import (PROBE_MAX_RATIO, GainPrior, default_prior,
                                      heldout_gain_posterior)
from satmon.probe import ProbeResult
from satmon.replay import replay

from _probe_support import endpoint_probe


def _decisions(res):
    return [(d.step, d.action, d.reason, d.message, d.evidence.details.get("p_heldout_gain"))
            for d in res.decisions]


def _halt(res):
    return math.inf if res.halt_step is None else res.halt_step


@pytest.fixture(scope="module")
def probes():
    return {"generalizing": endpoint_probe(faithful=True),
            "memorizing": endpoint_probe(faithful=False)}


def test_probe_results_call_the_regime_and_give_a_prior(probes):
    gen, mem = probes["generalizing"], probes["memorizing"]
    assert (gen.regime, mem.regime) == ("generalizing", "memorizing")
    assert (gen.p_generalizing, mem.p_generalizing) == (1.0, 0.0)
    base = default_prior()
    # At the cap: odds(flat) x 1/4 and x 4.
    odds = base.p_flat / (1 - base.p_flat)
    assert gen.monitor_prior().p_flat == pytest.approx(odds / 4 / (1 + odds / 4))
    assert mem.monitor_prior().p_flat == pytest.approx(odds * 4 / (1 + odds * 4))
    # The same numbers after a trip through probe.json.
    again = ProbeResult.from_dict(mem.to_dict())
    assert again.monitor_prior() == mem.monitor_prior()


@pytest.mark.parametrize("regime,seed", [("memorizing", 0), ("noisy_label", 1),
                                         ("generalizing", 0)])
def test_prior_off_or_neutral_gives_the_default_decisions(regime, seed):
    run = make_run(regime, seed=seed).run
    default = _decisions(replay(run))
    assert default
    base = default_prior()
    assert base.with_probe(0.5) is base
    assert base.with_probe(0.9, max_ratio=1.0) is base
    for prior in (None, base, base.with_probe(0.5), base.with_probe(0.1, max_ratio=1.0)):
        assert _decisions(replay(run, prior=prior)) == default


@pytest.mark.parametrize("regime", ["memorizing", "noisy_label"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_memorizing_probe_halts_a_flat_run_no_later(probes, regime, seed):
    run = make_run(regime, seed=seed).run
    without = _halt(replay(run))
    with_mem = _halt(replay(run, prior=probes["memorizing"].monitor_prior()))
    with_gen = _halt(replay(run, prior=probes["generalizing"].monitor_prior()))
    assert with_mem <= without <= with_gen
    assert with_mem < math.inf  # the flat run is halted


def test_the_probe_moves_p_gain_monotonically_and_never_to_0_or_1():
    steps = np.arange(0, 250, 25)
    series = {"flat": [0.30] * 10, "rising": [0.3 + 0.0002 * s for s in steps],
              "noisy": [0.30, 0.33, 0.29, 0.31, 0.32, 0.30, 0.31, 0.33, 0.30, 0.32]}
    base = default_prior()
    for name, values in series.items():
        p = [heldout_gain_posterior(steps, values, [500] * 10, step=225, total_steps=500,
                                    prior=base.with_probe(g)).p_gain
             for g in (0.0, 0.25, 0.5, 0.75, 1.0)]
        assert p == sorted(p), name
        assert 0.0 < p[0] and p[-1] < 1.0, (name, p)


@pytest.mark.parametrize("p_flat", [1e-6, 0.5, 0.97])
def test_extreme_inputs_are_bounded(p_flat):
    base = GainPrior(p_flat=p_flat, p_comove=0.01, p_onset=0.01, p_delayed=1e-6)
    odds = p_flat / (1 - p_flat)
    for p in (0.0, 1e-300, 1.0, 1 - 1e-16):
        moved = base.with_probe(p)
        assert 0.0 < moved.p_flat < 1.0
        assert moved.p_flat + moved.p_comove + moved.p_onset + moved.p_delayed < 1.0
        ratio = (moved.p_flat / (1 - moved.p_flat)) / odds
        assert 1 / PROBE_MAX_RATIO * (1 - 1e-9) <= ratio <= PROBE_MAX_RATIO * (1 + 1e-9)
    # The non-flat shapes keep their relative weights.
    moved = base.with_probe(0.0)
    assert moved.p_comove / moved.p_onset == pytest.approx(base.p_comove / base.p_onset)


@pytest.mark.parametrize("kwargs,error", [
    ({"p_generalizing": 1.5}, ValueError), ({"p_generalizing": math.nan}, ValueError),
    ({"p_generalizing": "high"}, TypeError), ({"p_generalizing": 0.3, "max_ratio": 0.5},
                                               ValueError),
    ({"p_generalizing": 0.3, "max_ratio": math.inf}, ValueError)])
def test_bad_probe_inputs_raise_with_the_parameter_name(kwargs, error):
    with pytest.raises(error, match="p_generalizing|max_ratio"):
        default_prior().with_probe(**kwargs)


def test_a_probe_without_measurement_leaves_the_prior_alone(probes):
    raw = probes["memorizing"].to_dict()
    raw["regime"] = {**raw["regime"], "call": "undetermined", "p_above_threshold": None}
    blank = ProbeResult.from_dict(raw)
    assert blank.p_generalizing == 0.5
    assert blank.monitor_prior() == default_prior()
    with pytest.raises(TypeError, match="base"):
        blank.monitor_prior(base=0.5)
