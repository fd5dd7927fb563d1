"""Multi-run reports: exact numbers per run, bad runs kept as rows, groups, G_sat, renderings."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import numpy as np
import pytest

from satmon import Run, analyze_saturation, data_gap
from satmon.analysis.groups import GroupsConfig, load_groups
from satmon.datasets import make_run
from satmon.analysis.report import (
    CSV_COLUMNS,
    NO_HELDOUT_NOTE,
    REPORT_FORMATS,
    ReplaySummary,
    build_report,
)


def ramp_run(name: str, t_full: int, *, total: int = 300, heldout=None, metadata=None) -> Run:
    """Reward rising linearly to 1.0 at step ``t_full`` then flat: exact t_sat is known."""
    steps = np.arange(1, total + 1)
    reward = np.minimum(1.0, steps / t_full)
    return Run(train_reward=(steps, reward), heldout=heldout or {}, metadata=metadata or {},
               name=name)


def heldout_curve(values, every=50):
    steps = list(range(0, every * len(values), every))
    return (steps, list(values), 500)


# t_sat = first step with r >= 0.99 * 1.0, i.e. ceil(0.99 * t_full) for a ramp reaching 1.0.
@pytest.mark.parametrize("t_full, heldout, t_sat, delta_sat, delta_post", [
    (100, [0.20, 0.30, 0.50, 0.55, 0.52, 0.50, 0.51], 99, 0.30, 0.05),
    (200, [0.10, 0.20, 0.30, 0.40, 0.45, 0.44, 0.43], 198, 0.35, 0.0),  # nearest eval: 200
    (40, [0.30, 0.31, 0.29, 0.30, 0.30, 0.28, 0.27], 40, 0.01, 0.0),
])
def test_run_numbers_match_the_exact_analysis(t_full, heldout, t_sat, delta_sat, delta_post):
    run = ramp_run("r", t_full, heldout={"math": heldout_curve(heldout)})
    rep = build_report([run], replay=False)
    rr = rep["r"]
    assert rr.analysis.t_sat == t_sat
    g = rr.analysis.gains["math"]
    assert g.delta_sat == pytest.approx(delta_sat, abs=1e-12)
    assert g.delta_post == pytest.approx(delta_post, abs=1e-12)
    # The report carries the core analysis unchanged, not a re-implementation of it.
    assert rr.analysis.to_dict() == analyze_saturation(run).to_dict()
    rec = rep.records()[0]
    assert rec["t_sat"] == t_sat and rec["pre_steps"] == t_sat - 1
    assert rec["post_steps"] == 300 - t_sat + 1


def test_parameters_reach_the_analysis():
    run = ramp_run("r", 100, heldout={"math": heldout_curve([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])})
    rep = build_report([run], eps=0.5, end_margin=10, heldout_policy="interpolate", replay=False)
    a = rep["r"].analysis
    assert a.t_sat == 50 and a.eps == 0.5 and a.end_margin == 10 and a.policy == "interpolate"
    assert "eps 0.5, end margin 10" in rep.summary()
    with pytest.raises(ValueError, match="heldout_policy.*nearest"):
        build_report([run], heldout_policy="closest", replay=False)


def test_run_without_heldout_is_reported_not_failed():
    rep = build_report([ramp_run("bare", 100)], replay=False)
    rr = rep["bare"]
    assert rr.ok and rr.analysis.t_sat == 99 and not rr.analysis.gains
    assert NO_HELDOUT_NOTE in rr.all_notes()
    assert "No run has a held-out series." in rep.to_markdown()
    assert "no run has a held-out series" in rep.summary()
    rows = list(csv.DictReader(io.StringIO(rep.to_csv())))
    assert len(rows) == 1 and rows[0]["heldout"] == "" and rows[0]["t_sat"] == "99"
    assert rep.counts()["without_heldout"] == 1
    assert "no held-out series" in rr.summary()


def test_empty_and_unanalysable_runs_become_error_rows():
    good = ramp_run("good", 100, heldout={"m": heldout_curve([0.1, 0.4, 0.5, 0.5, 0.5, 0.5])})
    empty = Run(train_reward=None, name="empty")
    nan_only = Run(train_reward=([1, 2, 3], [None, float("nan"), float("inf")]), name="nan-only")
    negative = Run(train_reward=(range(1, 100), [-1.0] * 99), name="negative-proxy")
    rep = build_report([good, empty, nan_only, negative], replay=False)
    assert rep.counts() == {"runs": 4, "failed": 3, "saturated": 1, "without_heldout": 0,
                            "halted": 0}
    assert rep["good"].ok
    assert "no finite training reward" in rep["empty"].error
    assert "no finite training reward" in rep["nan-only"].error
    assert "maximum is -1 < 0" in rep["negative-proxy"].error
    rows = {r["run"]: r for r in csv.DictReader(io.StringIO(rep.to_csv()))}
    assert rows["empty"]["error"] and rows["empty"]["t_sat"] == ""
    assert rows["good"]["error"] == ""
    assert "error" in rep.run_rows()[1]
    assert re.search(r"\*\*empty\*\*: error: Run 'empty' has no finite", rep.to_markdown())


def test_empty_run_list_gives_an_empty_report():
    rep = build_report([], replay=False)
    assert len(rep) == 0 and rep.counts()["runs"] == 0
    assert "0 run(s)" in rep.summary()
    assert list(csv.DictReader(io.StringIO(rep.to_csv()))) == []


def test_resumed_log_with_overlapping_steps_uses_the_later_values():
    # A run logged steps 1..150, crashed, and resumed from step 101: steps 101..150 repeat and
    # the resumed values (which reach 1.0 sooner) must win.
    first = [(s, min(1.0, s / 200)) for s in range(1, 151)]
    resumed = [(s, min(1.0, s / 120)) for s in range(101, 301)]
    steps, values = zip(*(first + resumed))
    run = Run(train_reward=(steps, values), name="resumed",
              heldout={"m": ([0, 100, 150, 100, 150, 200, 250, 300],
                             [0.1, 0.3, 0.35, 0.31, 0.42, 0.45, 0.45, 0.46])})
    rep = build_report([run], replay=False)
    a = rep["resumed"].analysis
    assert a.t_sat == 119  # ceil(0.99 * 120), from the resumed values
    assert a.gains["m"].at_saturation == pytest.approx(0.31)  # resumed eval at step 100
    notes = " ".join(rep["resumed"].all_notes())
    assert "50 repeated step(s) 101..150: later values kept" in notes


def test_group_means_and_missing_members():
    cfg = GroupsConfig.from_dict({"groups": {"in": ["a", "b"], "out": ["c"]}})
    full = ramp_run("full", 100, heldout={
        "a": heldout_curve([0.1, 0.3, 0.3, 0.3, 0.3, 0.3]),
        "b": heldout_curve([0.2, 0.6, 0.6, 0.7, 0.6, 0.6]),
        "c": heldout_curve([0.5, 0.4, 0.4, 0.4, 0.4, 0.4])})
    partial = ramp_run("partial", 100, heldout={"a": heldout_curve([0.1, 0.2, 0.2, 0.2, 0.2, 0.2])})
    rep = build_report([full, partial], groups=cfg, replay=False)
    gains = rep["full"].analysis.gains
    means = rep["full"].group_means
    assert means["in"]["delta_sat"] == pytest.approx((gains["a"].delta_sat
                                                      + gains["b"].delta_sat) / 2)
    assert means["in"]["delta_post"] == pytest.approx(0.05)
    assert means["out"]["delta_sat"] == pytest.approx(-0.1)
    assert rep["partial"].group_means == {}
    assert any("group 'in' needs ['b']" in n for n in rep["partial"].all_notes())
    assert rep.group_header() == ["run", "in delta_sat", "in delta_post*", "out delta_sat",
                                  "out delta_post*"]
    assert rep.group_rows()[1] == ["partial", "-", "-", "-", "-"]


def test_group_naming_a_benchmark_no_run_has_is_an_error():
    cfg = GroupsConfig.from_dict({"groups": {"in": ["math", "gsm8k_typo"]}})
    run = ramp_run("r", 100, heldout={"math": heldout_curve([0.1, 0.2, 0.2, 0.2, 0.2, 0.2])})
    with pytest.raises(KeyError, match=r"gsm8k_typo.*Held-out series present: \['math'\]"):
        build_report([run], groups=cfg, replay=False)


def test_data_gap_of_pairs_matches_the_core():
    cfg = GroupsConfig.from_dict({
        "groups": {"in_domain": ["math"], "out_of_domain": ["gpqa"]},
        "pairs": [{"large": "n64", "small": "n8", "label": "64 vs 8"}]})
    large = ramp_run("n64", 200, heldout={"math": heldout_curve([0.2, 0.4, 0.5, 0.6, 0.6, 0.6]),
                                          "gpqa": heldout_curve([0.1, 0.2, 0.25, 0.3, 0.3, 0.3])})
    small = ramp_run("n8", 50, heldout={"math": heldout_curve([0.2, 0.3, 0.3, 0.3, 0.3, 0.3]),
                                        "gpqa": heldout_curve([0.1, 0.1, 0.1, 0.1, 0.1, 0.1])})
    rep = build_report([large, small], groups=cfg, replay=False)
    (pg,) = rep.pairs
    expected = data_gap(large, small, groups={"in_domain": ["math"], "out_of_domain": ["gpqa"]})
    assert pg.error is None and pg.gap.to_dict() == expected.to_dict()
    assert pg.gap.t_sat_small == 50
    assert pg.gap.gaps["math"] == pytest.approx(0.1)  # read at step 50 in both runs
    assert pg.gap.groups["out_of_domain"] == pytest.approx(0.1)
    assert rep.gap_header() == ["pair", "large", "small", "t_sat (small)", "math", "gpqa",
                                "mean in_domain", "mean out_of_domain"]
    assert rep.gap_rows()[0][:4] == ["64 vs 8", "n64", "n8", "50"]
    assert "## Data gap G_sat" in rep.to_markdown()


def test_pair_problems():
    runs = [ramp_run("a", 100, heldout={"m": heldout_curve([0.1] * 6)}),
            ramp_run("b", 100, heldout={"x": heldout_curve([0.1] * 6)}),
            ramp_run("dup", 100), ramp_run("dup", 80)]
    with pytest.raises(KeyError, match=r"'missing'.*Runs: \['a', 'b', 'dup'\]"):
        build_report(runs, replay=False,
                     groups=GroupsConfig.from_dict({"pairs": [{"large": "missing",
                                                               "small": "a"}]}))
    rep = build_report(runs, replay=False, groups=GroupsConfig.from_dict(
        {"pairs": [{"large": "a", "small": "b"}, {"large": "a", "small": "dup"}]}))
    assert "share no held-out series" in rep.pairs[0].error
    assert "2 runs are named 'dup'" in rep.pairs[1].error
    assert rep.gap_rows()[0][3] == "error"


def test_csv_columns_metadata_and_round_trip():
    run = ramp_run("r", 100, metadata={"model": "qwen", "n_prompts": 8, "nested": {"x": 1}},
                   heldout={"m": heldout_curve([0.1, 0.3, 0.35, 0.4, 0.38, 0.37]),
                            "g": heldout_curve([0.5, 0.5, 0.6, 0.6, 0.6, 0.6])})
    rep = build_report([run], replay=False)
    text = rep.to_csv()
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == CSV_COLUMNS + ["meta.model", "meta.n_prompts"]
    rows = list(reader)
    assert [r["heldout"] for r in rows] == ["m", "g"]
    g = rep["r"].analysis.gains["m"]
    assert float(rows[0]["delta_sat"]) == pytest.approx(g.delta_sat, rel=1e-11)
    assert rows[0]["eval_steps_used"] == "100" and rows[0]["meta.model"] == "qwen"
    assert rows[0]["saturated"] == "True" and rows[0]["halt_step"] == ""


def test_never_saturated_run_in_tables():
    run = ramp_run("slow", 1000, heldout={"m": heldout_curve([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])})
    rep = build_report([run], replay=False)
    assert rep.run_rows()[0][2] == "never"
    row = next(csv.DictReader(io.StringIO(rep.to_csv())))
    assert row["t_sat"] == "" and row["saturated"] == "False" and row["delta_sat"] == ""
    assert rep.to_dict()["runs"][0]["analysis"]["t_sat"] is None


def test_markdown_tables_are_well_formed():
    runs = [ramp_run("a|pipe", 100, heldout={"m": heldout_curve([0.1, 0.2, 0.3, 0.3, 0.3, 0.3])}),
            ramp_run("b", 60)]
    md = build_report(runs, replay=False).to_markdown()
    tables = [block for block in md.split("\n\n") if block.startswith("|")]
    assert len(tables) == 2
    for block in tables:
        lines = block.splitlines()
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in lines}
        assert len(widths) == 1, block  # every row has the header's column count
    assert "a\\|pipe" in md


def test_json_and_every_format_written(tmp_path):
    runs = [ramp_run("a", 100, heldout={"m": heldout_curve([0.1, 0.2, 0.3, 0.3, 0.3, 0.3])}),
            Run(train_reward=None, name="empty")]
    rep = build_report(runs, replay=False)
    written = rep.write(tmp_path / "out", formats=REPORT_FORMATS, max_run_plots=1)
    assert sorted(written) == sorted(REPORT_FORMATS)
    data = json.loads(written["json"].read_text())
    assert data["counts"]["failed"] == 1 and data["runs"][0]["analysis"]["t_sat"] == 99
    json.dumps(rep.to_dict(), allow_nan=False)
    assert written["txt"].read_text().startswith("satmon report: 2 run(s)")
    with pytest.raises(ValueError, match=r"Unknown report format\(s\) \['pdf'\].*'html'"):
        rep.write(tmp_path, formats=["pdf"])


def test_html_is_self_contained(tmp_path):
    runs = [ramp_run(f"r{i}", 60 + 20 * i,
                     heldout={"m": heldout_curve([0.1, 0.2 + i / 20, 0.3, 0.3, 0.3, 0.3])},
                     metadata={"model": "A" if i < 2 else "B", "setting": i % 2})
            for i in range(4)]
    rep = build_report(runs, replay=False)
    page = rep.to_html(max_run_plots=2, dpi=50)
    assert page.startswith("<!DOCTYPE html>")
    # Two per-run figures plus the overview grid, all inline PNGs; nothing fetched from outside.
    assert page.count('src="data:image/png;base64,') == 3
    # Only inline images and in-page anchors: nothing is fetched from outside the file.
    refs = re.findall(r"(?:src|href)=[\"']([^\"']*)", page)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs)
    assert "href='#figures'" in page
    assert "http://" not in page and "https://" not in page
    assert "Per-run figures for the first 2 of 4 analysed runs" in page
    grid = rep.to_html(max_run_plots=0, grid_rows="model", grid_cols="setting", dpi=50)
    assert grid.count("<img") == 1 and "rows: model, columns: setting" in grid
    tables_only = rep.to_html(figures=False)
    assert "<img" not in tables_only and "<table>" in tables_only
    with pytest.raises(ValueError, match="max_run_plots"):
        rep.to_html(max_run_plots=-1)


def test_report_objects_print_and_render():
    rep = build_report([ramp_run("r", 100)], replay=False)
    assert str(rep) == rep.summary()
    assert "<table>" in rep._repr_html_()
    assert "t_sat = 99" in str(rep["r"])
    with pytest.raises(KeyError, match=r"No run named 'x'.*\['r'\]"):
        rep["x"]
    with pytest.raises(TypeError, match="satmon.Run objects. Got dict"):
        build_report([{"train_reward": [1]}], replay=False)
    with pytest.raises(TypeError, match="GroupsConfig, a path or None"):
        build_report([], groups=42, replay=False)


def test_replay_summary_in_tables():
    # The replay columns render from the summary the report keeps per run.
    run = ramp_run("r", 100, heldout={"m": heldout_curve([0.1, 0.3, 0.3, 0.3, 0.3, 0.3])})
    rep = build_report([run], replay=False)
    rep.runs[0].replay = ReplaySummary(halt_step=180, reason="memorizing", message="halted",
                                       compute_saved=0.4, regret=0.0)
    assert rep.run_rows()[0][7:] == ["180", "memorizing", "0.4", "0"]
    assert rep.counts()["halted"] == 1
    assert "HALT at step 180 (memorizing)" in rep.runs[0].summary()
    rec = rep.records()[0]
    assert rec["halt_step"] == 180 and rec["compute_saved"] == 0.4
    assert not math.isnan(rec["regret"])


def test_progress_callable_sees_every_run():
    seen = []

    def wrap(runs):
        for r in runs:
            seen.append(r.name)
            yield r

    build_report([ramp_run("a", 100), ramp_run("b", 100)], replay=False, progress=wrap)
    assert seen == ["a", "b"]


# -- groups config --------------------------------------------------------------------------
TOML = """
[groups]
in_domain = ["math500", "gsm8k"]
out_of_domain = ["gpqa"]

[[pairs]]
large = "qwen-64"
small = "qwen-8"
label = "Qwen 64 vs 8"
"""


def test_groups_file_toml_and_json(tmp_path):
    t = tmp_path / "groups.toml"
    t.write_text(TOML)
    cfg = load_groups(t)
    assert cfg.groups == {"in_domain": ("math500", "gsm8k"), "out_of_domain": ("gpqa",)}
    assert cfg.pairs[0].large == "qwen-64" and cfg.pairs[0].display == "Qwen 64 vs 8"
    j = tmp_path / "groups.json"
    j.write_text(json.dumps(cfg.to_dict()))
    assert load_groups(j) == cfg
    other = tmp_path / "groups.cfg"
    other.write_text(TOML)  # unknown suffix: JSON is tried, then TOML
    assert load_groups(other) == cfg


@pytest.mark.parametrize("data, error, match", [
    ({"group": {}}, ValueError, r"unknown top-level key\(s\) \['group'\]; allowed"),
    ({"groups": ["a"]}, TypeError, "'groups' must map a group name"),
    ({"groups": {"in": "math"}}, TypeError, "group 'in' must be a list of benchmark names"),
    ({"groups": {"in": []}}, ValueError, "group 'in' is empty"),
    ({"groups": {"in": ["a", "a"]}}, ValueError, "lists a benchmark twice"),
    ({"pairs": {"large": "a"}}, TypeError, "'pairs' must be a list of tables"),
    ({"pairs": [{"large": "a"}]}, ValueError, r"pairs\[0\] needs 'small'"),
    ({"pairs": [{"large": "a", "small": "a"}]}, ValueError, "pairs run 'a' with itself"),
    ({"pairs": [{"large": "a", "small": "b", "n": 3}]}, ValueError, r"unknown key\(s\) \['n'\]"),
    ({"pairs": [{"large": "a", "small": "b", "label": 3}]}, TypeError, "'label' must be"),
    (["a"], TypeError, "top level must be a table"),
])
def test_groups_config_errors(data, error, match):
    with pytest.raises(error, match=match):
        GroupsConfig.from_dict(data)


def test_groups_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_groups(tmp_path / "nope.toml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_groups(bad)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[groups\nx = 1")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_groups(bad_toml)
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("@@@ ###")
    with pytest.raises(ValueError, match="neither JSON nor TOML"):
        load_groups(garbage)
    # The file is data only: a TOML file cannot run code, whatever it contains.
    sneaky = tmp_path / "sneaky.toml"
    sneaky.write_text('[groups]\nin = ["__import__(\'os\').system(\'false\')"]\n')
    assert load_groups(sneaky).groups["in"] == ("__import__('os').system('false')",)
    assert build_report([], groups=sneaky, replay=False).config.groups


# -- the monitor replay ---------------------------------------------------------------------
def test_replay_columns_come_from_the_online_monitor():
    from satmon.replay import replay

    runs = [make_run("memorizing", seed=1, total_steps=300).run,
            make_run("slow", seed=2, total_steps=300).run]
    rep = build_report(runs, replay=True)
    for run, rr in zip(runs, rep.runs):
        direct = replay(run)
        assert rr.replay.halt_step == direct.halt_step
        assert rr.replay.reason == (None if direct.reason is None else direct.reason.value)
        assert rr.replay.compute_saved == direct.compute_saved
        assert rr.replay.regret == pytest.approx(direct.regret, nan_ok=True)
        assert rr.replay.flag_step == direct.first_flag
        # The P(saturated) trace kept for the plot strip is the monitor's, update by update.
        np.testing.assert_array_equal(rr.replay.steps, [d.step for d in direct.decisions])
        np.testing.assert_array_equal(rr.replay.p_saturated,
                                      [d.evidence.p_saturated for d in direct.decisions])
    mem = rep.runs[0]
    assert mem.replay.halted and mem.replay.reason == "memorizing"
    assert rep.run_rows()[0][7] == str(mem.replay.halt_step)
    assert f"HALT at step {mem.replay.halt_step} (memorizing)" in mem.summary()
    assert rep.counts()["halted"] >= 1


def test_replay_options_reach_the_monitor_and_bad_runs_skip_replay():
    run = make_run("memorizing", seed=1, total_steps=300).run
    rep = build_report([run, Run(train_reward=None, name="empty")],
                       replay_options={"total_steps": 600})
    # A planned length of 600 makes the same halt save more compute than with T = 300.
    from satmon.replay import replay

    assert rep.runs[0].replay.compute_saved == replay(run, total_steps=600).compute_saved
    assert rep["empty"].replay is None and rep["empty"].error


def test_parallel_workers_give_the_same_report():
    runs = [make_run(regime, seed=i, total_steps=250).run
            for i, regime in enumerate(["memorizing", "collapse", "generalizing"])]
    serial = build_report(runs, replay=True)
    parallel = build_report(runs, replay=True, workers=2)
    assert parallel.to_dict() == serial.to_dict()
    assert [r.run for r in parallel.runs] == runs  # the caller's runs, not copies
    with pytest.raises(ValueError, match="'workers' parameter must be an int >= 1"):
        build_report(runs, workers=0)


@pytest.mark.parametrize("module", ["satmon.analysis.report", "satmon.analysis.groups"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_given_replays_are_shown_instead_of_a_replay():
    """``replays=`` puts a summary (e.g. the live callback's) in place of an offline replay."""
    from satmon.analysis.report import ReplaySummary

    live = ReplaySummary(halt_step=123, reason="memorizing", message="live halt",
                         compute_saved=0.59, regret=0.0)
    runs = [make_run("memorizing", seed=1, total_steps=300, name="a").run,
            make_run("memorizing", seed=2, total_steps=300, name="b").run]
    rep = build_report(runs, replay=False, replays={"a": live})
    assert rep["a"].replay is live and rep["b"].replay is None
    assert rep.params.replay and rep.counts()["halted"] == 1
    assert "replay halt" in rep.summary() and "123" in rep.summary()
