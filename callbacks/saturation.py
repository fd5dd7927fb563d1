"""``SaturationCallback``: attach the online monitor to a transformers or TRL trainer.

One line in a training script::

    trainer = GRPOTrainer(..., callbacks=[SaturationCallback(action="halt_and_save")])

What happens per event (every process runs the same hooks; side effects happen on world
rank 0 only, collective work on every rank):

* ``on_train_begin``: the monitor is built (``total_steps`` from the trainer's ``max_steps``),
  the held-out source chosen, a resumed run's engine state loaded from its checkpoint, the
  MLflow sink opened (rank 0), and the :class:`HeldoutEvaluator` run once for M(0).
* ``on_step_end``: the evaluator runs when due (every rank, results gathered).
* ``on_log``: the training reward and auxiliaries are read from train logs, held-out values from
  ``eval_`` logs (:class:`satmon.keys.KeyMap`); once a step's parts are in, the monitor is
  updated and its decision acted upon.
* every ``on_step_end`` and ``on_log`` ends with an all-reduce of "some rank wants to stop", so
  all ranks stop at the same step or none does.
* ``on_save``: the engine state goes to ``checkpoint-N/satmon_state.json``.
* ``on_train_end``: a figure and the decision table go to MLflow, the sink is closed.

A failure inside monitoring (the engine, MLflow, a figure) is logged and skipped; training goes
on. Only configuration mistakes found at the first log (a missing metric key with
``strict=True``) or at train begin raise, before compute is wasted.

Resuming: the engine state is written beside every checkpoint
(``checkpoint-N/satmon_state.json``, atomically: a temporary file then a rename). With
``TrainingArguments(restore_callback_states_from_checkpoint=True)`` the Trainer also restores the
callback's counters and the exact location of that file; without it the file is looked up in
``<output_dir>/checkpoint-<step>/``. The whole file is checked before any of it is applied
(:class:`satmon.monitor.StateError` says what is wrong). The held-out values the callback
reads (and their sample sizes) also go into the trainer's ``log_history`` as
``<name>/heldout/<benchmark>`` and ``<name>/heldout/<benchmark>/n``, so ``trainer_state.json``
holds every input of the monitor. Policy at a resume from checkpoint-S:

* the state of checkpoint-S is valid: it is loaded, and the run makes the same decisions as an
  uninterrupted one;
* it is missing (a kill between the Trainer's save and satmon's ``on_save``, e.g. SIGTERM): the
  newest older checkpoint's state is used (or none), and the steps after it are replayed from
  the trainer's log history through the same reading path, with one warning that names the
  state used and the number of steps replayed;
* it is present but damaged, truncated, from a newer satmon or made with another monitor
  configuration: with ``strict=True`` (the default) training does not start and the error says
  which file and why, and how to go on; with ``strict=False`` the same fallback as a missing
  state, with the reason in the warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from satmon._files import atomic_write_text
from satmon._optional import is_available, require
from satmon.callbacks.distributed import vote_stop
from satmon.callbacks.heldout import HeldoutEvaluator, HeldoutResult
from satmon.decision import Action, Decision, UpdateRecord
from satmon.keys import KeyMap, format_key_list
from satmon.monitor import SaturationMonitor, StateError
from satmon.monitor.config import momentum_steps
from satmon.results import json_safe
from satmon.sinks import MlflowSink

_trainer_callback = require("transformers.trainer_callback", feature="satmon.callbacks")
TrainerCallback = _trainer_callback.TrainerCallback
ExportableState = _trainer_callback.ExportableState

logger = logging.getLogger(__name__)

ACTIONS = ("flag", "halt", "halt_and_save")
HELDOUT_SOURCES = ("auto", "eval", "evaluator", "none")
STATE_FILE = "satmon_state.json"
STATE_VERSION = 1

# Callbacks alive in this process, by name: the Trainer rebuilds a restored callback from its
# saved arguments alone, and the rebuilt one takes the live one's collaborators (monitor,
# evaluator, sink), which cannot be written into a JSON checkpoint.
_LIVE: dict[str, "weakref.ref[SaturationCallback]"] = {}


@dataclass
class _Pending:
    """The parts of one step's update gathered so far."""

    step: int
    train: Any = None
    has_train: bool = False
    aux: dict[str, float] = field(default_factory=dict)
    heldout: dict[str, tuple[float, int | None]] = field(default_factory=dict)
    waiting_for_eval: bool = False

    @property
    def empty(self) -> bool:
        return not (self.has_train or self.heldout)


@dataclass
class _RunState:
    """Everything the callback learns during a run, shared with a restored copy of it."""

    monitor: SaturationMonitor | None = None
    sink: MlflowSink | None = None
    source: str = "none"
    rows: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    pending: _Pending | None = None
    want_stop: bool = False
    stopped_step: int | None = None
    halt_decision: Decision | None = None
    train_checked: bool = False
    eval_checked: bool = False
    warned: set[str] = field(default_factory=set)
    failures: int = 0
    vote_failures: int = 0  # stop votes in which some rank could not vote
    replaying: bool = False  # feeding a resumed run's log history to the monitor
    last_tags: dict[str, str] = field(default_factory=dict)
    heldout_results: list[HeldoutResult] = field(default_factory=list)
    resumed_from: str | None = None
    is_main: bool = True
    heldout_n: int | None = None
    table_rows_logged: int = 0

    def clear(self) -> None:
        """Forget the previous training (in place: a restored copy shares this object)."""
        self.__dict__.update(_RunState().__dict__)


class SaturationCallback(TrainerCallback, ExportableState):
    """Monitor training reward against held-out accuracy; flag or halt saturated runs.

    Parameters
    ----------
    monitor:
        A :class:`satmon.monitor.SaturationMonitor`, or a dict of its parameters, or None for
        the defaults. Missing ``total_steps`` / ``eval_every`` / ``frozen_after`` are filled
        from the trainer (``max_steps``; ``eval_steps`` or the evaluator's ``every``; for an
        Adam-family ``optim``, the steps its ``adam_beta1`` / ``adam_beta2`` momentum still
        moves the model after the gradient vanishes) when the monitor is built here.
    action:
        ``"flag"`` (log a warning and tag the MLflow run), ``"halt"`` (also stop training:
        ``control.should_training_stop``) or ``"halt_and_save"`` (also checkpoint the halt step:
        ``control.should_save``).
    evaluator:
        A :class:`HeldoutEvaluator` measuring held-out accuracy by greedy generation.
    heldout:
        Where held-out values come from: ``"evaluator"``, ``"eval"`` (the trainer's evaluation
        logs, e.g. TRL's ``eval_rewards/<fn>/mean``), ``"none"``, or ``"auto"`` (the evaluator
        when given, else ``eval`` when the trainer evaluates, else none - with a warning, since
        without held-out evidence the regime cannot be called).
    keys:
        A :class:`satmon.keys.KeyMap` or a dict of its parameters (``preset``, ``train_key``,
        ``heldout_keys``, ``aux_keys``); default ``KeyMap(preset="auto")``.
    heldout_n:
        Sample size of each ``eval`` held-out value (default: the size of the trainer's
        evaluation dataset, when known). The evaluator reports its own.
    strict:
        Raise at the first log when a configured key is missing (the error lists the keys that
        exist); with False, warn once and go on without that series.
    mlflow:
        ``"auto"`` (log to MLflow when ``report_to`` includes mlflow, a run is active or
        ``MLFLOW_TRACKING_URI`` / ``MLFLOW_RUN_ID`` is set), True, False, an
        :class:`satmon.sinks.MlflowSink`, or a dict of MlflowSink parameters.
    name:
        Distinguishes several satmon callbacks on one trainer (metric prefix ``<name>/``).
    figures:
        Log a figure of the curves and phases at a halt and at the end.
    train_transform:
        A function applied to the training value before the monitor sees it. The monitor reads
        a reward (higher is better, saturating); for a plain ``Trainer`` whose training series
        is a loss, ``lambda loss: math.exp(-loss)`` turns it into the mean likelihood of the
        targets, which rises and saturates like a reward.

    verbose:
        Also log every internal number behind a decision to MLflow (detector statistics, fit
        weights, the posterior's parts); by default only the documented set below.

    MLflow (rank 0): per update the metrics ``<name>/train_reward``,
    ``<name>/heldout/<benchmark>`` (and ``.../n``) and :data:`satmon.decision.METRICS`
    (P(held-out gain), its expected value and 95% upper bound, P(saturated), the online t_sat
    estimate and interval, ``post_saturation``, ``flag`` / ``halt`` as 0/1, the regime
    probabilities); at attach the monitor configuration as parameters ``<name>.<field>``; as
    readable tags ``<name>.decision`` (``continue``, ``flag (memorizing)``, ``halt
    (memorizing)``), ``<name>.regime`` (the reason once the monitor flags or halts, else
    ``undecided (leaning <regime>, P=0.6)``), ``<name>.t_sat_online_estimate`` and, when it
    acts, ``<name>.message``.

    Attributes
    ----------
    decisions:
        The monitor's decisions in this process, one per update (read them after training).
    halted_step:
        The step at which training was stopped by satmon (None if it was not).
    """

    def __init__(self, monitor: SaturationMonitor | Mapping[str, Any] | None = None, *,
                 action: str = "flag", evaluator: HeldoutEvaluator | None = None,
                 heldout: str = "auto", keys: KeyMap | Mapping[str, Any] | None = None,
                 heldout_n: int | None = None, strict: bool = True,
                 mlflow: bool | str | MlflowSink | Mapping[str, Any] = "auto",
                 name: str = "satmon", figures: bool = True,
                 train_transform: Callable[[float], float] | None = None,
                 verbose: bool = False, _restore_of: str | None = None) -> None:
        if _restore_of is not None:
            self._adopt(_restore_of)
            return
        self.monitor = monitor
        self.action = action
        self.verbose = verbose
        self.evaluator = evaluator
        self.heldout = heldout
        self.keys = keys
        self.heldout_n = heldout_n
        self.strict = strict
        self.mlflow = mlflow
        self.name = name
        self.figures = figures
        self.train_transform = train_transform
        self._validate()
        self._reset()
        _LIVE[name] = weakref.ref(self)

    def _validate(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"The 'action' parameter of SaturationCallback must be one of "
                             f"{list(ACTIONS)}. Got {self.action!r} instead.")
        if self.heldout not in HELDOUT_SOURCES:
            raise ValueError(f"The 'heldout' parameter of SaturationCallback must be one of "
                             f"{list(HELDOUT_SOURCES)}. Got {self.heldout!r} instead.")
        if self.heldout == "evaluator" and self.evaluator is None:
            raise ValueError("SaturationCallback(heldout='evaluator') needs evaluator="
                             "HeldoutEvaluator(...).")
        if self.evaluator is not None and not isinstance(self.evaluator, HeldoutEvaluator):
            raise TypeError(f"The 'evaluator' of SaturationCallback must be a HeldoutEvaluator. "
                            f"Got {type(self.evaluator).__name__} instead.")
        if not (self.monitor is None or isinstance(self.monitor, (SaturationMonitor, Mapping))):
            raise TypeError("The 'monitor' of SaturationCallback must be a SaturationMonitor, a "
                            f"dict of its parameters or None. Got {type(self.monitor).__name__}.")
        if isinstance(self.monitor, Mapping):
            SaturationMonitor(**{"total_steps": 1, **self.monitor})  # fail fast on bad params
        if isinstance(self.keys, Mapping):
            self.keys = KeyMap(**self.keys)
        elif self.keys is None:
            self.keys = KeyMap(preset="auto")
        elif not isinstance(self.keys, KeyMap):
            raise TypeError(f"The 'keys' of SaturationCallback must be a KeyMap or a dict of its "
                            f"parameters. Got {type(self.keys).__name__} instead.")
        if self.heldout_n is not None and (not isinstance(self.heldout_n, int)
                                           or isinstance(self.heldout_n, bool)
                                           or self.heldout_n < 1):
            raise ValueError(f"The 'heldout_n' parameter of SaturationCallback must be None or "
                             f"an int >= 1. Got {self.heldout_n!r} instead.")
        for flag in ("strict", "verbose"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"The '{flag}' parameter of SaturationCallback must be a bool. "
                                f"Got {getattr(self, flag)!r} instead.")
        if not (isinstance(self.mlflow, (bool, MlflowSink, Mapping)) or self.mlflow == "auto"):
            raise ValueError("The 'mlflow' parameter of SaturationCallback must be 'auto', True, "
                             f"False, an MlflowSink or a dict of its parameters. "
                             f"Got {self.mlflow!r} instead.")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"The 'name' of SaturationCallback must be a non-empty string. "
                             f"Got {self.name!r} instead.")
        if self.train_transform is not None and not callable(self.train_transform):
            raise TypeError(f"The 'train_transform' of SaturationCallback must be callable or "
                            f"None. Got {self.train_transform!r} instead.")

    def _reset(self) -> None:
        self._run = _RunState()
        self.saved_step: int | None = None
        self.state_file: str | None = None
        self.updates = 0

    def _adopt(self, name: str) -> None:
        """Become the restored copy of the live callback called ``name``."""
        ref = _LIVE.get(name)
        live = ref() if ref is not None else None
        if live is None:
            raise ValueError(f"Cannot restore SaturationCallback {name!r} from a checkpoint: no "
                             "SaturationCallback of that name is attached to the trainer. Pass "
                             "the same callback you trained with.")
        # Same configuration and the same run state object: the user's reference to the
        # callback they created keeps seeing the decisions made after the resume.
        self.__dict__.update(live.__dict__)
        _LIVE[name] = weakref.ref(self)

    # -- ExportableState ------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What the Trainer writes into ``trainer_state.json`` at a checkpoint."""
        return {"args": {"_restore_of": self.name},
                "attributes": {"saved_step": self._last_global_step(),
                               "state_file": self._state_file_for(self._last_global_step()),
                               "updates": self.updates}}

    # -- public views ---------------------------------------------------------------------

    @property
    def decisions(self) -> list[Decision]:
        """Decisions of this process's monitor since training began (including a resume)."""
        return list(self._run.decisions)

    @property
    def history(self) -> list[dict[str, Any]]:
        """One JSON-safe row per monitor update: inputs, action, reason, evidence summary."""
        return [dict(r) for r in self._run.rows]

    @property
    def halted_step(self) -> int | None:
        return self._run.stopped_step

    @property
    def sink(self) -> MlflowSink | None:
        """The MLflow sink in use on this process (None off rank 0 or when disabled)."""
        return self._run.sink

    @property
    def heldout_source(self) -> str:
        return self._run.source

    # -- events ---------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self._run
        if run.sink is not None:
            self._guard("closing the previous MLflow sink", run.sink.close)
        run.clear()
        run.is_main = bool(state.is_world_process_zero)
        self._output_dir = args.output_dir
        self._global_step = int(state.global_step)
        self._build_monitor(args, state)
        run.source = self._choose_source(args)
        run.heldout_n = self.heldout_n or _dataset_size(kwargs.get("eval_dataloader"))
        if state.global_step > 0:
            try:
                self._load_state(args, state)
            except StateError:
                raise  # strict=True and a damaged state file: the message says what to do
            except Exception:
                self._failure("loading the resumed state")
        if run.is_main:
            self._guard("opening the MLflow sink", self._open_sink, args)
        _setup_logging(args, run.is_main)
        if run.is_main:
            self._log_attach(state)
        if (run.source == "evaluator" and self.evaluator.due(0) and state.global_step == 0):
            self._run_evaluator(kwargs, 0, state)
            self._flush()
        self._sync_stop(control)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self._run
        step = int(state.global_step)
        self._global_step = step
        if run.pending is not None and run.pending.step < step:
            self._flush()
        if run.source == "evaluator" and self.evaluator.due(step):
            self._run_evaluator(kwargs, step, state)
        if run.pending is not None and run.pending.step == step:
            expects_log = bool(control.should_log)
            expects_eval = run.source == "eval" and bool(control.should_evaluate)
            if not expects_log and not expects_eval:
                self._flush()
        self._sync_stop(control)

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
               **kwargs: Any) -> None:
        run = self._run
        step = int(state.global_step)
        self._global_step = step
        logs = logs or {}
        kind = _log_kind(logs)
        if kind == "train":
            self._read_train(logs, step, control)
        elif kind == "eval":
            self._read_eval(logs, step, control, kwargs, state=state)
        if run.pending is not None and run.pending.step < step:
            self._flush()
        self._sync_stop(control)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if args.should_save:
            self._guard("saving the engine state", self._save_state, args, state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush(act=False)
        run = self._run
        if run.sink is not None:
            self._guard("logging the final figure and table", self._log_final, "end")
            self._guard("closing the MLflow sink", run.sink.close)
            run.sink = None

    # -- what the user sees in the job's log ----------------------------------------------

    def _log_attach(self, state: Any) -> None:
        run = self._run
        c = run.monitor.config if run.monitor is not None else None
        if run.source == "evaluator":
            held = (f"held-out from HeldoutEvaluator '{self.evaluator.name}' every "
                    f"{self.evaluator.every} steps on {self.evaluator.size} prompts")
        elif run.source == "eval":
            held = "held-out from the trainer's eval logs (eval_*)"
        else:
            held = "no held-out source"
        keys = (f"'{self.keys.train_key}'" if self.keys.train_key
                else f"the '{self.keys.preset}' key preset")
        logger.info("satmon: attached (%s): action=%s, %s, training reward from %s, "
                    "total_steps=%s, MLflow %s%s", self.name, self.action, held, keys,
                    c.total_steps if c else "?", "on" if run.sink is not None else "off",
                    f", resumed from {run.resumed_from}" if run.resumed_from else "")

    def _log_evaluation(self, pending: _Pending, decision: Decision) -> None:
        details = decision.evidence.details
        values = ", ".join(f"{k}={v:.3f}" + (f" (n={n})" if n else "")
                           for k, (v, n) in pending.heldout.items())
        p_gain = details.get("p_heldout_gain", math.nan)
        verdict = (decision.action.value if decision.reason is None
                   else f"{decision.action.value} ({decision.reason.value})")
        logger.info("satmon: step %d: held-out %s; P(gain)=%s; %s", pending.step, values,
                    f"{p_gain:.2f}" if math.isfinite(p_gain) else "n/a (warm-up)", verdict)

    # -- reading logs ---------------------------------------------------------------------

    def _read_train(self, logs: Mapping[str, Any], step: int, control: Any) -> None:
        run = self._run
        if not run.train_checked:
            run.train_checked = True
            self._check_train_keys(logs)
        picked = self.keys.pick(logs)
        if picked.has_train or picked.aux:
            pending = self._pending_for(step, control)
            if picked.has_train:
                pending.has_train = True
                pending.train = self._transform(_as_float(picked.train))
            pending.aux.update({k: v for k, v in ((k, _as_float(v))
                                                  for k, v in picked.aux.items())
                                if v is not None and math.isfinite(v)})
        # TRL logs steps without a generation (no reward key): an evaluator result waiting for
        # this step's log goes to the monitor now rather than one step late.
        if run.pending is not None and run.pending.step == step \
                and not run.pending.waiting_for_eval:
            self._flush()

    def _read_eval(self, logs: Mapping[str, Any], step: int, control: Any,
                   kwargs: Mapping[str, Any], *, state: Any = None,
                   sizes: Mapping[str, int] | None = None) -> None:
        run = self._run
        if run.source != "eval":
            return
        if not run.eval_checked:
            run.eval_checked = True
            self._check_eval_keys(logs)
        picked = self.keys.pick(logs)
        if not picked.heldout:
            return
        n = self.heldout_n or _dataset_size(kwargs.get("eval_dataloader")) or run.heldout_n
        pending = self._pending_for(step, control)
        for name, value in picked.heldout.items():
            v = _as_float(value)
            size = (sizes or {}).get(name, n)
            pending.heldout[name] = (math.nan if v is None else v, size)
        history = getattr(state, "log_history", None)
        if n and isinstance(history, list):
            # The sample size is not in the eval log; the log history keeps it for a replay.
            history.append({**{f"{self.name}/heldout/{k}/n": n for k in picked.heldout},
                            "step": step})
        pending.waiting_for_eval = False
        self._flush()

    def _transform(self, value: float | None) -> float | None:
        if value is None or self.train_transform is None:
            return value
        try:
            return float(self.train_transform(value))
        except Exception:
            self._failure("applying train_transform")
            return None

    def _pending_for(self, step: int, control: Any) -> _Pending:
        run = self._run
        if run.pending is not None and run.pending.step != step:
            self._flush()
        if run.pending is None:
            run.pending = _Pending(step=step, waiting_for_eval=(
                run.source == "eval" and bool(getattr(control, "should_evaluate", False))))
        return run.pending

    def _check_train_keys(self, logs: Mapping[str, Any]) -> None:
        # Train and eval logs hold different keys: check each against its own part of the map.
        train_part = KeyMap(preset=self.keys.preset, train_key=self.keys.train_key,
                            aux_keys=dict(self.keys.aux_keys) if self.keys.aux_keys else None)
        try:
            train_part.resolve(logs.keys(), strict=True, require_train=True)
        except KeyError as exc:
            self._config_error("train-keys", exc)

    def _check_eval_keys(self, logs: Mapping[str, Any]) -> None:
        eval_part = KeyMap(preset=self.keys.preset, heldout_keys=(
            dict(self.keys.heldout_keys) if self.keys.heldout_keys else None))
        try:
            resolved = eval_part.resolve(logs.keys(), strict=True)
            if not resolved.heldout:
                raise KeyError(
                    "No held-out key found in the evaluation log (SaturationCallback reads "
                    "held-out values from eval logs: TRL's 'eval_rewards/<fn>/mean', or the keys "
                    "given as keys=KeyMap(heldout_keys=...)). Keys found "
                    f"({len(logs)}): {format_key_list(logs.keys())}.")
        except KeyError as exc:
            self._config_error("eval-keys", exc)

    def _config_error(self, what: str, exc: Exception) -> None:
        if self.strict:
            raise exc
        self._warn_once(what, f"satmon: {exc.args[0] if exc.args else exc} (strict=False: "
                              "going on without this series)")

    # -- held-out evaluator ---------------------------------------------------------------

    def _run_evaluator(self, kwargs: Mapping[str, Any], step: int, state: Any) -> None:
        try:
            result = self.evaluator.evaluate(kwargs.get("model"), kwargs.get("processing_class"),
                                             step=step)
        except Exception:
            # evaluate() itself keeps the ranks in step (its gather always runs); what can fail
            # here is set-up, e.g. a missing tokenizer, which is the same on every rank.
            self._failure("running the held-out evaluator")
            return
        self._run.heldout_results.append(result)
        # Into the trainer's log history as well, so trainer_state.json holds the held-out
        # series and a resume can replay it (``<name>/heldout/<benchmark>`` and ``.../n``).
        history = getattr(state, "log_history", None)
        if isinstance(history, list):
            entry = {f"{self.name}/heldout/{result.name}": result.value, "step": step}
            if result.n > 0:
                entry[f"{self.name}/heldout/{result.name}/n"] = result.n
            history.append(entry)
        pending = self._pending_for(step, None)
        pending.heldout[result.name] = (result.value, result.n if result.n > 0 else None)
        if result.n_failed:
            self._warn_once(f"heldout-failed-{result.name}",
                            f"satmon: held-out '{result.name}' at step {step}: {result.n_failed} "
                            f"prompts failed (generation or verifier); {result.n} scored")

    # -- updating the monitor and acting --------------------------------------------------

    def _flush(self, *, act: bool = True) -> None:
        run = self._run
        pending, run.pending = run.pending, None
        if pending is None or pending.empty or run.monitor is None:
            return
        heldout = {k: (v, n) for k, (v, n) in pending.heldout.items()}
        train = pending.train if pending.has_train else None
        try:
            decision = run.monitor.update(pending.step, train, heldout=heldout or None,
                                          aux=pending.aux or None)
        except Exception:
            self._failure(f"updating the monitor at step {pending.step}")
            return
        self.updates += 1
        row = UpdateRecord.from_decision(decision, train_reward=train, heldout=heldout,
                                         aux=dict(pending.aux)).to_dict()
        # Rows are stored JSON-safe once, so reading the history every step stays cheap.
        run.rows.append(row)
        run.decisions.append(decision)
        if run.is_main and heldout and not run.replaying:
            self._guard("logging the evaluation line", self._log_evaluation, pending, decision)
        if run.sink is not None:
            self._guard("logging to MLflow", self._log_update, pending, decision)
        if act and not run.replaying:
            self._act(decision)

    def _act(self, decision: Decision) -> None:
        run = self._run
        if decision.action is Action.CONTINUE or run.stopped_step is not None:
            return
        key = f"{decision.action.value}-{decision.reason}"
        if decision.action is Action.FLAG or self.action == "flag":
            self._warn_once(key, f"satmon: {decision.message}")
            return
        if not run.want_stop:
            logger.warning("satmon: halting training (%s): %s", self.action, decision.message)
            run.want_stop = True
            run.halt_decision = decision

    def _stop_wish(self) -> bool:
        return bool(self._run.want_stop and self.action != "flag")

    def _sync_stop(self, control: Any) -> None:
        """Vote on stopping across ranks; every rank calls this at the same hooks.

        A rank-local failure is part of the vote (that rank votes continue and the count of
        failed ranks comes back to all of them), so every rank makes the same sequence of
        collectives whatever fails locally.
        """
        run = self._run
        try:
            vote = vote_stop(self._stop_wish)
        except Exception:
            # The collective itself failed: the process group is broken, and the trainer's own
            # next collective fails too; do not add a second failure from monitoring.
            self._failure("reducing the stop decision across ranks")
            return
        if vote.failed:
            run.vote_failures += 1
            self._warn_once("vote-failed", (
                f"satmon: at step {self._global_step}, {vote.failed} rank(s) could not compute "
                "their stop vote and voted continue; the ranks stay in step (further such "
                "votes are counted, not logged)"))
        stop = vote.any_stop
        if not stop or run.stopped_step is not None:
            return
        run.want_stop = True
        run.stopped_step = self._global_step
        control.should_training_stop = True
        if self.action == "halt_and_save":
            control.should_save = True
        if run.halt_decision is None:
            logger.warning("satmon: another process decided to halt; stopping at step %d",
                           self._global_step)
        if run.sink is not None:
            self._guard("logging the halt", self._log_halt)

    # -- MLflow ---------------------------------------------------------------------------

    def _open_sink(self, args: Any) -> None:
        setting = self.mlflow
        if setting is False:
            return
        if setting == "auto" and not _mlflow_wanted(args):
            return
        if isinstance(setting, MlflowSink):
            sink = setting
        else:
            params = dict(setting) if isinstance(setting, Mapping) else {}
            params.setdefault("spool_dir", os.path.join(args.output_dir, "satmon-spool"))
            if _reports_to_mlflow(args):
                # transformers' MLflowCallback (which runs first) already opened the run,
                # nested if MLFLOW_NESTED_RUN asked for it: log into that run, not below it.
                params.setdefault("nested", False)
            sink = MlflowSink(**params)
        sink.open()
        self._run.sink = sink
        sink.set_tags({f"{self.name}.action": self.action,
                       f"{self.name}.heldout_source": self._run.source})
        if self._run.monitor is not None:
            config = self._run.monitor.config.to_dict()
            # JSON values, so a reader gets the types back (satmon.analysis reads them).
            sink.log_params({f"{self.name}.{k}": json.dumps(json_safe(v), sort_keys=True)
                             for k, v in config.items()})

    def _log_update(self, pending: _Pending, decision: Decision) -> None:
        run = self._run
        p = f"{self.name}/"
        metrics = decision.metrics(p, verbose=self.verbose)
        if pending.has_train and pending.train is not None:
            metrics[p + "train_reward"] = pending.train
        for name, (value, n) in pending.heldout.items():
            metrics[f"{p}heldout/{name}"] = value
            if n:
                metrics[f"{p}heldout/{name}/n"] = float(n)
        run.sink.log_metrics(metrics, step=pending.step)
        ev = decision.evidence
        if decision.reason is not None:
            verdict = f"{decision.action.value} ({decision.reason.value})"
            regime = decision.reason.value
        else:
            verdict = decision.action.value
            lean = ev.most_likely_regime
            regime = f"undecided (leaning {lean}, P={ev.regime[lean]:.1f})"
        tags = {f"{self.name}.regime": regime,
                f"{self.name}.decision": verdict,
                f"{self.name}.t_sat_online_estimate": (f"{ev.t_sat_estimate:.0f}"
                                       if math.isfinite(ev.t_sat_estimate) else "unknown")}
        if decision.action is not Action.CONTINUE:
            tags[f"{self.name}.message"] = decision.message
        changed = {k: v for k, v in tags.items() if run.last_tags.get(k) != v}
        if changed:
            run.sink.set_tags(changed)
            run.last_tags.update(changed)

    def _log_halt(self) -> None:
        run = self._run
        d = run.halt_decision
        run.sink.set_tags({f"{self.name}.halt_step": str(run.stopped_step),
                           f"{self.name}.halt_reason": ("another process" if d is None or
                                                        d.reason is None else d.reason.value)})
        self._log_final("halt")

    def _log_final(self, when: str) -> None:
        run = self._run
        if run.sink is None or not run.rows:
            return
        # log_table appends to an existing table file, so each call sends only new rows.
        rows = self.history[run.table_rows_logged:]
        if rows:
            table = {col: [json.dumps(json_safe(r.get(col))) if isinstance(r.get(col), dict)
                           else json_safe(r.get(col)) for r in rows]
                     for col in ("step", "action", "reason", "phase", "p_heldout_gain",
                                 "p_saturated", "t_sat_estimate", "regime", "train_reward",
                                 "heldout", "message")}
            run.sink.log_table(table, f"{self.name}/decisions.json")
            run.table_rows_logged += len(rows)
        if self.figures:
            from satmon.callbacks.figure import close_figure, monitor_figure

            last = run.rows[-1]
            title = f"{self.name} at step {last['step']}: {last['message'][:120]}"
            d = run.halt_decision
            fig = monitor_figure(self.history, title=title, halt_step=run.stopped_step,
                                 reason=None if d is None or d.reason is None
                                 else d.reason.value)
            try:
                run.sink.log_figure(fig, f"{self.name}/curves_{when}.png")
            finally:
                close_figure(fig)

    # -- checkpoints ----------------------------------------------------------------------

    def _last_global_step(self) -> int:
        return int(getattr(self, "_global_step", 0))

    def _state_file_for(self, step: int) -> str | None:
        out = getattr(self, "_output_dir", None)
        if out is None:
            return None
        return os.path.abspath(os.path.join(out, f"checkpoint-{step}", STATE_FILE))

    def _save_state(self, args: Any, state: Any) -> None:
        run = self._run
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "version": STATE_VERSION,
            "step": int(state.global_step),
            "monitor": None if run.monitor is None else run.monitor.state_dict(),
            "rows": self.history,
            "stopped_step": run.stopped_step,
            "heldout_results": [r.to_dict() for r in run.heldout_results],
        }
        atomic_write_text(path, json.dumps(payload))

    def _state_candidates(self, step: int) -> list[Path]:
        """Engine state files a resume at ``step`` may use, newest first: the one the Trainer
        restored (``restore_callback_states_from_checkpoint``), then ``checkpoint-<k>/`` of the
        output folder for k <= step."""
        found: list[tuple[int, Path]] = []
        if self.state_file and self.saved_step is not None and self.saved_step <= step:
            found.append((int(self.saved_step), Path(self.state_file)))
        out = getattr(self, "_output_dir", None)
        if out and os.path.isdir(out):
            for entry in os.scandir(out):
                name = entry.name
                if name.startswith("checkpoint-") and name[11:].isdigit() and entry.is_dir():
                    k = int(name[11:])
                    if k <= step:
                        found.append((k, Path(entry.path) / STATE_FILE))
        seen: set[str] = set()
        ordered = []
        for _, path in sorted(found, key=lambda kp: -kp[0]):
            key = os.path.abspath(path)
            if key not in seen:
                seen.add(key)
                ordered.append(path)
        return ordered

    def _read_state(self, path: Path) -> dict[str, Any]:
        """A state file's payload, checked whole and loaded into the monitor, or StateError."""
        run = self._run
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _MissingState(f"{path} does not exist") from None
        except OSError as exc:
            raise StateError(f"{path} cannot be read ({exc})") from exc
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise StateError(f"{path} is not valid JSON ({len(text)} bytes; {exc}): truncated "
                             "or edited") from exc
        if not isinstance(payload, dict):
            raise StateError(f"{path} holds a {type(payload).__name__}, not a state object")
        try:
            version, step = int(payload.get("version", 0)), int(payload["step"])
            rows = [dict(r) for r in payload.get("rows", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{path} is missing or has a bad 'version', 'step' or 'rows' "
                             f"({type(exc).__name__}: {exc})") from exc
        if version > STATE_VERSION:
            raise StateError(f"{path} was written by a newer satmon (state version {version})")
        if payload.get("monitor") is not None and run.monitor is not None:
            try:
                run.monitor.load_state_dict(payload["monitor"])  # all or nothing
            except StateError as exc:
                raise StateError(f"{path}: {exc}") from exc
        return {"step": step, "rows": rows, "path": path}

    def _load_state(self, args: Any, state: Any) -> None:
        """Restore the engine at a resume; see "Resuming" in the module docstring."""
        run = self._run
        step = int(state.global_step)
        problems: list[str] = []
        loaded = None
        for path in self._state_candidates(step):
            try:
                loaded = self._read_state(path)
                break
            except _MissingState as exc:
                problems.append(str(exc))
            except StateError as exc:
                if self.strict:
                    raise StateError(
                        f"satmon cannot resume its monitor: {exc}. Delete that file to rebuild "
                        "the monitor from the trainer's log history (and older checkpoints), "
                        "or pass SaturationCallback(strict=False) to do so automatically."
                    ) from exc
                problems.append(str(exc))
        base = loaded["step"] if loaded else -1
        run.rows = loaded["rows"] if loaded else []
        replayed = self._replay_log_history(getattr(state, "log_history", None) or [],
                                            after=base, upto=step)
        if loaded and base == step and not problems:
            run.resumed_from = str(loaded["path"])
            logger.info("satmon: resumed the monitor from %s (%d updates)", loaded["path"],
                        len(run.rows))
            return
        used = (f"the state of checkpoint-{base} ({loaded['path']})" if loaded
                else "no saved state")
        run.resumed_from = str(loaded["path"]) if loaded else "log_history"
        self._warn_once("state-fallback", (
            f"satmon: resuming at step {step}: the engine state of checkpoint-{step} is not "
            f"usable ({'; '.join(problems) or 'not found'}). Using {used} and replaying "
            f"{replayed} logged step(s) after it from the trainer's log history, so the "
            "decisions are those of an uninterrupted run as far as that history holds the "
            "monitor's inputs."))

    def _replay_log_history(self, history: list[Mapping[str, Any]], *, after: int,
                            upto: int) -> int:
        """Feed the trainer's log entries with ``after < step <= upto`` through the same
        reading path as live logs (nothing is acted on or sent); returns the steps replayed."""
        run = self._run
        entries = [e for e in history if isinstance(e, Mapping)
                   and isinstance(e.get("step"), int) and after < e["step"] <= upto]
        if not entries or run.monitor is None:
            return 0
        eval_steps = {e["step"] for e in entries if _log_kind(e) == "eval"}
        prefix = f"{self.name}/heldout/"
        sizes: dict[int, dict[str, int]] = {}
        for e in entries:
            for k, v in e.items():
                if k.startswith(prefix) and k.endswith("/n") and isinstance(v, (int, float)):
                    sizes.setdefault(e["step"], {})[k[len(prefix):-2]] = int(v)
        sink, run.sink, run.replaying = run.sink, None, True
        before = self.updates
        try:
            for e in entries:
                step = int(e["step"])
                logs = {k: v for k, v in e.items() if k != "step"}
                control = _ReplayControl(should_evaluate=step in eval_steps)
                held = {k[len(prefix):]: v for k, v in logs.items()
                        if k.startswith(prefix) and not k.endswith("/n")}
                if logs and all(k.startswith(prefix) and k.endswith("/n") for k in logs):
                    continue  # an eval log's sample sizes, read with that log below
                if held:
                    pending = self._pending_for(step, control)
                    for name, value in held.items():
                        n = logs.get(f"{prefix}{name}/n")
                        pending.heldout[name] = (float(value), int(n) if n else None)
                    continue
                kind = _log_kind(logs)
                if kind == "train":
                    self._read_train(logs, step, control)
                elif kind == "eval":
                    self._read_eval(logs, step, control, {}, sizes=sizes.get(step))
            self._flush()
        finally:
            run.sink, run.replaying = sink, False
        return self.updates - before

    # -- set-up helpers -------------------------------------------------------------------

    def _build_monitor(self, args: Any, state: Any) -> None:
        run = self._run
        if run.monitor is not None:
            return
        if isinstance(self.monitor, SaturationMonitor):
            # A fresh training starts the engine afresh; a resume loads its saved state next.
            self.monitor.reset()
            run.monitor = self.monitor
            return
        params = dict(self.monitor or {})
        if params.get("total_steps") is None and state.max_steps and state.max_steps > 0:
            params["total_steps"] = int(state.max_steps)
        if params.get("eval_every") is None:
            if self.evaluator is not None:
                params["eval_every"] = self.evaluator.every
            elif _eval_enabled(args) and getattr(args, "eval_steps", None):
                steps = args.eval_steps
                if isinstance(steps, float) and steps < 1 and state.max_steps:
                    steps = max(1, int(round(steps * state.max_steps)))
                params["eval_every"] = int(steps)
        if params.get("frozen_after") is None:
            steps = _adam_momentum_steps(args)
            if steps is not None:
                params["frozen_after"] = steps
        run.monitor = SaturationMonitor(**params)

    def _choose_source(self, args: Any) -> str:
        wanted = self.heldout
        evaluates = _eval_enabled(args)
        if wanted == "auto":
            if self.evaluator is not None:
                return "evaluator"
            if evaluates:
                return "eval"
            self._warn_once("no-heldout", (
                "satmon: no held-out source (no HeldoutEvaluator, and the trainer does not "
                "evaluate: eval_strategy='no'). satmon will report saturation of the training "
                "reward but cannot tell memorizing from generalizing runs. Pass "
                "evaluator=HeldoutEvaluator(...) or set eval_strategy='steps' with an "
                "eval_dataset; heldout='none' silences this warning."))
            return "none"
        if wanted == "eval" and not evaluates:
            msg = ("SaturationCallback(heldout='eval') reads held-out values from evaluation "
                   "logs, but the trainer never evaluates (eval_strategy='no'). Set "
                   "eval_strategy='steps' and eval_steps with an eval_dataset, or pass "
                   "evaluator=HeldoutEvaluator(...).")
            if self.strict:
                raise ValueError(msg)
            self._warn_once("eval-never", f"satmon: {msg} (strict=False: going on without "
                                          "held-out values)")
            return "none"
        return wanted

    # -- failure handling -----------------------------------------------------------------

    def _guard(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            self._failure(what)
            return None

    def _failure(self, what: str) -> None:
        run = self._run
        run.failures += 1
        # The first failures with their traceback, then one line per hundred.
        if run.failures <= 3 or run.failures % 100 == 0:
            logger.exception("satmon: %s failed (failure %d); training goes on", what,
                             run.failures)

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._run.warned:
            return
        self._run.warned.add(key)
        logger.warning(message)

    def __repr__(self) -> str:
        return (f"SaturationCallback(name={self.name!r}, action={self.action!r}, "
                f"heldout={self.heldout!r}, updates={self.updates})")


_HANDLER: logging.Handler | None = None


def _setup_logging(args: Any, is_main: bool) -> None:
    """Make satmon's lines visible in a job that did not configure logging.

    When neither the ``satmon`` logger nor the root logger has a handler, one stderr handler
    is added to ``satmon`` (once per process). Its level follows the trainer: ``log_level``
    (main process) / ``log_level_replica`` (other ranks) when set, else INFO on the main
    process and WARNING elsewhere, so per-evaluation lines come from rank 0 only. A user's own
    logging configuration is left alone.
    """
    global _HANDLER
    lib = logging.getLogger("satmon")
    if _HANDLER is None and (lib.handlers or logging.getLogger().handlers):
        return
    level = logging.INFO if is_main else logging.WARNING
    chosen = getattr(args, "log_level" if is_main else "log_level_replica", "passive")
    if isinstance(chosen, str) and chosen not in ("passive", ""):
        level = logging.getLevelName(chosen.upper()) if chosen != "critical" else logging.CRITICAL
        level = level if isinstance(level, int) else logging.INFO
    if _HANDLER is None:
        _HANDLER = logging.StreamHandler()
        _HANDLER.setFormatter(logging.Formatter("%(message)s"))
        lib.addHandler(_HANDLER)
        lib.propagate = False
    lib.setLevel(level)


def _log_kind(logs: Mapping[str, Any]) -> str:
    if any(isinstance(k, str) and k.startswith("eval_") for k in logs):
        return "eval"
    if "train_runtime" in logs:
        return "summary"
    return "train"


def _as_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _dataset_size(dataloader: Any) -> int | None:
    dataset = getattr(dataloader, "dataset", None)
    try:
        n = len(dataset) if dataset is not None else None
    except TypeError:
        return None
    return n if n else None


def _adam_momentum_steps(args: Any) -> int | None:
    """The monitor's ``frozen_after`` for the trainer's optimizer: the steps Adam's momentum
    still moves the model after the gradient vanishes, from ``adam_beta1`` / ``adam_beta2``
    (None for other optimizers or unusable betas: the monitor's default then holds)."""
    optim = getattr(args, "optim", None)
    name = str(getattr(optim, "value", optim) or "").lower()
    b1, b2 = getattr(args, "adam_beta1", None), getattr(args, "adam_beta2", None)
    if "adam" not in name or not isinstance(b1, (int, float)) or not isinstance(b2, (int, float)):
        return None
    try:
        return momentum_steps(float(b1), float(b2))
    except ValueError as exc:
        logger.warning("satmon: %s; frozen_after keeps the monitor's default", exc)
        return None


def _eval_enabled(args: Any) -> bool:
    strategy = getattr(args, "eval_strategy", "no")
    return str(getattr(strategy, "value", strategy)) != "no"


def _reports_to_mlflow(args: Any) -> bool:
    report_to = getattr(args, "report_to", None) or []
    if isinstance(report_to, str):
        report_to = [report_to]
    return "mlflow" in report_to or "all" in report_to


def _mlflow_wanted(args: Any) -> bool:
    if _reports_to_mlflow(args):
        return True
    if os.environ.get("MLFLOW_TRACKING_URI") or os.environ.get("MLFLOW_RUN_ID"):
        return True
    if not is_available("mlflow"):
        return False
    return require("mlflow", feature="logging to MLflow").active_run() is not None


class _MissingState(Exception):
    """No state file at a candidate path (the normal case for checkpoints without one)."""


@dataclass
class _ReplayControl:
    """The part of ``TrainerControl`` the reading path consults, for a replayed log entry."""

    should_evaluate: bool = False
    should_log: bool = True
