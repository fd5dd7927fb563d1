"""The report names the exact post-hoc t_sat and the monitor's online estimate apart, and says
so when a replayed halt comes before (or without) an exact t_sat."""

from __future__ import annotations

import numpy as np

from satmon.analysis.report import RUN_HEADER, build_report
from satmon.run import Run
from satmon.saturation import analyze_saturation


def _creeping_run() -> Run:
    rng = np.random.default_rng(0)
    steps = np.arange(0, 301)
    reward = np.clip(0.2 + 0.7 * steps / 300 + rng.normal(0, 0.01, steps.size), 0, 1)
    ev = steps[::10]
    held = 0.3 + rng.binomial(500, 0.3, ev.size) / 500 - 0.3
    return Run(train_reward=(steps, reward), heldout={"math": (ev, held, 500)}, name="creep")


def test_halt_without_an_exact_t_sat_is_explained():
    run = _creeping_run()
    assert not analyze_saturation(run).saturated  # the reward peaks in the last 50 steps
    report = build_report([run], replay=True)
    rp = report.runs[0].replay
    assert rp.halted and rp.reason in ("memorizing", "saturated")
    notes = report.runs[0].all_notes()
    assert any(f"halted at step {rp.halt_step}" in n and "exact t_sat over the whole run is "
               "never" in n for n in notes), notes
    assert "exact t_sat" in RUN_HEADER and "replay halt" in RUN_HEADER
    md = report.to_markdown()
    assert "| exact t\\_sat |" in md and "online saturation estimate" in md  # _ escaped
    assert "online t_sat estimate" in rp.message


def test_unbounded_reward_resting_on_one_step_is_noted():
    steps = np.arange(1, 201)
    reward = np.full(steps.size, 1.2)
    reward[20] = 3.7  # one spike early enough to be t_sat
    run = Run(train_reward=(steps, reward), name="spike")
    notes = analyze_saturation(run).notes
    assert any("not in [0, 1]" in n for n in notes)
    assert any("t_sat rests on 1 step(s): only step(s) 21 reach 0.99 x max (max 3.7; the next "
               "highest value is 1.2)" in n for n in notes), notes
