"""HeldoutEvaluator: greedy generation on a tiny local model, verifier policy, subsampling."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from satmon.callbacks import HeldoutEvaluator  # noqa: E402
from satmon.lab.models import build_char_tokenizer, build_tiny_model  # noqa: E402
from satmon.lab.tasks import SymbolTask, exact_match, make_split  # noqa: E402

TASK = SymbolTask(symbols="abcd", length=3)


@pytest.fixture(scope="module")
def tiny():
    tok = build_char_tokenizer(TASK.alphabet)
    return tok, build_tiny_model(tok, seed=0)


def _mixed_prompts():
    # Different lengths exercise left padding inside a batch.
    return ["a=", "abc=", "dd=", "cab=", "b=", "dcba=", "ac=", "bbb="]


def test_due_schedule():
    ev = HeldoutEvaluator(["a="], ["a"], exact_match, every=4, at_start=False)
    assert [s for s in range(13) if ev.due(s)] == [4, 8, 12]
    ev = HeldoutEvaluator(["a="], ["a"], exact_match, every=4)
    assert ev.due(0)


def test_batched_generation_equals_one_prompt_at_a_time(tiny):
    tok, model = tiny
    seen: dict[int, list[tuple[str, str]]] = {}

    def recording(batch_size):
        def verifier(prompt, completion, answer):
            seen.setdefault(batch_size, []).append((prompt, completion))
            return 1.0 if completion[:1] == answer else 0.0
        return verifier

    prompts = _mixed_prompts()
    answers = ["a"] * len(prompts)
    results = {}
    for bs in (1, 3, 64):
        ev = HeldoutEvaluator(prompts, answers, recording(bs), batch_size=bs, max_new_tokens=2)
        results[bs] = ev.evaluate(model, tok, step=7)
    assert seen[1] == seen[3] == seen[64]
    assert results[1].value == results[3].value == results[64].value
    r = results[64]
    assert (r.name, r.step, r.n, r.n_failed) == ("heldout", 7, len(prompts), 0)
    assert all(len(c) <= 2 for _, c in seen[1])


def test_training_mode_is_restored(tiny):
    tok, model = tiny
    ev = HeldoutEvaluator(["a="], ["a"], exact_match, max_new_tokens=1)
    model.train()
    ev.evaluate(model, tok, step=1)
    assert model.training
    model.eval()
    ev.evaluate(model, tok, step=1)
    assert not model.training


def test_subsample_is_fixed_and_seeded(tiny):
    tok, model = tiny
    split = make_split(TASK, n_train=1, n_heldout=40, seed=0)
    scored: list[str] = []

    def verifier(prompt, completion, answer):
        scored.append(prompt)
        return exact_match(prompt, completion, answer)

    ev = HeldoutEvaluator(split.heldout_prompts, split.heldout_answers, verifier, subsample=10,
                          max_new_tokens=1, seed=1)
    assert ev.size == 10
    first = ev.evaluate(model, tok, step=1)
    once = list(scored)
    ev.evaluate(model, tok, step=2)
    assert first.n == 10 and scored[10:] == once  # the same prompts every time
    other = HeldoutEvaluator(split.heldout_prompts, split.heldout_answers, exact_match,
                             subsample=10, seed=2)
    assert other._indices != ev._indices
    assert HeldoutEvaluator(["a="], ["a"], exact_match, subsample=5).size == 1


def test_verifier_failures_are_counted_not_raised(tiny, caplog):
    tok, model = tiny

    def flaky(prompt, completion, answer):
        if prompt.startswith("a"):
            return None
        if prompt.startswith("b"):
            return float("nan")
        if prompt.startswith("c"):
            raise RuntimeError("verifier bug")
        return 1.0

    prompts = _mixed_prompts()  # 3 'a', 2 'b', 1 'c', 2 'd'
    ev = HeldoutEvaluator(prompts, ["x"] * len(prompts), flaky, max_new_tokens=1)
    with caplog.at_level("ERROR"):
        r = ev.evaluate(model, tok, step=3)
    assert (r.n, r.n_failed, r.value) == (2, 6, 1.0)
    assert "verifier raised" in caplog.text


def test_generation_failure_reports_every_prompt_failed(tiny, caplog):
    tok, _ = tiny

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def generate(self, **kwargs):
            raise RuntimeError("out of memory")

    ev = HeldoutEvaluator(["a=", "b="], ["a", "b"], exact_match)
    with caplog.at_level("ERROR"):
        r = ev.evaluate(Broken(), tok, step=5)
    assert r.n == 0 and r.n_failed == 2 and math.isnan(r.value)
    assert r.to_dict()["value"] is None
    assert "held-out generation failed" in caplog.text


@pytest.mark.parametrize("kwargs, error, match", [
    ({"prompts": []}, ValueError, "non-empty sequence"),
    ({"answers": ["a", "b"]}, ValueError, "one answer per prompt"),
    ({"verifier": "exact"}, TypeError, "must be callable"),
    ({"every": 0}, ValueError, "'every'"),
    ({"batch_size": 1.5}, ValueError, "'batch_size'"),
    ({"subsample": 0}, ValueError, "'subsample'"),
    ({"name": ""}, ValueError, "'name'"),
    ({"generation_kwargs": {"do_sample": True}}, ValueError, "greedily"),
    ({"timeout": 0}, ValueError, "'timeout'"),
    ({"timeout": "5"}, ValueError, "'timeout'"),
])
def test_validation(kwargs, error, match):
    params = {"prompts": ["a="], "answers": ["a"], "verifier": exact_match, **kwargs}
    with pytest.raises(error, match=match):
        HeldoutEvaluator(params.pop("prompts"), params.pop("answers"), params.pop("verifier"),
                         **params)


def test_needs_a_tokenizer(tiny):
    _, model = tiny
    with pytest.raises(ValueError, match="needs a tokenizer"):
        HeldoutEvaluator(["a="], ["a"], exact_match).evaluate(model, None, step=0)


def test_a_hung_verifier_is_bounded_by_the_timeout(tiny, caplog):
    """One prompt's verifier sleeps 30 s: with timeout=0.3 the evaluation returns in well
    under a second per timed-out call, that prompt counts as timed out, the others score."""
    import threading
    import time

    tok, model = tiny
    release = threading.Event()

    def slow_on_c(prompt, completion, answer):
        if prompt.startswith("c"):
            release.wait(30)
        return 1.0

    prompts = _mixed_prompts()  # one prompt starts with 'c'
    ev = HeldoutEvaluator(prompts, ["x"] * len(prompts), slow_on_c, max_new_tokens=1,
                          timeout=0.3)
    t0 = time.perf_counter()
    with caplog.at_level("WARNING"):
        r = ev.evaluate(model, tok, step=4)
    elapsed = time.perf_counter() - t0
    release.set()
    assert (r.n, r.n_failed, r.n_timed_out, r.value) == (7, 1, 1, 1.0)
    assert elapsed < 5.0  # not 30 s
    assert "timed out (0.3 s) on 1 of 8 prompts at step 4" in caplog.text


def test_an_always_hanging_verifier_costs_at_most_three_timeouts(tiny):
    import threading
    import time

    tok, model = tiny
    release = threading.Event()
    calls = []

    def hangs(prompt, completion, answer):
        calls.append(prompt)
        release.wait(30)
        return 1.0

    prompts = _mixed_prompts()
    ev = HeldoutEvaluator(prompts, ["x"] * len(prompts), hangs, max_new_tokens=1, timeout=0.2)
    t0 = time.perf_counter()
    r = ev.evaluate(model, tok, step=2)
    elapsed = time.perf_counter() - t0
    release.set()
    assert (r.n, r.n_failed, r.n_timed_out) == (0, 8, 8) and math.isnan(r.value)
    assert len(calls) == 3  # then the rest were not verified
    assert elapsed < 3.0


def test_verifier_results_that_are_not_real_numbers_are_failures(tiny, caplog):
    """"1.0" (a string) is not silently read as 1.0: counted in n_failed, logged once per type.
    Real numbers of any kind (bool, int, numpy) are scores."""
    import numpy as np

    tok, model = tiny
    answers = {"a": "1.0", "b": True, "c": np.float32(0.5), "d": 1}

    def typed(prompt, completion, answer):
        return answers[prompt[0]]

    prompts = _mixed_prompts()  # 3 'a', 2 'b', 1 'c', 2 'd'
    ev = HeldoutEvaluator(prompts, ["x"] * len(prompts), typed, max_new_tokens=1)
    with caplog.at_level("WARNING"):
        r = ev.evaluate(model, tok, step=1)
    assert (r.n, r.n_failed) == (5, 3)
    assert r.value == pytest.approx((2 * 1.0 + 0.5 + 2 * 1) / 5)
    assert caplog.text.count("returned str '1.0'") == 1
