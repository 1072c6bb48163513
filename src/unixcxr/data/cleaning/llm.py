"""A small client for any OpenAI-compatible chat-completions endpoint (OpenAI, DeepSeek, vLLM,
llama.cpp, Ollama ...), standard library only, with retries.

Cleaning a few hundred thousand reports through a remote model meets every failure an endpoint
has: rate limits (429 with Retry-After), overloaded servers (5xx), hung connections (timeouts) and
occasional garbage bodies. Each of those is retried with exponential backoff and jitter; a request
the server rejects as such (400, 401, 404) is not. The API key comes from an environment variable,
is sent only in the Authorization header and is redacted from every message this module produces.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

CHAT_PATH = "/chat/completions"
DEFAULT_KEY_ENV = "UNIXCXR_LLM_KEY"
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
ERROR_BODY_CHARS = 200  # how much of an error body a message quotes


@dataclass(frozen=True)
class LLMConfig:
    """Where the endpoint is and how patient to be with it."""

    url: str  # base URL ("http://localhost:8000/v1") or the full .../chat/completions URL
    model: str
    key_env: str = DEFAULT_KEY_ENV  # name of the environment variable holding the API key
    timeout_s: float = 60.0  # per HTTP request
    max_retries: int = 5  # retries after the first try, per call
    backoff_base_s: float = 1.0  # first backoff; doubles each retry
    backoff_max_s: float = 60.0  # cap on one wait, Retry-After included
    temperature: float = 0.0  # cleaning wants the most likely rewrite, not variety
    max_tokens: int = 1024  # a cleaned CXR report is a few hundred tokens

    @property
    def endpoint(self) -> str:
        url = self.url.rstrip("/")
        return url if url.endswith(CHAT_PATH) else url + CHAT_PATH


class LLMError(RuntimeError):
    """The endpoint gave no usable answer (after retries, where retrying made sense)."""


class _Retryable(Exception):
    """One failed try worth repeating; `wait_s` is the server's Retry-After when it sent one."""

    def __init__(self, reason: str, wait_s: float | None = None):
        super().__init__(reason)
        self.wait_s = wait_s


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class ChatClient:
    """Thread-safe: one client serves all pipeline workers; it keeps counts of retries and failures."""

    def __init__(self, config: LLMConfig, api_key: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, seed: int | None = None):  # fmt: skip
        self.config = config
        self._key = api_key if api_key is not None else os.environ.get(config.key_env) or None
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.retries = 0
        self.failures = 0

    def redact(self, text: str) -> str:
        """The text with the API key (if any) replaced, for anything that is logged or stored."""
        return text.replace(self._key, "[REDACTED]") if self._key else text

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant message content for `messages`; LLMError when no usable answer came."""
        body = json.dumps({
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }).encode()  # fmt: skip
        for attempt in range(self.config.max_retries + 1):
            try:
                return self._post(body)
            except _Retryable as failure:
                if attempt == self.config.max_retries:
                    with self._lock:
                        self.failures += 1
                    raise LLMError(self.redact(f"{failure} (gave up after {attempt + 1} tries)")) from None
                wait = self._backoff(attempt, failure.wait_s)
                with self._lock:
                    self.retries += 1
                log.info("LLM try %d failed (%s); retrying in %.2f s",
                         attempt + 1, self.redact(str(failure)), wait)  # fmt: skip
                self._sleep(wait)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After when the server sent one, else exponential backoff with 'equal jitter'
        (half fixed, half random) so that many workers hitting one limit do not retry in step."""
        if retry_after is not None:
            return min(retry_after, self.config.backoff_max_s)
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * 2**attempt)
        with self._lock:
            return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _post(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.config.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read(ERROR_BODY_CHARS).decode("utf-8", "replace").strip()
            reason = f"HTTP {err.code} from {self.config.endpoint}: {detail}"
            if err.code in RETRYABLE_STATUS or err.code >= 500:
                raise _Retryable(reason, parse_retry_after(err.headers.get("Retry-After"))) from None
            raise LLMError(self.redact(reason)) from None
        except TimeoutError as err:
            raise _Retryable(f"timed out after {self.config.timeout_s} s ({err})") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise _Retryable(f"cannot reach {self.config.endpoint}: {reason}") from None
        return _content(raw)


def _content(raw: bytes) -> str:
    """choices[0].message.content of a chat-completions body; a malformed body is retryable
    (overloaded proxies return HTML error pages with status 200)."""
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        snippet = raw[:ERROR_BODY_CHARS].decode("utf-8", "replace")
        raise _Retryable(f"malformed chat-completions response: {snippet!r}") from None
    if not isinstance(content, str) or not content.strip():
        raise _Retryable("chat-completions response without message content")
    return content
