"""A small client for OpenAI-compatible ``/v1/chat/completions`` endpoints (vLLM, ``transformers
serve``, llama.cpp, hosted APIs), on the standard library only.

:class:`ChatEndpoint` sends one chat request at a time per call, with a timeout, a bounded
number of retries (connection errors, HTTP 429 and 5xx, with exponential back-off) and a
concurrency limit shared by :meth:`ChatEndpoint.map`. Any other HTTP status, or a reply without
``choices[0].message.content``, is not retried. Every failure raises :class:`EndpointError`
with the URL, the attempts made and the cause, so ``satmon probe`` can say "endpoint down"
instead of printing a traceback.

The URL may name the server (``http://127.0.0.1:8000``), its API root (``.../v1``) or the
endpoint itself (``.../v1/chat/completions``). An API key is read from ``api_key`` or the
environment variable ``OPENAI_API_KEY`` and sent as a bearer token; it is never logged or
stored in results.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class EndpointError(ConnectionError):
    """An OpenAI-compatible endpoint could not answer (down, refused, timed out, bad reply)."""


def chat_url(url: str) -> str:
    """The full ``/v1/chat/completions`` URL for a server, API root or endpoint URL."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"An endpoint URL must start with http:// or https://. Got {url!r}.")
    base = url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


class ChatEndpoint:
    """One OpenAI-compatible chat endpoint.

    Parameters
    ----------
    url:
        Server, API root or endpoint URL (see :func:`chat_url`).
    model:
        The ``model`` field of each request (servers with one model often ignore it).
    timeout:
        Seconds to wait for one HTTP response.
    retries:
        Further attempts after a retryable failure (0 = one attempt only).
    backoff:
        Seconds before the first retry; doubled for each further one.
    max_concurrency:
        Requests in flight at once in :meth:`map`.
    api_key:
        Bearer token; defaults to ``$OPENAI_API_KEY`` when set.
    """

    def __init__(self, url: str, *, model: str = "default", timeout: float = 60.0,
                 retries: int = 2, backoff: float = 0.5, max_concurrency: int = 4,
                 api_key: str | None = None) -> None:
        self.url = chat_url(url)
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_concurrency = max_concurrency
        self.api_key = api_key
        for name, value, low in (("timeout", timeout, 0.0), ("backoff", backoff, 0.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low \
                    or (name == "timeout" and value == 0):
                raise ValueError(f"The '{name}' parameter of ChatEndpoint must be a number "
                                 f"{'> 0' if name == 'timeout' else '>= 0'}. Got {value!r}.")
        for name, value, low in (("retries", retries, 0), ("max_concurrency", max_concurrency, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"The '{name}' parameter of ChatEndpoint must be an int >= "
                                 f"{low}. Got {value!r} instead.")

    def complete(self, messages: Sequence[dict[str, str]], **params: Any) -> str:
        """The assistant text of one chat completion; raises :class:`EndpointError`."""
        body = json.dumps({"model": self.model, "messages": list(messages), **params}).encode()
        headers = {"Content-Type": "application/json"}
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last: str = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code} {exc.reason}"
                if exc.code in _RETRY_STATUS:
                    continue
                break
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last = f"{type(exc).__name__}: {reason}"
                continue
            except ValueError as exc:
                last = f"reply is not JSON ({exc})"
                break
            try:
                content = payload["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                last = f"reply has no choices[0].message.content: {str(payload)[:200]}"
                break
            if not isinstance(content, str):
                last = f"reply content is {type(content).__name__}, not text"
                break
            return content
        raise EndpointError(f"endpoint {self.url} did not answer after {attempt + 1} "
                            f"attempt(s): {last}")

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(item) for item in items]`` with at most ``max_concurrency`` running at once."""
        if self.max_concurrency == 1 or len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(fn, items))
