"""Run one lab setting: a real TRL ``GRPOTrainer`` with satmon's callback, logged to MLflow.

:func:`run_lab` builds the task split, the tiny model and its tokenizer, runs the pre-RL step
if the setting has one, then trains with GRPO while :class:`satmon.callbacks.SaturationCallback`
evaluates held-out accuracy (greedy, true labels) and acts (``"flag"`` or ``"halt_and_save"``).
Each run is one MLflow run in the given tracking store (its curves, parameters and satmon's
own metrics and tags) and keeps its full curves on disk too, as a tidy ``step,metric,value``
CSV (``curves.csv``, the form ``satmon export`` writes) with the run's facts in ``run.json``.

Curve metrics: ``train_reward`` (what the policy is trained on: verifier, noisy label or
proxy), ``heldout_acc`` (greedy, true labels), ``train_true_accuracy`` (sampled rollouts on the
training prompts scored against their true answers: shows a model fitting wrong labels),
``entropy``, ``response_length``, ``frac_reward_zero_std``, and for scratchpad runs
``faithfulness`` (exact rubric on sampled rollouts of held-out prompts).

torch, transformers, trl and mlflow are imported inside the functions.
"""

from __future__ import annotations

import csv
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satmon._optional import require
from satmon.lab.models import build_char_tokenizer, build_tiny_model, count_parameters
from satmon.lab.rewards import MajorityVoteReward, SelfCertaintyReward
from satmon.lab.settings import LabSetting, LabSplits, PreRL, RewardKind
from satmon.lab.sft import measure_faithfulness, supervised_finetune
from satmon.lab.tasks import to_dataset, trl_reward
from satmon.results import Result, format_number, json_safe, text_table
from satmon.run import Run

#: Actions :func:`run_lab` accepts (those of SaturationCallback).
ACTIONS = ("flag", "halt", "halt_and_save")

HELDOUT_NAME = "heldout"
#: The ``model`` label of lab runs (``tiny-llama-<parameters>k``).
MODEL_FAMILY = "tiny-llama"
CURVES_FILE = "curves.csv"
FACTS_FILE = "run.json"

# TRL log key -> tidy metric name of the curves.
_TRL_TO_TIDY = {
    "reward": "train_reward",
    "rewards/true_accuracy/mean": "train_true_accuracy",
    "entropy": "entropy",
    "completions/mean_length": "response_length",
    "frac_reward_zero_std": "frac_reward_zero_std",
}

# What run.json keeps of each monitor update (the message only where the monitor acted).
_TRACE_FIELDS = ("step", "action", "reason", "phase", "p_saturated", "p_heldout_gain",
                 "t_sat_estimate", "regime", "message")

#: Curve metrics that only lab runs have (read back as auxiliary series).
LAB_ONLY_METRICS = ("train_true_accuracy", "faithfulness")

#: Rollouts per prompt and prompts for the faithfulness probe (the paper: 8 x 16).
FAITHFULNESS_PROMPTS = 8
FAITHFULNESS_ROLLOUTS = 16


@dataclass(frozen=True)
class LabProgress:
    """What a progress display gets after every logged step."""

    run_name: str
    step: int
    max_steps: int
    train_reward: float
    heldout: float
    decision: str


class LabRun(Result):
    """One finished lab run: what the callback did, the curves, where everything is stored."""

    def __init__(self, *, name: str, setting: LabSetting, seed: int, action: str,
                 halt_step: int | None, reason: str | None, message: str, steps_run: int,
                 curves: dict[str, list[tuple[int, float]]], wall_s: float, out_dir: Path,
                 mlflow_run_id: str | None, checkpoint: str | None, pre_rl: dict[str, Any],
                 n_parameters: int, monitor_trace: list[dict[str, Any]] | None = None,
                 monitor_config: dict[str, Any] | None = None) -> None:
        self.name = name
        self.setting = setting
        self.seed = seed
        self.action = action
        self.halt_step = halt_step
        self.reason = reason
        self.message = message
        self.steps_run = steps_run
        self.curves = curves
        self.wall_s = wall_s
        self.out_dir = out_dir
        self.mlflow_run_id = mlflow_run_id
        self.checkpoint = checkpoint
        self.pre_rl = pre_rl
        self.n_parameters = n_parameters
        self.monitor_trace = list(monitor_trace or [])
        self.monitor_config = dict(monitor_config or {})

    @property
    def halted(self) -> bool:
        return self.halt_step is not None

    @property
    def max_steps(self) -> int:
        return self.setting.max_steps

    @property
    def compute_saved(self) -> float:
        """Fraction of the planned GRPO steps not run."""
        return max(0, self.max_steps - self.steps_run) / self.max_steps

    @property
    def first_halt_decision(self) -> dict[str, Any] | None:
        """The first update at which the monitor asked to halt (also in ``"flag"`` runs)."""
        return next((t for t in self.monitor_trace if t["action"] == "halt"), None)

    @property
    def curves_path(self) -> Path:
        return self.out_dir / CURVES_FILE

    def heldout_at(self, step: int) -> float:
        """Held-out accuracy of the last evaluation at or before ``step`` (NaN if none)."""
        best = math.nan
        for s, v in self.curves.get("heldout_acc", []):
            if s <= step:
                best = v
        return best

    @property
    def final_heldout(self) -> float:
        points = self.curves.get("heldout_acc", [])
        return points[-1][1] if points else math.nan

    def to_run(self) -> Run:
        """The curves as a :class:`satmon.Run` (held-out with its sample size)."""
        def pairs(metric: str) -> tuple[list[int], list[float]]:
            pts = self.curves.get(metric, [])
            return [p[0] for p in pts], [p[1] for p in pts]

        heldout = {}
        if self.curves.get("heldout_acc"):
            s, v = pairs("heldout_acc")
            heldout["heldout_acc"] = (s, v, self.setting.n_heldout)
        aux = {m: pairs(m) for m in self.curves if m not in ("train_reward", "heldout_acc")
               and self.curves[m]}
        return Run(pairs("train_reward"), heldout=heldout, aux=aux, name=self.name,
                   metadata=self.facts())

    @property
    def model(self) -> str:
        """A label for the model trained: the lab's tiny Llama and its parameter count."""
        return f"{MODEL_FAMILY}-{self.n_parameters / 1e3:.0f}k"

    def facts(self) -> dict[str, Any]:
        """JSON-safe facts about the run (what ``run.json`` holds).

        ``monitor_config`` is the engine configuration the live callback ran with (the
        :class:`satmon.monitor.MonitorConfig` fields), so a replay of the saved curves
        (``satmon report``, :func:`satmon.replay`) can make the live decisions.
        """
        return json_safe({
            "name": self.name,
            "setting": self.setting.name,
            "model": self.model,
            "seed": self.seed,
            "action": self.action,
            "expected_regime": self.setting.expected_regime,
            "halted": self.halted,
            "halt_step": self.halt_step,
            "reason": self.reason,
            "message": self.message,
            "steps_run": self.steps_run,
            "max_steps": self.max_steps,
            "compute_saved": self.compute_saved,
            "final_heldout": self.final_heldout,
            "wall_s": self.wall_s,
            "mlflow_run_id": self.mlflow_run_id,
            "checkpoint": self.checkpoint,
            "n_parameters": self.n_parameters,
            "pre_rl": self.pre_rl,
            "config": self.setting.to_dict(),
            "first_halt_decision": self.first_halt_decision,
            "monitor": self.monitor_trace,
            "monitor_config": self.monitor_config,
        })

    def to_dict(self) -> dict[str, Any]:
        d = self.facts()
        d["curves"] = {m: [list(p) for p in pts] for m, pts in self.curves.items()}
        return json_safe(d)

    def summary(self) -> str:
        rows = [["setting", self.setting.name], ["seed", str(self.seed)],
                ["action", self.action],
                ["halted", f"step {self.halt_step} ({self.reason})" if self.halted else "no"],
                ["steps run", f"{self.steps_run} / {self.max_steps}"],
                ["final held-out", format_number(self.final_heldout)],
                ["wall time (s)", format_number(self.wall_s, 3)]]
        return f"Lab run '{self.name}'\n" + text_table(["", ""], rows)


def write_curves(curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """Write curves as a tidy ``step,metric,value`` CSV, sorted by step then metric order."""
    rows = [(s, m, v) for m, pts in curves.items() for s, v in pts]
    order = {m: i for i, m in enumerate(curves)}
    rows.sort(key=lambda r: (r[0], order[r[1]]))
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "metric", "value"])
        for s, m, v in rows:
            # Seven significant digits: exact for the rewards (multiples of 1/32 or 1/256)
            # and keeps the committed logs small.
            w.writerow([s, m, f"{float(v):.7g}"])


def read_lab_run(folder: str | Path) -> Run:
    """Read a saved lab run folder (``curves.csv`` + ``run.json``) back as a :class:`Run`.

    The same as ``satmon.analysis.read_run(folder)`` (format ``lab-run``, see
    :mod:`satmon.analysis.readers.lab_runs`): the curves through satmon's tidy-CSV reader, the
    run's name, metadata and live ``monitor_config`` from ``run.json``, the held-out sample
    size from its ``config.n_heldout``, and the lab's own curves (``train_true_accuracy``,
    ``faithfulness``) as auxiliary series.
    """
    folder = Path(folder)
    curves, facts = folder / CURVES_FILE, folder / FACTS_FILE
    for p in (curves, facts):
        if not p.is_file():
            raise FileNotFoundError(f"{folder} is not a lab run folder: {p.name} is missing "
                                    f"(a lab run folder holds {CURVES_FILE} and {FACTS_FILE}).")
    from satmon.analysis import read_run

    return read_run(folder, format="lab-run", preset="tidy")


def _reward_functions(setting: LabSetting, model: Any, tokenizer: Any) -> tuple[list, list]:
    """The training reward and a weight-0 true-accuracy probe (logged, never optimised)."""
    verifier = setting.verifier()
    if setting.reward is RewardKind.VERIFIER:
        main = trl_reward(verifier, name="label_accuracy", answer_column="answer")
    elif setting.reward is RewardKind.MAJORITY_VOTE:
        main = MajorityVoteReward(setting.parse_answer)
    else:
        main = SelfCertaintyReward(model, tokenizer)
    probe = trl_reward(verifier, name="true_accuracy", answer_column="true_answer")
    return [main, probe], [1.0, 0.0]


def _pre_rl(setting: LabSetting, model: Any, tokenizer: Any, splits: LabSplits,
            seed: int) -> dict[str, Any]:
    """Format warm-up, then the setting's SFT step; returns what was done, with numbers."""
    out: dict[str, Any] = {"kind": setting.pre_rl.value}
    if splits.format:
        warm = supervised_finetune(model, tokenizer,
                                   [(e.prompt, e.answer) for e in splits.format],
                                   steps=setting.format_steps,
                                   learning_rate=setting.sft_learning_rate, seed=seed + 1)
        out["format_warmup"] = warm.to_dict()
    if setting.pre_rl is PreRL.NONE:
        return out
    split = splits.rl
    task = setting.task
    with_trace = setting.pre_rl is PreRL.SFT_TRACES
    pairs = setting.sft_pairs(splits, seed)
    result = supervised_finetune(model, tokenizer, pairs, steps=setting.sft_steps,
                                 learning_rate=setting.sft_learning_rate, seed=seed)
    out["sft"] = result.to_dict()
    if with_trace:
        faith = measure_faithfulness(model, tokenizer, task,
                                     split.heldout_prompts[:FAITHFULNESS_PROMPTS],
                                     rollouts=FAITHFULNESS_ROLLOUTS, seed=seed)
        out["faithfulness"] = faith.to_dict()
    return out


def tracking_store(out_dir: str | Path) -> str:
    """The embedded MLflow store (sqlite) of an output folder, as a tracking URI."""
    return f"sqlite:///{(Path(out_dir) / 'mlflow.db').resolve()}"


def _artifact_dir(tracking_uri: str, run_dir: Path) -> Path | None:
    """``mlartifacts/`` beside a sqlite store's file; None for other stores (server-managed)."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return Path(tracking_uri[len(prefix):]).parent / "mlartifacts"
    return None


def ensure_experiment(tracking_uri: str, name: str, artifact_dir: Path | None) -> str:
    """The id of experiment ``name`` in the store, created with artifacts in ``artifact_dir``.

    Setting the artifact location keeps figures and tables beside an embedded store instead of
    in an ``mlruns/`` folder of whatever directory the command ran in; None leaves it to the
    tracking server.
    """
    mlflow = require("mlflow", feature="logging lab runs")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if artifact_dir is None:
        return client.create_experiment(name)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=artifact_dir.resolve().as_uri())


def _callbacks_module():
    # Imported when a run starts: the callbacks need transformers (the hf extra).
    from satmon.callbacks import saturation

    return saturation


def _make_recorder(run_name: str, setting: LabSetting, sat_callback: Any,
                   progress: Callable[[LabProgress], None] | None, probe: Callable | None):
    """A TrainerCallback that keeps the TRL curves (and the faithfulness probe's values)."""
    transformers = require("transformers", feature="lab runs")

    class CurveRecorder(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.curves: dict[str, list[tuple[int, float]]] = {m: [] for m in
                                                               _TRL_TO_TIDY.values()}

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            step = int(state.global_step)
            if "reward" not in logs:
                return
            for key, metric in _TRL_TO_TIDY.items():
                value = logs.get(key)
                if isinstance(value, (int, float)) and math.isfinite(float(value)):
                    self.curves[metric].append((step, float(value)))
            if progress is not None:
                rows = sat_callback.history
                held = [r["heldout"].get(HELDOUT_NAME) for r in rows if r.get("heldout")]
                progress(LabProgress(
                    run_name=run_name, step=step, max_steps=setting.max_steps,
                    train_reward=float(logs["reward"]) if logs.get("reward") is not None
                    else math.nan,
                    heldout=float(held[-1]) if held and held[-1] is not None else math.nan,
                    decision=(f"{rows[-1]['action']}" + (f":{rows[-1]['reason']}"
                                                         if rows[-1]["reason"] else ""))
                    if rows else "continue"))

        def on_step_end(self, args, state, control, **kwargs):
            step = int(state.global_step)
            if probe is not None and step % setting.eval_every == 0:
                self.curves.setdefault("faithfulness", []).append(
                    (step, probe(kwargs["model"], step)))

    return CurveRecorder()


def run_lab(setting: LabSetting, *, seed: int = 0, out_dir: str | Path,
            action: str = "halt_and_save", tracking_uri: str | None = None,
            experiment: str = "satmon-lab", run_name: str | None = None,
            monitor: dict[str, Any] | None = None,
            progress: Callable[[LabProgress], None] | None = None) -> LabRun:
    """Train one seeded run of ``setting`` with GRPO and satmon's callback.

    Parameters
    ----------
    setting:
        What to run (:data:`satmon.lab.settings.SETTINGS` holds the presets).
    seed:
        Seeds the prompt draw, the label corruption, the model initialisation, SFT and GRPO;
        the same seed gives the same run, so a halted run and its unhalted copy share every
        step up to the halt.
    out_dir:
        The run's folder: ``curves.csv``, ``run.json`` and, after a halt with
        ``"halt_and_save"``, the checkpoint of the halt step.
    action:
        The callback's action: ``"flag"`` (never stops; the unhalted copy), ``"halt"`` or
        ``"halt_and_save"``.
    tracking_uri, experiment:
        MLflow store and experiment of the run (default: the store ``mlflow.db`` in the parent
        of ``out_dir``).
    run_name:
        MLflow run name and label in tables (default ``<setting>-s<seed>``).
    monitor:
        Parameters of the :class:`satmon.monitor.SaturationMonitor` (defaults otherwise).
    progress:
        Called with a :class:`LabProgress` after every logged step (a live display).

    Returns
    -------
    A :class:`LabRun`.
    """
    if not isinstance(setting, LabSetting):
        raise TypeError(f"run_lab needs a LabSetting (see satmon.lab.settings.SETTINGS). "
                        f"Got {type(setting).__name__} instead.")
    if action not in ACTIONS:
        raise ValueError(f"The 'action' parameter of run_lab must be one of {list(ACTIONS)}. "
                         f"Got {action!r} instead.")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"The 'seed' parameter of run_lab must be an int >= 0. Got {seed!r}.")
    trl = require("trl", feature="lab runs")
    transformers = require("transformers", feature="lab runs")
    mlflow = require("mlflow", feature="logging lab runs")
    cb_module = _callbacks_module()
    from satmon.callbacks import heldout as heldout_module

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = run_name or f"{setting.name}-s{seed}"
    uri = tracking_uri or tracking_store(out.parent)
    start = time.perf_counter()

    splits = setting.splits(seed)
    split = splits.rl
    tokenizer = build_char_tokenizer(setting.task.alphabet)
    model = build_tiny_model(tokenizer, seed=seed)
    pre_rl = _pre_rl(setting, model, tokenizer, splits, seed)

    reward_funcs, weights = _reward_functions(setting, model, tokenizer)
    evaluator = heldout_module.HeldoutEvaluator(
        split.heldout_prompts, split.heldout_answers, setting.verifier(), name=HELDOUT_NAME,
        every=setting.eval_every, max_new_tokens=setting.max_completion_length,
        batch_size=setting.n_heldout)
    # The callback would take total_steps and eval_every from the trainer and the evaluator;
    # naming them here records the engine's whole configuration in run.json, so a replay of
    # the saved curves uses what the live callback used.
    monitor_params = {"total_steps": setting.max_steps, "eval_every": setting.eval_every,
                      **dict(monitor or {})}
    monitor_config = _monitor_config(monitor_params)
    sat_callback = cb_module.SaturationCallback(
        dict(monitor_params), action=action, evaluator=evaluator, heldout="evaluator",
        keys={"preset": "trl"}, mlflow=True, name="satmon")
    probe: Callable[[Any, int], float] | None = None
    if setting.with_trace:
        task = setting.task
        probe_prompts = split.heldout_prompts[:FAITHFULNESS_PROMPTS]

        def faithfulness_probe(m: Any, step: int) -> float:
            return measure_faithfulness(m, tokenizer, task, probe_prompts,
                                        rollouts=FAITHFULNESS_ROLLOUTS, seed=seed + step).mean
        probe = faithfulness_probe
    recorder = _make_recorder(name, setting, sat_callback, progress, probe)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*",
                                category=FutureWarning)
        config = trl.GRPOConfig(
            output_dir=str(out), max_steps=setting.max_steps,
            learning_rate=setting.learning_rate, lr_scheduler_type="constant",
            per_device_train_batch_size=setting.batch_size,
            num_generations=setting.num_generations,
            max_completion_length=setting.max_completion_length,
            temperature=setting.temperature, reward_weights=weights, beta=0.0,
            logging_steps=1, report_to=[], use_cpu=True, bf16=False, save_strategy="no",
            save_only_model=False, seed=seed, disable_tqdm=True, log_completions=False)
    dataset = to_dataset(split.train)

    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        experiment_id = ensure_experiment(uri, experiment, _artifact_dir(uri, out))
        with mlflow.start_run(experiment_id=experiment_id, run_name=name) as active:
            mlflow.set_tags({"lab.setting": setting.name, "lab.seed": str(seed),
                             "lab.action": action,
                             "lab.expected_regime": setting.expected_regime or "measured"})
            mlflow.log_params({f"lab.{k}": v for k, v in setting.to_dict().items()})
            trainer = trl.GRPOTrainer(model=model, processing_class=tokenizer,
                                      reward_funcs=reward_funcs, args=config,
                                      train_dataset=dataset,
                                      callbacks=[sat_callback, recorder])
            # The Trainer prints every log dict when tqdm is off; the lab shows its own display.
            trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
            with warnings.catch_warnings():
                # TRL calls transformers' renamed gradient-checkpointing methods every step;
                # nothing a lab user can act on.
                warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*",
                                        category=FutureWarning)
                trainer.train()
            steps_run = int(trainer.state.global_step)
            curves = dict(recorder.curves)
            if "faithfulness" in pre_rl:
                # The probe before RL used the same prompts, rollouts and seed as step 0's.
                curves["faithfulness"] = [(0, pre_rl["faithfulness"]["mean"]),
                                          *curves.get("faithfulness", [])]
            curves["heldout_acc"] = [
                (int(r["step"]), float(r["heldout"][HELDOUT_NAME]))
                for r in sat_callback.history
                if r.get("heldout") and r["heldout"].get(HELDOUT_NAME) is not None]
            curves = {m: pts for m, pts in curves.items() if pts}
            _log_curves(mlflow, active.info.run_id, curves)
            run_id = active.info.run_id
    finally:
        mlflow.set_tracking_uri(previous_uri)

    halted_step = sat_callback.halted_step
    halt = (next((d for d in sat_callback.decisions if d.should_stop), None)
            if halted_step is not None else None)
    checkpoint = None
    if halted_step is not None and action == "halt_and_save":
        candidate = out / f"checkpoint-{halted_step}"
        checkpoint = str(candidate) if candidate.is_dir() else None
    result = LabRun(
        name=name, setting=setting, seed=seed, action=action, halt_step=halted_step,
        reason=halt.reason.value if halt is not None and halt.reason is not None else None,
        message=halt.message if halt is not None else "",
        steps_run=steps_run, curves=curves, wall_s=time.perf_counter() - start, out_dir=out,
        mlflow_run_id=run_id, checkpoint=checkpoint, pre_rl=pre_rl,
        n_parameters=count_parameters(model),
        monitor_trace=_compact_trace(sat_callback.history, setting.eval_every),
        monitor_config=monitor_config)
    spool = out / "satmon-spool"
    if spool.is_dir() and not any(spool.iterdir()):
        # The callback's MLflow spool is empty once everything reached the store.
        spool.rmdir()
    write_curves(curves, out / CURVES_FILE)
    (out / FACTS_FILE).write_text(json.dumps(result.facts(), indent=2, allow_nan=False) + "\n")
    return result


def _monitor_config(params: dict[str, Any]) -> dict[str, Any]:
    """The full engine configuration ``params`` give (every MonitorConfig field), JSON-safe."""
    from satmon.monitor.config import MonitorConfig

    return json_safe(MonitorConfig(**params).to_dict())


def _compact_trace(history: list[dict[str, Any]], every: int) -> list[dict[str, Any]]:
    """The monitor's updates at evaluation steps and wherever it acted, rounded for storage."""
    out = []
    for row in history:
        acted = row.get("action") != "continue"
        if not acted and int(row["step"]) % every:
            continue
        item = {k: row.get(k) for k in _TRACE_FIELDS if k != "message"}
        for k in ("p_saturated", "p_heldout_gain", "t_sat_estimate"):
            v = item.get(k)
            item[k] = round(float(v), 4) if isinstance(v, (int, float)) and math.isfinite(v) \
                else None
        if acted:
            item["message"] = row.get("message", "")
        out.append(item)
    return out


def _log_curves(mlflow: Any, run_id: str, curves: dict[str, list[tuple[int, float]]]) -> None:
    """Log the full curves to the MLflow run in batches, under their tidy names.

    The names are those of ``satmon export`` (``train_reward``, ``heldout_acc`` ...), so
    ``satmon.analysis.read_run`` reads the MLflow run with the ``tidy`` preset.
    """
    entities = require("mlflow.entities", feature="logging lab runs")
    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    metrics = [entities.Metric(key=m, value=float(v), timestamp=now, step=int(s))
               for m, pts in curves.items() for s, v in pts]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000], synchronous=True)
