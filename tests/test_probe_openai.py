"""The OpenAI-compatible judge and endpoint sampling against a real local HTTP server.

The server (``tests/_probe_support.ChatServer``) is a ``http.server`` thread on 127.0.0.1 with
``/v1/chat/completions``; its replies are canned verdicts, or completions sampled from a tiny lab
model (``transformers serve`` is not used: it needs extra dependencies).
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from satmon.probe import (ChatEndpoint, EndpointError, ExactJudge, OpenAIJudge, ProbeError,
                          probe)
from satmon.probe.judges import UNPARSEABLE

from _local_servers import free_port
from _probe_support import TASK, ChatServer, lab_prompts


def _exact_responder(body):
    """A judge 'model' that grades the rendered rubric with the exact rule (real verdicts)."""
    text = body["messages"][0]["content"]
    prompt = re.search(r"Problem:\n(.*)\n", text).group(1)
    completion = re.search(r"Response:\n(.*)\n", text).group(1)
    if "x" in completion:
        return "I cannot tell."  # garbage: no VERDICT line
    score = ExactJudge(TASK).judge(prompt, completion, None).score
    return f"Checked each running sum.\nVERDICT: {score:g}"


ITEMS = [("bcad=", "bddc>c", "c"), ("bcad=", "bdda>a", "c"), ("bcad=", "bddc>a", "c"),
         ("bcad=", "xx>c", "c")]


def test_openai_judge_parses_caches_and_counts_garbage(tmp_path):
    with ChatServer(_exact_responder) as server:
        judge = OpenAIJudge(server.url, model="judge", cache_dir=tmp_path / "cache",
                            max_concurrency=2)
        verdicts = judge.judge_many(ITEMS)
        assert [v.score for v in verdicts] == [1.0, 0.5, 0.0, None]
        assert verdicts[3].error == UNPARSEABLE and verdicts[3].raw == "I cannot tell."
        assert len(server.bodies) == 4
        body = server.bodies[0]
        assert body["model"] == "judge" and body["temperature"] == 0
        # Same template version and inputs: answered from the cache, no request sent.
        again = OpenAIJudge(server.url + "/v1", model="judge", cache_dir=tmp_path / "cache")
        assert [v.score for v in again.judge_many(ITEMS)] == [1.0, 0.5, 0.0, None]
        assert len(server.bodies) == 4 and again.cache_hits == 4
        # Another template version is another cache key.
        from satmon.probe import RubricTemplate, load_template

        v2 = RubricTemplate(version="faithfulness-v1-test",
                            text=load_template().text)
        other = OpenAIJudge(server.url, model="judge", template=v2, cache_dir=tmp_path / "cache")
        other.judge(*ITEMS[0])
        assert len(server.bodies) == 5
    assert len(list((tmp_path / "cache").glob("*.json"))) == 5


def test_openai_judge_retries_are_bounded():
    with ChatServer(lambda body: "VERDICT: 1", fail_first=2) as server:
        judge = OpenAIJudge(server.url, retries=2)
        judge.endpoint.backoff = 0.01
        assert judge.judge(*ITEMS[0]).score == 1.0
        assert server.attempts == 3
    with ChatServer(lambda body: "VERDICT: 1", fail_first=10) as server:
        judge = OpenAIJudge(server.url, retries=1)
        judge.endpoint.backoff = 0.01
        verdict = judge.judge(*ITEMS[0])
        assert verdict.score is None and "HTTP 503" in verdict.error
        assert server.attempts == 2
    with ChatServer(lambda body: "VERDICT: 1", fail_first=10, fail_status=400) as server:
        verdict = OpenAIJudge(server.url, retries=3).judge(*ITEMS[0])
        assert "HTTP 400" in verdict.error and server.attempts == 1  # not retryable


def test_openai_judge_respects_the_concurrency_limit():
    with ChatServer(lambda body: "VERDICT: 0", delay=0.05) as server:
        judge = OpenAIJudge(server.url, max_concurrency=2)
        start = time.perf_counter()
        verdicts = judge.judge_many([("bcad=", f"bdd{c}>{c}", "c") for c in "abcdabcd"])
        assert all(v.score == 0.0 for v in verdicts)
        assert server.max_in_flight == 2
        assert time.perf_counter() - start >= 4 * 0.05


def test_down_endpoint_gives_failed_verdicts_and_a_clear_error(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    judge = OpenAIJudge(url, retries=1, timeout=2)
    judge.endpoint.backoff = 0.01
    verdict = judge.judge(*ITEMS[0])
    assert verdict.score is None and "did not answer after 2 attempt(s)" in verdict.error
    with pytest.raises(EndpointError, match=re.escape(url)):
        ChatEndpoint(url, retries=0).complete([{"role": "user", "content": "hi"}])
    # Sampling from a down endpoint: the CLI ends with status 2 and one error line.
    from satmon.probe.commands import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "bcad=", "answer": "c"}) + "\n")
    assert main(["served", "--prompts", str(prompts), "--endpoint", url,
                 "--timeout", "2", "-k", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("satmon probe: error: endpoint") and "did not answer" in err


def test_probe_samples_from_an_endpoint_and_judges_with_another():
    torch = pytest.importorskip("torch")
    from _probe_support import trained_lab_model
    from satmon.lab.traces import answer_match, final_answer, scratchpad
    from satmon.probe.sampling import sample_local

    torch.set_num_threads(1)
    model, tok = trained_lab_model()

    lock = threading.Lock()

    def policy(body):
        # The served model: a tiny lab model sampling with the request's seed. torch's global
        # RNG is shared by the server's threads, so one request samples at a time.
        prompt = body["messages"][0]["content"]
        with lock:
            return sample_local(model, tok, [prompt], k=1, max_new_tokens=TASK.length + 2,
                                temperature=body["temperature"], seed=body["seed"])[0][0]

    prompts = lab_prompts(3, seed=4)
    answers = [TASK.answer(p) for p in prompts]
    with ChatServer(policy) as sampler, ChatServer(_exact_responder) as judge_server:
        def run():
            return probe("tiny", prompts, answers, endpoint=sampler.url,
                         verifier=answer_match(True), k=4, seed=1,
                         max_new_tokens=TASK.length + 2,
                         judge=OpenAIJudge(judge_server.url), second_judge=ExactJudge(TASK),
                         extract_answer=lambda c: final_answer(c, with_trace=True),
                         extract_reasoning=scratchpad)

        first, second = run(), run()
        assert len(sampler.bodies) == 24
        assert len({b["seed"] for b in sampler.bodies}) == 12
    d = first.to_dict()
    assert d["config"]["endpoint"] is True and len(d["rollouts"]) == 12
    assert [r["completion"] for r in d["rollouts"]] == \
        [r["completion"] for r in second.to_dict()["rollouts"]]
    # The endpoint judge grades with the exact rule: full agreement where it could parse.
    ag = d["agreement"]
    assert ag["raw_agreement"] == 1.0
    assert ag["n_compared"] == d["verdicts"]["scored"]


def test_probe_refuses_to_report_when_the_judge_is_down():
    torch = pytest.importorskip("torch")
    from _probe_support import trained_lab_model
    from satmon.lab.traces import answer_match

    torch.set_num_threads(1)
    model, tok = trained_lab_model(steps=5)
    judge = OpenAIJudge(f"http://127.0.0.1:{free_port()}", retries=0, timeout=2)
    with pytest.raises(ProbeError, match=r"no usable verdict.*8 failed.*did not answer"):
        probe(model, ["bcad=", "abca="], ["c", "c"], tokenizer=tok,
              verifier=answer_match(True), judge=judge, k=4, max_new_tokens=6)
