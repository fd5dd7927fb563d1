"""Attach report files to an MLflow run.

Which run: an explicit ``run_id``; else the active run of this process (``mlflow.start_run``);
else ``MLFLOW_RUN_ID``; else a new run that satmon creates in ``MLFLOW_EXPERIMENT_NAME`` (default
``"satmon-reports"``) and finishes itself. A run satmon did not create is never ended: the files
go in through :class:`mlflow.MlflowClient`, which leaves run state alone. The tracking URI is the
``tracking_uri`` argument, else ``MLFLOW_TRACKING_URI``, else MLflow's default.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satmon._optional import require

DEFAULT_EXPERIMENT = "satmon-reports"


@dataclass(frozen=True)
class MlflowAttachment:
    """Where the report went: run id, tracking URI, artifact folder, whether satmon made the run."""

    run_id: str
    tracking_uri: str
    artifact_path: str
    created_run: bool
    files: tuple[str, ...]


def log_report_to_mlflow(
    files: Mapping[str, Path] | Iterable[str | Path],
    *,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    artifact_path: str = "satmon-report",
    report: Any = None,
) -> MlflowAttachment:
    """Log report files (and, given the report, its counts as tags) to an MLflow run.

    Parameters
    ----------
    files:
        Paths to attach (e.g. the ``{format: path}`` of :meth:`Report.write`).
    run_id:
        The target run; see the module docstring for the fallbacks.
    tracking_uri:
        Tracking server or store; default ``MLFLOW_TRACKING_URI`` / MLflow's default.
    artifact_path:
        Folder inside the run's artifacts.
    report:
        The :class:`~satmon.analysis.report.Report`, to tag the run with its counts.

    Returns
    -------
    An :class:`MlflowAttachment`.
    """
    mlflow = require("mlflow", feature="--log-to-mlflow")
    paths = [Path(p) for p in (files.values() if isinstance(files, Mapping) else files)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise FileNotFoundError(f"Report files to attach do not exist: {missing or 'none given'}.")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    uri = tracking_uri or mlflow.get_tracking_uri()
    created = False
    if run_id is None:
        active = mlflow.active_run()
        same_store = tracking_uri is None or tracking_uri == mlflow.get_tracking_uri()
        if active is not None and same_store:
            run_id = active.info.run_id
        else:
            run_id = os.environ.get("MLFLOW_RUN_ID") or None
    if run_id is None:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(name)
        run_id = client.create_run(exp_id, run_name="satmon-report").info.run_id
        created = True
    else:
        exceptions = require("mlflow.exceptions", feature="--log-to-mlflow")
        try:
            client.get_run(run_id)
        except exceptions.MlflowException as exc:
            raise ValueError(f"MLflow run '{run_id}' was not found at tracking URI '{uri}': "
                             f"{exc}") from None
    status = "FAILED"
    try:
        for p in paths:
            client.log_artifact(run_id, str(p), artifact_path)
        if report is not None:
            tags = {f"satmon.report.{k}": str(v) for k, v in report.counts().items()}
            tags["satmon.report.params"] = report.params.describe()
            for k, v in tags.items():
                client.set_tag(run_id, k, v)
        status = "FINISHED"
    finally:
        if created:
            # Only a run satmon created here is ended here.
            client.set_terminated(run_id, status=status)
    return MlflowAttachment(run_id=run_id, tracking_uri=uri, artifact_path=artifact_path,
                            created_run=created, files=tuple(p.name for p in paths))
