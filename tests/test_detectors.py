"""Contract suite run against every detector, plus table-driven event tests on hand-made streams."""

from __future__ import annotations

import inspect
import json
import math
import pickle

import numpy as np
import pytest

from satmon.detectors import DETECTORS, Event, LinearBOCPD, ResidualCUSUM, SlopeTest


def _stream(n: int = 300, seed: int = 0) -> list[float]:
    """A ramp that saturates at step 120, with noise, a NaN, an inf and a None inside."""
    rng = np.random.default_rng(seed)
    ys: list = [min(0.2 + 0.006 * s, 0.92) + 0.01 * rng.standard_normal() for s in range(n)]
    ys[40], ys[41], ys[200] = math.nan, math.inf, None
    return ys


def _make(cls):
    if cls is SlopeTest:
        return cls(total_steps=300, window=30)
    if cls is LinearBOCPD:
        return cls(time_scale=300.0)
    return cls()


def _events(det, ys, start=0):
    out = []
    for s, y in enumerate(ys[start:], start=start):
        e = det.update(y, s)
        if e is not None:
            out.append((e.step, e.kind, round(e.location, 6)))
    return out


@pytest.mark.parametrize("cls", DETECTORS)
@pytest.mark.parametrize("split", [1, 37, 150, 299])
def test_split_resume_equals_uninterrupted(cls, split):
    ys = _stream()
    full = _make(cls)
    expected = _events(full, ys)
    first = _make(cls)
    got = _events(first, ys[:split])
    state = json.loads(json.dumps(first.state_dict()))  # must survive JSON
    second = _make(cls)
    second.load_state_dict(state)
    got += _events(second, ys, start=split)
    assert got == expected
    assert second.state_dict() == full.state_dict()


@pytest.mark.parametrize("cls", DETECTORS)
def test_nan_policy_skips_and_counts(cls):
    det = _make(cls)
    for s, y in enumerate([0.1, None, math.nan, math.inf, -math.inf, 0.2]):
        det.update(y, s)
    assert det.n_seen == 2 and det.n_skipped == 4
    with pytest.raises(TypeError, match="number or None"):
        det.update("0.3", 10)
    with pytest.raises(ValueError, match="whole-number step"):
        det.update(0.3, -1)
    with pytest.raises(ValueError, match="whole-number step"):
        det.update(0.3, 2.5)


@pytest.mark.parametrize("cls", DETECTORS)
def test_repeated_and_backward_steps_are_stale(cls):
    det = _make(cls)
    det.update(0.1, 5)
    det.update(0.2, 5)
    det.update(0.2, 3)
    assert det.n_seen == 1 and det.n_stale == 2 and det.last_step == 5


@pytest.mark.parametrize("cls", DETECTORS)
def test_no_mutable_defaults_and_keyword_only(cls):
    sig = inspect.signature(cls.__init__)
    for name, p in sig.parameters.items():
        if name == "self":
            continue
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, name
        assert not isinstance(p.default, (list, dict, set, np.ndarray)), name
    a, b = _make(cls), _make(cls)
    a.update(0.5, 1)
    assert b.n_seen == 0  # no state shared between instances
    assert set(a.get_params()) == set(cls._PARAMS)


@pytest.mark.parametrize("cls", DETECTORS)
def test_docstrings(cls):
    assert cls.__doc__ and "Parameters" in cls.__doc__ and "Example" in cls.__doc__
    for name in ("update", "state_dict", "load_state_dict", "reset"):
        assert getattr(cls, name).__doc__, name


@pytest.mark.parametrize("cls", DETECTORS)
def test_pickle_round_trip_continues_identically(cls):
    ys = _stream()
    det = _make(cls)
    _events(det, ys[:100])
    clone = pickle.loads(pickle.dumps(det))
    assert _events(clone, ys, 100) == _events(det, ys, 100)


@pytest.mark.parametrize("cls", DETECTORS)
def test_state_read_only_and_version(cls):
    det = _make(cls)
    st = det.state_dict()
    assert st["version"] == 1 and st["detector"] == cls.__name__
    with pytest.raises(AttributeError):
        det.n_seen = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="version"):
        det.load_state_dict({"state": {}})
    other = next(c for c in DETECTORS if c is not cls)
    with pytest.raises(ValueError, match="saved by"):
        det.load_state_dict(_make(other).state_dict())


@pytest.mark.parametrize("cls,kwargs,match", [
    (SlopeTest, {"window": 2}, "window"),
    (SlopeTest, {"min_gain": 0.0}, "min_gain"),
    (SlopeTest, {"confidence": 1.5}, "confidence"),
    (SlopeTest, {"total_steps": 0}, "total_steps"),
    (LinearBOCPD, {"hazard": 0.0}, "hazard"),
    (LinearBOCPD, {"noise_sd": -1.0}, "noise_sd"),
    (ResidualCUSUM, {"threshold": -1.0}, "threshold"),
    (ResidualCUSUM, {"alpha": 2.0}, "alpha"),
])
def test_bad_parameters_name_the_problem(cls, kwargs, match):
    with pytest.raises(ValueError, match=f"'{match}' parameter of {cls.__name__}"):
        cls(**kwargs)


def _ramp_then_flat(n, knee, slope, noise, seed):
    rng = np.random.default_rng(seed)
    return [0.1 + slope * min(s, knee) + noise * rng.standard_normal() for s in range(n)]


# (stream, detector, expected event kinds, window in which the first event must land)
EVENT_TABLE = [
    ("ramp-flat knee 150", lambda: SlopeTest(total_steps=400, window=40, min_gain=0.02),
     lambda: _ramp_then_flat(400, 150, 0.005, 0.01, 1), ["plateau"], (150, 230)),
    ("pure ramp", lambda: SlopeTest(total_steps=400, window=40, min_gain=0.02),
     lambda: _ramp_then_flat(400, 400, 0.002, 0.01, 2), [], None),
    ("flat then ramp", lambda: SlopeTest(total_steps=400, window=40, min_gain=0.05),
     lambda: [0.5 + 0.003 * max(0, s - 200) + 0.003 * (-1) ** s for s in range(400)],
     ["plateau", "rise"], (10, 60)),
    ("bocpd knee", lambda: LinearBOCPD(time_scale=400.0),
     lambda: _ramp_then_flat(400, 150, 0.005, 0.01, 3), ["changepoint"], (150, 200)),
    ("bocpd pure ramp", lambda: LinearBOCPD(time_scale=400.0),
     lambda: _ramp_then_flat(400, 400, 0.002, 0.01, 4), [], None),
    ("cusum drop", lambda: ResidualCUSUM(),
     lambda: [0.8 + 0.01 * np.cos(1.7 * s) for s in range(100)] + [0.6] * 30, ["drop"],
     (100, 105)),
    ("cusum ramp", lambda: ResidualCUSUM(),
     lambda: _ramp_then_flat(300, 300, 0.002, 0.01, 5), [], None),
    ("cusum second rise", lambda: ResidualCUSUM(),
     lambda: [0.5 + 0.01 * np.cos(1.3 * s) for s in range(150)] + [0.7] * 20, ["rise"],
     (150, 155)),
]


@pytest.mark.parametrize("name,make,stream,kinds,window", EVENT_TABLE,
                         ids=[row[0] for row in EVENT_TABLE])
def test_events_on_hand_made_streams(name, make, stream, kinds, window):
    det = make()
    events = [e for e in (det.update(y, s) for s, y in enumerate(stream())) if e is not None]
    assert [e.kind for e in events][: len(kinds)] == kinds
    if not kinds:
        assert events == []
    if window is not None:
        assert window[0] <= events[0].step <= window[1], events[0]
    assert all(isinstance(e, Event) and e.detector == type(det).__name__ for e in events)


def test_bocpd_memory_bounded_on_long_stream():
    det = LinearBOCPD(time_scale=10_000.0)
    rng = np.random.default_rng(0)
    for s in range(5000):
        det.update(0.5 + 0.01 * rng.standard_normal(), s)
    assert det.n_hypotheses <= det.max_hypotheses
    assert det.n_hypotheses < 200


def test_slope_test_horizon_is_remaining_budget():
    # The same slope is progress with 1,000 steps left and nothing with 20 left.
    a = SlopeTest(total_steps=1100, window=30, min_gain=0.02)
    b = SlopeTest(total_steps=120, window=30, min_gain=0.02)
    for s in range(100):
        y = 0.5 + 1e-4 * s + 0.001 * (-1) ** s
        a.update(y, s)
        b.update(y, s)
    assert a.gain_upper > 0.02 and not a.in_plateau
    assert b.in_plateau and b.p_gain_below(0.02) > 0.9


def test_slope_test_running_sums_match_a_direct_fit_and_old_states_load():
    # The slope test keeps running window sums (O(1) per update); they must agree with an OLS
    # fit over the window, and a state saved before the sums existed must rebuild them.
    rng = np.random.default_rng(3)
    pts = [(s, 0.3 + 0.002 * s + rng.normal(0, 0.02)) for s in range(1, 400, 2)]
    det = SlopeTest(total_steps=800, window=40)
    for s, v in pts[:150]:
        det.update(v, s)
    xs = np.array([p[0] for p in pts[110:150]], dtype=float)
    ys = np.array([p[1] for p in pts[110:150]])
    assert det.slope == pytest.approx(np.polyfit(xs, ys, 1)[0], rel=1e-9)
    old = det.state_dict()
    del old["state"]["sums"]
    restored = SlopeTest(total_steps=800, window=40)
    restored.load_state_dict(old)
    for s, v in pts[150:]:
        det.update(v, s)
        restored.update(v, s)
    assert restored.slope == pytest.approx(det.slope, rel=1e-9)
    assert restored.slope_se == pytest.approx(det.slope_se, rel=1e-9)


def test_bocpd_segment_table_is_bounded_and_the_values_beyond_it_are_the_same(monkeypatch):
    # One segment of 3,000 points: every step needs the log-gamma ratio of its length. Beyond
    # the cached table it is computed directly; the decisions and posteriors must not change,
    # and the table must not grow with the segment (it did: 12 MB after 100,000 steps).
    import satmon.detectors.bocpd as bocpd

    rng = np.random.default_rng(2)
    ys = (0.5 + 0.01 * rng.standard_normal(3000)).tolist()

    def run():
        det = LinearBOCPD(time_scale=3000.0)
        events = [det.update(y, s) for s, y in enumerate(ys)]
        return det, [e.to_dict() if e is not None else None for e in events]

    full, ev_full = run()
    monkeypatch.setattr(bocpd, "_GAMMA_TABLE", 100)
    capped, ev_capped = run()
    assert len(capped._gamma_table) <= 100 < len(full._gamma_table)
    assert ev_capped == ev_full
    assert capped.state_dict() == full.state_dict()
    assert capped.segment_slope() == full.segment_slope()
