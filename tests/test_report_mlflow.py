"""Reports attached to MLflow runs: sqlite store and a real tracking server, never ending a
run satmon did not start."""

from __future__ import annotations

import pytest

from satmon import Run
from satmon.analysis.report import build_report
from satmon.analysis.report_mlflow import DEFAULT_EXPERIMENT, log_report_to_mlflow
from satmon.cli import main

mlflow = pytest.importorskip("mlflow")


def ramp_log(path, t_full=60, total=150):
    lines = ["step,metric,value"]
    lines += [f"{s},train_reward,{min(1.0, s / t_full):.6f}" for s in range(1, total + 1)]
    lines += [f"{s},heldout_acc,{0.2 + s / 1000:.4f}" for s in range(0, total + 1, 25)]
    path.write_text("\n".join(lines) + "\n")
    return path


def artifact_names(client, run_id, folder="satmon-report"):
    return sorted(a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, folder))


@pytest.fixture
def store(tmp_path, sqlite_tracking_uri, monkeypatch):
    # A sqlite store puts artifacts under ./mlruns: keep them in the test's folder.
    monkeypatch.chdir(tmp_path)
    client = mlflow.MlflowClient(tracking_uri=sqlite_tracking_uri)
    exp = client.create_experiment("training", artifact_location=str(tmp_path / "artifacts"))
    return sqlite_tracking_uri, client, exp


def test_attach_to_an_explicit_run_leaves_it_running(tmp_path, store, capsys):
    uri, client, exp = store
    run_id = client.create_run(exp).info.run_id
    log = ramp_log(tmp_path / "run.csv")
    out = tmp_path / "rep"
    assert main(["report", str(log), "--out", str(out), "--no-replay", "--log-to-mlflow",
                 "--run-id", run_id, "--tracking-uri", uri, "--format", "html,csv"]) == 0
    assert f"attached 2 file(s) to MLflow run {run_id}" in capsys.readouterr().out
    assert artifact_names(client, run_id) == ["report.csv", "report.html"]
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"  # not ours to end
    assert run.data.tags["satmon.report.runs"] == "1"
    assert run.data.tags["satmon.report.saturated"] == "1"


def test_attach_by_environment(tmp_path, store, monkeypatch, capsys):
    uri, client, exp = store
    run_id = client.create_run(exp).info.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    out = tmp_path / "rep"
    assert main(["report", str(ramp_log(tmp_path / "a.csv")), "--out", str(out),
                 "--no-replay", "--log-to-mlflow", "--format", "md"]) == 0
    assert artifact_names(client, run_id) == ["report.md"]
    assert client.get_run(run_id).info.status == "RUNNING"


def test_new_run_is_created_and_finished(tmp_path, store, monkeypatch, capsys):
    uri, client, _ = store
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "reports")
    out = tmp_path / "rep"
    assert main(["report", str(ramp_log(tmp_path / "a.csv")), "--out", str(out), "--no-replay",
                 "--log-to-mlflow", "--tracking-uri", uri, "--format", "csv"]) == 0
    assert "[new run]" in capsys.readouterr().out
    exp = client.get_experiment_by_name("reports")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"  # satmon made it, satmon ends it
    assert artifact_names(client, run.info.run_id) == ["report.csv"]
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    att = log_report_to_mlflow([out / "report.csv"], tracking_uri=uri)
    assert att.created_run and client.get_experiment_by_name(DEFAULT_EXPERIMENT) is not None


def test_active_run_of_the_process(tmp_path, store):
    uri, client, exp = store
    mlflow.set_tracking_uri(uri)
    rep = build_report([Run(train_reward=(range(1, 100), [0.5] * 99), name="r")], replay=False)
    files = rep.write(tmp_path / "rep", formats=["md", "json"])
    with mlflow.start_run(experiment_id=exp) as active:
        att = log_report_to_mlflow(files, report=rep)
        assert att.run_id == active.info.run_id and not att.created_run
        assert mlflow.active_run().info.run_id == active.info.run_id  # still active
    assert artifact_names(client, active.info.run_id) == ["report.json", "report.md"]


def test_unknown_run_and_missing_files(tmp_path, store, capsys):
    uri, client, _ = store
    out = tmp_path / "rep"
    assert main(["report", str(ramp_log(tmp_path / "a.csv")), "--out", str(out), "--no-replay",
                 "--log-to-mlflow", "--run-id", "0" * 32, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert f"MLflow run '{'0' * 32}' was not found at tracking URI '{uri}'" in err
    with pytest.raises(FileNotFoundError, match="do not exist"):
        log_report_to_mlflow([tmp_path / "nope.html"], tracking_uri=uri)


def test_report_over_runs_read_from_the_store(tmp_path, store, capsys):
    """Runs logged to MLflow by a TRL-style trainer come back as report rows."""
    uri, client, exp = store
    for n, t_full in (("fast", 40), ("slow", 100)):
        run_id = client.create_run(exp, run_name=n).info.run_id
        for s in range(1, 161):
            client.log_metric(run_id, "reward", min(1.0, s / t_full), step=s)
        for s in range(0, 161, 20):
            client.log_metric(run_id, "eval_rewards/accuracy/mean", 0.1 + s / 800, step=s)
        client.set_terminated(run_id)
    out = tmp_path / "rep"
    assert main(["report", "mlflow://experiments/training", "--tracking-uri", uri,
                 "--out", str(out), "--format", "csv", "--no-replay"]) == 0
    import csv

    rows = {r["run"]: r for r in csv.DictReader(open(out / "report.csv"))}
    assert {k: v["t_sat"] for k, v in rows.items()} == {"fast": "40", "slow": "99"}
    assert {v["heldout"] for v in rows.values()} == {"accuracy"}
    printed = capsys.readouterr().out
    assert "satmon report: 2 run(s), 2 saturated" in printed


@pytest.mark.slow
def test_attach_to_a_run_on_a_tracking_server(tmp_path, mlflow_server, capsys):
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.uri)
    exp = client.create_experiment(f"report-{tmp_path.name}")
    run_id = client.create_run(exp).info.run_id
    out = tmp_path / "rep"
    assert main(["report", str(ramp_log(tmp_path / "a.csv")), "--out", str(out), "--no-replay",
                 "--log-to-mlflow", "--run-id", run_id, "--tracking-uri", mlflow_server.uri,
                 "--format", "html,csv"]) == 0
    assert artifact_names(client, run_id) == ["report.csv", "report.html"]
    assert client.get_run(run_id).info.status == "RUNNING"
    # The HTML artifact served back by the server is the self-contained page that was written.
    local = client.download_artifacts(run_id, "satmon-report/report.html", str(tmp_path / "dl"))
    assert open(local).read() == (out / "report.html").read_text()
