"""A GRPO run logging through SaturationCallback to a real `mlflow server` that goes down
mid-run and comes back: training never waits, and every satmon metric ends up in the run."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("trl")
mlflow = pytest.importorskip("mlflow")
from transformers import TrainerCallback  # noqa: E402

from _callback_lab import grpo_trainer, lab_job, short_monitor  # noqa: E402
from satmon.callbacks import SaturationCallback  # noqa: E402
from satmon.sinks import MlflowSink  # noqa: E402

pytestmark = pytest.mark.slow

DOWN_AT, UP_AT, MAX_STEPS = 10, 25, 40


class ServerFlap(TrainerCallback):
    """Stops the tracking server after step DOWN_AT and starts it again after step UP_AT."""

    def __init__(self, server):
        self.server = server
        self.step_seconds = {}
        self._last = None

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        if self._last is not None:
            self.step_seconds[state.global_step] = now - self._last
        if state.global_step == DOWN_AT:
            self.server.stop()
        elif state.global_step == UP_AT:
            self.server.start()
        self._last = time.monotonic()


def test_tracking_server_outage_mid_run_loses_nothing(restartable_mlflow_server, tmp_path,
                                                      monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    mlflow.set_tracking_uri(None)
    server = restartable_mlflow_server
    sink = MlflowSink(tracking_uri=server.uri, experiment_name="outage",
                      spool_dir=tmp_path / "spool", retry_interval_s=0.2,
                      max_retry_interval_s=1.0, close_timeout_s=60)
    job = lab_job("rule", seed=0)
    flap = ServerFlap(server)
    cb = SaturationCallback(short_monitor(), evaluator=job.evaluator(every=5), mlflow=sink)
    trainer = grpo_trainer(job, tmp_path / "run", max_steps=MAX_STEPS, callbacks=[flap, cb])
    trainer.train()

    assert trainer.state.global_step == MAX_STEPS
    assert sink.stats.failures > 0 and sink.stats.outages >= 1  # the outage was noticed
    assert sink.stats.pending == 0 and sink.stats.rejected == 0
    # Training did not wait for the dead server: steps during the outage took no longer than
    # a generous bound (a blocked request would take seconds per step).
    during = [flap.step_seconds[s] for s in range(DOWN_AT + 2, UP_AT)]
    assert max(during) < 3.0, during

    client = mlflow.MlflowClient(server.uri)
    run = client.get_run(sink.active_run_id)
    assert run.info.status == "FINISHED"
    for key, steps in (("satmon/p_saturated", range(0, MAX_STEPS + 1)),
                       ("satmon/train_reward", range(1, MAX_STEPS + 1)),
                       ("satmon/heldout/heldout", range(0, MAX_STEPS + 1, 5))):
        logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert logged == list(steps), key
    by_step = {m.step: m.value for m in client.get_metric_history(run.info.run_id,
                                                                  "satmon/heldout/heldout")}
    assert by_step == pytest.approx({r["step"]: r["heldout"]["heldout"] for r in cb.history
                                     if r["heldout"]})
    assert {"satmon/curves_end.png", "satmon/decisions.json"} <= {
        a.path for a in client.list_artifacts(run.info.run_id, "satmon")}
