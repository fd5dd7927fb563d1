"""Faults injected for real into the MLflow sink and the MLflow reader (issue "Reliability").

How each fault is made, with real components (these tests run as root in CI, where a chmod
does not stop a write):

* a **full disk**: the spool file and the temporary file its ``.ack`` is written through become
  symlinks to ``/dev/full``, so every write the sink makes there fails with the kernel's own
  ``ENOSPC``; the spool's earlier content is set aside meanwhile and put back when the disk is
  "freed" (the sink only ever appends to that file or removes it);
* an **unwritable spool folder**: the folder's path (or its parent's) is a regular file, so
  every write under it fails with ``ENOTDIR``;
* a **server that is down**: the real ``mlflow server`` of ``restartable_mlflow_server`` is
  stopped and started again;
* a **server that accepts and never answers**: a socket on 127.0.0.1 that accepts connections
  and never sends a byte;
* a **tampered spool**: lines written by hand next to valid ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from satmon.sinks import MAX_SEND_ATTEMPTS, MlflowSink, flush_spool  # noqa: E402

N_KEYS = 30
KEYS = [f"satmon/metric_{i:02d}" for i in range(N_KEYS)]


@pytest.fixture
def fast_http(monkeypatch):
    """MLflow's client retries a dead server for minutes by default; fail fast in tests."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


@contextlib.contextmanager
def full_disk(spool: Path):
    """Every write the sink makes to ``spool`` or its ``.ack`` fails with a real ENOSPC."""
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is needed to inject a real ENOSPC")
    saved = spool.with_name(spool.name + ".set-aside")
    ack_tmp = spool.with_name(spool.name + ".ack.tmp")
    spool.rename(saved)
    os.symlink("/dev/full", spool)
    ack_tmp.unlink(missing_ok=True)
    os.symlink("/dev/full", ack_tmp)
    try:
        yield
    finally:
        if ack_tmp.is_symlink():
            ack_tmp.unlink()
        if spool.is_symlink():
            # Free the disk: the spool's content as it was when the disk filled comes back.
            spool.unlink()
            saved.rename(spool)
        else:
            # The sink sent everything and removed the spool: the set-aside lines were sent.
            saved.unlink()


def _log_steps(sink, steps):
    for step in steps:
        sink.log_metrics({k: step + i / 100 for i, k in enumerate(KEYS)}, step=step)


def _expected(steps, i):
    return [(s, pytest.approx(s + i / 100)) for s in steps]


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def _messages(caplog, text):
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def _experiment(uri, name, tmp_path):
    """An experiment whose artifacts live in the test's folder (not ./mlruns)."""
    client = mlflow.MlflowClient(uri)
    client.create_experiment(name, artifact_location=(tmp_path / "artifacts").as_uri())
    return client


# -- 1. full or unwritable disk under the spool -------------------------------------------


def _sink_in_an_outage(server, tmp_path, experiment: str) -> MlflowSink:
    """A sink that sent step 0, then spooled steps 1..60 while the server was down."""
    sink = MlflowSink(tracking_uri=server.uri, experiment_name=experiment,
                      spool_dir=tmp_path / "spool", retry_interval_s=0.2,
                      max_retry_interval_s=1.0).open()
    _log_steps(sink, [0])
    assert sink.flush(60)
    server.stop()
    _log_steps(sink, range(1, 61))
    assert _wait_for(lambda: sink.stats.failures > 0)
    return sink


@pytest.mark.slow
def test_full_spool_disk_during_an_outage_loses_no_metric(restartable_mlflow_server, tmp_path,
                                                          fast_http, caplog):
    """60 steps x 30 metrics spooled while the server is down, then the disk fills, 20 more
    steps, the server comes back (disk still full): all 81 steps reach MLflow, counted right."""
    server = restartable_mlflow_server
    sink = _sink_in_an_outage(server, tmp_path, "disk-full")
    assert len(sink.path.read_text().splitlines()) == 60
    with caplog.at_level(logging.WARNING, logger="satmon.sinks"), full_disk(sink.path):
        _log_steps(sink, range(61, 81))
        assert (sink.stats.pending, sink.stats.kept, sink.stats.unspooled) == (80, 60, 20)
        server.start()
        # 1800 metrics need two requests of at most 1000: the .ack cannot be written after
        # the first, and the sender goes on.
        assert sink.flush(90)
        assert sink.stats.sent == 81 and sink.stats.pending == 0
        _log_steps(sink, [81])  # the sender thread is still there
        assert sink.flush(30)
    assert sink.close() is True
    assert sink.stats.sent == sink.stats.recorded == 82
    assert (sink.stats.unspooled, sink.stats.lost, sink.stats.rejected) == (20, 0, 0)
    spool_errors = _messages(caplog, "cannot write the MLflow spool")
    assert len(spool_errors) == 1 and "No space left on device" in spool_errors[0]
    assert len(_messages(caplog, "cannot update the MLflow spool's acknowledgement")) == 1

    client = mlflow.MlflowClient(server.uri)
    for i, key in enumerate(KEYS):
        assert _history(client, sink.active_run_id, key) == _expected(range(82), i), key


@pytest.mark.slow
def test_full_disk_at_close_counts_kept_and_lost_records(restartable_mlflow_server, tmp_path,
                                                         fast_http, caplog):
    """The server is still down when the sink closes: the 60 spooled records are reported kept
    (and flush_spool later delivers them), the 20 held only in memory are reported lost."""
    server = restartable_mlflow_server
    sink = _sink_in_an_outage(server, tmp_path, "disk-full-close")
    with caplog.at_level(logging.WARNING, logger="satmon.sinks"):
        with full_disk(sink.path):
            _log_steps(sink, range(61, 81))
            assert sink.close(timeout_s=2) is False
        assert (sink.stats.sent, sink.stats.pending, sink.stats.kept, sink.stats.lost) == (
            1, 80, 60, 20)
        closing = _messages(caplog, "MLflow did not take")
        assert len(closing) == 1
        assert "MLflow did not take 80 records" in closing[0]
        assert f"60 are kept in {sink.path}" in closing[0]
        assert "20 could not be written to the spool (full or read-only disk) and are lost" \
            in closing[0]
        assert "80 are kept" not in closing[0] and "20 are kept" not in closing[0]

        server.start()
        stats = flush_spool(sink.path, retry_interval_s=0.2, max_retry_interval_s=1.0)
    assert (stats.sent, stats.pending, stats.skipped, stats.lost) == (60, 0, 0, 0)
    client = mlflow.MlflowClient(server.uri)
    for i, key in enumerate(KEYS):
        assert _history(client, sink.active_run_id, key) == _expected(range(61), i), key
    assert client.get_run(sink.active_run_id).info.status == "FINISHED"


def test_unwritable_spool_folder_at_open_buffers_in_memory(sqlite_tracking_uri, tmp_path,
                                                          caplog):
    """The spool folder's parent is a regular file: one warning, and MLflow still receives
    every metric, tag, table and figure."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    client = _experiment(sqlite_tracking_uri, "no-spool", tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file")
    with caplog.at_level(logging.WARNING, logger="satmon.sinks"):
        sink = MlflowSink(tracking_uri=sqlite_tracking_uri, experiment_name="no-spool",
                          spool_dir=blocker / "spool").open()
        assert sink.spool_usable is False
        _log_steps(sink, range(1, 26))
        sink.set_tags({"satmon.regime": "memorizing"})
        sink.log_table({"step": [1, 2], "action": ["continue", "halt"]},
                       "satmon/decisions.json")
        fig = Figure()
        fig.add_subplot(1, 1, 1).plot([0, 1], [0, 1])
        sink.log_figure(fig, "satmon/curves.png")
        assert sink.close() is True
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and r.name.startswith("satmon")]
    assert len(warnings) == 1, warnings
    assert "cannot use the MLflow spool" in warnings[0] and "Not a directory" in warnings[0]
    stats = sink.stats
    assert stats.sent == stats.recorded == stats.unspooled == 28
    assert (stats.kept, stats.lost, stats.pending, stats.rejected) == (0, 0, 0, 0)
    assert blocker.read_text() == "a regular file"

    run = client.get_run(sink.active_run_id)
    for i, key in enumerate(KEYS):
        assert _history(client, run.info.run_id, key) == _expected(range(1, 26), i), key
    assert run.data.tags["satmon.regime"] == "memorizing"
    assert {a.path for a in client.list_artifacts(run.info.run_id, "satmon")} == {
        "satmon/curves.png", "satmon/decisions.json"}


def test_spool_folder_unwritable_mid_run_keeps_the_sender_alive(sqlite_tracking_uri,
                                                                tmp_path, caplog):
    """The spool folder is replaced by a regular file mid-run: appends, .ack writes and the
    spool's removal all fail (ENOTDIR); the sender survives and every record arrives."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    client = _experiment(sqlite_tracking_uri, "ro-spool", tmp_path)
    folder = tmp_path / "spool"
    sink = MlflowSink(tracking_uri=sqlite_tracking_uri, experiment_name="ro-spool",
                      spool_dir=folder, retry_interval_s=0.05).open()
    _log_steps(sink, range(1, 11))
    assert sink.flush(30)
    folder.rename(tmp_path / "spool-moved")
    folder.write_text("")
    with caplog.at_level(logging.WARNING, logger="satmon.sinks"):
        for step in range(11, 41):
            _log_steps(sink, [step])
            sink.set_tags({"satmon.decision": f"continue-{step}"})
            if step % 10 == 0:
                assert sink.flush(30)  # drained spools that cannot be removed
        fig = Figure()
        fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
        sink.log_figure(fig, "satmon/curves.png")
        assert sink.close() is True
    stats = sink.stats
    assert stats.sent == stats.recorded == 10 + 30 * 2 + 1
    assert stats.unspooled == 30 * 2 + 1
    assert (stats.pending, stats.kept, stats.lost, stats.rejected) == (0, 0, 0, 0)
    assert len(_messages(caplog, "cannot write the MLflow spool")) == 1
    assert len(_messages(caplog, "cannot update the MLflow spool's acknowledgement")) == 1
    assert not _messages(caplog, "stopped unexpectedly")

    run = client.get_run(sink.active_run_id)
    for i, key in enumerate(KEYS):
        assert _history(client, run.info.run_id, key) == _expected(range(1, 41), i), key
    assert run.data.tags["satmon.decision"] == "continue-40"
    assert "satmon/curves.png" in {a.path for a in client.list_artifacts(run.info.run_id,
                                                                         "satmon")}


# -- 7. a tampered spool file ----------------------------------------------------------------


def test_tampered_spool_lines_are_skipped_counted_and_the_rest_delivered(
        sqlite_tracking_uri, tmp_path, caplog):
    client = mlflow.MlflowClient(sqlite_tracking_uri)
    # The store's artifact folder cannot be created (its parent is a regular file): every
    # upload of the figure fails the same way, which must not be retried forever.
    (tmp_path / "blocked").write_text("a regular file")
    exp_id = client.create_experiment(
        "tampered", artifact_location=(tmp_path / "blocked" / "artifacts").as_uri())
    run_id = client.create_run(exp_id).info.run_id
    spool = tmp_path / "mlflow-spool-tampered.jsonl"
    spool.with_name(spool.name + ".meta.json").write_text(json.dumps(
        {"tracking_uri": sqlite_tracking_uri, "run_id": run_id, "owned": True,
         "parent_run_id": None}))
    figure = spool.with_name(spool.name + "-artifacts") / "0123456789ab" / "curves.png"
    figure.parent.mkdir(parents=True)
    figure.write_bytes(b"\x89PNG not really")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for MLflow")
    ts = 1_700_000_000_000

    def metrics(seq, step, values):
        return json.dumps({"seq": seq, "kind": "metrics", "step": step, "ts": ts + seq,
                           "values": values})

    def artifact(seq, local):
        return json.dumps({"seq": seq, "kind": "artifact", "local_path": str(local),
                           "artifact_path": "satmon"})

    lines = [
        metrics(1, 1, {"satmon/x": 1.0}),
        json.dumps({"seq": 2, "step": 2, "ts": ts, "values": {"satmon/x": 2.0}}),  # no kind
        metrics(3, 3, "3.0"),                                          # values not an object
        json.dumps([1, 2, 3]),                                         # a JSON list
        '{"seq": 5, "kind": "metrics", "st',                           # truncated
        json.dumps({"seq": 6, "kind": "tags", "tags": {"satmon.ok": "yes"}}),
        metrics(7, 7, {"bad//key": 7.0}),                              # MLflow refuses
        artifact(8, figure),                                           # upload always fails
        metrics(9, 9, {"satmon/x": 9.0}),
        metrics(1, 1, {"satmon/x": 100.0}),                            # repeated seq
        artifact(11, secret),                                          # not the sink's file
        artifact(12, figure.parent / ".." / ".." / "secret.txt"),     # escapes the folder
    ]
    spool.write_text("\n".join(lines) + "\n")

    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="satmon.sinks"):
        stats = flush_spool(spool, timeout_s=60, retry_interval_s=0.05,
                            max_retry_interval_s=0.2)
    assert time.monotonic() - start < 30
    assert stats.skipped == 7
    assert (stats.recorded, stats.sent, stats.rejected, stats.pending) == (5, 3, 2, 0)
    # The figure: MAX_SEND_ATTEMPTS tries, then set aside with the refused record.
    assert stats.failures == MAX_SEND_ATTEMPTS - 1
    assert len(_messages(caplog, "failed (")) == MAX_SEND_ATTEMPTS - 1
    skipped = _messages(caplog, "unreadable or invalid lines")
    assert len(skipped) == 1
    assert f"skipped 7 unreadable or invalid lines of spool {spool}" in skipped[0]
    for reason in ("line 2: no 'kind'", "line 3: 'values' is not an object",
                   "line 4: a JSON list", "line 5: not valid JSON", "line 10: repeats seq 1"):
        assert reason in skipped[0]
    assert "the other 5 unsent records are sent" in skipped[0]

    assert _history(client, run_id, "satmon/x") == [(1, 1.0), (9, 9.0)]
    run = client.get_run(run_id)
    assert run.data.tags["satmon.ok"] == "yes" and run.info.status == "FINISHED"
    rejected = spool.with_name(spool.name + ".rejected.jsonl").read_text().splitlines()
    assert [json.loads(r)["seq"] for r in rejected] == [7, 8]
    assert not spool.exists()  # delivered: the spool is gone
    assert secret.read_text() == "not for MLflow" and figure.exists()


def test_a_sink_continuing_a_tampered_spool_keeps_sending(sqlite_tracking_uri, tmp_path,
                                                         caplog):
    """A live sink on a spool with bad lines: the good old record and the new ones arrive."""
    client = _experiment(sqlite_tracking_uri, "continue", tmp_path)
    run_id = client.create_run(client.get_experiment_by_name("continue").experiment_id
                               ).info.run_id
    spool = tmp_path / "spool.jsonl"
    spool.write_text("\n".join([
        json.dumps({"seq": 1, "kind": "metrics", "step": 1, "ts": 1, "values": {"a": 1.0}}),
        json.dumps({"seq": 2, "values": {"a": 2.0}}),
        json.dumps({"seq": 3, "kind": "metrics", "step": 3, "ts": 3,
                    "values": {"a": float("nan")}}),  # NaN: Python's json reads it
        "null",
    ]) + "\n")
    with caplog.at_level(logging.WARNING, logger="satmon.sinks"):
        sink = MlflowSink(tracking_uri=sqlite_tracking_uri, run_id=run_id,
                          spool_path=spool).open()
        for step in range(4, 7):
            sink.log_metrics({"a": float(step)}, step=step)
        assert sink.close() is True
    assert (sink.stats.skipped, sink.stats.sent, sink.stats.recorded) == (3, 4, 4)
    assert _history(client, run_id, "a") == [(1, 1.0), (4, 4.0), (5, 5.0), (6, 6.0)]
    assert len(_messages(caplog, f"skipped 3 unreadable or invalid lines of spool {spool}")) == 1


# -- a tracking server that accepts and never answers ---------------------------------------


def test_recording_never_waits_for_a_server_that_never_answers(silent_server, tmp_path,
                                                               monkeypatch):
    # Longer than the test: the sender stays stuck in its request the whole time.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    sink = MlflowSink(tracking_uri=silent_server.uri, experiment_name="hung",
                      spool_dir=tmp_path / "spool").open()
    durations = []
    for step in range(200):
        start = time.monotonic()
        sink.log_metrics({k: float(step) for k in KEYS[:5]}, step=step)
        durations.append(time.monotonic() - start)
    assert _wait_for(lambda: len(silent_server.connections) >= 1, timeout=10)
    assert sum(durations) < 2.0 and max(durations) < 0.5, (sum(durations), max(durations))
    start = time.monotonic()
    assert sink.close(timeout_s=1) is False
    assert time.monotonic() - start < 3.0
    assert (sink.stats.sent, sink.stats.pending, sink.stats.kept, sink.stats.lost) == (
        0, 200, 200, 0)
    assert len(sink.path.read_text().splitlines()) == 200


# -- 8b. reading from a server that accepts and never answers --------------------------------


@pytest.mark.slow
def test_reading_from_a_server_that_never_answers_fails_within_the_default_timeout(
        silent_server, monkeypatch):
    from satmon.analysis import read_run
    from satmon.analysis.readers.tracking import (DEFAULT_REQUEST_MAX_RETRIES,
                                                  DEFAULT_REQUEST_TIMEOUT_S,
                                                  TrackingServerError)

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    ref = f"mlflow://runs/{'a' * 32}"
    start = time.monotonic()
    with pytest.raises(TrackingServerError) as err:
        read_run(f"{ref}?tracking_uri={silent_server.uri}")
    elapsed = time.monotonic() - start
    assert elapsed < 30
    # One request and its one retry, each waited for the whole timeout.
    attempts = DEFAULT_REQUEST_MAX_RETRIES + 1
    assert elapsed >= attempts * DEFAULT_REQUEST_TIMEOUT_S - 1
    assert len(silent_server.connections) == attempts
    assert str(err.value) == (
        f"MLflow tracking server at {silent_server.uri} did not answer within "
        f"{DEFAULT_REQUEST_TIMEOUT_S} s (MLFLOW_HTTP_REQUEST_TIMEOUT={DEFAULT_REQUEST_TIMEOUT_S}, "
        f"MLFLOW_HTTP_REQUEST_MAX_RETRIES={DEFAULT_REQUEST_MAX_RETRIES}) while reading {ref}. "
        "Check that the server is up and answering; to wait longer, raise "
        "MLFLOW_HTTP_REQUEST_TIMEOUT.")
    assert isinstance(err.value, ConnectionError) and isinstance(err.value, ValueError)
    # The reader's defaults applied to its own requests only.
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_cli_analyze_of_a_silent_server_reports_the_timeout(silent_server, monkeypatch,
                                                           capsys):
    from satmon.cli import main

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    start = time.monotonic()
    code = main(["analyze", "mlflow://experiments/grpo", "--tracking-uri", silent_server.uri])
    assert time.monotonic() - start < 10
    assert code == 2
    err = capsys.readouterr().err
    assert f"MLflow tracking server at {silent_server.uri} did not answer within 1 s" in err
    assert "while reading mlflow://experiments/grpo" in err
    assert len(silent_server.connections) == 1


def test_reading_from_a_stopped_server_says_it_cannot_be_reached(monkeypatch):
    from _local_servers import free_port
    from satmon.analysis import read_run
    from satmon.analysis.readers.tracking import TrackingServerError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingServerError, match=f"MLflow tracking server at {uri} could not "
                                                  f"be reached .* while reading "
                                                  f"mlflow://runs/{'b' * 32}"):
        read_run(f"mlflow://runs/{'b' * 32}", tracking_uri=uri)
