"""``satmon.probe.probe`` and ``satmon probe`` with a tiny local model sampling real rollouts."""

from __future__ import annotations

import json

import pytest

from satmon.probe import ExactJudge, ProbeError, Verdict, probe

from _probe_support import TASK, lab_prompts

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def _extract(c):
    from satmon.lab.traces import final_answer

    return final_answer(c, with_trace=True)


@pytest.fixture(scope="module")
def lab_model():
    from _probe_support import trained_lab_model

    torch.set_num_threads(1)
    return trained_lab_model()


def _probe(model, tok, *, seed=0, judge=None, k=8, **kw):
    from satmon.lab.traces import answer_match, scratchpad

    prompts = lab_prompts(4, seed=11)
    return probe(model, prompts, [TASK.answer(p) for p in prompts], tokenizer=tok,
                 verifier=answer_match(True), judge=judge or ExactJudge(TASK), k=k, seed=seed,
                 max_new_tokens=TASK.length + 2, extract_answer=_extract,
                 extract_reasoning=scratchpad, **kw)


def test_probe_is_deterministic_under_a_seed(lab_model):
    model, tok = lab_model
    first, again = _probe(model, tok, seed=3).to_dict(), _probe(model, tok, seed=3).to_dict()
    other = _probe(model, tok, seed=4).to_dict()
    assert first == again
    assert [r["completion"] for r in first["rollouts"]] != \
        [r["completion"] for r in other["rollouts"]]
    f = first["faithfulness"]
    assert f["ci_low"] <= f["mean"] <= f["ci_high"]
    assert first["verdicts"] == {"total": 32, "scored": 32, "unparseable": 0, "failed": 0,
                                 "errors": []}
    assert 1 <= first["diversity"]["distinct_answers"] <= 4
    assert first["regime"]["call"] in ("generalizing", "memorizing", "undetermined")


def test_probe_faithfulness_matches_the_lab_measurement(lab_model):
    from satmon.lab.sft import measure_faithfulness

    model, tok = lab_model
    prompts = lab_prompts(4, seed=11)
    lab = measure_faithfulness(model, tok, TASK, prompts, rollouts=8, seed=5)
    assert _probe(model, tok, seed=5, batch_size=4).faithfulness == pytest.approx(lab.mean)


class _NonsenseJudge:
    """A judge whose model answers nonsense for every other rollout (a real class, no mock)."""

    name = "nonsense"

    def __init__(self, every=2):
        # every=0: nonsense throughout.
        self.every = every

    def judge(self, prompt, completion, answer):
        return self.judge_many([(prompt, completion, answer)])[0]

    def judge_many(self, items):
        return [Verdict.from_reply("VERDICT: 1" if self.every and i % self.every else "banana")
                for i in range(len(items))]


def test_nonsense_verdicts_are_counted_not_scored(lab_model):
    model, tok = lab_model
    result = _probe(model, tok, judge=_NonsenseJudge(), second_judge=ExactJudge(TASK))
    d = result.to_dict()
    assert d["verdicts"]["unparseable"] == 16 and d["verdicts"]["scored"] == 16
    assert d["faithfulness"]["mean"] == 1.0 and d["faithfulness"]["n_scored"] == 16
    assert d["agreement"]["n_compared"] == 16 and d["agreement"]["n_skipped"] == 16
    assert "16 unparseable" in result.summary()
    with pytest.raises(ProbeError, match="no usable verdict.*32 unparseable"):
        _probe(model, tok, judge=_NonsenseJudge(every=0))


def test_probe_rejects_bad_input(lab_model):
    model, tok = lab_model
    with pytest.raises(ProbeError, match="zero"):
        probe(model, [], [], tokenizer=tok, verifier=lambda *a: 1.0, judge=ExactJudge(TASK))
    with pytest.raises(ProbeError, match="2 prompts and 1 answers"):
        probe(model, ["ab=", "ba="], ["a"], tokenizer=tok, verifier=lambda *a: 1.0,
              judge=ExactJudge(TASK))
    with pytest.raises(ValueError, match="'k' parameter"):
        _probe(model, tok, k=0)
    with pytest.raises(ValueError, match="tokenizer"):
        probe(model, ["ab="], ["a"], verifier=lambda *a: 1.0, judge=ExactJudge(TASK))


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_prompt_files_without_answers_or_prompts(tmp_path, capsys):
    from satmon.probe.commands import main
    from satmon.probe.commands import read_prompt_file

    rows = _write(tmp_path / "p.jsonl", '{"prompt": "abca=", "answer": "c"}\n'
                                        '{"prompt": "bbbb="}\n')
    with pytest.raises(ValueError, match=r"row 2 has no 'answer'"):
        read_prompt_file(rows)
    csv_file = _write(tmp_path / "p.csv", "prompt,answer\nabca=,c\nbcad=,c\n")
    assert read_prompt_file(csv_file) == (["abca=", "bcad="], ["c", "c"])
    assert main(["no-model", "--prompts", rows]) == 2
    assert "row 2 has no 'answer'" in capsys.readouterr().err
    empty = _write(tmp_path / "empty.jsonl", "\n")
    assert main(["no-model", "--prompts", empty]) == 2
    assert "no prompts" in capsys.readouterr().err
    header_only = _write(tmp_path / "h.csv", "prompt,answer\n")
    assert main(["no-model", "--prompts", header_only]) == 2
    assert "no prompts" in capsys.readouterr().err


def test_cli_probes_a_saved_local_model(lab_model, tmp_path, capsys):
    from satmon.probe.commands import main

    model, tok = lab_model
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    prompts = lab_prompts(3, seed=2)
    file = _write(tmp_path / "p.jsonl", "".join(
        json.dumps({"prompt": p, "answer": TASK.answer(p)}) + "\n" for p in prompts))
    out = tmp_path / "probe.json"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [str(tmp_path / "model"), "--prompts", file, "-k", "4",
            "--max-new-tokens", "6", "--lab-task", "abcd:4", "--out", str(out), "--mlflow",
            "--tracking-uri", uri]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "faithfulness" in printed and "regime:" in printed
    saved = json.loads(out.read_text())
    assert saved["n_prompts"] == 3 and saved["k"] == 4 and len(saved["rollouts"]) == 12
    assert saved["config"]["judge"]["name"] == "exact"
    mlflow = pytest.importorskip("mlflow")
    run_id = printed.strip().rsplit(" ", 1)[-1]
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.data.tags["satmon.probe.regime"] == saved["regime"]["call"]
    assert run.data.metrics["probe/faithfulness"] == pytest.approx(saved["faithfulness"]["mean"])
