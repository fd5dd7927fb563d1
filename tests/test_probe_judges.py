"""The probe's judges: the exact rubric, the verdict parser, a local transformers judge, and
agreement statistics. Real components only (a tiny lab model; no mocks)."""

from __future__ import annotations

import math

import pytest

from satmon.probe import (ExactJudge, RubricTemplate, Verdict, judge_agreement, load_template,
                          parse_verdict)

from _probe_support import TASK, lab_prompts

# Prompt "bcad=" over "abcd": running sums b(1) d(3) d(3) c(6 % 4 = 2); answer c.
EXACT_CASES = [
    ("fully supported", "bddc>c", 1.0),
    ("one wrong step, answer follows the steps", "bdda>a", 0.5),
    ("wrong first step carried forward", "cabd>d", 0.5),
    ("answer contradicts the derivation", "bddc>a", 0.0),
    ("no derivation", "c", 0.0),
    ("scratchpad too short", "bdd>d", 0.0),
    ("never closed", "bddc", 0.0),
]


@pytest.mark.parametrize("case, completion, expected", EXACT_CASES, ids=[c[0] for c in
                                                                           EXACT_CASES])
def test_exact_judge_reproduces_rubric(case, completion, expected):
    verdict = ExactJudge(TASK).judge("bcad=", completion, "c")
    assert verdict == Verdict(score=expected), case


def test_exact_judge_needs_a_checkable_task():
    with pytest.raises(TypeError, match="CumulativeTask"):
        ExactJudge("abcd")


@pytest.mark.parametrize("reply, expected", [
    ("The steps are fine.\nVERDICT: 1", 1.0),
    ("verdict = 0.5", 0.5),
    ("**Verdict:** 0", 0.0),
    ("VERDICT: 1.0", 1.0),
    ("VERDICT: 1/2", 0.5),
    ("VERDICT: 1\nWait, step 2 is wrong.\nVERDICT: 0.5", 0.5),
    ("VERDICT: 0.7", None),
    ("VERDICT: 2", None),
    ("I think it is fully supported (1).", None),
    ("", None),
    (None, None),
])
def test_parse_verdict_policy(reply, expected):
    assert parse_verdict(reply) == expected


def test_verdict_without_score_must_say_why():
    with pytest.raises(ValueError, match="why"):
        Verdict(score=None)
    with pytest.raises(ValueError, match="must be one of"):
        Verdict(score=0.7)


def test_stored_template_is_versioned_and_renders_literally():
    t = load_template("faithfulness-v1")
    assert t.version == "faithfulness-v1"
    text = t.render("cost is $5 {x}", "steps $a {b}", "5")
    assert "cost is $5 {x}" in text and "steps $a {b}" in text and "VERDICT" in text
    with pytest.raises(ValueError, match="Stored versions"):
        load_template("faithfulness-v0")


def test_agreement_statistics():
    ag = judge_agreement([1.0, 1.0, 0.0, 0.0, None], [1.0, 0.0, 0.0, 0.0, 0.5])
    # p_o = 3/4; p_e = 0.5 * 0.25 + 0.5 * 0.75 = 0.5; kappa = (0.75 - 0.5) / 0.5.
    assert (ag.n_compared, ag.n_skipped) == (4, 1)
    assert ag.raw_agreement == pytest.approx(0.75)
    assert ag.cohen_kappa == pytest.approx(0.5)
    assert math.isnan(judge_agreement([None], [1.0]).cohen_kappa)
    with pytest.raises(ValueError, match="equal length"):
        judge_agreement([1.0], [])


# A short template: the tiny model's context is a few dozen characters.
TINY_TEMPLATE = RubricTemplate(version="test-tiny-v0", text="$prompt$completion|")


@pytest.fixture(scope="module")
def tiny_judge_parts():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    torch.set_num_threads(1)
    from satmon.lab.models import build_char_tokenizer, build_tiny_model
    from satmon.lab.sft import supervised_finetune

    tok = build_char_tokenizer(TASK.alphabet + "VERDICT: 0.51|")
    untrained = build_tiny_model(tok, seed=0)
    trained = build_tiny_model(tok, seed=0)
    pairs = [(TINY_TEMPLATE.render(p, TASK.completion(p, with_trace=True), None),
              "VERDICT: 0.5") for p in lab_prompts(64)]
    supervised_finetune(trained, tok, pairs, steps=80, seed=0)
    return tok, untrained, trained


def test_transformers_judge_verdicts_parsed(tiny_judge_parts):
    from satmon.probe import TransformersJudge

    tok, _, trained = tiny_judge_parts
    judge = TransformersJudge(trained, tok, template=TINY_TEMPLATE, max_new_tokens=14)
    items = [(p, TASK.completion(p, with_trace=True), TASK.answer(p))
             for p in lab_prompts(6, seed=3)]
    verdicts = judge.judge_many(items)
    assert [v.score for v in verdicts] == [0.5] * 6
    assert all(v.raw.startswith("VERDICT: 0.5") and v.error is None for v in verdicts)
    assert judge.describe()["template_version"] == "test-tiny-v0"


def test_transformers_judge_garbage_is_unparseable_not_scored(tiny_judge_parts):
    from satmon.probe import TransformersJudge
    from satmon.probe.judges import UNPARSEABLE

    tok, untrained, _ = tiny_judge_parts
    judge = TransformersJudge(untrained, tok, template=TINY_TEMPLATE, max_new_tokens=14)
    verdicts = judge.judge_many([(p, "abca>a", "a") for p in lab_prompts(4, seed=1)])
    assert all(v.score is None and v.error == UNPARSEABLE for v in verdicts)
    assert all(v.raw for v in verdicts)  # the garbage is kept for inspection
