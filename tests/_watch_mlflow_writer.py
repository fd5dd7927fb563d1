"""A stand-in for a verl job logging to MLflow, for the ``satmon watch`` tests.

Usage: ``python tests/_watch_mlflow_writer.py --tracking-uri URI (--run-id ID | --run-id-file F)``

Logs the records of :func:`_watch_writer.verl_records` to one MLflow run as verl's MLflow
logger does (one ``log_batch`` per step, ``@`` in keys spelled ``_at_``), one step every
``--delay`` seconds, from its own process. With ``--run-id-file`` it creates the run itself
(and writes its id there); it stops when ``--stop-file`` appears; it never ends the run,
so a test can check that the watcher did not either.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _watch_writer import verl_records  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--run-id")
    p.add_argument("--run-id-file")
    p.add_argument("--total-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--delay", type=float, default=0.01)
    p.add_argument("--params", action="store_true", help="log trainer.total_training_steps")
    p.add_argument("--stop-file", help="stop logging (exit 0) once this file exists")
    args = p.parse_args()

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=args.tracking_uri)
    run_id = args.run_id
    if run_id is None:
        exp = client.get_experiment_by_name("verl") or client.get_experiment(
            client.create_experiment("verl"))
        run_id = client.create_run(exp.experiment_id, run_name="verl-job").info.run_id
        Path(args.run_id_file).write_text(run_id)
    if args.params:
        client.log_param(run_id, "trainer.total_training_steps", str(args.total_steps))
    for step, data in verl_records(seed=args.seed, total_steps=args.total_steps):
        if args.stop_file and Path(args.stop_file).exists():
            Path(args.stop_file + ".seen").write_text(str(step))
            return 0
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k.replace("@", "_at_"), float(v), now, step)
                                          for k, v in data.items()])
        time.sleep(args.delay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
