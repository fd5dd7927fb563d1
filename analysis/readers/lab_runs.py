"""satmon's own run folders: lab runs (``curves.csv`` + ``run.json``) and the monitor's state file.

A **lab run folder** is what ``satmon demo`` and ``satmon lab`` write per training run
(:mod:`satmon.lab.runner`): the curves as a tidy ``step,metric,value`` CSV and the run's facts
in ``run.json``. It reads as one run (format ``lab-run``):

* the series come from ``curves.csv`` through the tidy-CSV reader (so every key option works
  as for any log); the lab's own curves that are not canonical auxiliaries
  (``train_true_accuracy``, ``faithfulness``) are kept as auxiliary series under those names;
* the run's name is ``run.json``'s ``name`` (not ``curves``), and every top-level fact of
  ``run.json`` (``setting``, ``seed``, ``action``, ``halted``, ``halt_step``, ``reason``,
  ``model``, the ``monitor`` trace, ...) becomes run metadata;
* held-out sample sizes come from ``config.n_heldout`` when the CSV has no size series;
* ``monitor_config`` (the engine configuration the live callback ran with) is kept for the
  replay; a ``run.json`` written before the lab recorded it gets the part the callback derived
  from the setting (``total_steps`` = ``max_steps``, ``eval_every``), with
  ``monitor_config_derived: true``.

A halted run's folder also holds ``checkpoint-N/``: the folder still reads as the lab run
(``curves.csv`` is the full record); read the checkpoint folder itself to get the Trainer's
``trainer_state.json``.

**The monitor's state file**: satmon's callback writes ``checkpoint-N/satmon_state.json``
beside the Trainer's ``trainer_state.json``. When present, the engine configuration in it
becomes the run's ``monitor_config`` metadata (and ``satmon_stopped_step`` the step the callback
stopped at), so a replay of a checkpoint uses the live configuration. A checkpoint inside a lab
run folder also gets that run's ``run.json`` facts.

Nothing is executed: JSON is parsed with :mod:`json` only.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from satmon.analysis.readers import tables
from satmon.analysis.readers.metric_log import MetricLog

log = logging.getLogger("satmon.analysis.readers")

CURVES_FILE = "curves.csv"
FACTS_FILE = "run.json"
MONITOR_STATE_FILE = "satmon_state.json"
#: Curves only lab runs have; kept as auxiliary series under these names.
LAB_ONLY_METRICS = ("train_true_accuracy", "faithfulness")
#: The curves' held-out metric (one held-out series, evaluated by satmon's HeldoutEvaluator).
LAB_HELDOUT_METRIC = "heldout_acc"
_CHECKPOINT = re.compile(r"^checkpoint-\d+$")


def _facts(folder: Path) -> dict[str, Any] | None:
    """``run.json`` of a lab run folder, or None when it is not one."""
    facts = folder / FACTS_FILE
    if not (folder / CURVES_FILE).is_file() or not facts.is_file():
        return None
    try:
        doc = json.loads(facts.read_text(encoding="utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return None
    # The lab's facts always name the setting and hold its configuration.
    if isinstance(doc, dict) and "setting" in doc and isinstance(doc.get("config"), dict):
        return doc
    return None


def is_lab_run(folder: str | Path) -> bool:
    """Whether ``folder`` is a lab run folder (``curves.csv`` and a lab ``run.json``)."""
    p = Path(folder)
    return p.is_dir() and _facts(p) is not None


def monitor_config_of(facts: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """The live engine configuration a lab run's facts record, and whether it was derived."""
    recorded = facts.get("monitor_config")
    if isinstance(recorded, dict):
        return dict(recorded), False
    config = facts.get("config") or {}
    derived = {k: config[v] for k, v in (("total_steps", "max_steps"),
                                         ("eval_every", "eval_every"))
               if isinstance(config.get(v), int) and config[v] > 0}
    return (derived or None), True


def read_lab_folder(folder: Path) -> MetricLog:
    """Read a lab run folder into a :class:`MetricLog` with the facts as metadata."""
    facts = _facts(folder)
    if facts is None:
        raise FileNotFoundError(f"{folder} is not a lab run folder: it needs {CURVES_FILE} "
                                f"and a lab {FACTS_FILE}.")
    curves = folder / CURVES_FILE
    text = curves.read_text(encoding="utf-8", errors="replace")
    mlog = tables.read_csv(text, source=str(curves), tidy=True)
    mlog.format = "lab-run"
    mlog.source = str(folder)
    _apply_facts(mlog, facts)
    mlog.extra_aux = LAB_ONLY_METRICS
    return mlog


def _apply_facts(mlog: MetricLog, facts: dict[str, Any]) -> None:
    mlog.metadata.update(facts)
    if isinstance(facts.get("name"), str) and facts["name"]:
        mlog.default_name = facts["name"]
    config, derived = monitor_config_of(facts)
    if config is not None:
        mlog.metadata["monitor_config"] = config
        if derived:
            mlog.metadata["monitor_config_derived"] = True
    n_heldout = (facts.get("config") or {}).get("n_heldout")
    if isinstance(n_heldout, int) and not isinstance(n_heldout, bool) and n_heldout > 0:
        # A tidy CSV has no column for the sample size; the live callback knew it, and the
        # engine weighs held-out evidence by its binomial noise.
        mlog.sample_sizes.setdefault(LAB_HELDOUT_METRIC, n_heldout)


def add_checkpoint_context(mlog: MetricLog, trainer_state: Path) -> None:
    """Metadata for a ``trainer_state.json`` from satmon's side files next to it.

    ``satmon_state.json`` beside it gives ``monitor_config`` and ``satmon_stopped_step``; a
    ``checkpoint-N`` folder inside a lab run folder also gets that run's facts (its name
    included). A side file that cannot be read is noted in ``satmon_state_unreadable`` and
    otherwise ignored: the log itself was read in full.
    """
    folder = trainer_state.parent
    if _CHECKPOINT.match(folder.name):
        facts = _facts(folder.parent)
        if facts is not None:
            _apply_facts(mlog, {k: v for k, v in facts.items() if k != "monitor_config"})
            # The live config is in the state file when there is one (below), else run.json's.
            config, derived = monitor_config_of(facts)
            if config is not None:
                mlog.metadata["monitor_config"] = config
                if derived:
                    mlog.metadata["monitor_config_derived"] = True
            # The trainer_state names its held-out series after satmon's evaluator, not the
            # curves' metric: its sizes come from the log itself.
            mlog.sample_sizes.pop(LAB_HELDOUT_METRIC, None)
    state_file = folder / MONITOR_STATE_FILE
    if not state_file.is_file():
        return
    try:
        payload = json.loads(state_file.read_text(encoding="utf-8"))
        config = payload["monitor"]["config"]
        if not isinstance(config, dict):
            raise TypeError(f"'config' is a {type(config).__name__}")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        mlog.metadata["satmon_state_unreadable"] = f"{state_file}: {type(exc).__name__}: {exc}"
        log.info("%s: no monitor configuration read (%s)", state_file, exc)
        return
    from satmon.detectors.base import from_primitive

    mlog.metadata["monitor_config"] = from_primitive(config)
    mlog.metadata.pop("monitor_config_derived", None)
    stopped = payload.get("stopped_step")
    if isinstance(stopped, int):
        mlog.metadata["satmon_stopped_step"] = stopped
