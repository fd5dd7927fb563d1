"""SaturationCallback on real TRL GRPOTrainer runs (CPU, an ~84k-parameter local model).

The lab task answers 5-symbol prompts over "abcd". ``rule`` jobs (64 training prompts whose
answer is the last symbol) generalize: held-out accuracy climbs from chance with the training
reward. ``random`` jobs (8 training prompts with fixed random labels) can only memorize: the
reward reaches 1.0 while held-out accuracy stays at chance (0.25).
"""

from __future__ import annotations

import json
import logging
import math
import statistics

import numpy as np
import pytest

pytest.importorskip("trl")
mlflow = pytest.importorskip("mlflow")

from _callback_lab import grpo_trainer, lab_job, short_monitor  # noqa: E402
from satmon.callbacks import SaturationCallback  # noqa: E402
from satmon.decision import Reason  # noqa: E402
from satmon.lab.tasks import exact_match  # noqa: E402
from satmon.monitor import SaturationMonitor  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _isolated():
    """One torch thread (the same float results on every machine size) and no leftover
    process-global MLflow tracking URI from another test."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mlflow.set_tracking_uri(None)
    yield
    mlflow.set_tracking_uri(None)
    torch.set_num_threads(threads)


def _heldout_rows(cb):
    return [(r["step"], r["heldout"]["heldout"]) for r in cb.history if r["heldout"]]


def test_generalizing_run_reaches_its_last_step_and_mlflow_has_satmon_metrics(
        tmp_path, sqlite_tracking_uri, monkeypatch):
    # transformers' MLflowCallback opens the run (report_to=mlflow); satmon logs into it.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_tracking_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "generalizing")
    job = lab_job("rule", seed=0)
    cb = SaturationCallback(short_monitor(), action="halt_and_save",
                            evaluator=job.evaluator(every=5))
    trainer = grpo_trainer(job, tmp_path / "run", max_steps=60, callbacks=[cb],
                           report_to=["mlflow"])
    trainer.train()

    assert trainer.state.global_step == 60 and cb.halted_step is None
    assert all(r["action"] != "halt" for r in cb.history)
    held = _heldout_rows(cb)
    assert [s for s, _ in held] == list(range(0, 61, 5))
    assert held[-1][1] - held[0][1] > 0.3  # held-out accuracy climbed with the reward
    assert all(r["heldout_n"]["heldout"] == 256 for r in cb.history if r["heldout"])
    assert cb.heldout_source == "evaluator"

    client = mlflow.MlflowClient(sqlite_tracking_uri)
    exp = client.get_experiment_by_name("generalizing")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1  # satmon reused MLflowCallback's run, it did not open its own
    run = runs[0]
    assert "reward" in run.data.metrics  # TRL's metrics, through MLflowCallback
    from satmon.decision import METRICS

    # The documented metric set, no internals (verbose=False), and the config as params.
    satmon_keys = {k for k in run.data.metrics if k.startswith("satmon/")}
    expected = {f"satmon/{m}" for m in METRICS} | {"satmon/train_reward",
                                                   "satmon/heldout/heldout",
                                                   "satmon/heldout/heldout/n"}
    assert satmon_keys <= expected and len(satmon_keys) >= len(expected) - 4, satmon_keys
    assert {"satmon/p_heldout_gain", "satmon/halt", "satmon/flag"} <= satmon_keys
    assert not any("/z_" in k or "bocpd" in k or "weight/" in k for k in satmon_keys)
    assert run.data.params["satmon.total_steps"] == "60"
    assert run.data.params["satmon.risk"] and "satmon.min_heldout_gain" in run.data.params

    # satmon's own MLflow run reads back: its held-out series with the sample size, the
    # config and tags as metadata, and a replay with that config makes the live decisions.
    from satmon.analysis import read_run
    from satmon.analysis.report import replay_run

    back = read_run(f"mlflow://runs/{run.info.run_id}", tracking_uri=sqlite_tracking_uri)
    assert list(back.heldout) == ["heldout"] and back.heldout["heldout"].sample_size == 256
    np.testing.assert_allclose(back.heldout["heldout"].values, [v for _, v in held])
    assert back.metadata["satmon.action"] == "halt_and_save"
    assert back.metadata["monitor_config"]["total_steps"] == 60
    summary = replay_run(back)
    live_flags = [r["step"] for r in cb.history if r["action"] != "continue"]
    assert summary.halt_step is None and summary.flag_step == (live_flags[0] if live_flags
                                                                else None)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "satmon/heldout/heldout")]
    assert sorted(steps) == list(range(0, 61, 5))
    assert len(client.get_metric_history(run.info.run_id, "satmon/p_saturated")) == 61
    # Readable tags that never contradict each other: a regime is named once a reason is.
    decision, regime = run.data.tags["satmon.decision"], run.data.tags["satmon.regime"]
    assert decision == "continue" or decision.startswith("flag (")
    if decision == "continue":
        assert regime.startswith("undecided (leaning ")
    else:
        assert regime == decision[len("flag ("):-1]
    assert "satmon.t_sat_online_estimate" in run.data.tags and run.data.tags["satmon.action"] == "halt_and_save"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "satmon")}
    assert artifacts == {"satmon/curves_end.png", "satmon/decisions.json"}
    table = json.loads(open(client.download_artifacts(
        run.info.run_id, "satmon/decisions.json", str(tmp_path))).read())
    assert len(table["data"]) == 61


def test_memorizing_run_halts_memorizing_with_a_checkpoint(tmp_path, sqlite_tracking_uri):
    job = lab_job("random", seed=1)
    cb = SaturationCallback(short_monitor(), action="halt_and_save",
                            evaluator=job.evaluator(every=5),
                            mlflow={"tracking_uri": sqlite_tracking_uri,
                                    "experiment_name": "memorizing"})
    max_steps = 300
    # Seed 1 (one torch thread). Before Engine v2 a sweep over seeds 0-5 halted five of six
    # MEMORIZING at steps 155-205 of 300 and one SATURATED at 215; with the held-out gain
    # posterior the reward saturates early, so the halt is MEMORIZING (margin: 70% of the
    # budget).
    trainer = grpo_trainer(job, tmp_path / "run", max_steps=max_steps, callbacks=[cb], seed=1)
    trainer.train()

    halt = cb.halted_step
    assert halt is not None and halt <= 0.7 * max_steps, halt
    assert trainer.state.global_step == halt
    last = cb.decisions[-1]
    assert last.reason is Reason.MEMORIZING and last.action.value == "halt"
    assert "MEMORIZING" in last.message
    # Memorized: the training reward saturated, held-out accuracy sat at chance (0.25).
    rewards = [r["train_reward"] for r in cb.history if r["train_reward"] is not None]
    assert statistics.mean(rewards[-20:]) > 0.9
    held = [v for _, v in _heldout_rows(cb)]
    assert abs(statistics.mean(held) - 0.25) < 0.08
    # halt_and_save: a checkpoint at the halt step, with the engine state beside it.
    ckpt = tmp_path / "run" / f"checkpoint-{halt}"
    assert (ckpt / "model.safetensors").exists() and (ckpt / "satmon_state.json").exists()
    saved = json.loads((ckpt / "satmon_state.json").read_text())
    assert saved["step"] == halt and saved["stopped_step"] == halt
    assert saved["monitor"]["halted"]["reason"] == "memorizing"
    trainer_state = json.loads((ckpt / "trainer_state.json").read_text())
    assert trainer_state["stateful_callbacks"]["SaturationCallback"]["attributes"][
        "saved_step"] == halt

    client = mlflow.MlflowClient(sqlite_tracking_uri)
    run = client.get_run(_only_run(client, "memorizing"))
    assert run.info.status == "FINISHED"  # satmon opened this run, so satmon ended it
    assert run.data.tags["satmon.decision"] == "halt (memorizing)"
    assert run.data.tags["satmon.regime"] == "memorizing"
    assert run.data.tags["satmon.halt_step"] == str(halt)
    assert run.data.tags["satmon.halt_reason"] == "memorizing"
    assert "MEMORIZING" in run.data.tags["satmon.message"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "satmon")}
    assert {"satmon/curves_halt.png", "satmon/curves_end.png",
            "satmon/decisions.json"} <= artifacts


def _only_run(client, experiment):
    exp = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([exp.experiment_id])
    return run.info.run_id


def test_trl_eval_logs_as_the_heldout_source(tmp_path):
    job = lab_job("rule", seed=0)
    cb = SaturationCallback(short_monitor(), mlflow=False)
    trainer = grpo_trainer(job, tmp_path / "run", max_steps=20, callbacks=[cb], eval_steps=5,
                           eval_prompts=32)
    trainer.train()
    assert cb.heldout_source == "eval"
    held = [(r["step"], r["heldout"], r["heldout_n"]) for r in cb.history if r["heldout"]]
    assert [s for s, _, _ in held] == [5, 10, 15, 20]
    for _, values, sizes in held:
        assert set(values) == {"exact_match"} and 0.0 <= values["exact_match"] <= 1.0
        assert sizes == {"exact_match": 32}
    steps = [r["step"] for r in cb.history]
    assert steps == sorted(set(steps))  # one update per step: train and eval parts merged
    # The held-out values are TRL's own eval_rewards/exact_match/mean.
    logged = {h["step"]: h["eval_rewards/exact_match/mean"] for h in trainer.state.log_history
              if "eval_rewards/exact_match/mean" in h}
    assert {s: v["exact_match"] for s, v, _ in held} == pytest.approx(logged)


def test_reward_function_returning_none_or_nan_for_a_batch(tmp_path, caplog):
    job = lab_job("rule", seed=0)
    calls = {"n": 0}

    def sometimes_broken(prompts, completions, answer, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            return [None] * len(prompts)
        if calls["n"] == 5:
            return [math.nan] * len(prompts)
        return [exact_match(p, c, a) for p, c, a in zip(prompts, completions, answer)]

    cb = SaturationCallback(short_monitor(), action="halt", heldout="none",
                            keys={"train_key": "rewards/sometimes_broken/mean"}, mlflow=False)
    trainer = grpo_trainer(job, tmp_path / "run", max_steps=12, callbacks=[cb],
                           reward_funcs=[sometimes_broken])
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert trainer.state.global_step == 12 and cb.halted_step is None
    rewards = {r["step"]: r["train_reward"] for r in cb.history}
    assert rewards[3] is None and rewards[5] is None  # TRL logs None for an all-NaN metric
    assert all(v is not None and 0 <= v <= 1 for s, v in rewards.items() if s not in (3, 5))
    assert [r["action"] for r in cb.history] == ["continue"] * 12


def test_misspelled_key_raises_at_the_first_log_listing_the_keys(tmp_path):
    job = lab_job("rule", seed=0)
    cb = SaturationCallback(keys={"train_key": "rewrd"}, heldout="none", mlflow=False)
    trainer = grpo_trainer(job, tmp_path / "run", max_steps=5, callbacks=[cb])
    with pytest.raises(KeyError) as info:
        trainer.train()
    text = str(info.value)
    assert "'rewrd'" in text and "'reward'" in text and "'rewards/exact_match/mean'" in text
    assert trainer.state.global_step == 1


def test_misspelled_key_with_strict_false_warns_once_and_trains_on(tmp_path, caplog):
    job = lab_job("rule", seed=0)
    cb = SaturationCallback(keys={"train_key": "rewrd"}, heldout="none", strict=False,
                            mlflow=False)
    trainer = grpo_trainer(job, tmp_path / "run", max_steps=5, callbacks=[cb])
    with caplog.at_level(logging.WARNING, logger="satmon"):
        trainer.train()
    assert trainer.state.global_step == 5
    warnings = [r for r in caplog.records if "'rewrd'" in r.getMessage()]
    assert len(warnings) == 1 and "strict=False" in warnings[0].getMessage()
    assert cb.history == []  # no training-reward series, no held-out: nothing to monitor


def test_eval_never_configured(tmp_path, caplog):
    job = lab_job("rule", seed=0)
    strict = SaturationCallback(heldout="eval", mlflow=False)
    trainer = grpo_trainer(job, tmp_path / "a", max_steps=5, callbacks=[strict])
    with pytest.raises(ValueError, match="never evaluates"):
        trainer.train()
    assert trainer.state.global_step == 0  # before any compute was spent

    job = lab_job("rule", seed=0)
    auto = SaturationCallback(short_monitor(), mlflow=False)
    trainer = grpo_trainer(job, tmp_path / "b", max_steps=8, callbacks=[auto])
    with caplog.at_level(logging.WARNING, logger="satmon"):
        trainer.train()
    assert trainer.state.global_step == 8 and auto.heldout_source == "none"
    assert "no held-out source" in caplog.text
    assert len(auto.history) == 8 and all(not r["heldout"] for r in auto.history)


class _FailingMonitor(SaturationMonitor):
    """The real monitor, made to fail at step 4 (the engine is not supposed to, but may)."""

    def update(self, step, train_reward=None, *, heldout=None, aux=None):
        if step == 4:
            raise RuntimeError("engine bug")
        return super().update(step, train_reward, heldout=heldout, aux=aux)


def test_monitoring_failures_never_stop_training(tmp_path, caplog, monkeypatch):
    # An unreachable tracking server and an engine exception, in one run.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    from _local_servers import free_port

    job = lab_job("rule", seed=0)
    cb = SaturationCallback(_FailingMonitor(**short_monitor(total_steps=8)), action="halt",
                            evaluator=job.evaluator(every=4),
                            mlflow={"tracking_uri": f"http://127.0.0.1:{free_port()}",
                                    "close_timeout_s": 1.0, "retry_interval_s": 0.1})
    trainer = grpo_trainer(job, tmp_path / "run", max_steps=8, callbacks=[cb])
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert trainer.state.global_step == 8
    assert [r["step"] for r in cb.history] == [0, 1, 2, 3, 5, 6, 7, 8]
    assert "updating the monitor at step 4 failed" in caplog.text
    assert "is not answering" in caplog.text
    spools = list((tmp_path / "run" / "satmon-spool").glob("*.jsonl"))
    assert len(spools) == 1 and spools[0].read_text().count('"kind": "metrics"') == 8
