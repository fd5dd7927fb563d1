"""Benchmark: the CPU cost of ``satmon watch`` following many runs on one MLflow server.

Run from the repository root:

    python benchmarks/bench_watch.py                      # 100 runs x 300 steps, 5 polls
    python benchmarks/bench_watch.py --runs 20 --steps 100 --polls 3

It starts a real ``mlflow server`` on 127.0.0.1 (sqlite backend in a temporary folder, one
worker; ready when ``/health`` answers; stopped by the process group of its PID), creates one
experiment with ``--runs`` RUNNING runs and logs ``--steps`` steps of a seeded synthetic verl
run into each (verl's keys, MLflow spelling: ``critic/score/mean``, ``actor/entropy``,
``timing_s/step``, ``val-core/math/acc/mean_at_1`` every 10 steps), in batches of up to 1000
points per ``log_batch``.

Then it watches ``mlflow://experiments/<name>`` in this process, as ``satmon watch`` does
(:func:`satmon.watch.commands.build_watcher`; ``--action flag``, nothing is stopped; the
planned total and the monitor's warm-up are 10x the steps logged, so no run is halted or
flagged and dropped: every pass follows every run, and the monitor still updates at every
step), and measures passes of :meth:`satmon.watch.watcher.Watcher.poll_pass`:

* pass 0 (``initial``): finds every run and reads its whole history;
* then ``--polls`` passes, each after ``--append`` new steps were logged to every run (not
  timed: the writer is not the watcher), and ``--polls`` passes with nothing new (``quiet``).

Per pass: wall seconds, CPU seconds of this process (``time.process_time``: the watcher's
own work, its HTTP client included), CPU seconds of the server process (``/proc/<pid>/stat``,
Linux) and the number of HTTP requests the watcher sent (counted at
``mlflow.utils.rest_utils.http_request``). ``polls/s`` is how many such passes one core
could do back to back (1 / wall); ``CPU share`` is the watcher's CPU seconds per pass divided
by the ``--interval`` the watcher would poll at (default 10 s, the CLI default). It prints a
table and asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _local_servers import MlflowServer  # noqa: E402  (the test fixtures' server)

TRAIN_KEY = "critic/score/mean"
HELDOUT_KEY = "val-core/math/acc/mean_at_1"
BATCH_POINTS = 1000  # MLflow's limit of metrics per log_batch


class Server(MlflowServer):
    """The tests' real ``mlflow server`` (sqlite backend under ``root``), plus its CPU time."""

    def cpu_seconds(self) -> float:
        """User + system CPU of the server's process group leader and its children."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in _group_pids(self.proc.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        return total


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
    return pids


def _records(seed: int, steps: int) -> list[tuple[int, dict[str, float]]]:
    from satmon.datasets import make_run

    run = make_run("generalizing", seed=seed, total_steps=steps, eval_every=10).run
    train = dict(zip(run.train_reward.steps.tolist(), run.train_reward.values.tolist()))
    held = run.heldout["heldout"]
    heldout = dict(zip(held.steps.tolist(), held.values.tolist()))
    out = []
    for step in sorted(set(train) | set(heldout)):
        data = {}
        if step in train:
            data = {TRAIN_KEY: train[step], "actor/entropy": 0.5 - step * 1e-4,
                    "timing_s/step": 1.25}
        if step in heldout:
            data[HELDOUT_KEY] = heldout[step]
        out.append((step, data))
    return out


def _log(client, run_id: str, records) -> int:
    """Log ``records`` in batches of up to BATCH_POINTS points; returns the calls made."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    points = [Metric(k, float(v), now, step) for step, data in records for k, v in data.items()]
    calls = 0
    for i in range(0, len(points), BATCH_POINTS):
        client.log_batch(run_id, metrics=points[i:i + BATCH_POINTS])
        calls += 1
    return calls


class _RequestCounter:
    """Counts the HTTP requests MLflow's REST client sends (the watcher's, when armed)."""

    def __init__(self) -> None:
        from mlflow.utils import rest_utils

        self.count = 0
        self.armed = False
        self._module = rest_utils
        self._orig = rest_utils.http_request

        def counted(*args, **kwargs):
            if self.armed:
                self.count += 1
            return self._orig(*args, **kwargs)

        rest_utils.http_request = counted

    def restore(self) -> None:
        self._module.http_request = self._orig


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in
                       enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                        enumerate(zip(r, widths))) for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="active runs (100)")
    ap.add_argument("--steps", type=int, default=300, help="steps logged per run first (300)")
    ap.add_argument("--append", type=int, default=1,
                    help="steps appended to every run before each timed pass (1)")
    ap.add_argument("--polls", type=int, default=5, help="timed passes with new data, and "
                                                         "as many without (5)")
    ap.add_argument("--interval", type=float, default=10.0,
                    help="poll interval the CPU share is computed for (10 s)")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.steps < 2 or args.append < 1 or args.polls < 1:
        ap.error("--runs, --polls, --append must be >= 1 and --steps >= 2")

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from mlflow.tracking import MlflowClient

    from satmon.cli import build_parser
    from satmon.watch.commands import build_watcher

    with tempfile.TemporaryDirectory(prefix="satmon-bench-watch-") as tmp:
        root = Path(tmp)
        server = Server(root)
        t0 = time.monotonic()
        server.start(timeout=120.0)
        print(f"mlflow server on {server.uri} (pid {server.proc.pid}) ready in "
              f"{time.monotonic() - t0:.1f} s")
        try:
            client = MlflowClient(tracking_uri=server.uri)
            exp = client.create_experiment("bench-watch")
            total = args.steps + args.append * args.polls
            runs = []
            t0 = time.monotonic()
            calls = 0
            for i in range(args.runs):
                run_id = client.create_run(exp, run_name=f"run-{i:03d}").info.run_id
                records = _records(i, total)
                calls += _log(client, run_id, [r for r in records if r[0] <= args.steps])
                runs.append((run_id, records))
            setup = time.monotonic() - t0
            print(f"{args.runs} runs x {args.steps} steps logged in {setup:.1f} s "
                  f"({calls} log_batch calls, {1000 * setup / max(calls, 1):.0f} ms per call "
                  "incl. create_run)")

            parser = build_parser()
            watch_args = parser.parse_args([
                "watch", "mlflow://experiments/bench-watch", "--tracking-uri", server.uri,
                "--action", "flag", "--total-steps", str(10 * total), "--warmup-steps",
                str(10 * total), "--interval", "0",
                "--status-every", "3600", "--decision-log", str(root / "decisions.jsonl")])
            quiet_out = io.StringIO()
            watcher = build_watcher(watch_args, stream=quiet_out)
            counter = _RequestCounter()
            rows = []
            try:
                logged = args.steps

                def timed(label: str) -> None:
                    counter.count = 0
                    counter.armed = True
                    srv0, cpu0, wall0 = server.cpu_seconds(), time.process_time(), \
                        time.perf_counter()
                    watcher.poll_pass()
                    wall = time.perf_counter() - wall0
                    cpu = time.process_time() - cpu0
                    srv = server.cpu_seconds() - srv0
                    counter.armed = False
                    watching = sum(not r.done for r in watcher.runs)
                    rows.append([label, str(watching), f"{wall:.3f}", f"{1 / wall:.2f}",
                                 f"{cpu:.3f}", f"{1000 * cpu / max(watching, 1):.1f}",
                                 f"{100 * cpu / args.interval:.2f}%", f"{srv:.2f}",
                                 str(counter.count),
                                 f"{counter.count / max(watching, 1):.2f}"])

                timed("initial (whole history)")
                for p in range(args.polls):
                    for run_id, records in runs:
                        _log(client, run_id, [r for r in records
                                              if logged < r[0] <= logged + args.append])
                    logged += args.append
                    timed(f"new data {p + 1} (+{args.append} step)")
                for p in range(args.polls):
                    timed(f"quiet {p + 1}")
            finally:
                counter.restore()
            statuses = collections.Counter(r.status for r in watcher.runs)
            problems = [line for line in quiet_out.getvalue().splitlines()
                        if " failed" in line or "HALT" in line][:3]
        finally:
            server.stop()

    print()
    print(f"satmon watch following {args.runs} runs on one MLflow server "
          f"(mlflow {__import__('mlflow').__version__}, 1 server worker)")
    print(_table(["pass", "runs", "wall s", "polls/s", "CPU s", "CPU ms/run",
                  f"CPU share @{args.interval:g}s", "server CPU s", "requests",
                  "req/run"], rows))
    print("run statuses at the end: " + ", ".join(f"{k} {v}" for k, v in
                                                  sorted(statuses.items())))
    for line in problems:
        print("  " + line[:300])
    timed_rows = rows[1:1 + args.polls]
    mean_cpu = sum(float(r[4]) for r in timed_rows) / len(timed_rows)
    mean_wall = sum(float(r[2]) for r in timed_rows) / len(timed_rows)
    print(f"\nwith new data: mean {mean_wall:.3f} s wall, {mean_cpu:.3f} CPU s per pass "
          f"({100 * mean_cpu / args.interval:.2f}% of one core at a {args.interval:g} s "
          "interval)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
