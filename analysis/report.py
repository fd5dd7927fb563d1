"""Post-hoc reports over many runs: exact t_sat, phases, held-out gains, monitor replay, G_sat.

:func:`build_report` runs, for every :class:`satmon.Run`,

* the paper's exact analysis (:func:`satmon.analyze_saturation`): t_sat, the pre- and
  post-saturation phases, and ``delta_sat`` / ``delta_post*`` per held-out series;
* a replay of the online monitor (:func:`satmon.replay.replay`): the step it would have halted
  at, why, the compute that halt saves and the held-out accuracy it gives up (regret);
* the mean gains over benchmark groups (in-domain / out-of-domain) from a
  :class:`~satmon.analysis.groups.GroupsConfig`,

and across runs the data gap ``G_sat`` (:func:`satmon.data_gap`) of every configured pair.

A run with a pre-RL probe beside it (``satmon probe``'s JSON: ``run.metadata["probe"]``, a dict
or the path of the file, or else a ``probe.json`` in the run's folder when the run was read
from a folder) also gets a probe row and note: faithfulness with its 95% interval, the regime
the probe predicted, and whether the observed regime agrees (:func:`observed_regime`).

One bad run does not sink a report over a thousand: a run whose analysis raises (no training
reward, a negative reward maximum) is kept as a row that carries the error, and a run with no
held-out series is analysed and says so. The :class:`Report` renders as text, CSV, Markdown, a
JSON dict and one self-contained HTML file (:mod:`satmon.analysis.report_html`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from satmon.analysis.escape import csv_cell, markdown_text, terminal_text
from satmon.analysis.groups import GroupsConfig, RunPair
from satmon.results import Result, format_number, json_safe, text_table
from satmon.run import Run
from satmon.saturation import (
    HELDOUT_POLICIES,
    DataGap,
    SaturationAnalysis,
    analyze_saturation,
    data_gap,
)

#: Formats :meth:`Report.write` can produce, by file suffix.
REPORT_FORMATS = ("html", "md", "csv", "json", "txt")

NO_HELDOUT_NOTE = "no held-out series: delta_sat, delta_post* and G_sat cannot be computed"

#: Held-out gain (last evaluation minus the baseline M(0), accuracy units, on the series that
#: gained most) at which a run's *observed* regime counts as generalizing: the definition of
#: ``benchmarks/bench_probe.py``, which measures how well the probe predicts it.
PROBE_MIN_GAIN = 0.05
PROBE_FILE = "probe.json"
PROBE_HEADER = ["run", "faithfulness", "95% CI", "accuracy", "faithful diversity",
                "predicted", "observed", "agrees"]
PROBE_NOTE = (f"observed = generalizing when a held-out series gained >= {PROBE_MIN_GAIN:g} "
              "from M(0) to its last evaluation")


@dataclass(frozen=True)
class ProbeView:
    """What a report shows of a pre-RL probe (``satmon probe``'s JSON, format version 1).

    The analysis layer reads the JSON itself rather than importing :mod:`satmon.probe` (the
    probe sits above it), so only these fields are used; missing numbers read as NaN.
    """

    source: str
    faithfulness: float
    ci_low: float
    ci_high: float
    accuracy: float
    faithful_diversity: float
    predicted: str
    message: str
    n_prompts: int | None
    k: int | None

    @classmethod
    def from_json(cls, raw: Any, source: str) -> ProbeView:
        """Read a probe result dict; ValueError (naming ``source``) when it is not one."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("faithfulness"), Mapping) \
                or not isinstance(raw.get("regime"), Mapping):
            got = sorted(raw)[:10] if isinstance(raw, Mapping) else type(raw).__name__
            raise ValueError(f"{source} is not a satmon probe result (it needs 'faithfulness' "
                             f"and 'regime' objects, as ProbeResult.save writes); got {got}")
        version = raw.get("version", 1)
        if not isinstance(version, int) or version > 1:
            raise ValueError(f"{source} has probe format version {version!r}; this report "
                             "reads version 1")
        f, reg = raw["faithfulness"], raw["regime"]
        acc = raw.get("accuracy") if isinstance(raw.get("accuracy"), Mapping) else {}
        div = raw.get("diversity") if isinstance(raw.get("diversity"), Mapping) else {}
        n_prompts, k = raw.get("n_prompts"), raw.get("k")
        return cls(source=source, faithfulness=_as_float(f.get("mean")),
                   ci_low=_as_float(f.get("ci_low")), ci_high=_as_float(f.get("ci_high")),
                   accuracy=_as_float(acc.get("mean")),
                   faithful_diversity=_as_float(div.get("faithful_diversity")),
                   predicted=str(reg.get("call", "undetermined")),
                   message=str(reg.get("message", "")),
                   n_prompts=n_prompts if isinstance(n_prompts, int) else None,
                   k=k if isinstance(k, int) else None)

    def interval(self) -> str:
        return f"{format_number(self.ci_low, 3)}-{format_number(self.ci_high, 3)}"

    def to_dict(self) -> dict[str, Any]:
        return json_safe({k: getattr(self, k) for k in self.__dataclass_fields__})


def load_probe(run: Run) -> tuple[ProbeView | None, str]:
    """The run's pre-RL probe and a note when one was there but could not be read.

    Looked up in this order: ``run.metadata["probe"]`` (a probe result dict, or the path of
    its JSON file), then ``probe.json`` in the folder the run was read from
    (``run.metadata["source"]`` when it is a directory). No probe: ``(None, "")``.
    """
    attached = run.metadata.get("probe")
    source = run.metadata.get("source")
    path: Path | None = None
    if attached is not None:
        if isinstance(attached, Mapping):
            try:
                return ProbeView.from_json(attached, 'run.metadata["probe"]'), ""
            except ValueError as exc:
                return None, f"pre-RL probe not shown: {exc}"
        if not isinstance(attached, (str, Path)):
            return None, (f'pre-RL probe not shown: run.metadata["probe"] must be a probe '
                          f"result dict or a path; got {type(attached).__name__}")
        path = Path(attached)
    elif isinstance(source, (str, Path)) and Path(source).is_dir() \
            and (Path(source) / PROBE_FILE).is_file():
        path = Path(source) / PROBE_FILE
    if path is None:
        return None, ""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return ProbeView.from_json(raw, str(path)), ""
    except (OSError, ValueError) as exc:
        return None, f"pre-RL probe not shown: {exc}"


def observed_regime(analysis: SaturationAnalysis | None) -> tuple[str, str]:
    """The regime a finished run showed, for checking a probe's prediction, and why.

    ``generalizing`` when some held-out series gained at least :data:`PROBE_MIN_GAIN` from
    its baseline M(0) to its last evaluation, ``memorizing`` otherwise, ``unknown`` without a
    held-out series.
    """
    if analysis is None or not analysis.gains:
        return "unknown", "no held-out series"
    gains = {g.name: g.final - g.baseline for g in analysis.gains.values()
             if math.isfinite(g.final - g.baseline)}
    if not gains:
        return "unknown", "no finite held-out gain"
    best = max(gains, key=gains.__getitem__)
    call = "generalizing" if gains[best] >= PROBE_MIN_GAIN else "memorizing"
    return call, (f"held-out gain {gains[best]:+.3f} on {best} (final - M(0)) "
                  f"{'>=' if call == 'generalizing' else '<'} {PROBE_MIN_GAIN:g}")


@dataclass(frozen=True)
class ReplaySummary:
    """What the online monitor would have done on one finished run.

    Attributes
    ----------
    halt_step: the step it would have halted at (None: it would have let the run finish).
    reason: the halt reason's value (``"memorizing"``, ``"saturated"`` ...) or None.
    message: the monitor's message at the halt (numbers included), or its last message when
        it did not halt.
    compute_saved: fraction of the run's steps after the halt (0 when it never halts).
    regret: held-out accuracy given up by halting (best after the halt minus value at the halt).
    steps, p_saturated: the monitor's P(saturated) after each update, for the plot strip.
    flag_step: first step the monitor flagged the run (None if never).
    p_heldout_gain: P(held-out gain) after each update (the quantity the halt is decided on;
        NaN before held-out evidence), aligned with ``steps``.
    """

    halt_step: int | None
    reason: str | None
    message: str
    compute_saved: float
    regret: float
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    p_saturated: np.ndarray = field(default_factory=lambda: np.zeros(0))
    flag_step: int | None = None
    p_heldout_gain: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def halted(self) -> bool:
        return self.halt_step is not None

    @classmethod
    def from_records(cls, records: Sequence[Any], *, halt_step: int | None = None,
                     reason: str | None = None, message: str = "", compute_saved: float = 0.0,
                     regret: float = math.nan) -> "ReplaySummary":
        """The summary of live updates (:class:`satmon.decision.UpdateRecord` or their
        dicts): what the callback saw, drawn with the same plot code as a replay."""
        from satmon.decision import UpdateRecord

        recs = [r if isinstance(r, UpdateRecord) else UpdateRecord.from_dict(r) for r in records]
        flag = next((r.step for r in recs if r.action != "continue"), None)
        return cls(halt_step=halt_step, reason=reason, message=message,
                   compute_saved=compute_saved, regret=regret,
                   steps=np.asarray([r.step for r in recs], dtype=np.int64),
                   p_saturated=np.asarray([r.p_saturated for r in recs], dtype=float),
                   flag_step=flag,
                   p_heldout_gain=np.asarray([r.p_heldout_gain for r in recs], dtype=float))

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "halt_step": self.halt_step, "reason": self.reason, "message": self.message,
            "compute_saved": self.compute_saved, "regret": self.regret,
            "flag_step": self.flag_step,
        })


def summarize_replay(result: Any) -> ReplaySummary:
    """Reduce a :class:`satmon.replay.ReplayResult` to the numbers a report and a plot need.

    Only the P(saturated) trace is kept from the per-step decisions, so a report over a
    thousand runs does not hold a million decision objects.
    """
    decisions = list(getattr(result, "decisions", ()) or ())
    steps = np.fromiter((d.step for d in decisions), dtype=np.int64, count=len(decisions))
    p_sat = np.fromiter((d.evidence.p_saturated for d in decisions), dtype=np.float64,
                        count=len(decisions))
    p_gain = np.fromiter((d.evidence.details.get("p_heldout_gain", math.nan)
                          for d in decisions), dtype=np.float64, count=len(decisions))
    flag_step = getattr(result, "first_flag", None)
    if flag_step is None:
        flag_step = next((int(d.step) for d in decisions if d.action.severity >= 1), None)
    reason = getattr(result, "reason", None)
    halt_step = getattr(result, "halt_step", None)
    message = getattr(result, "message", "") or ""
    if not message and halt_step is not None:
        at_halt = [d for d in decisions if d.step == halt_step]
        message = at_halt[-1].message if at_halt else ""
    return ReplaySummary(
        halt_step=None if halt_step is None else int(halt_step),
        reason=None if reason is None else getattr(reason, "value", str(reason)),
        message=message,
        compute_saved=float(getattr(result, "compute_saved", 0.0)),
        regret=_as_float(getattr(result, "regret", math.nan)),
        steps=steps, p_saturated=p_sat, flag_step=flag_step, p_heldout_gain=p_gain,
    )


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, Mapping):
        # A per-benchmark regret: the report shows the worst case.
        finite = [float(v) for v in value.values() if v is not None and math.isfinite(float(v))]
        return max(finite) if finite else math.nan
    return float(value)


def replay_run(run: Run, **options: Any) -> ReplaySummary:
    """Replay the online monitor over a finished run and summarize what it would have done.

    A run that records the engine configuration its live callback used
    (``run.metadata["monitor_config"]``: lab runs' ``run.json``, a checkpoint's
    ``satmon_state.json``) is replayed with it, so the replay makes the live decisions
    (the planned ``total_steps`` of a halted run, ``eval_every``, ...); ``options`` override
    single parameters.
    """
    from satmon.replay import replay

    return summarize_replay(replay(run, **live_monitor_options(run, options)))


def live_monitor_options(run: Run, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``options`` over the live monitor configuration recorded in the run's metadata."""
    options = dict(options or {})
    live = run.metadata.get("monitor_config")
    if not isinstance(live, Mapping) or options.get("monitor_factory") is not None:
        return options
    return {**live, **options}


class RunReport(Result):
    """The report of one run: its exact analysis, monitor replay and group means."""

    def __init__(self, *, run: Run, analysis: SaturationAnalysis | None,
                 replay: ReplaySummary | None, group_means: Mapping[str, Mapping[str, float]],
                 error: str | None = None, replay_note: str = "",
                 notes: Sequence[str] = (), probe: ProbeView | None = None) -> None:
        self.run = run
        self.probe = probe
        self.analysis = analysis
        self.replay = replay
        self.group_means = {k: dict(v) for k, v in group_means.items()}
        self.error = error
        self.replay_note = replay_note
        self.notes = tuple(notes)

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def ok(self) -> bool:
        return self.error is None

    def probe_check(self) -> dict[str, Any] | None:
        """The probe's prediction against the observed regime (None without a probe)."""
        if self.probe is None:
            return None
        observed, why = observed_regime(self.analysis)
        predicted = self.probe.predicted
        agrees = (None if observed == "unknown" or predicted not in ("generalizing",
                                                                     "memorizing")
                  else predicted == observed)
        return {"predicted": predicted, "observed": observed, "observed_because": why,
                "agrees": agrees}

    def all_notes(self) -> list[str]:
        """Every note about this run: errors, missing series, cleaning, replay problems."""
        out = []
        if self.error:
            out.append(f"error: {self.error}")
        out += list(self.notes)
        check = self.probe_check()
        if check is not None and self.probe is not None:
            p = self.probe
            verdict = {True: "agrees", False: "DISAGREES", None: "cannot be checked"}[
                check["agrees"]]
            out.append(f"pre-RL probe ({p.source}): faithfulness "
                       f"{format_number(p.faithfulness, 3)} (95% CI {p.interval()}) on "
                       f"{p.n_prompts} prompts x {p.k} rollouts predicts {check['predicted']}; "
                       f"observed {check['observed']} ({check['observed_because']}): "
                       f"{verdict}")
        if self.analysis is not None:
            out += list(self.analysis.notes)
            out += [f"{g.name}: {n}" for g in self.analysis.gains.values() for n in g.notes]
        if self.replay_note:
            out.append(self.replay_note)
        a, rp = self.analysis, self.replay
        if (a is not None and rp is not None and rp.halted
                and rp.reason in ("saturated", "memorizing")
                and (not a.saturated or a.t_sat > rp.halt_step)):
            exact = ("never (no step before the last "
                     f"{a.end_margin} reaches {a.eps:g} x max)" if not a.saturated
                     else f"{int(a.t_sat)}, after the halt")
            out.append(f"the replayed monitor halted at step {rp.halt_step} ({rp.reason}) on "
                       "its online saturation estimate from the data up to then; the exact "
                       f"t_sat over the whole run is {exact}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "run": self.name,
            "metadata": self.run.metadata,
            "error": self.error,
            "analysis": None if self.analysis is None else self.analysis.to_dict(),
            "replay": None if self.replay is None else self.replay.to_dict(),
            "group_means": self.group_means,
            "probe": None if self.probe is None else {**self.probe.to_dict(),
                                                      **(self.probe_check() or {})},
            "notes": self.all_notes(),
        })

    def summary(self) -> str:
        if self.analysis is None:
            return f"Run '{self.name}': not analysed ({self.error})"
        lines = [self.analysis.summary()]
        if not self.run.heldout:
            lines.append(f"  {NO_HELDOUT_NOTE}")
        for group, means in self.group_means.items():
            lines.append(f"  mean over {group}: delta_sat {format_number(means['delta_sat'])}, "
                         f"delta_post* {format_number(means['delta_post'])}")
        if self.replay is not None:
            r = self.replay
            if r.halted:
                lines.append(f"  monitor replay: HALT at step {r.halt_step} ({r.reason}); "
                             f"compute saved {format_number(r.compute_saved)}, regret "
                             f"{format_number(r.regret)}")
                if r.message:
                    lines.append(f"    {r.message}")
            else:
                lines.append("  monitor replay: no halt (the run would have finished)")
        if self.replay_note:
            lines.append(f"  {self.replay_note}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass(frozen=True)
class PairGap:
    """``G_sat`` of one configured pair, or the reason it could not be computed."""

    pair: RunPair
    gap: DataGap | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"pair": self.pair.to_dict(), "error": self.error,
                          "gap": None if self.gap is None else self.gap.to_dict()})


@dataclass(frozen=True)
class ReportParams:
    """The analysis parameters a report was built with (printed in every output)."""

    eps: float = 0.99
    end_margin: int = 50
    heldout_policy: str = "nearest"
    replay: bool = True

    def describe(self) -> str:
        return (f"eps {self.eps}, end margin {self.end_margin}, held-out read at t_sat by "
                f"'{self.heldout_policy}', monitor replay {'on' if self.replay else 'off'}")

    def to_dict(self) -> dict[str, Any]:
        return {"eps": self.eps, "end_margin": self.end_margin,
                "heldout_policy": self.heldout_policy, "replay": self.replay}


# "exact t_sat" is the paper's post-hoc saturation step over the whole run; the replayed
# monitor's halt rests on its own online estimate, made with the data up to the halt.
RUN_HEADER = ["run", "T", "exact t_sat", "pre steps", "post steps", "max reward", "held-out",
              "replay halt", "halt reason", "compute saved", "regret"]
HELDOUT_HEADER = ["run", "held-out", "M(0)", "M(t_sat)", "eval steps used", "delta_sat",
                  "delta_post*", "final"]
CSV_COLUMNS = ["run", "T", "t_sat", "saturated", "pre_steps", "post_steps", "max_reward",
               "heldout", "policy", "M0", "M0_step", "M_tsat", "eval_steps_used", "delta_sat",
               "delta_post", "best_post_step", "final", "halt_step", "halt_reason",
               "compute_saved", "regret", "error", "notes"]


class Report(Result):
    """A multi-run report: one :class:`RunReport` per run plus ``G_sat`` of configured pairs.

    Render with :meth:`summary` (text), :meth:`to_csv`, :meth:`to_markdown`, :meth:`to_html`
    or write them all with :meth:`write`.
    """

    def __init__(self, *, runs: Sequence[RunReport], pairs: Sequence[PairGap],
                 config: GroupsConfig, params: ReportParams) -> None:
        self.runs = list(runs)
        self.pairs = list(pairs)
        self.config = config
        self.params = params

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, name: str) -> RunReport:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(f"No run named '{name}' in this report. Runs: "
                       f"{[r.name for r in self.runs][:20]}")

    # -- tables -------------------------------------------------------------------------------
    def run_rows(self) -> list[list[str]]:
        """One row of strings per run (``RUN_HEADER``)."""
        rows = []
        for r in self.runs:
            a, rp = r.analysis, r.replay
            if a is None:
                rows.append([r.name, "-", "error", "-", "-", "-", "-", "-", "-", "-", "-"])
                continue
            heldout = ", ".join(a.gains) if a.gains else "none"
            rows.append([
                r.name, str(a.last_step), format_number(a.t_sat), str(a.pre_saturation_length),
                str(a.post_saturation_length), format_number(a.max_reward), heldout,
                "-" if rp is None else (str(rp.halt_step) if rp.halted else "no halt"),
                "-" if rp is None or rp.reason is None else rp.reason,
                "-" if rp is None else format_number(rp.compute_saved),
                "-" if rp is None else format_number(rp.regret),
            ])
        return rows

    def heldout_rows(self) -> list[list[str]]:
        """One row of strings per (run, held-out series) (``HELDOUT_HEADER``)."""
        rows = []
        for r in self.runs:
            if r.analysis is None:
                continue
            for g in r.analysis.gains.values():
                rows.append([r.name, g.name, format_number(g.baseline),
                             format_number(g.at_saturation),
                             ",".join(map(str, g.at_saturation_steps)) or "-",
                             format_number(g.delta_sat), format_number(g.delta_post),
                             format_number(g.final)])
        return rows

    def probe_rows(self) -> list[list[str]]:
        """One row per run with a pre-RL probe (``PROBE_HEADER``); empty when none has one."""
        rows = []
        for r in self.runs:
            check = r.probe_check()
            if r.probe is None or check is None:
                continue
            p = r.probe
            rows.append([r.name, format_number(p.faithfulness, 3), p.interval(),
                         format_number(p.accuracy, 3), format_number(p.faithful_diversity, 3),
                         check["predicted"], check["observed"],
                         {True: "yes", False: "no", None: "-"}[check["agrees"]]])
        return rows

    def group_header(self) -> list[str]:
        head = ["run"]
        for g in self.config.groups:
            head += [f"{g} delta_sat", f"{g} delta_post*"]
        return head

    def group_rows(self) -> list[list[str]]:
        """Per run, the mean ``delta_sat`` / ``delta_post*`` over each benchmark group."""
        if not self.config.groups:
            return []
        rows = []
        for r in self.runs:
            row = [r.name]
            for g in self.config.groups:
                m = r.group_means.get(g)
                row += ([format_number(m["delta_sat"]), format_number(m["delta_post"])]
                        if m else ["-", "-"])
            rows.append(row)
        return rows

    def gap_header(self) -> list[str]:
        benchmarks = self._gap_benchmarks()
        return (["pair", "large", "small", "t_sat (small)"] + benchmarks
                + [f"mean {g}" for g in self.config.groups])

    def _gap_benchmarks(self) -> list[str]:
        seen: dict[str, None] = {}
        for p in self.pairs:
            if p.gap is not None:
                seen.update(dict.fromkeys(p.gap.gaps))
        return list(seen)

    def gap_rows(self) -> list[list[str]]:
        """``G_sat`` per pair and benchmark, then the group means."""
        benchmarks = self._gap_benchmarks()
        rows = []
        for p in self.pairs:
            if p.gap is None:
                rows.append([p.pair.display, p.pair.large, p.pair.small, "error"]
                            + ["-"] * (len(benchmarks) + len(self.config.groups)))
                continue
            g = p.gap
            rows.append([p.pair.display, p.pair.large, p.pair.small, format_number(g.t_sat_small)]
                        + [format_number(g.gaps.get(b)) for b in benchmarks]
                        + [format_number(g.groups.get(k)) for k in self.config.groups])
        return rows

    def notes(self) -> list[tuple[str, str]]:
        """``(where, note)`` for every run and pair note worth a reader's attention."""
        out = [(r.name, n) for r in self.runs for n in r.all_notes()]
        for p in self.pairs:
            if p.error:
                out.append((p.pair.display, f"error: {p.error}"))
            elif p.gap is not None:
                out += [(p.pair.display, n) for n in p.gap.notes]
        return out

    def counts(self) -> dict[str, int]:
        ok = [r for r in self.runs if r.analysis is not None]
        return {
            "runs": len(self.runs),
            "failed": len(self.runs) - len(ok),
            "saturated": sum(r.analysis.saturated for r in ok),  # type: ignore[union-attr]
            "without_heldout": sum(not r.analysis.gains for r in ok),  # type: ignore[union-attr]
            "halted": sum(r.replay is not None and r.replay.halted for r in ok),
        }

    # -- renderings ---------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """Tidy rows (one per run and held-out series; one per run without any) for CSV."""
        out = []
        meta_keys = self.metadata_columns()
        for r in self.runs:
            a, rp = r.analysis, r.replay
            base: dict[str, Any] = {"run": r.name}
            if a is not None:
                base.update(T=a.last_step, t_sat=a.t_sat if a.saturated else None,
                            saturated=a.saturated, pre_steps=a.pre_saturation_length,
                            post_steps=a.post_saturation_length, max_reward=a.max_reward,
                            policy=a.policy)
            if rp is not None:
                base.update(halt_step=rp.halt_step, halt_reason=rp.reason,
                            compute_saved=rp.compute_saved, regret=rp.regret)
            base.update(error=r.error, notes=" | ".join(r.all_notes()))
            base.update({f"meta.{k}": r.run.metadata.get(k) for k in meta_keys})
            gains = list(a.gains.values()) if a is not None else []
            if not gains:
                out.append(base)
                continue
            for g in gains:
                row = dict(base)
                row.update(heldout=g.name, M0=g.baseline, M0_step=g.baseline_step,
                           M_tsat=g.at_saturation,
                           eval_steps_used=";".join(map(str, g.at_saturation_steps)),
                           delta_sat=g.delta_sat, delta_post=g.delta_post,
                           best_post_step=g.best_post_step, final=g.final)
                out.append(row)
        return out

    def metadata_columns(self) -> list[str]:
        """Metadata keys with scalar values in any run (become ``meta.<key>`` CSV columns)."""
        keys: dict[str, None] = {}
        for r in self.runs:
            for k, v in r.run.metadata.items():
                if isinstance(v, (str, int, float, bool)) or v is None:
                    keys.setdefault(str(k), None)
        return list(keys)

    def to_csv(self, path: str | Path | None = None) -> str:
        """The tidy table as CSV text (also written to ``path`` when given).

        Missing and non-finite numbers are empty cells; ``saturated`` tells "never saturated"
        from "not analysed".
        """
        columns = CSV_COLUMNS + [f"meta.{k}" for k in self.metadata_columns()]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for rec in self.records():
            writer.writerow({k: _csv_cell(rec.get(k)) for k in columns})
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def to_markdown(self) -> str:
        """The report as GitHub-flavoured Markdown."""
        c = self.counts()
        parts = [
            "# satmon report", "",
            f"{c['runs']} run(s): {c['saturated']} saturated, {c['failed']} not analysed, "
            f"{c['without_heldout']} without held-out series, {c['halted']} halted by the "
            f"monitor replay.", "",
            f"Parameters: {_md_escape(self.params.describe())}.", "",
            "## Runs", "", _md_table(RUN_HEADER, self.run_rows()), "",
            "## Held-out gains", "",
        ]
        rows = self.heldout_rows()
        parts += [_md_table(HELDOUT_HEADER, rows) if rows else "No run has a held-out series.",
                  ""]
        probes = self.probe_rows()
        if probes:
            parts += ["## Pre-RL probe", "", PROBE_NOTE, "", _md_table(PROBE_HEADER, probes),
                      ""]
        if self.config.groups:
            parts += ["## Benchmark groups", "",
                      "; ".join(f"**{_md_escape(g)}**: {_md_escape(', '.join(m))}"
                      for g, m in self.config.groups.items()),
                      "", _md_table(self.group_header(), self.group_rows()), ""]
        if self.pairs:
            parts += ["## Data gap G_sat", "",
                      "G_sat(n', n) = M^{n'}(t_sat^n) - M^n(t_sat^n), read at the small run's "
                      "t_sat.", "", _md_table(self.gap_header(), self.gap_rows()), ""]
        notes = self.notes()
        if notes:
            parts += ["## Notes", ""] + [f"- **{_md_escape(w)}**: {_md_escape(n)}"
                                         for w, n in notes] + [""]
        return "\n".join(parts)

    def summary(self) -> str:
        c = self.counts()
        parts = [f"satmon report: {c['runs']} run(s), {c['saturated']} saturated, "
                 f"{c['failed']} not analysed, {c['without_heldout']} without held-out series, "
                 f"{c['halted']} halted by the monitor replay",
                 f"parameters: {self.params.describe()}", "",
                 text_table(RUN_HEADER, self.run_rows())]
        rows = self.heldout_rows()
        parts += ["", "held-out gains:", text_table(HELDOUT_HEADER, rows) if rows
                  else "  no run has a held-out series"]
        probes = self.probe_rows()
        if probes:
            parts += ["", f"pre-RL probe ({PROBE_NOTE}):", text_table(PROBE_HEADER, probes)]
        if self.config.groups:
            parts += ["", "group means:", text_table(self.group_header(), self.group_rows())]
        if self.pairs:
            parts += ["", "data gap G_sat (at the small run's t_sat):",
                      text_table(self.gap_header(), self.gap_rows())]
        notes = self.notes()
        if notes:
            parts += ["", "notes:"] + [f"  {w}: {n}" for w, n in notes]
        return terminal_text("\n".join(parts))

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "params": self.params.to_dict(),
            "config": self.config.to_dict(),
            "counts": self.counts(),
            "runs": [r.to_dict() for r in self.runs],
            "pairs": [p.to_dict() for p in self.pairs],
        })

    def to_html(self, **options: Any) -> str:
        """One self-contained HTML page (see :func:`satmon.analysis.report_html.render_html`)."""
        from satmon.analysis.report_html import render_html

        return render_html(self, **options)

    def _repr_html_(self) -> str:
        from satmon.analysis.report_html import render_tables

        return render_tables(self)

    def write(self, out_dir: str | Path, *, formats: Iterable[str] = ("html", "md", "csv"),
              stem: str = "report", **html_options: Any) -> dict[str, Path]:
        """Write the report in each format to ``out_dir/<stem>.<format>``.

        Parameters
        ----------
        out_dir:
            Folder to write into (created when missing).
        formats:
            Any of ``REPORT_FORMATS``.
        html_options:
            Passed to :meth:`to_html` (``max_run_plots``, ``grid_rows``, ``grid_cols``, ``dpi``).

        Returns
        -------
        ``{format: path}`` of the files written.
        """
        formats = list(dict.fromkeys(formats))
        bad = [f for f in formats if f not in REPORT_FORMATS]
        if bad or not formats:
            raise ValueError(f"Unknown report format(s) {bad or formats}; choose from "
                             f"{list(REPORT_FORMATS)}.")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        for fmt in formats:
            path = out / f"{stem}.{fmt}"
            if fmt == "html":
                text = self.to_html(**html_options)
            elif fmt == "md":
                text = self.to_markdown()
            elif fmt == "csv":
                text = self.to_csv()
            elif fmt == "json":
                text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
            else:
                text = self.summary() + "\n"
            path.write_text(text, encoding="utf-8")
            written[fmt] = path
        return written


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f"{f:.12g}" if math.isfinite(f) else ""
    return csv_cell(value)


def _md_escape(text: str) -> str:
    return markdown_text(text)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- building ---------------------------------------------------------------------------------
def _group_means(analysis: SaturationAnalysis, config: GroupsConfig
                 ) -> tuple[dict[str, dict[str, float]], list[str]]:
    means: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    for group, members in config.groups.items():
        missing = [m for m in members if m not in analysis.gains]
        if missing:
            notes.append(f"group '{group}' needs {missing}, absent from this run: "
                         "group means not computed")
            continue
        means[group] = {
            key: float(np.mean([getattr(analysis.gains[m], key) for m in members]))
            for key in ("delta_sat", "delta_post")
        }
    return means, notes


def _analyse_one(run: Run, params: ReportParams, config: GroupsConfig,
                 replay_options: Mapping[str, Any]) -> dict[str, Any]:
    """Everything a :class:`RunReport` holds except the run itself (so a worker process need
    not send the run back)."""
    notes: list[str] = []
    probe, probe_note = load_probe(run)
    if probe_note:
        notes.append(probe_note)
    try:
        analysis = analyze_saturation(run, eps=params.eps, end_margin=params.end_margin,
                                      heldout_policy=params.heldout_policy)
    except ValueError as exc:
        # The report goes on without this run; the row says why (an empty log, a proxy reward
        # whose maximum is negative ...).
        return {"analysis": None, "replay": None, "group_means": {}, "error": str(exc),
                "notes": notes, "probe": probe}
    if not run.heldout:
        notes.append(NO_HELDOUT_NOTE)
    means, group_notes = _group_means(analysis, config)
    notes += group_notes
    summary, replay_note = None, ""
    if params.replay:
        try:
            summary = replay_run(run, **replay_options)
        except ValueError as exc:
            replay_note = f"monitor replay not possible: {exc}"
    return {"analysis": analysis, "replay": summary, "group_means": means,
            "replay_note": replay_note, "notes": notes, "probe": probe}


def _analyse_chunk(args: tuple[list[Run], ReportParams, GroupsConfig, dict[str, Any]]
                   ) -> list[dict[str, Any]]:
    runs, params, config, options = args
    return [_analyse_one(r, params, config, options) for r in runs]


def _pair_gaps(runs: Sequence[RunReport], config: GroupsConfig,
               params: ReportParams) -> list[PairGap]:
    by_name: dict[str, list[Run]] = {}
    for r in runs:
        by_name.setdefault(r.name, []).append(r.run)
    out = []
    for pair in config.pairs:
        try:
            large, small = (_unique_run(by_name, n, role)
                            for n, role in ((pair.large, "large"), (pair.small, "small")))
            shared = [n for n in small.heldout if n in large.heldout]
            if not shared:
                raise ValueError(f"runs '{pair.large}' and '{pair.small}' share no held-out "
                                 f"series ({large.heldout_names or 'none'} vs "
                                 f"{small.heldout_names or 'none'})")
            groups = {g: m for g, m in config.groups.items() if all(b in shared for b in m)}
            gap = data_gap(large, small, heldout=shared, groups=groups, eps=params.eps,
                           end_margin=params.end_margin, heldout_policy=params.heldout_policy)
            out.append(PairGap(pair, gap))
        except ValueError as exc:
            out.append(PairGap(pair, None, str(exc)))
    return out


def _unique_run(by_name: Mapping[str, list[Run]], name: str, role: str) -> Run:
    found = by_name.get(name, [])
    if not found:
        raise KeyError(f"The groups config pairs a {role}-data run '{name}', but no run has that "
                       f"name. Runs: {sorted(by_name)[:30]}.")
    if len(found) > 1:
        raise ValueError(f"{len(found)} runs are named '{name}', so the {role}-data run of the "
                         "pair is ambiguous; give the runs distinct names")
    return found[0]


def _check_groups_against_runs(runs: Sequence[RunReport], config: GroupsConfig) -> None:
    present: set[str] = set()
    for r in runs:
        present.update(r.run.heldout)
    for group, members in config.groups.items():
        nowhere = [m for m in members if m not in present]
        if nowhere and present:
            # A benchmark that no run has is a typo in the config, not a gap in one run.
            raise KeyError(f"Group '{group}' names {nowhere}, which no run has. Held-out series "
                           f"present: {sorted(present)}.")


def build_report(
    runs: Iterable[Run],
    *,
    groups: GroupsConfig | str | Path | None = None,
    eps: float = 0.99,
    end_margin: int = 50,
    heldout_policy: str = "nearest",
    replay: bool = True,
    replay_options: Mapping[str, Any] | None = None,
    progress: bool | Callable[[Iterable[Any]], Iterable[Any]] = False,
    workers: int = 1,
    replays: Mapping[str, ReplaySummary] | None = None,
) -> Report:
    """Analyse every run and compare the configured pairs.

    Parameters
    ----------
    runs:
        :class:`satmon.Run` objects (e.g. from :func:`satmon.analysis.read_runs`).
    groups:
        Benchmark groups and run pairs: a :class:`GroupsConfig` or the path of a JSON/TOML file.
    eps, end_margin, heldout_policy:
        Parameters of the exact analysis (:func:`satmon.analyze_saturation`).
    replay:
        Replay the online monitor over each run (the slow part on long runs).
    replay_options:
        Keyword arguments for :func:`satmon.replay.replay`.
    replays:
        ``{run name: ReplaySummary}`` to show instead of replaying those runs, e.g. what the
        live callback decided (:meth:`ReplaySummary.from_records`); the report then counts as
        replayed.
    progress:
        True shows a tqdm progress bar; a callable wraps the iterable of runs (or, with
        ``workers > 1``, of finished chunks of runs) itself.
    workers:
        Processes that analyse and replay runs in parallel (1: in this process). Runs are
        sent to the workers in chunks; results come back in input order.

    Returns
    -------
    A :class:`Report`.

    Example
    -------
    >>> from satmon import Run
    >>> run = Run(train_reward=(range(1, 201), [min(1.0, t / 100) for t in range(1, 201)]),
    ...           heldout={"math": ([0, 100, 200], [0.2, 0.5, 0.52])}, name="r")
    >>> rep = build_report([run], replay=False)
    >>> rep["r"].analysis.t_sat, round(rep["r"].analysis.gains["math"].delta_sat, 2)
    (99, 0.3)
    """
    if heldout_policy not in HELDOUT_POLICIES:
        raise ValueError(f"The 'heldout_policy' parameter must be one of {HELDOUT_POLICIES}. "
                         f"Got {heldout_policy!r} instead.")
    if groups is None:
        config = GroupsConfig()
    elif isinstance(groups, GroupsConfig):
        config = groups
    elif isinstance(groups, (str, Path)):
        from satmon.analysis.groups import load_groups

        config = load_groups(groups)
    else:
        raise TypeError(f"The 'groups' parameter must be a GroupsConfig, a path or None. Got "
                        f"{type(groups).__name__} instead.")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"The 'workers' parameter must be an int >= 1. Got {workers!r} instead.")
    given = dict(replays or {})
    params = ReportParams(eps=eps, end_margin=end_margin, heldout_policy=heldout_policy,
                          replay=bool(replay) or bool(given))
    options = dict(replay_options or {})
    run_list = list(runs)
    for run in run_list:
        if not isinstance(run, Run):
            raise TypeError(f"build_report needs satmon.Run objects. Got {type(run).__name__} "
                            "instead; read logs with satmon.analysis.read_run first.")
    # Runs with a given summary are analysed without a replay of their own.
    own = replace(params, replay=bool(replay))
    if workers == 1 or len(run_list) < 2:
        results = [_analyse_one(run, replace(own, replay=False) if run.name in given else own,
                                config, options)
                   for run in _wrap_progress(run_list, progress, "run")]
    else:
        results = _analyse_parallel(run_list, own, config, options, workers, progress)
    for run, res in zip(run_list, results):
        if run.name in given and res.get("analysis") is not None:
            res["replay"], res["replay_note"] = given[run.name], ""
    reports = [RunReport(run=run, **res) for run, res in zip(run_list, results)]
    _check_groups_against_runs(reports, config)
    return Report(runs=reports, pairs=_pair_gaps(reports, config, params), config=config,
                  params=params)


def _wrap_progress(items: Sequence[Any], progress: Any, unit: str,
                   total: int | None = None) -> Iterable[Any]:
    if progress is True:
        # disable=None: tqdm hides itself when stderr is not a terminal (CI logs, pipes).
        return require_progress()(items, desc="satmon report", unit=unit, total=total,
                                  disable=None)
    if callable(progress):
        return progress(items)
    return items


def _analyse_parallel(runs: list[Run], params: ReportParams, config: GroupsConfig,
                      options: dict[str, Any], workers: int, progress: Any
                      ) -> list[dict[str, Any]]:
    import concurrent.futures
    import multiprocessing

    # Chunks amortise the cost of sending runs between processes; a few chunks per worker
    # keep the load balanced when some runs replay longer than others.
    size = max(1, min(50, len(runs) // (workers * 4) or 1))
    chunks = [runs[i:i + size] for i in range(0, len(runs), size)]
    # "spawn": a forked child would inherit the parent's threads (progress bars, MLflow
    # clients) in whatever state they were in.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        done = pool.map(_analyse_chunk, [(c, params, config, options) for c in chunks])
        results: list[dict[str, Any]] = []
        for chunk_results in _wrap_progress(done, progress, "chunk", total=len(chunks)):
            results += chunk_results
    return results


def require_progress() -> Callable[..., Any]:
    """tqdm's progress-bar factory (imported lazily: an optional dependency)."""
    from satmon._optional import require

    return require("tqdm", feature="progress bars").tqdm
