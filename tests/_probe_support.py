"""Real components for the probe tests: a tiny lab model and a local OpenAI-compatible server.

The server is a ``http.server`` thread on 127.0.0.1 implementing ``POST /v1/chat/completions``
(``transformers serve`` needs extra dependencies that are not installed here). Its replies come
from a ``responder(body) -> str`` the test chooses: canned verdicts, or completions sampled
from a tiny lab model. It records every request body and the most requests in flight at once.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from satmon.lab.traces import CumulativeTask

TASK = CumulativeTask(symbols="abcd", length=4)


def lab_prompts(n: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return ["".join(rng.choice(TASK.symbols) for _ in range(TASK.length)) + "=" for _ in range(n)]


def trained_lab_model(steps: int = 80, seed: int = 0):
    """A tiny model fine-tuned briefly on scratchpads (faithful in part), with its tokenizer."""
    from satmon.lab.models import build_char_tokenizer, build_tiny_model
    from satmon.lab.sft import supervised_finetune

    tok = build_char_tokenizer(TASK.alphabet)
    model = build_tiny_model(tok, seed=seed)
    pairs = [(p, TASK.completion(p, with_trace=True)) for p in lab_prompts(96, seed=seed + 7)]
    supervised_finetune(model, tok, pairs, steps=steps, seed=seed)
    return model, tok


class ChatServer:
    """A threaded local chat-completions server; use as a context manager."""

    def __init__(self, responder, *, delay: float = 0.0, fail_first: int = 0,
                 fail_status: int = 503) -> None:
        self.responder = responder
        self.delay = delay
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.bodies: list[dict] = []
        self.attempts = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                with server._lock:
                    server.attempts += 1
                    attempt = server.attempts
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.delay:
                        time.sleep(server.delay)
                    if self.path != "/v1/chat/completions":
                        self.send_error(404)
                        return
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    if attempt <= server.fail_first:
                        self.send_error(server.fail_status)
                        return
                    with server._lock:
                        server.bodies.append(body)
                    text = server.responder(body)
                    payload = json.dumps({"choices": [{"index": 0, "message": {
                        "role": "assistant", "content": text}}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)




def endpoint_probe(*, faithful: bool, n_prompts: int = 4, k: int = 4, seed: int = 0):
    """A real :func:`satmon.probe.probe` of a served "model" (no torch): it answers every
    prompt right, with its scratchpad (``faithful``) or with a scratchpad that does not derive
    the answer; the exact judge grades it, so the regime call is GENERALIZING / MEMORIZING."""
    from satmon.lab.traces import answer_match, final_answer, scratchpad
    from satmon.probe import ExactJudge, probe

    def served(body):
        prompt = body["messages"][0]["content"]
        if faithful:
            return TASK.completion(prompt, with_trace=True)
        return "a" * TASK.length + ">" + TASK.answer(prompt)

    prompts = lab_prompts(n_prompts, seed=seed)
    with ChatServer(served) as server:
        return probe("served", prompts, [TASK.answer(p) for p in prompts],
                     endpoint=server.url, verifier=answer_match(True), k=k, seed=seed,
                     max_new_tokens=TASK.length + 2, judge=ExactJudge(TASK),
                     extract_answer=lambda c: final_answer(c, with_trace=True),
                     extract_reasoning=scratchpad)
