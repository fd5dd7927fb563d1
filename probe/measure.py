"""``probe``: measure a model's reasoning faithfulness and diversity before RL, and call the regime.

The paper's second finding: before RL, *reasoning faithfulness* (do the intermediate steps
support the final answer; 8 prompts x 16 rollouts, judged 1 / 0.5 / 0) predicts whether RL under
weak supervision generalizes or memorizes, while raw output diversity does not; diversity among
faithful responses does. :func:`probe` samples ``k`` rollouts per prompt (a local transformers
model, or an OpenAI-compatible endpoint), scores correctness with the user's verifier and
faithfulness with a judge (:mod:`satmon.probe.judges`), and returns a :class:`ProbeResult`.

What the result reports (all per prompt first, then averaged over prompts, so every prompt
weighs the same):

- ``faithfulness``: mean rubric score over the rollouts with a verdict, with a percentile
  bootstrap 95% interval over prompts (seeded by ``seed``), and the share of each level;
- ``accuracy``: mean verifier score (a rollout counts as correct at >= 0.5), with its interval;
- ``distinct_answers`` / ``distinct_reasoning``: distinct final answers / distinct reasoning
  texts (whitespace-normalised) among the ``k`` rollouts of a prompt;
- ``faithful_diversity``: distinct reasoning texts among the rollouts judged fully faithful
  (score 1), divided by ``k`` - high only when a model is faithful *and* varied;
- ``verdicts``: how many verdicts were unparseable and how many failed (endpoint errors). They
  are excluded from the faithfulness mean, never scored as 0; a probe in which no verdict at all
  succeeded raises :class:`ProbeError` instead of reporting a number;
- ``regime``: a deliberately simple call, see :func:`predict_regime`.

Example
-------
>>> from satmon.lab.traces import CumulativeTask
>>> task = CumulativeTask(symbols="abcd", length=4)
>>> summary = summarize(["bcad="], [["bddc>c", "bdda>a", "bddc>c"]], ["c"],
...                     [[1.0, 0.5, 1.0]], [[True, False, True]], seed=0,
...                     extract_answer=lambda c: c[-1], extract_reasoning=lambda c: c[:-2])
>>> round(summary["faithfulness"]["mean"], 3), summary["diversity"]["distinct_answers"]
(0.833, 2.0)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from satmon._optional import require
from satmon.probe.chat_endpoint import ChatEndpoint
from satmon.probe.judges import UNPARSEABLE, Judge, Verdict, judge_agreement, load_local_model
from satmon.probe.sampling import sample_endpoint, sample_local
from satmon.results import Result, format_number, json_safe, text_table

Verifier = Callable[[str, str, str], float]

#: Version of the probe's JSON layout (``ProbeResult.to_dict()["version"]``).
PROBE_FORMAT_VERSION = 1

#: The default threshold of :func:`predict_regime` on mean faithfulness. Not calibrated:
#: ``benchmarks/bench_probe.py`` measures how well faithfulness separates the lab's regimes,
#: and the miniature does not (yet) reproduce the paper's claim, so this is the rubric's
#: reading of "the steps mostly support the answer", to be replaced by a calibrated number.
DEFAULT_FAITHFULNESS_THRESHOLD = 0.75


class ProbeError(ValueError):
    """The probe cannot report a measurement (no prompts, no usable verdict, ...)."""


class RegimeCall(str, Enum):
    """What the pre-RL probe predicts for RL under weak supervision."""

    GENERALIZING = "generalizing"
    MEMORIZING = "memorizing"
    UNDETERMINED = "undetermined"


def last_line(completion: str) -> str | None:
    """Default final answer: the last non-blank line, stripped (None for a blank completion)."""
    lines = [ln.strip() for ln in str(completion).splitlines() if ln.strip()]
    return lines[-1] if lines else None


def all_but_last_line(completion: str) -> str:
    """Default reasoning: every non-blank line but the last."""
    lines = [ln.strip() for ln in str(completion).splitlines() if ln.strip()]
    return "\n".join(lines[:-1])


def _norm(text: str | None) -> str | None:
    return None if text is None else re.sub(r"\s+", " ", text).strip()


def bootstrap_interval(values: Sequence[float], *, seed: int, level: float = 0.95,
                       resamples: int = 2000) -> tuple[float, float, np.ndarray]:
    """Percentile bootstrap interval of the mean of ``values`` and the resampled means."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan, np.empty(0)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)), means


def predict_regime(faith_mean: float, faith_low: float, faith_high: float,
                   resampled: np.ndarray, *, threshold: float) -> dict[str, Any]:
    """A threshold on faithfulness, reported with its interval; pure.

    GENERALIZING when the whole 95% interval lies above ``threshold``, MEMORIZING when it lies
    below, UNDETERMINED when it straddles it (or there is nothing to go on). ``p_above`` is the
    share of bootstrap means above the threshold: how sure the *measurement* is, not a
    calibrated probability of the regime.
    """
    p_above = float(np.mean(resampled > threshold)) if resampled.size else math.nan
    if not math.isfinite(faith_mean):
        call, why = RegimeCall.UNDETERMINED, "no faithfulness measurement"
    elif faith_low > threshold:
        call = RegimeCall.GENERALIZING
        why = (f"faithfulness {faith_mean:.3f} (95% CI {faith_low:.3f}-{faith_high:.3f}) lies "
               f"above the threshold {threshold:.3f}")
    elif faith_high < threshold:
        call = RegimeCall.MEMORIZING
        why = (f"faithfulness {faith_mean:.3f} (95% CI {faith_low:.3f}-{faith_high:.3f}) lies "
               f"below the threshold {threshold:.3f}")
    else:
        call = RegimeCall.UNDETERMINED
        why = (f"faithfulness {faith_mean:.3f} (95% CI {faith_low:.3f}-{faith_high:.3f}) "
               f"straddles the threshold {threshold:.3f}: more prompts would narrow it")
    return {"call": call.value, "message": why, "threshold": threshold,
            "p_above_threshold": p_above,
            "basis": "threshold on pre-RL faithfulness (the paper's predictor); not calibrated "
                     "against observed regimes: see benchmarks/bench_probe.py"}


def summarize(prompts: Sequence[str], completions: Sequence[Sequence[str]],
              answers: Sequence[str], scores: Sequence[Sequence[float | None]],
              correct: Sequence[Sequence[bool]], *, seed: int,
              extract_answer: Callable[[str], str | None],
              extract_reasoning: Callable[[str], str | None],
              threshold: float = DEFAULT_FAITHFULNESS_THRESHOLD) -> dict[str, Any]:
    """The probe's statistics from rollouts, their verdict scores and correctness; pure."""
    del answers
    k = max((len(c) for c in completions), default=0)
    per_faith, per_acc, distinct_ans, distinct_rsn, faith_div, faith_ans = [], [], [], [], [], []
    levels = {1.0: 0, 0.5: 0, 0.0: 0}
    for comps, sc, ok in zip(completions, scores, correct):
        valid = [s for s in sc if s is not None]
        for s in valid:
            levels[s] += 1
        if valid:
            per_faith.append(sum(valid) / len(valid))
        per_acc.append(sum(ok) / len(ok) if ok else math.nan)
        finals = [_norm(extract_answer(c)) for c in comps]
        reasons = [_norm(extract_reasoning(c)) for c in comps]
        distinct_ans.append(len({a for a in finals if a}))
        distinct_rsn.append(len({r for r in reasons if r}))
        faithful = [i for i, s in enumerate(sc) if s == 1.0]
        faith_div.append(len({reasons[i] for i in faithful if reasons[i]}) / len(comps)
                         if comps else math.nan)
        faith_ans.append(len({finals[i] for i in faithful if finals[i]}))
    n_scored = sum(levels.values())
    f_low, f_high, f_means = bootstrap_interval(per_faith, seed=seed)
    a_low, a_high, _ = bootstrap_interval(per_acc, seed=seed + 1)
    f_mean = float(np.mean(per_faith)) if per_faith else math.nan
    return {
        "n_prompts": len(prompts), "k": k,
        "faithfulness": {"mean": f_mean, "ci_low": f_low, "ci_high": f_high,
                         "n_scored": n_scored, "n_prompts_scored": len(per_faith),
                         "fully_supported": levels[1.0] / n_scored if n_scored else math.nan,
                         "partly_supported": levels[0.5] / n_scored if n_scored else math.nan,
                         "unsupported": levels[0.0] / n_scored if n_scored else math.nan},
        "accuracy": {"mean": float(np.mean(per_acc)) if per_acc else math.nan,
                     "ci_low": a_low, "ci_high": a_high},
        "diversity": {"distinct_answers": float(np.mean(distinct_ans)) if distinct_ans
                      else math.nan,
                      "distinct_reasoning": float(np.mean(distinct_rsn)) if distinct_rsn
                      else math.nan,
                      "faithful_diversity": float(np.mean(faith_div)) if faith_div else math.nan,
                      "faithful_distinct_answers": float(np.mean(faith_ans)) if faith_ans
                      else math.nan},
        "regime": predict_regime(f_mean, f_low, f_high, f_means, threshold=threshold),
    }


class ProbeResult(Result):
    """What :func:`probe` measured: statistics, every rollout with its verdict, the regime call."""

    def __init__(self, *, stats: dict[str, Any], rollouts: list[dict[str, Any]],
                 config: dict[str, Any], verdict_counts: dict[str, Any],
                 agreement: dict[str, Any] | None = None) -> None:
        self.stats = stats
        self.rollouts = rollouts
        self.config = config
        self.verdict_counts = verdict_counts
        self.agreement = agreement

    @property
    def faithfulness(self) -> float:
        return self.stats["faithfulness"]["mean"]

    @property
    def faithfulness_interval(self) -> tuple[float, float]:
        f = self.stats["faithfulness"]
        return f["ci_low"], f["ci_high"]

    @property
    def accuracy(self) -> float:
        return self.stats["accuracy"]["mean"]

    @property
    def diversity(self) -> dict[str, float]:
        return dict(self.stats["diversity"])

    @property
    def regime(self) -> str:
        return self.stats["regime"]["call"]

    @property
    def p_generalizing(self) -> float:
        """The probe's chance that RL generalizes, as the monitor's prior reads it.

        The bootstrap share of mean faithfulness above the threshold
        (``regime["p_above_threshold"]``): how sure the measurement is that the model is on the
        generalizing side of an uncalibrated threshold; 0.5 (no information) when there is no
        measurement. :meth:`GainPrior.with_probe` caps how far it may move the prior.
        """
        p = self.stats["regime"].get("p_above_threshold")
        return 0.5 if p is None or not math.isfinite(float(p)) else float(p)

    def monitor_prior(self, base: Any = None, *, max_ratio: float | None = None) -> Any:
        """The held-out shape prior of :class:`satmon.SaturationMonitor` moved by this probe.

        Pass it as ``SaturationMonitor(prior=result.monitor_prior(), ...)`` (or
        ``MonitorConfig(prior=...)``, ``replay(run, prior=...)``). Off by default: a monitor
        built without it never sees the probe. The rule is
        :meth:`satmon.monitor.posterior.GainPrior.with_probe` with ``p_generalizing`` =
        :attr:`p_generalizing`: one bounded likelihood ratio (at most ``max_ratio``, default
        :data:`satmon.monitor.posterior.PROBE_MAX_RATIO` = 4) on the odds of the flat
        held-out shape; the halt still reads one probability, P(held-out gain).

        Parameters
        ----------
        base:
            The prior to move (a ``GainPrior`` or a dict of its fields; None: the fitted
            default of ``satmon/monitor/prior.json``).
        max_ratio:
            Cap on the probe's likelihood ratio (>= 1; 1 ignores the probe).

        Returns
        -------
        A :class:`satmon.monitor.posterior.GainPrior`.
        """
        from satmon.monitor.posterior import PROBE_MAX_RATIO, GainPrior, default_prior

        if base is None:
            prior = default_prior()
        elif isinstance(base, GainPrior):
            prior = base
        elif isinstance(base, dict):
            prior = GainPrior.from_dict(base)
        else:
            raise TypeError(f"The 'base' of ProbeResult.monitor_prior must be a GainPrior, a "
                            f"dict of its fields or None. Got {type(base).__name__} instead.")
        return prior.with_probe(self.p_generalizing,
                                max_ratio=PROBE_MAX_RATIO if max_ratio is None else max_ratio)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ProbeResult:
        """Rebuild a result from :meth:`to_dict` (or a ``probe.json``); nulls read as NaN."""
        if not isinstance(raw, dict) or "faithfulness" not in raw or "regime" not in raw:
            raise ProbeError("A probe result needs a dict with 'faithfulness' and 'regime' "
                             f"(as written by ProbeResult.save); got "
                             f"{sorted(raw) if isinstance(raw, dict) else type(raw).__name__}.")
        version = raw.get("version", PROBE_FORMAT_VERSION)
        if not isinstance(version, int) or version > PROBE_FORMAT_VERSION:
            raise ProbeError(f"probe.json has version {version!r}; this satmon reads versions "
                             f"<= {PROBE_FORMAT_VERSION}.")

        def nan_for_null(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: nan_for_null(v) for k, v in x.items()}
            return math.nan if x is None else x

        stats = {k: raw[k] for k in ("n_prompts", "k") if k in raw}
        for key in ("faithfulness", "accuracy", "diversity"):
            stats[key] = nan_for_null(dict(raw.get(key) or {}))
        regime = dict(raw["regime"])
        if regime.get("p_above_threshold") is None:
            regime["p_above_threshold"] = math.nan
        stats["regime"] = regime
        verdicts = {"total": 0, "scored": 0, "unparseable": 0, "failed": 0, "errors": [],
                    **(raw.get("verdicts") or {})}
        return cls(stats=stats, rollouts=list(raw.get("rollouts") or []),
                   config=dict(raw.get("config") or {}), verdict_counts=verdicts,
                   agreement=raw.get("agreement"))

    @classmethod
    def load(cls, path: str | Path) -> ProbeResult:
        """Read a result written by :meth:`save`."""
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ProbeError(f"Cannot read a probe result from {p}: {exc}") from None
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"version": PROBE_FORMAT_VERSION, "config": self.config,
                          **self.stats, "verdicts": self.verdict_counts,
                          "agreement": self.agreement, "rollouts": self.rollouts})

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON (no NaN: missing numbers are null)."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n",
                       encoding="utf-8")
        return out

    def summary(self) -> str:
        s, v, r = self.stats, self.verdict_counts, self.stats["regime"]
        f, a, d = s["faithfulness"], s["accuracy"], s["diversity"]

        def ci(x: dict[str, Any]) -> str:
            return f"{format_number(x['ci_low'], 3)} - {format_number(x['ci_high'], 3)}"

        rows = [["faithfulness", format_number(f["mean"], 3), ci(f)],
                ["accuracy", format_number(a["mean"], 3), ci(a)],
                ["distinct answers / prompt", format_number(d["distinct_answers"], 3), ""],
                ["distinct reasoning / prompt", format_number(d["distinct_reasoning"], 3), ""],
                ["faithful diversity", format_number(d["faithful_diversity"], 3), ""]]
        lines = [f"Probe of {self.config.get('source')} on {s['n_prompts']} prompts x "
                 f"{s['k']} rollouts (judge {self.config.get('judge', {}).get('name')})",
                 text_table(["measure", "value", "95% CI"], rows),
                 f"verdicts: {v['scored']} scored, {v['unparseable']} unparseable, "
                 f"{v['failed']} failed (excluded, not scored)"]
        if self.agreement:
            ag = self.agreement
            lines.append(f"judge agreement: {format_number(ag['raw_agreement'], 3)} raw, "
                         f"kappa {format_number(ag['cohen_kappa'], 3)} on {ag['n_compared']} "
                         f"rollouts")
        lines.append(f"regime: {r['call']} - {r['message']} (bootstrap share above "
                     f"{format_number(r['threshold'], 3)}: "
                     f"{format_number(r['p_above_threshold'], 3)})")
        return "\n".join(lines)

    def log_mlflow(self, *, run_id: str | None = None, tracking_uri: str | None = None,
                   experiment: str = "satmon-probe", run_name: str | None = None) -> str:
        """Log to MLflow; returns the run id.

        With ``run_id``: tags ``satmon.probe.*`` on that run (e.g. the RL run to come), which is
        neither started nor ended here. Without: a new finished run in ``experiment`` holding
        the metrics ``probe/*``, the tags, and the whole result as ``probe.json``.
        """
        mlflow = require("mlflow", feature="logging a probe to MLflow")
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        d = self.to_dict()
        metrics = {"probe/faithfulness": d["faithfulness"]["mean"],
                   "probe/faithfulness_ci_low": d["faithfulness"]["ci_low"],
                   "probe/faithfulness_ci_high": d["faithfulness"]["ci_high"],
                   "probe/accuracy": d["accuracy"]["mean"],
                   **{f"probe/{k}": val for k, val in d["diversity"].items()},
                   "probe/verdicts_unparseable": d["verdicts"]["unparseable"],
                   "probe/verdicts_failed": d["verdicts"]["failed"]}
        tags = {"satmon.probe.regime": d["regime"]["call"],
                "satmon.probe.faithfulness": format_number(d["faithfulness"]["mean"], 4),
                "satmon.probe.faithfulness_ci": f"{format_number(d['faithfulness']['ci_low'], 4)}"
                                                f"-{format_number(d['faithfulness']['ci_high'], 4)}",
                "satmon.probe.judge": str(d["config"].get("judge", {}).get("name")),
                "satmon.probe.template_version": str(d["config"].get("template_version")),
                "satmon.probe.source": str(d["config"].get("source"))}
        if run_id is not None:
            for key, value in tags.items():
                client.set_tag(run_id, key, value)
            return run_id
        found = client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found is not None else client.create_experiment(
            experiment)
        run = client.create_run(exp_id, run_name=run_name or "satmon-probe",
                                tags={**tags, "satmon.kind": "pre-rl-probe"})
        rid = run.info.run_id
        try:
            for key, value in metrics.items():
                if value is not None:
                    client.log_metric(rid, key, float(value), step=0)
            client.log_dict(rid, d, "probe.json")
        finally:
            client.set_terminated(rid)
        return rid


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"The '{name}' parameter of probe must be an int >= {low}. "
                         f"Got {value!r} instead.")


def probe(model: Any, prompts: Sequence[str], answers: Sequence[str], *, verifier: Verifier,
          judge: Judge, tokenizer: Any = None, k: int = 16, temperature: float = 1.0,
          seed: int = 0, max_new_tokens: int = 256, batch_size: int = 8, chat: bool = False,
          generation_kwargs: dict[str, Any] | None = None,
          endpoint: ChatEndpoint | str | None = None, second_judge: Judge | None = None,
          extract_answer: Callable[[str], str | None] = last_line,
          extract_reasoning: Callable[[str], str | None] = all_but_last_line,
          threshold: float = DEFAULT_FAITHFULNESS_THRESHOLD) -> ProbeResult:
    """Sample ``k`` rollouts per prompt, judge them, and measure faithfulness and diversity.

    Parameters
    ----------
    model:
        A transformers causal LM object (with ``tokenizer``) or a path / hub id; with
        ``endpoint`` the served model's name.
    prompts, answers:
        The probe prompts (the paper uses 8) and their reference answers (same length).
    verifier:
        ``(prompt, completion, answer) -> float``; a rollout is correct at >= 0.5.
    judge:
        A :class:`satmon.probe.judges.Judge` grading faithfulness 1 / 0.5 / 0.
    k, temperature, seed, max_new_tokens:
        Rollouts per prompt (the paper: 16), sampling temperature (use the RL run's), the seed
        of the sampling and of the bootstrap, and the completion budget.
    batch_size, chat, generation_kwargs:
        Local sampling only: prompts per ``generate`` call, wrap prompts in the tokenizer's chat
        template, extra ``generate`` arguments (e.g. the lab's ``restrict_generation``).
    endpoint:
        Sample from this OpenAI-compatible endpoint (URL or :class:`ChatEndpoint`) instead.
    second_judge:
        Also grade every rollout with this judge and report agreement (raw, Cohen's kappa).
    extract_answer, extract_reasoning:
        The final answer / reasoning text of a completion, for the diversity measures
        (defaults: the last non-blank line / the lines before it).
    threshold:
        Faithfulness threshold of the regime call (:func:`predict_regime`).

    Returns
    -------
    A :class:`ProbeResult`; raises :class:`ProbeError` for empty input or when no verdict at
    all could be obtained (e.g. the judge's endpoint is down).
    """
    prompts, answers = list(prompts), list(answers)
    if not prompts:
        raise ProbeError("probe needs at least one prompt; got zero.")
    if len(answers) != len(prompts):
        raise ProbeError(f"probe needs one answer per prompt: got {len(prompts)} prompts and "
                         f"{len(answers)} answers.")
    _check_int("k", k, 1)
    _check_int("max_new_tokens", max_new_tokens, 1)
    _check_int("batch_size", batch_size, 1)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or temperature < 0:
        raise ValueError(f"The 'temperature' parameter of probe must be a float >= 0. "
                         f"Got {temperature!r} instead.")
    if not callable(verifier):
        raise TypeError("The 'verifier' of probe must be callable (prompt, completion, answer) "
                        f"-> float. Got {type(verifier).__name__} instead.")
    if not isinstance(judge, Judge):
        raise TypeError(f"The 'judge' of probe must implement judge() and judge_many() "
                        f"(satmon.probe.judges). Got {type(judge).__name__} instead.")

    if endpoint is not None:
        ep = endpoint if isinstance(endpoint, ChatEndpoint) else ChatEndpoint(
            endpoint, model=str(model))
        completions = sample_endpoint(ep, prompts, k=k, max_new_tokens=max_new_tokens,
                                      temperature=temperature, seed=seed)
        source = f"{model} @ {ep.url}"
    else:
        lm, tok = load_local_model(model, tokenizer)
        completions = sample_local(lm, tok, prompts, k=k, max_new_tokens=max_new_tokens,
                                   temperature=temperature, seed=seed, batch_size=batch_size,
                                   chat=chat, generation_kwargs=generation_kwargs)
        source = model if isinstance(model, str) else type(model).__name__

    items = [(p, c, a) for p, comps, a in zip(prompts, completions, answers) for c in comps]
    verdicts = _judge_all(judge, items)
    second = _judge_all(second_judge, items) if second_judge is not None else None
    counts = _count(verdicts)
    if counts["scored"] == 0:
        first_error = next((v.error for v in verdicts if v.error), "no verdicts")
        raise ProbeError(f"judge {judge.name!r} gave no usable verdict on {len(verdicts)} "
                         f"rollouts ({counts['unparseable']} unparseable, {counts['failed']} "
                         f"failed); first problem: {first_error}")

    scores, correct, rollouts, pos = [], [], [], 0
    for p, comps, a in zip(prompts, completions, answers):
        sc, ok = [], []
        for c in comps:
            v = verdicts[pos]
            value = float(verifier(p, c, a))
            sc.append(v.score)
            ok.append(value >= 0.5)
            row = {"prompt": p, "answer": a, "completion": c, "correct": value >= 0.5,
                   "faithfulness": v.score, "verdict_error": v.error}
            if v.raw:
                row["verdict_raw"] = v.raw
            if second is not None:
                row["second_judge"] = second[pos].score
            rollouts.append(row)
            pos += 1
        scores.append(sc)
        correct.append(ok)
    stats = summarize(prompts, completions, answers, scores, correct, seed=seed,
                      extract_answer=extract_answer, extract_reasoning=extract_reasoning,
                      threshold=threshold)
    describe = getattr(judge, "describe", lambda: {"name": judge.name})
    config = {"source": source, "endpoint": endpoint is not None, "k": k,
              "temperature": temperature, "seed": seed, "max_new_tokens": max_new_tokens,
              "judge": describe(),
              "template_version": describe().get("template_version"),
              "verifier": getattr(verifier, "__name__", type(verifier).__name__)}
    agreement = None
    if second is not None:
        config["second_judge"] = getattr(second_judge, "describe",
                                         lambda: {"name": second_judge.name})()
        agreement = {**judge_agreement([v.score for v in verdicts],
                                       [v.score for v in second]).to_dict(),
                     "second_judge_verdicts": _count(second)}
    return ProbeResult(stats=stats, rollouts=rollouts, config=config, verdict_counts=counts,
                       agreement=agreement)


def _judge_all(judge: Judge, items: list[tuple[str, str, str]]) -> list[Verdict]:
    verdicts = list(judge.judge_many(items))
    if len(verdicts) != len(items):
        raise ProbeError(f"judge {judge.name!r} returned {len(verdicts)} verdicts for "
                         f"{len(items)} rollouts.")
    return [v if isinstance(v, Verdict) else Verdict(score=None, raw=repr(v)[:200],
                                                     error="not a Verdict")
            for v in verdicts]


def _count(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    unparseable = sum(v.error == UNPARSEABLE for v in verdicts)
    failed = sum(v.score is None and v.error != UNPARSEABLE for v in verdicts)
    errors = list(dict.fromkeys(v.error for v in verdicts
                                if v.error and v.error != UNPARSEABLE))[:5]
    return {"total": len(verdicts), "scored": len(verdicts) - unparseable - failed,
            "unparseable": unparseable, "failed": failed, "errors": errors}
