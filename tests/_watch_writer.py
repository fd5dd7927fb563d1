"""A stand-in for a live verl job, for the ``satmon watch`` tests: writes a run as it trains.

Usage: ``python tests/_watch_writer.py --out FILE [options]``

The records come from a seeded synthetic run (:func:`satmon.datasets.make_run`) under verl's
key names (``critic/score/mean``, ``val-core/math/acc/mean@1``, ``actor/entropy``), one step
every ``--delay`` seconds, as verl's file logger (``{"step": N, "data": {...}}``) or its console
(``step:N - key:value - ...`` behind Ray's coloured worker prefix). Like verl, a step whose
number is a multiple of ``--save-freq`` first saves ``CHECKPOINT_DIR/global_step_N/`` and then
writes ``latest_checkpointed_iteration.txt``, and only then logs the step.

The process obeys a real stop: SIGTERM ends it (after writing ``FILE.sigterm`` with the step it
was at), and so does the appearance of ``--stop-file`` (``FILE.stopped``). ``--partial-at N``
writes step N's line in two pieces with a pause between them; ``--restart-at N`` acts out a verl
resume at step N: the file is truncated (``--restart-mode truncate``, verl opens it with "w")
or replaced by a new file (``replace``), and the run goes on from the step after its last
checkpoint, repeating the steps in between (``--sync-state`` first waits for the watcher to
have fed ``--sync-step``: a truncated file loses what nobody had read, as a real one would). After the last step the process stays alive for
``--linger`` seconds (a job tearing down), so a stop action has a live process to stop.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

TRAIN_KEY = "critic/score/mean"
HELDOUT_KEY = "val-core/math/acc/mean@1"
RAY_PREFIX = "\x1b[36m(TaskRunner pid=4242)\x1b[0m "


def verl_records(regime: str = "memorizing", *, seed: int = 2, total_steps: int = 200,
                 eval_every: int = 10, heldout_n: int = 500) -> list[tuple[int, dict]]:
    """The run's records in logged order: step 0 holds only the pre-RL validation."""
    from satmon.datasets import make_run

    run = make_run(regime, seed=seed, total_steps=total_steps, eval_every=eval_every,
                   heldout_n=heldout_n).run
    train = dict(zip(run.train_reward.steps.tolist(), run.train_reward.values.tolist()))
    held = run.heldout["heldout"]
    heldout = dict(zip(held.steps.tolist(), held.values.tolist()))
    out = []
    for step in sorted(set(train) | set(heldout)):
        data: dict = {}
        if step in train:
            data[TRAIN_KEY] = round(train[step], 6)
            data["actor/entropy"] = round(0.5 - step * 1e-3, 6)
            data["timing_s/step"] = 1.25
        if step in heldout:
            data[HELDOUT_KEY] = heldout[step]
        out.append((step, data))
    return out


def _line(fmt: str, step: int, data: dict) -> str:
    if fmt == "jsonl":
        return json.dumps({"step": step, "data": data}) + "\n"
    return RAY_PREFIX + " - ".join([f"step:{step}"] + [f"{k}:{v}" for k, v in data.items()]) \
        + "\n"


def _wait_for_watcher(state: Path, step: int, timeout: float = 30.0) -> None:
    """So that the steps the resumed run repeats were watched before: they are repeats."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            runs = json.loads(state.read_text())["runs"]
            if any(r["last_fed"] >= step for r in runs.values()):
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=["jsonl", "console"], default="jsonl")
    p.add_argument("--regime", default="memorizing")
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--total-steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--delay", type=float, default=0.01)
    p.add_argument("--save-freq", type=int, default=0)
    p.add_argument("--checkpoint-dir")
    p.add_argument("--stop-file")
    p.add_argument("--partial-at", type=int, default=None)
    p.add_argument("--restart-at", type=int, default=None)
    p.add_argument("--restart-mode", choices=["truncate", "replace"], default="truncate")
    p.add_argument("--linger", type=float, default=0.0)
    p.add_argument("--sync-state", help="before --restart-at, wait (up to 30 s) until the "
                                        "watcher's state file says it fed --sync-step")
    p.add_argument("--sync-step", type=int, default=0)
    args = p.parse_args()

    out = Path(args.out)
    state = {"step": -1}

    def on_term(signum, frame):
        Path(str(out) + ".sigterm").write_text(str(state["step"]))
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)
    records = verl_records(args.regime, seed=args.seed, total_steps=args.total_steps,
                           eval_every=args.eval_every)
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else None
    fh = open(out, "w", buffering=1)
    if args.format == "console":
        fh.write(RAY_PREFIX + f"Total training steps: {args.total_steps}\n")
    i, restarted, last_saved = 0, False, 0
    while i < len(records):
        step, data = records[i]
        state["step"] = step
        if args.stop_file and os.path.exists(args.stop_file):
            Path(str(out) + ".stopped").write_text(str(step))
            return 0
        if ckpt is not None and args.save_freq and step and step % args.save_freq == 0:
            folder = ckpt / f"global_step_{step}"
            (folder / "actor").mkdir(parents=True, exist_ok=True)
            (folder / "actor" / "model.pt").write_bytes(b"weights")
            (ckpt / "latest_checkpointed_iteration.txt").write_text(str(step))
            last_saved = step
        if args.restart_at is not None and step == args.restart_at and not restarted:
            restarted = True
            fh.close()
            if args.sync_state:
                _wait_for_watcher(Path(args.sync_state), args.sync_step)
            if args.restart_mode == "truncate":
                fh = open(out, "w", buffering=1)
            else:
                tmp = out.with_name(out.name + ".new")
                tmp.write_text("")
                os.replace(tmp, out)
                fh = open(out, "a", buffering=1)
            i = next(k for k, (s, _) in enumerate(records) if s > last_saved)
            continue
        text = _line(args.format, step, data)
        if args.partial_at is not None and step == args.partial_at:
            half = len(text) // 2
            fh.write(text[:half])
            fh.flush()
            time.sleep(max(args.delay * 20, 0.5))
            fh.write(text[half:])
        else:
            fh.write(text)
        fh.flush()
        i += 1
        time.sleep(args.delay)
    fh.close()
    Path(str(out) + ".done").write_text(str(records[-1][0]))
    deadline = time.monotonic() + args.linger
    while time.monotonic() < deadline:
        if args.stop_file and os.path.exists(args.stop_file):
            Path(str(out) + ".stopped").write_text(str(records[-1][0]))
            return 0
        time.sleep(0.02)
    return 0


if __name__ == "__main__":
    sys.exit(main())
