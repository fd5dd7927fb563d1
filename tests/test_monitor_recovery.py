"""Recovery on seeded synthetic runs, with stated margins (measured, not aspirational).

Seeds 1000+ are disjoint from the calibration suites (100-102) and from the benchmark (0-2).
The benchmark (benchmarks/bench_monitor.py) reports the same quantities on 1,002 runs.
"""

from __future__ import annotations

import pytest

from satmon.datasets import make_run
from satmon.decision import Reason
from satmon.replay import replay


def _replays(regime, seeds, **kwargs):
    out = []
    for seed in seeds:
        sr = make_run(regime, seed=1000 + seed, **kwargs)
        out.append((sr, replay(sr.run)))
    return out


@pytest.mark.parametrize("regime", ["generalizing", "post_saturation_generalization", "slow"])
def test_no_halt_while_heldout_still_gains_more_than_a_point(regime):
    # Margin: at most 2 false halts (a halt after which the noiseless held-out curve still
    # gains more than 1 point) in 40 seeds per generalizing regime, at each held-out size.
    # Measured with the Engine v2 posterior (risk 0.005): generalizing 0 and 0; post-saturation
    # generalization 2 and 0; slow 1 and 1 (n = 200 and 1000). The slow tail of post-saturation
    # generalization - about 8 points over 2T - looks flat for hundreds of steps, and a Bayes
    # observer that knows the generator's priors exactly cannot rule it out sooner either
    # (benchmarks/bound_memorizing.py).
    for n in (200, 1000):
        false = [sr.run.name for sr, res in _replays(regime, range(40), heldout_n=n)
                 if res.halted and sr.truth.remaining_gain_at(res.halt_step) > 0.01]
        assert len(false) <= 2, (n, false)


def test_memorizing_runs_halt_as_memorizing():
    # Margin: >= 90% of 200 seeds (100 memorizing, 100 noisy-label; n = 500, evaluation every
    # 25 steps) halted with reason MEMORIZING no later than step 450 of 500 (measured with the
    # Engine v2 posterior: 198 of 200, the other 2 halted COLLAPSE; median halt step 275).
    # The stricter margin - before max(2 x t_sat, the 8th evaluation) in 95% of seeds -
    # is NOT met by this monitor (the benchmark prints 8.1%): a halt that early cannot keep the
    # false-halt rate under 1% against post-saturation-generalizing runs with binomial held-out
    # noise (benchmarks/bound_memorizing.py: at 1% false halts, a Bayes observer of the
    # held-out series that knows the generator's priors exactly still runs memorizing runs for
    # 42% of their budget on average).
    ok = total = 0
    bad = []
    for regime in ("memorizing", "noisy_label"):
        for sr, res in _replays(regime, range(100)):
            total += 1
            if res.reason is Reason.MEMORIZING and res.halt_step <= 450:
                ok += 1
            else:
                bad.append((sr.run.name, res.halt_step, res.reason))
    assert ok >= 0.90 * total, (ok, total, bad[:10])


def test_collapse_runs_halt_as_collapse_after_the_drop_starts():
    # Margin: >= 90% of 20 seeds halted (any reason) with no held-out gain left (measured 20),
    # and >= 4 with reason COLLAPSE no earlier than 50 steps before the drawn collapse midpoint
    # (measured 5). The other 15 are halted MEMORIZING (13) or SATURATED (2) at zero regret
    # during the flat stretch before the drop: held-out had stopped gaining, so the posterior
    # halts before the collapse, which is the better outcome; COLLAPSE names halts after a
    # decline over the last three evaluations.
    results = _replays("collapse", range(20))
    halted_ok = [res for sr, res in results if res.halted
                 and sr.truth.remaining_gain_at(res.halt_step) <= 0.01]
    collapse = [res for sr, res in results if res.reason is Reason.COLLAPSE
                and res.halt_step >= sr.truth.params["t_collapse"] - 50]
    assert len(halted_ok) >= 18, [(r.halt_step, r.reason) for _, r in results]
    assert len(collapse) >= 4, [(r.halt_step, r.reason) for _, r in results]


def test_no_memorizing_run_is_called_collapse():
    # A slow drift (up to 3 points over the run) is not a collapse (10-30 points): at most 2 of
    # 80 runs (measured 0 with the rule that each of the last three evaluations lies below the
    # best 3-evaluation median; the old rule on 3-evaluation means called 2).
    results = _replays("memorizing", range(40)) + _replays("noisy_label", range(40))
    wrong = [sr.run.name for sr, res in results if res.reason is Reason.COLLAPSE]
    assert len(wrong) <= 2, wrong
