"""Shared fixtures: real MLflow stores and servers, the real logs shipped in tests/data."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from _local_servers import MlflowServer

REPO = Path(__file__).resolve().parents[1]
REAL_LOGS = REPO / "tests" / "data" / "real-logs"


# Everything the '[dev]' extra installs. Tests import optional packages with importorskip so a
# partial install still runs the rest; under CI=true a missing package or any skip is an error,
# so a missing install step fails CI instead of hiding behind a green run.
DEV_MODULES = ("torch", "transformers", "trl", "accelerate", "datasets", "mlflow", "matplotlib",
               "tensorboard", "tqdm")
IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_sessionstart(session):
    if IN_CI:
        import importlib.util

        missing = [m for m in DEV_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise pytest.UsageError(f"CI=true but {missing} are not installed: "
                                    "run pip install -e '.[dev]' first.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (not allowed): {report.longrepr}"


@pytest.fixture(autouse=True)
def _isolate_mlflow_env(monkeypatch):
    """No test inherits tracking settings from the developer's shell."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID",
                "MLFLOW_NESTED_RUN", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(var, raising=False)
    yield
    if "mlflow" in sys.modules:
        import mlflow

        while mlflow.active_run() is not None:
            mlflow.end_run()
        # The tracking URI and the active experiment are process-global: reset both so no
        # test logs into another test's store (an experiment id from one sqlite store does not
        # exist in the next). MLflow has no public call to clear the active experiment.
        mlflow.set_tracking_uri(None)
        import mlflow.tracking.fluent as fluent

        fluent._active_experiment_id = None


@pytest.fixture
def sqlite_tracking_uri(tmp_path) -> str:
    """A fresh embedded MLflow store (sqlite) in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 for the whole session."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def restartable_mlflow_server(tmp_path):
    """A server of the test's own, which the test may stop and start again."""
    server = MlflowServer(tmp_path / "mlflow-server")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def one_torch_thread():
    """Run torch single-threaded: fastest for the tiny lab models on a 2-core machine, and
    it keeps concurrent test processes from oversubscribing the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def real_logs() -> Path:
    """The real training logs shipped with the tests (raw/ and reference/; see PROVENANCE.md)."""
    return REAL_LOGS


@pytest.fixture(scope="session")
def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")
