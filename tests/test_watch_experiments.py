"""``satmon watch mlflow://experiments/<name>``: every active run of an experiment.

A writer (this test, between watcher passes) creates runs, logs their steps as verl's MLflow
logger does and ends them, on a real sqlite store; the watcher runs as ``satmon watch --once``
passes resumed from one state file (what cron would run), and once as a loop polling while a
writer thread works against deadlines.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest
from _watch_support import (decision_entries, expected_entries, log_entries,
                            reference_decisions, saved_state, verl_records)

from satmon.cli import main
from satmon.watch import EXIT_FINISHED, EXIT_HALTED, EXIT_WATCHING

pytest.importorskip("mlflow")

HELDOUT = "val-core/math/acc/mean@1"
MON = ["--warmup-steps", "30", "--heldout-n", "math=500", "--total-steps", "200",
       "--status-every", "0", "--action", "flag"]
SEEDS = {"a": 2, "b": 3, "c": 4}


def _log_steps(client, run_id, records, upto):
    """Log the records up to step ``upto``, one log_batch per step (verl's MLflow logger)."""
    from mlflow.entities import Metric

    for step, data in records:
        if step <= upto:
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k.replace("@", "_at_"), float(v), now,
                                                     step) for k, v in data.items()])


def _writer(client, exp_id, name):
    records = verl_records(seed=SEEDS[name], total_steps=200)
    run_id = client.create_run(exp_id, run_name=name).info.run_id
    logged = {"upto": -1}

    def log_upto(upto):
        _log_steps(client, run_id, [(s, d) for s, d in records if logged["upto"] < s], upto)
        logged["upto"] = upto

    return run_id, records, log_upto


def _check_run_decisions(log, state, run_id, name, records):
    """The run's decision-log entries equal a one-go feed of the same steps."""
    run = state["runs"][f"mlflow://runs/{run_id}"]
    _, decisions = reference_decisions(records, total_steps=200, warmup_steps=30,
                                       upto=run["last_fed"], heldout_key=HELDOUT)
    mine = [e for e in log_entries(log) if e["run"] == name and e["event"] == "decision"]
    assert [(e["step"], e["action"], e["reason"], e["message"]) for e in mine] == \
        expected_entries(decisions)
    return run


def test_once_passes_follow_runs_as_they_start_and_finish(tmp_path, sqlite_tracking_uri,
                                                          capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_tracking_uri)
    exp = client.create_experiment("team")
    other = client.create_experiment("elsewhere")
    old = client.create_run(exp, run_name="old").info.run_id
    client.set_terminated(old, "FINISHED")  # finished before the watcher came: never watched
    client.create_run(other, run_name="foreign")  # another experiment: never watched
    a_id, a_rec, log_a = _writer(client, exp, "a")
    b_id, b_rec, log_b = _writer(client, exp, "b")
    log_a(20)
    log_b(20)
    log = tmp_path / "d.jsonl"
    state_file = tmp_path / "d.jsonl.state.json"
    argv = ["watch", "mlflow://experiments/team", "--tracking-uri", sqlite_tracking_uri,
            *MON, "--once", "--decision-log", str(log)]

    def watch_once():
        rc = main(argv)
        state = saved_state(state_file)
        (exp_state,) = state["experiments"].values()
        statuses = {state["runs"][f"mlflow://runs/{i}"]["name"]:
                    state["runs"][f"mlflow://runs/{i}"]["status"]
                    for i in exp_state["run_ids"]}
        return rc, statuses, state

    rc, statuses, _ = watch_once()
    assert rc == EXIT_WATCHING
    assert statuses == {"a": "watching", "b": "watching"}  # not "old", not "foreign"

    log_a(60)
    client.set_terminated(a_id, "FINISHED")
    log_b(60)  # seed 3 halts at step 50: flagged (--action flag) and dropped
    c_id, c_rec, log_c = _writer(client, exp, "c")
    log_c(20)
    rc, statuses, state = watch_once()
    assert rc == EXIT_HALTED
    assert statuses == {"a": "finished", "b": "flagged", "c": "watching"}
    b_read = state["runs"][f"mlflow://runs/{b_id}"]["follower"]["read"]

    log_b(100)
    client.set_terminated(b_id, "FAILED")
    log_c(60)
    rc, statuses, state = watch_once()
    assert statuses == {"a": "finished", "b": "flagged", "c": "watching"}
    # a dropped run is not read again, though it logged 40 more steps
    assert state["runs"][f"mlflow://runs/{b_id}"]["follower"]["read"] == b_read

    watch_once()  # nothing new: nothing changes, nobody is reported again
    client.set_terminated(c_id, "KILLED")
    rc, statuses, state = watch_once()
    assert rc == EXIT_HALTED  # b's halt; the experiment stays open for new runs
    assert statuses == {"a": "finished", "b": "flagged", "c": "finished"}
    assert saved_state(state_file)["experiments"]["mlflow://experiments/team"]["status"] == \
        "watching"

    capsys.readouterr()
    entries = log_entries(log)
    ended = collections.Counter(e["run"] for e in entries if e["event"] in ("finished",
                                                                            "flagged"))
    assert ended == {"a": 1, "b": 1, "c": 1}  # each finished run reported once
    started = collections.Counter(e["run"] for e in entries
                                  if e["event"] == "started_watching")
    assert started == {"a": 1, "b": 1, "c": 1}
    assert {e["run"] for e in entries} == {"a", "b", "c", "experiment team"}
    for run_id, name, records, last in ((a_id, "a", a_rec, 60), (b_id, "b", b_rec, 50),
                                        (c_id, "c", c_rec, 60)):
        run = _check_run_decisions(log, state, run_id, name, records)
        assert run["last_fed"] == last  # a finished run's held-back last step was fed too
        # only the needed keys travel, each from where the last pass stopped
        assert set(run["follower"]["read"]) == {"critic/score/mean",
                                                "val-core/math/acc/mean_at_1", "actor/entropy"}
        assert client.get_run(run_id).data.tags["satmon.watch.status"] == run["status"]


def test_loop_picks_up_new_runs_and_ends_idle(tmp_path, sqlite_tracking_uri, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_tracking_uri)
    exp = client.create_experiment("team")
    ids: dict[str, str] = {}
    records: dict[str, list] = {}
    done = threading.Event()
    errors: list[BaseException] = []

    def write():
        try:
            for name, delay in (("a", 0.0), ("b", 1.0)):
                time.sleep(delay)  # b starts while the watcher is already polling
                run_id, recs, log_upto = _writer(client, exp, name)
                ids[name], records[name] = run_id, recs
                log_upto(40)
            for name in ("a", "b"):
                time.sleep(0.5)
                client.set_terminated(ids[name], "FINISHED")
        except BaseException as exc:  # surfaced by the test below
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        rc = main(["watch", "mlflow://experiments/team", "--tracking-uri", sqlite_tracking_uri,
                   *MON, "--interval", "0.1", "--idle-exit", "3", "--timeout", "90",
                   "--decision-log", str(tmp_path / "d.jsonl")])
    finally:
        writer.join(timeout=60)
    out = capsys.readouterr().out
    assert not errors and done.is_set()
    assert rc == EXIT_FINISHED, out
    assert "no active run for 3 s (--idle-exit); 2 run(s) watched" in out
    state = saved_state(tmp_path / "d.jsonl.state.json")
    entries = log_entries(tmp_path / "d.jsonl")
    assert collections.Counter(e["run"] for e in entries if e["event"] == "finished") == \
        {"a": 1, "b": 1, "experiment team": 1}
    for name in ("a", "b"):
        run = _check_run_decisions(tmp_path / "d.jsonl", state, ids[name], name,
                                   records[name])
        assert run["status"] == "finished" and run["last_fed"] == 40


def test_experiment_that_does_not_exist_fails_at_once(tmp_path, sqlite_tracking_uri, capsys):
    rc = main(["watch", "mlflow://experiments/nope", "--tracking-uri", sqlite_tracking_uri,
               "--interval", "0.05", "--timeout", "60",
               "--decision-log", str(tmp_path / "d.jsonl")])
    out = capsys.readouterr().out
    assert rc == 1
    assert "MLflow experiment 'nope' does not exist" in out and "search failed" not in out
    assert decision_entries(tmp_path / "d.jsonl") == []
