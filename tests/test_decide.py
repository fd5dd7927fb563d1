"""Table tests of the pure decision rule (satmon.monitor.decide)."""

from __future__ import annotations

import pytest

from satmon.decision import Action, Reason
from satmon.monitor.config import MonitorConfig
from satmon.monitor.decide import DecisionInput, decide
from satmon.monitor.posterior import HeldoutPosterior

CFG = MonitorConfig(total_steps=500, risk=0.01, flag_risk=0.2)


def post(p_gain, *, p_gained=0.0, n_points=10):
    return HeldoutPosterior(p_gain=p_gain, expected_gain=0.001, gain_upper=0.004,
                            p_gained=p_gained, p_flat=0.9, p_falling=0.05, dispersion=1.0,
                            p_frozen=0.0, n_points=n_points, horizon=300.0)


def ready(**kw):
    base = dict(step=200, warm=False, n_heldout=1, min_points=10, horizon=300.0,
                posteriors={"math": post(0.5)}, p_saturated=0.99, t_sat_estimate=40.0,
                t_sat_interval=(30.0, 60.0))
    base.update(kw)
    return DecisionInput(**base)


CASES = [
    # (name, evidence, config, expected action, expected reason, text in the message)
    ("non-finite first", ready(non_finite=11, posteriors={"math": post(0.0)}), CFG,
     Action.HALT, Reason.NON_FINITE, "11 consecutive non-finite"),
    ("held-out non-finite", ready(heldout_non_finite={"math": 10}), CFG, Action.HALT,
     Reason.NON_FINITE, "held-out 'math' non-finite 10 times"),
    ("diverged", ready(diverge_streak=3, last_reward=7.5), CFG, Action.HALT, Reason.DIVERGED,
     "7.5 outside its range for 3 steps"),
    ("diverged before warm-up ends", ready(diverge_streak=3, warm=True), CFG, Action.HALT,
     Reason.DIVERGED, "DIVERGED"),
    ("warm-up", ready(warm=True, posteriors={"math": post(0.0)}), CFG, Action.CONTINUE, None,
     "warm-up until step 50"),
    ("no held-out, not saturated", ready(n_heldout=0, posteriors={}, p_saturated=0.5), CFG,
     Action.CONTINUE, None, "regime cannot be called"),
    ("no held-out, saturated: flag", ready(n_heldout=0, posteriors={}, p_saturated=0.99), CFG,
     Action.FLAG, Reason.SATURATED, "no held-out series"),
    ("no held-out, saturated, halt allowed",
     ready(n_heldout=0, posteriors={}, p_saturated=0.99),
     MonitorConfig(total_steps=500, halt_without_heldout=True), Action.HALT, Reason.SATURATED,
     "training reward saturated"),
    ("too few evaluations", ready(min_points=4, posteriors={"math": post(0.0, n_points=4)}), CFG,
     Action.CONTINUE, None, "4 of 6 held-out evaluations"),
    ("no steps left", ready(horizon=0.0, posteriors={"math": post(0.0)}), CFG, Action.CONTINUE,
     None, "no planned steps left"),
    ("likely gain", ready(posteriors={"math": post(0.5)}), CFG, Action.CONTINUE, None,
     "P(gain >= 1 pt in the remaining 300 steps)=0.500"),
    ("flag band", ready(posteriors={"math": post(0.05)}), CFG, Action.FLAG, Reason.MEMORIZING,
     "halt below P=0.01"),
    ("memorizing halt: early saturation", ready(posteriors={"math": post(0.004, p_gained=0.99)}),
     CFG, Action.HALT, Reason.MEMORIZING, "saturated early (online t_sat estimate 40)"),
    ("memorizing halt: never gained", ready(posteriors={"math": post(0.004)}, t_sat_estimate=300.0),
     CFG, Action.HALT, Reason.MEMORIZING, "has not gained"),
    ("saturated halt", ready(posteriors={"math": post(0.004, p_gained=0.99)},
                             t_sat_estimate=300.0), CFG, Action.HALT, Reason.SATURATED,
     "gained earlier in the run"),
    ("collapse halt", ready(posteriors={"math": post(0.004, p_gained=0.99)},
                            collapsed={"math": (0.12, 0.05)}), CFG, Action.HALT,
     Reason.COLLAPSE, "fell 12.0 points below its best"),
    ("collapse without a low posterior continues",
     ready(posteriors={"math": post(0.6)}, collapsed={"math": (0.12, 0.05)}), CFG,
     Action.CONTINUE, None, "P(gain"),
    ("every series must agree",
     ready(posteriors={"math": post(0.001), "code": post(0.3)}), CFG, Action.CONTINUE, None,
     "P(any series gains)=0.301"),
    ("two series agreeing halt",
     ready(posteriors={"math": post(0.002), "code": post(0.003)}), CFG, Action.HALT,
     Reason.MEMORIZING, "P(any series gains)=0.005"),
    ("halt_on excludes the reason", ready(posteriors={"math": post(0.004)}),
     MonitorConfig(total_steps=500, risk=0.01, halt_on=("collapse",)), Action.FLAG,
     Reason.MEMORIZING, "halting on memorizing is disabled"),
]


@pytest.mark.parametrize("name,ev,cfg,action,reason,text", CASES, ids=[c[0] for c in CASES])
def test_decide_table(name, ev, cfg, action, reason, text):
    got_action, got_reason, message = decide(ev, cfg)
    assert (got_action, got_reason) == (action, reason), message
    assert text in message, message


def test_p_gain_combines_series_as_any_gains():
    ev = ready(posteriors={"a": post(0.1), "b": post(0.2)})
    assert ev.p_gain == pytest.approx(1 - 0.9 * 0.8)
    assert ready(posteriors={}).p_gain == 1.0


def test_config_rejects_flag_risk_below_risk_and_bad_values():
    with pytest.raises(ValueError, match="flag_risk"):
        MonitorConfig(risk=0.1, flag_risk=0.05)
    with pytest.raises(ValueError, match="'risk' parameter of SaturationMonitor"):
        MonitorConfig(risk=0.0)
    with pytest.raises(ValueError, match="'prior' parameter"):
        MonitorConfig(prior=3)
    with pytest.raises(ValueError, match="unknown keys"):
        MonitorConfig(prior={"p_flatt": 0.3})
