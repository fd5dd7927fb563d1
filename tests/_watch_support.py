"""Shared pieces of the ``satmon watch`` tests: the writer process, the reference feed, logs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from _watch_writer import HELDOUT_KEY, TRAIN_KEY, verl_records

from satmon.monitor import SaturationMonitor

WRITER = Path(__file__).resolve().parent / "_watch_writer.py"
REPO = Path(__file__).resolve().parents[1]

__all__ = ["HELDOUT_KEY", "TRAIN_KEY", "verl_records", "WRITER", "start_writer", "wait_for",
           "reference_decisions", "expected_entries", "decision_entries", "log_entries",
           "saved_state"]


def start_writer(*args: str) -> subprocess.Popen:
    """The writer (tests/_watch_writer.py) as its own process."""
    return subprocess.Popen([sys.executable, str(WRITER), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float = 30.0, every: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it is truthy (its value is returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def reference_decisions(records, *, total_steps, n=500, upto=None, heldout_name="math",
                        train_key=TRAIN_KEY, heldout_key=HELDOUT_KEY, aux_key="actor/entropy",
                        **monitor_kwargs):
    """SaturationMonitor fed ``records`` in one go, as the watcher feeds a step."""
    mon = SaturationMonitor(total_steps=total_steps, **monitor_kwargs)
    out = []
    for step, data in records:
        if upto is not None and step > upto:
            break
        held = {heldout_name: (data[heldout_key], n)} if heldout_key in data else None
        aux = {"entropy": data[aux_key]} if aux_key and aux_key in data else None
        out.append((mon.update(step, data.get(train_key), heldout=held, aux=aux),
                    held is not None))
    return mon, out


def expected_entries(decisions):
    """The decision-log entries the watcher writes for these decisions: every change of
    action or reason, and every update that brought an evaluation."""
    out, last = [], None
    for d, evaluated in decisions:
        key = (d.action.value, None if d.reason is None else d.reason.value)
        if key != last or evaluated:
            out.append((int(d.step), key[0], key[1], d.message))
        last = key
    return out


def log_entries(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def decision_entries(path):
    return [(e["step"], e["action"], e["reason"], e["message"]) for e in log_entries(path)
            if e["event"] == "decision"]


def saved_state(path) -> dict:
    return json.loads(Path(path).read_text())
