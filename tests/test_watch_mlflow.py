"""``satmon watch mlflow://runs/<id>``: a sqlite store, a real tracking server, a file store.

A run is written while the watcher reads it (a thread for sqlite, a separate process for the
server and the file store). The watcher sets its decision as tags on the watched run and
never ends or creates it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _watch_support import (expected_entries, decision_entries, reference_decisions,
                            saved_state, verl_records, wait_for)

from satmon.cli import main
from satmon.watch import EXIT_FAILED, EXIT_HALTED

pytest.importorskip("mlflow")

MLFLOW_WRITER = Path(__file__).resolve().parent / "_watch_mlflow_writer.py"
HELDOUT_MLFLOW = "val-core/math/acc/mean_at_1"
MON = ["--warmup-steps", "30", "--heldout-n", "math=500"]
FAST = ["--interval", "0.1", "--timeout", "90", "--status-every", "0"]


def _log_records(client, run_id, records, delay, done):
    from mlflow.entities import Metric

    for step, data in records:
        if done.is_set():  # the watcher has ended: the rest would only cost time
            return
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k.replace("@", "_at_"), float(v), now, step)
                                          for k, v in data.items()])
        time.sleep(delay)


def _check_decisions(log, state_file, records):
    (run,) = saved_state(state_file)["runs"].values()
    _, decisions = reference_decisions(records, total_steps=200, warmup_steps=30,
                                       upto=run["last_fed"], heldout_key="val-core/math/acc/"
                                                                         "mean@1")
    assert decision_entries(log) == expected_entries(decisions)
    return run


def _assert_tags_and_running(client, run_id, status, halt_step="80"):
    run = client.get_run(run_id)
    tags = run.data.tags
    assert tags["satmon.watch.decision"] == "halt"
    assert tags["satmon.watch.reason"] == "memorizing"
    assert tags["satmon.watch.halt_step"] == halt_step
    assert tags["satmon.watch.status"] == status
    assert tags["satmon.watch.message"].startswith(f"MEMORIZING at step {halt_step}")
    assert run.info.status == "RUNNING"  # the watcher never ends the run it watches
    assert len(client.search_runs([run.info.experiment_id])) == 1  # nor creates one


def test_sqlite_run_written_while_watched(tmp_path, sqlite_tracking_uri, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_tracking_uri)
    exp = client.create_experiment("verl")
    run_id = client.create_run(exp, run_name="verl-job").info.run_id
    records = verl_records(total_steps=200)
    done = threading.Event()
    writer = threading.Thread(target=_log_records, args=(client, run_id, records, 0.005, done))
    writer.start()
    try:
        rc = main(["watch", f"mlflow://runs/{run_id}", "--tracking-uri", sqlite_tracking_uri,
                   "--total-steps", "200", *MON, *FAST, "--action", "flag",
                   "--decision-log", str(tmp_path / "d.jsonl")])
    finally:
        done.set()
        writer.join()
    out = capsys.readouterr().out
    assert rc == EXIT_HALTED, out
    run = _check_decisions(tmp_path / "d.jsonl", tmp_path / "d.jsonl.state.json", records)
    assert run["status"] == "flagged"
    # Only the needed keys were fetched, each from where the last poll stopped.
    assert set(run["follower"]["read"]) == {"critic/score/mean", HELDOUT_MLFLOW,
                                            "actor/entropy"}
    _assert_tags_and_running(client, run_id, "flagged")


def test_points_logged_between_the_snapshot_and_the_reads_wait_for_the_next_poll(
        tmp_path, sqlite_tracking_uri, monkeypatch, capsys):
    """The fault: a poll reads the run's latest points, then each key's history, one request
    at a time; steps logged in between reach the histories of the keys it reads, but not of a
    key whose latest had not changed at the snapshot (the held-out key between evaluations).
    Here every snapshot is followed at once by the writer's next steps (an evaluation step
    among them), the worst case of a live run. Every evaluation must still reach the monitor
    at its own step: the decision log equals the monitor fed the records in one go, and no
    record is a repeat."""
    import mlflow.tracking
    from mlflow.entities import Metric

    import satmon.watch.followers as followers

    client = mlflow.tracking.MlflowClient(tracking_uri=sqlite_tracking_uri)
    run_id = client.create_run(client.create_experiment("verl")).info.run_id
    records = verl_records(total_steps=200)
    pending = list(records)

    def log_next(k: int) -> None:
        batch, pending[:] = pending[:k], pending[k:]
        for step, data in batch:
            client.log_batch(run_id, metrics=[Metric(key.replace("@", "_at_"), float(v), 0,
                                                     step) for key, v in data.items()])

    log_next(3)
    snapshots = []

    class WriterBetweenSnapshotAndReads(mlflow.tracking.MlflowClient):
        def get_run(self, rid):
            snapshot = super().get_run(rid)
            snapshots.append(max(m.step for m in snapshot.data._metric_objs))
            log_next(7)  # the run logs on while the histories are read
            return snapshot

    monkeypatch.setattr(followers, "_mlflow_client",
                        lambda uri, notes: WriterBetweenSnapshotAndReads(tracking_uri=uri))
    rc = main(["watch", f"mlflow://runs/{run_id}", "--tracking-uri", sqlite_tracking_uri,
               "--total-steps", "200", *MON, *FAST, "--interval", "0", "--action", "flag",
               "--decision-log", str(tmp_path / "d.jsonl")])
    out = capsys.readouterr().out
    assert rc == EXIT_HALTED, out
    run = _check_decisions(tmp_path / "d.jsonl", tmp_path / "d.jsonl.state.json", records)
    assert run["repeats"] == 0, out
    # The writer really did log between the snapshots and the reads of most polls.
    assert len(snapshots) > 5 and len(set(snapshots)) == len(snapshots)


@pytest.mark.slow
def test_tracking_server_run_written_by_another_process(tmp_path, mlflow_server, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    exp = client.create_experiment(f"verl-{tmp_path.name}")
    run_id = client.create_run(exp, run_name="verl-job").info.run_id
    writer = subprocess.Popen([sys.executable, str(MLFLOW_WRITER), "--tracking-uri",
                               mlflow_server.uri, "--run-id", run_id, "--delay", "0", "--seed",
                               "0", "--params", "--stop-file", str(tmp_path / "stop.json")])
    stop = tmp_path / "stop.json"
    try:
        # The planned total comes from the run's params (trainer.total_training_steps).
        rc = main(["watch", f"mlflow://runs/{run_id}?tracking_uri={mlflow_server.uri}", *MON,
                   *FAST, "--interval", "0.25", "--stop-file", str(stop), "--no-wait-checkpoint",
                   "--decision-log", str(tmp_path / "d.jsonl")])
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
    out = capsys.readouterr().out
    assert rc == EXIT_HALTED, out
    assert stop.exists()
    assert (tmp_path / "stop.json.seen").exists()  # the writer obeyed the stop
    # seed 0 halts at step 50: fewer requests to the (single-worker) server
    records = verl_records(seed=0, total_steps=200)
    run = _check_decisions(tmp_path / "d.jsonl", tmp_path / "d.jsonl.state.json", records)
    assert run["status"] == "halted" and run["monitor_kwargs"]["total_steps"] == 200
    _assert_tags_and_running(client, run_id, "halted", halt_step="50")


def test_file_store_opted_in_for_the_watcher_only(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    store = tmp_path / "outputs" / "exp" / "mlflow"  # where the paper's verl code writes
    id_file = tmp_path / "run_id"
    writer = subprocess.Popen([sys.executable, str(MLFLOW_WRITER), "--tracking-uri", str(store),
                               "--run-id-file", str(id_file), "--delay", "0.002"],
                              env={**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"})
    try:
        run_id = wait_for(lambda: id_file.exists() and id_file.read_text(), timeout=60,
                          what="the writer's run id")
        rc = main(["watch", f"runs:/{run_id}", "--tracking-uri", str(store), "--total-steps",
                   "200", *MON, *FAST, "--action", "flag",
                   "--decision-log", str(tmp_path / "d.jsonl")])
    finally:
        writer.kill()  # the halt is reported; the rest of the run is not needed
        writer.wait(timeout=30)
    out = capsys.readouterr().out
    assert rc == EXIT_HALTED, out
    assert "MLFLOW_ALLOW_FILE_STORE=true: set for this watcher's own client" in out
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # restored when the watch ended
    _check_decisions(tmp_path / "d.jsonl", tmp_path / "d.jsonl.state.json",
                     verl_records(total_steps=200))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    _assert_tags_and_running(MlflowClient(tracking_uri=str(store)), run_id, "flagged")


def test_server_that_is_down_fails_after_bounded_retries(tmp_path, capsys):
    from _local_servers import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    rc = main(["watch", f"mlflow://runs/{'a' * 32}", "--tracking-uri", uri, "--interval",
               "0.05", "--max-failures", "2", "--timeout", "60",
               "--decision-log", str(tmp_path / "d.jsonl")])
    elapsed = time.monotonic() - t0
    out = capsys.readouterr().out
    assert rc == EXIT_FAILED
    assert "could not be read 2 polls in a row" in out and "poll failed (1 of 2" in out
    assert 1.0 <= elapsed < 30  # one retry after a back-off of >= 1 s: no busy loop


def test_run_that_does_not_exist_fails_at_once(tmp_path, sqlite_tracking_uri, capsys):
    rc = main(["watch", f"mlflow://runs/{'b' * 32}", "--tracking-uri", sqlite_tracking_uri,
               "--interval", "0.05", "--timeout", "60",
               "--decision-log", str(tmp_path / "d.jsonl")])
    out = capsys.readouterr().out
    assert rc == EXIT_FAILED
    assert f"MLflow run '{'b' * 32}' does not exist" in out and "poll failed" not in out
