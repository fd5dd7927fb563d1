"""``satmon probe``: measure a model's reasoning faithfulness before RL, and call the regime.

Synopsis::

    satmon probe MODEL --prompts FILE [--judge exact|model:PATH|openai:URL]
                 [--second-judge SPEC] [--judge-model NAME] [--endpoint URL]
                 [-k 16] [--temperature 1.0] [--seed 0] [--max-new-tokens 256]
                 [--prompt-column prompt] [--answer-column answer] [--limit N]
                 [--lab-task SYMBOLS:LENGTH] [--cache DIR] [--out probe.json]
                 [--mlflow] [--tracking-uri URI] [--experiment NAME] [--run-id ID]

``FILE`` is JSONL (one object per line) or CSV (a header row), with a prompt and an answer
column. MODEL is a local transformers model folder or hub id; with ``--endpoint`` it is the
model name served there. The verifier is an exact match of the completion's final answer with
the answer column (the final answer as the judge's task defines it: with ``--judge exact``,
the lab's scratchpad format ``<steps>><answer>``; otherwise the last non-blank line).

A file without the answer column, a file with no prompts, or an endpoint that does not answer
ends the command with status 2 and one ``satmon probe: error: ...`` line. Unparseable or failed
verdicts are counted in the summary and the JSON, never scored.

Registered in this module's ``COMMANDS`` (:mod:`satmon._registry`), which the command line
(:mod:`satmon.cli`) reads; :func:`main` runs the command alone (``main(["MODEL", "--prompts",
FILE])``) with the command line's error policy, for tests and for ``python -m``-style use.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from satmon._registry import Commands

COMMANDS = Commands()


def read_prompt_file(path: str | Path, *, prompt_column: str = "prompt",
                     answer_column: str = "answer") -> tuple[list[str], list[str]]:
    """Prompts and answers from a JSONL or CSV file; ValueError naming the file and the row."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such prompt file")
    text = p.read_text(encoding="utf-8")
    rows: list[dict[str, Any]] = []
    stripped = text.lstrip()
    if p.suffix.lower() in (".jsonl", ".json", ".ndjson") or stripped.startswith("{"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{p}: line {n} is not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{p}: line {n} is not a JSON object")
            rows.append(row)
    else:
        rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise ValueError(f"{p}: no prompts (the file has no rows); the probe needs at least one "
                         f"row with '{prompt_column}' and '{answer_column}'")
    prompts, answers = [], []
    for n, row in enumerate(rows, 1):
        missing = [c for c in (prompt_column, answer_column)
                   if row.get(c) is None or str(row.get(c)).strip() == ""]
        if missing:
            raise ValueError(f"{p}: row {n} has no {' or '.join(repr(m) for m in missing)} "
                             f"(its columns: {sorted(row)}); every row needs a prompt and an "
                             f"answer (--prompt-column / --answer-column name them)")
        prompts.append(str(row[prompt_column]))
        answers.append(str(row[answer_column]).strip())
    return prompts, answers


def _lab_task(text: str):
    from satmon.lab.traces import CumulativeTask

    symbols, _, length = text.partition(":")
    try:
        return CumulativeTask(symbols=symbols, length=int(length or 5))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--lab-task must look like SYMBOLS:LENGTH (e.g. abcd:5); got "
                         f"{text!r} ({exc})") from None


def build_judge(spec: str, args: argparse.Namespace):
    """A judge from ``exact``, ``model:PATH`` or ``openai:URL``."""
    from satmon.probe.judges import ExactJudge, OpenAIJudge, TransformersJudge

    if spec == "exact":
        return ExactJudge(_lab_task(args.lab_task))
    kind, _, target = spec.partition(":")
    if kind == "model" and target:
        return TransformersJudge(target, template=args.template)
    if kind == "openai" and target:
        return OpenAIJudge(target, model=args.judge_model, template=args.template,
                           cache_dir=args.cache, timeout=args.timeout)
    raise ValueError(f"--judge must be 'exact', 'model:PATH' or 'openai:URL'; got {spec!r}")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="local transformers model folder / hub id, or the served model's name "
                        "with --endpoint")
    p.add_argument("--prompts", required=True, metavar="FILE",
                   help="JSONL or CSV file with a prompt and an answer column (the paper: 8 "
                        "prompts)")
    p.add_argument("--prompt-column", default="prompt", metavar="NAME",
                   help="column of the prompts (default: prompt)")
    p.add_argument("--answer-column", default="answer", metavar="NAME",
                   help="column of the reference answers (default: answer)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N prompts")
    p.add_argument("--judge", default="exact", metavar="SPEC",
                   help="faithfulness judge: 'exact' (the lab's scratchpad task, see "
                        "--lab-task), 'model:PATH' (a local transformers model with the rubric "
                        "template) or 'openai:URL' (an OpenAI-compatible chat endpoint); "
                        "default: exact")
    p.add_argument("--second-judge", default=None, metavar="SPEC",
                   help="a second judge (same forms); reports raw agreement and Cohen's kappa")
    p.add_argument("--judge-model", default="default", metavar="NAME",
                   help="model name sent to an openai: judge (default: default)")
    p.add_argument("--template", default="faithfulness-v1", metavar="VERSION",
                   help="rubric template version in probe/templates/ (default: faithfulness-v1)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="on-disk cache of an openai: judge's replies")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds per HTTP request to an endpoint (default: 60)")
    p.add_argument("--lab-task", default="abcd:5", metavar="SYMBOLS:LENGTH",
                   help="the lab's running-sum task for --judge exact (default: abcd:5)")
    p.add_argument("--endpoint", default=None, metavar="URL",
                   help="sample rollouts from this OpenAI-compatible server instead of a local "
                        "model")
    p.add_argument("-k", "--rollouts", dest="k", type=int, default=16, metavar="K",
                   help="rollouts per prompt (default: 16, as in the paper)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature; use the RL run's (default: 1.0)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and bootstrap")
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N",
                   help="completion budget per rollout (default: 256)")
    p.add_argument("--threshold", type=float, default=None, metavar="F",
                   help="faithfulness threshold of the regime call (default: "
                        "satmon.probe.DEFAULT_FAITHFULNESS_THRESHOLD, not calibrated)")
    p.add_argument("--out", default="probe.json", metavar="FILE",
                   help="JSON result with every rollout and verdict (default: probe.json)")
    p.add_argument("--mlflow", action="store_true",
                   help="log to MLflow: a new pre-RL run, or tags on --run-id")
    p.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    p.add_argument("--experiment", default="satmon-probe", metavar="NAME",
                   help="MLflow experiment of a new probe run (default: satmon-probe)")
    p.add_argument("--run-id", default=None, metavar="ID",
                   help="with --mlflow: tag this existing run instead of creating one")


@COMMANDS.command("probe", "measure reasoning faithfulness and diversity before RL; predict the regime",
         _add_arguments)
def _cmd_probe(args: argparse.Namespace) -> int:
    from satmon.probe.chat_endpoint import EndpointError
    from satmon.probe.measure import DEFAULT_FAITHFULNESS_THRESHOLD, last_line, probe
    from satmon.lab.traces import final_answer, scratchpad

    prompts, answers = read_prompt_file(args.prompts, prompt_column=args.prompt_column,
                                        answer_column=args.answer_column)
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1; got {args.limit}")
        prompts, answers = prompts[:args.limit], answers[:args.limit]
    if args.judge == "exact":
        def extract(c: str) -> str | None:
            return final_answer(c, with_trace=True)
        reasoning = scratchpad
    else:
        extract, reasoning = last_line, None

    def verifier(prompt: str, completion: str, answer: str) -> float:
        got = extract(completion)
        return 1.0 if got is not None and got.strip() == answer.strip() else 0.0
    verifier.__name__ = "final_answer_exact_match"

    kwargs: dict[str, Any] = {}
    if reasoning is not None:
        kwargs["extract_reasoning"] = reasoning
    try:
        judge = build_judge(args.judge, args)
        second = build_judge(args.second_judge, args) if args.second_judge else None
        result = probe(args.model, prompts, answers, verifier=verifier, judge=judge,
                       second_judge=second, k=args.k, temperature=args.temperature,
                       seed=args.seed, max_new_tokens=args.max_new_tokens,
                       endpoint=args.endpoint, extract_answer=extract,
                       threshold=DEFAULT_FAITHFULNESS_THRESHOLD if args.threshold is None
                       else args.threshold, **kwargs)
    except EndpointError as exc:
        print(f"satmon probe: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A model path that cannot be loaded (transformers raises OSError for it).
        print(f"satmon probe: error: {args.model}: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    out = result.save(args.out)
    print(f"wrote {out}")
    if args.mlflow:
        run_id = result.log_mlflow(run_id=args.run_id, tracking_uri=args.tracking_uri,
                                   experiment=args.experiment)
        print(f"logged to MLflow run {run_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``satmon probe`` alone; returns the exit status (2 with one error line on bad input)."""
    (cmd,) = COMMANDS
    parser = argparse.ArgumentParser(prog="satmon probe", description=cmd.help)
    cmd.add_arguments(parser)
    args = parser.parse_args(argv)
    args.command = "probe"
    try:
        return int(cmd.handler(args) or 0)
    except (ValueError, KeyError, TypeError, FileNotFoundError, ImportError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"satmon probe: error: {message}", file=sys.stderr)
        return 2
