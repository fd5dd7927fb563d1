"""satmon.sinks.MlflowSink against a real sqlite store and a real `mlflow server`."""

from __future__ import annotations

import json
import time

import pytest

mlflow = pytest.importorskip("mlflow")

from satmon.sinks import MAX_KEY_LENGTH, MlflowSink, flush_spool, sanitize_key  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_tracking_uri():
    """mlflow.set_tracking_uri is process-global; no test inherits another's store."""
    mlflow.set_tracking_uri(None)
    yield
    mlflow.set_tracking_uri(None)


@pytest.fixture
def fast_http(monkeypatch):
    """MLflow's client retries a dead server for minutes by default; fail fast in tests."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.parametrize("raw, clean", [
    ("satmon/p_saturated", "satmon/p_saturated"),
    ("val-core/gsm8k/acc/mean@8", "val-core/gsm8k/acc/mean_at_8"),
    ("/a//b/", "a/b"),
    ("a/./b/../c", "a/_/b/_/c"),
    ("p(sat)=1?", "p_sat__1_"),
    ("time 1:2", "time 1:2"),
    ("", "_"),
    ("x" * 300, "x" * MAX_KEY_LENGTH),
])
def test_sanitize_key(raw, clean):
    assert sanitize_key(raw) == clean
    from mlflow.utils.validation import _validate_metric_name

    _validate_metric_name(clean)  # MLflow itself accepts the result


def test_sanitize_key_rejects_non_strings():
    with pytest.raises(TypeError, match="Metric keys must be strings"):
        sanitize_key(3)


def test_new_run_gets_metrics_tags_table_figure_and_is_ended(sqlite_tracking_uri, tmp_path):
    sink = MlflowSink(tracking_uri=sqlite_tracking_uri, experiment_name="satmon-tests",
                      run_name="sink", spool_dir=tmp_path / "spool").open()
    for step in range(1, 31):
        sink.log_metrics({"satmon/p@sat": step / 30, "satmon/nan": float("nan"),
                          "satmon/text": "x"}, step=step)
    sink.set_tags({"satmon.regime": "memorizing", "satmon.t_sat": 17})
    sink.log_table({"step": [1, 2], "action": ["continue", "halt"]}, "satmon/decisions.json")
    sink.log_table({"step": [3], "action": [float("nan")]}, "satmon/decisions.json")
    mfig = pytest.importorskip("matplotlib.figure")
    fig = mfig.Figure()
    fig.add_subplot(1, 1, 1).plot([0, 1], [0, 1])
    sink.log_figure(fig, "satmon/curves.png")
    assert sink.close() is True
    assert sink.stats.sent == sink.stats.recorded == 30 + 1 + 2 + 1
    assert sink.stats.failures == 0 and sink.stats.pending == 0

    client = mlflow.MlflowClient(sqlite_tracking_uri)
    run = client.get_run(sink.active_run_id)
    assert sink.owns_run and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "satmon-tests"
    assert _history(client, run.info.run_id, "satmon/p_at_sat") == [
        (s, pytest.approx(s / 30)) for s in range(1, 31)]
    assert "satmon/nan" not in run.data.metrics and "satmon/text" not in run.data.metrics
    assert run.data.tags["satmon.regime"] == "memorizing" and run.data.tags["satmon.t_sat"] == "17"
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "satmon")}
    assert paths == {"satmon/curves.png", "satmon/decisions.json"}
    table = json.loads(open(client.download_artifacts(run.info.run_id, "satmon/decisions.json",
                                                      str(tmp_path))).read())
    assert [row[0] for row in table["data"]] == [1, 2, 3]  # appended, not replaced
    assert table["data"][2][1] is None  # a NaN cell is stored as null
    assert list((tmp_path / "spool").iterdir()) == []  # nothing left to resend


def test_reuses_the_active_run_and_never_ends_it(sqlite_tracking_uri, tmp_path):
    mlflow.set_tracking_uri(sqlite_tracking_uri)
    with mlflow.start_run() as active:
        sink = MlflowSink(spool_dir=tmp_path).open()
        assert sink.active_run_id == active.info.run_id and not sink.owns_run
        sink.log_metrics({"satmon/x": 1.0}, step=1)
        assert sink.close()
        assert mlflow.MlflowClient().get_run(active.info.run_id).info.status == "RUNNING"
    run = mlflow.MlflowClient().get_run(active.info.run_id)
    assert run.data.metrics["satmon/x"] == 1.0


def test_honours_mlflow_env_vars(sqlite_tracking_uri, tmp_path, monkeypatch):
    client = mlflow.MlflowClient(sqlite_tracking_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_tracking_uri)

    # MLFLOW_RUN_ID: log into that run, leave it running.
    exp = client.create_experiment("given")
    given = client.create_run(exp)
    monkeypatch.setenv("MLFLOW_RUN_ID", given.info.run_id)
    sink = MlflowSink(spool_dir=tmp_path).open()
    sink.log_metrics({"satmon/a": 2.0}, step=3)
    assert sink.close() and sink.active_run_id == given.info.run_id and not sink.owns_run
    assert client.get_run(given.info.run_id).info.status == "RUNNING"
    monkeypatch.delenv("MLFLOW_RUN_ID")

    # MLFLOW_EXPERIMENT_NAME: a new run there, ended by the sink that created it.
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    sink = MlflowSink(spool_dir=tmp_path).open()
    sink.log_metrics({"satmon/a": 1.0}, step=1)
    assert sink.close()
    run = client.get_run(sink.active_run_id)
    assert client.get_experiment(run.info.experiment_id).name == "from-env"
    assert run.info.status == "FINISHED"

    # MLFLOW_NESTED_RUN with an active run: a child run of it.
    monkeypatch.setenv("MLFLOW_NESTED_RUN", "true")
    mlflow.set_tracking_uri(sqlite_tracking_uri)
    with mlflow.start_run() as parent:
        sink = MlflowSink(spool_dir=tmp_path).open()
        sink.log_metrics({"satmon/a": 1.0}, step=1)
        assert sink.close()
    child = client.get_run(sink.active_run_id)
    assert child.info.run_id != parent.info.run_id
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.status == "FINISHED"


def test_refused_records_are_set_aside_not_retried_forever(sqlite_tracking_uri, tmp_path):
    sink = MlflowSink(tracking_uri=sqlite_tracking_uri, run_id="0" * 32,
                      spool_dir=tmp_path).open()
    for step in range(3):
        sink.log_metrics({"satmon/x": float(step)}, step=step)
    start = time.monotonic()
    assert sink.close(timeout_s=30)
    assert time.monotonic() - start < 20
    assert sink.stats.rejected == 3 and sink.stats.sent == 0
    rejected = sink.path.with_name(sink.path.name + ".rejected.jsonl")
    lines = [json.loads(x) for x in rejected.read_text().splitlines()]
    assert [r["values"]["satmon/x"] for r in lines] == [0.0, 1.0, 2.0]
    assert all("error" in r for r in lines)


def test_open_is_required_and_validation(tmp_path):
    with pytest.raises(RuntimeError, match="call open"):
        MlflowSink().log_metrics({"a": 1.0}, step=1)
    with pytest.raises(ValueError, match="'retry_interval_s'"):
        MlflowSink(retry_interval_s=-1)
    sink = MlflowSink(tracking_uri=f"sqlite:///{tmp_path / 'x.db'}", spool_dir=tmp_path).open()
    with pytest.raises(ValueError, match="ending in .json"):
        sink.log_table({"a": [1]}, "table.csv")
    with pytest.raises(ValueError, match="equal length"):
        sink.log_table({"a": [1], "b": [1, 2]}, "t.json")
    sink.close()
    with pytest.raises(FileNotFoundError, match="No satmon MLflow spool"):
        flush_spool(tmp_path / "nothing.jsonl")


@pytest.mark.slow
def test_server_outage_spools_and_loses_nothing(restartable_mlflow_server, tmp_path, fast_http):
    server = restartable_mlflow_server
    sink = MlflowSink(tracking_uri=server.uri, experiment_name="outage", spool_dir=tmp_path,
                      retry_interval_s=0.2, max_retry_interval_s=1.0).open()
    for step in range(1, 11):
        sink.log_metrics({"satmon/value": step}, step=step)
    assert sink.flush(60)
    server.stop()
    start = time.monotonic()
    for step in range(11, 31):
        sink.log_metrics({"satmon/value": step}, step=step)
        sink.set_tags({"satmon.decision": f"continue-{step}"})
    # Recording never waits for the dead server.
    assert time.monotonic() - start < 1.0
    deadline = time.monotonic() + 30
    while sink.stats.failures == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sink.stats.failures > 0 and sink.stats.outages == 1
    assert sink.stats.pending > 0 and sink.path.exists()
    server.start()
    assert sink.flush(60)
    client = mlflow.MlflowClient(server.uri)
    assert _history(client, sink.active_run_id, "satmon/value") == [
        (s, float(s)) for s in range(1, 31)]
    assert client.get_run(sink.active_run_id).data.tags["satmon.decision"] == "continue-30"

    # A second outage that outlasts the sink (the training process ends while the server is
    # down): the records stay in the spool file, and flush_spool sends them later from it.
    server.stop()
    for step in range(31, 36):
        sink.log_metrics({"satmon/value": step}, step=step)
    assert sink.close(timeout_s=2) is False
    assert sink.stats.pending == 5 and sink.path.exists()
    server.start()
    stats = flush_spool(sink.path)
    assert stats.pending == 0 and stats.sent == 5
    assert _history(client, sink.active_run_id, "satmon/value") == [
        (s, float(s)) for s in range(1, 36)]
    assert client.get_run(sink.active_run_id).info.status == "FINISHED"
