"""MLflow runs written by the tests into a sqlite store and a real `mlflow server`, read back."""

from __future__ import annotations

import numpy as np
import pytest

from satmon.analysis import read_run, read_runs
from satmon.cli import main

STEPS = list(range(1, 41))
REWARD = [0.1 + 0.8 * (1 - 0.9 ** s) + 1e-7 * s for s in STEPS]  # full float64 precision
HELD = {s: 0.2 + 0.01 * s + 1e-9 for s in range(0, 41, 10)}


def _log_verl_run(client, experiment_id, *, name, resumed=False, at_spelling=True):
    """A verl-style run as verl's MLflow logger writes it (``@`` becomes ``_at_``)."""
    from mlflow.entities import Metric

    run = client.create_run(experiment_id, run_name=name)
    rid = run.info.run_id
    held_key = ("val-core/openai/gsm8k/reward/mean_at_1" if at_spelling
                else "val/test_score/openai/gsm8k")
    ts = 1_700_000_000_000
    metrics = []
    for s in STEPS:
        ts += 1000
        metrics += [Metric("critic/score/mean", REWARD[s - 1], ts, s),
                    Metric("actor/entropy", 0.5 - 0.01 * s, ts, s),
                    Metric("response_length/mean", 100.0 + s, ts, s)]
    for s, v in HELD.items():
        ts += 1000
        metrics.append(Metric(held_key, v, ts, s))
    if resumed:
        # The resumed job logs steps 31..35 again, later in time, with new values.
        for s in range(31, 36):
            ts += 1000
            metrics.append(Metric("critic/score/mean", REWARD[s - 1] + 0.05, ts, s))
    client.log_batch(rid, metrics=metrics)
    client.set_terminated(rid)
    return rid


def _check(run, *, resumed=False):
    expected = np.array(REWARD)
    if resumed:
        expected[30:35] += 0.05
    assert run.train_reward.steps.tolist() == STEPS
    # Exact: MLflow stores float64, nothing is rounded on the way.
    assert run.train_reward.values.tolist() == expected.tolist()
    held = run.heldout["openai/gsm8k"]
    assert held.steps.tolist() == sorted(HELD)
    assert held.values.tolist() == [HELD[s] for s in sorted(HELD)]
    assert run.aux["entropy"].values.tolist() == [0.5 - 0.01 * s for s in STEPS]
    assert run.metadata["format"] == "mlflow" and run.metadata["preset"] == "verl"


@pytest.fixture
def sqlite_runs(sqlite_tracking_uri):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_tracking_uri)
    exp = client.create_experiment("grpo-math")
    ids = [_log_verl_run(client, exp, name="seed0"),
           _log_verl_run(client, exp, name="seed1-resumed", resumed=True),
           _log_verl_run(client, exp, name="old-keys", at_spelling=False)]
    other = client.create_experiment("scratch")
    empty = client.create_run(other, run_name="crashed-before-logging").info.run_id
    return sqlite_tracking_uri, ids, empty


@pytest.mark.slow
def test_sqlite_store_runs_read_back_exactly(sqlite_runs):
    uri, (rid, resumed_id, old_id), empty_id = sqlite_runs
    run = read_run(f"mlflow://runs/{rid}?tracking_uri={uri}")
    _check(run)
    assert run.name == "seed0" and run.metadata["run_id"] == rid
    assert run.metadata["keys"]["heldout_keys"] == {
        "openai/gsm8k": "val-core/openai/gsm8k/reward/mean_at_1"}
    assert run.metadata["experiment_name"] == "grpo-math"
    # The same run by MLflow's own URI, by bare id with tracking_uri=, and from the env var.
    assert read_run(f"runs:/{rid}", tracking_uri=uri).train_reward.values.tolist() == \
        run.train_reward.values.tolist()
    assert read_run(rid, tracking_uri=uri, name="x").name == "x"
    resumed = read_run(f"mlflow://runs/{resumed_id}", tracking_uri=uri)
    _check(resumed, resumed=True)
    assert resumed.train_reward.cleaning.duplicate_steps == (31, 32, 33, 34, 35)
    _check(read_run(f"mlflow://runs/{old_id}", tracking_uri=uri))

    runs = read_runs(f"mlflow://experiments/grpo-math?tracking_uri={uri}")
    assert [r.name for r in runs] == ["seed0", "seed1-resumed", "old-keys"]
    runs = read_runs("grpo-math", format="mlflow", tracking_uri=uri)
    assert len(runs) == 3
    with pytest.raises(ValueError, match="holds 3 runs"):
        read_run("mlflow://experiments/grpo-math", tracking_uri=uri)
    # The store file itself: every readable run of every experiment; the empty run is skipped.
    store = uri[len("sqlite:///"):]
    assert sorted(r.name for r in read_runs(store)) == ["old-keys", "seed0", "seed1-resumed"]
    with pytest.raises(KeyError, match="No training-reward key found.*Keys found \\(0\\)"):
        read_run(f"mlflow://runs/{empty_id}", tracking_uri=uri)


@pytest.mark.slow
def test_mlflow_errors(sqlite_runs, monkeypatch):
    uri, (rid, _, _), _ = sqlite_runs
    with pytest.raises(KeyError) as err:
        read_run(f"mlflow://runs/{rid}", tracking_uri=uri, heldout_keys=["val-core/math/acc"])
    msg = err.value.args[0]
    assert "'val-core/math/acc' is not in the log" in msg
    assert "'actor/entropy', 'critic/score/mean', 'response_length/mean', " \
           "'val-core/openai/gsm8k/reward/mean_at_1'" in msg
    with pytest.raises(ValueError, match="MLflow run '0{32}' not found at tracking URI sqlite"):
        read_run("0" * 32, tracking_uri=uri)
    with pytest.raises(ValueError, match="experiment 'nope' not found.*\\['Default', "
                                         "'grpo-math', 'scratch'\\]"):
        read_runs("mlflow://experiments/nope", tracking_uri=uri)
    with pytest.raises(ValueError, match="Unrecognised MLflow reference"):
        read_run("mlflow://models/x")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert read_run(f"runs:/{rid}").metadata["tracking_uri"] == uri


@pytest.mark.slow
def test_metric_logged_without_steps(sqlite_tracking_uri):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_tracking_uri)
    rid = client.create_run(client.create_experiment("nosteps")).info.run_id
    for v in (0.1, 0.2, 0.3):
        client.log_metric(rid, "reward", v)
    with pytest.raises(ValueError, match="'reward' has 3 values, all at step 0"):
        read_run(f"runs:/{rid}", tracking_uri=sqlite_tracking_uri)


@pytest.mark.slow
def test_real_server_round_trip(mlflow_server, capsys):
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    exp = client.create_experiment("server-readers")
    rid = _log_verl_run(client, exp, name="served")
    # TRL-style keys through the server too.
    trl = client.create_run(exp, run_name="trl").info.run_id
    for s in STEPS:
        client.log_batch(trl, metrics=[Metric("reward", REWARD[s - 1], 1000 * s, s),
                                       Metric("completions/mean_length", 50.0 + s, 1000 * s, s)])
    client.log_batch(trl, metrics=[Metric("eval_rewards/accuracy/mean", v, 1000 * s + 1, s)
                                   for s, v in HELD.items()])

    run = read_run(f"mlflow://runs/{rid}?tracking_uri={mlflow_server.uri}")
    _check(run)
    assert run.metadata["tracking_uri"] == mlflow_server.uri
    trl_run = read_run(trl, tracking_uri=mlflow_server.uri)
    assert trl_run.metadata["preset"] == "trl"
    assert trl_run.train_reward.values.tolist() == REWARD
    assert trl_run.heldout["accuracy"].values.tolist() == [HELD[s] for s in sorted(HELD)]
    assert trl_run.aux["response_length"].steps.tolist() == STEPS
    assert len(read_runs("server-readers", format="mlflow", tracking_uri=mlflow_server.uri)) == 2

    assert main(["analyze", f"mlflow://runs/{rid}", "--tracking-uri", mlflow_server.uri]) == 0
    assert "t_sat" in capsys.readouterr().out
