"""The LLM stage against a real HTTP server on loopback that speaks the chat-completions protocol:
retries on 500 / 429 / timeouts / garbage, the judge's JSON, the label guard, and the API key."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from unixcxr.data.cleaning.judge import FormatError, Verdict, parse_rewrite, parse_verdict
from unixcxr.data.cleaning.llm import ChatClient, LLMConfig, LLMError, parse_retry_after
from unixcxr.data.cleaning.prompts import CLEANED_HEADING, DRAFT_HEADING, ORIGINAL_HEADING, PREVIOUS_HEADING
from unixcxr.data.cleaning.rewrite import LLMStage
from unixcxr.data.cleaning.rules import clean_report
from unixcxr.labeler import label_report

SECRET = "sk-test-DO-NOT-LEAK-1234567890"
PASS = json.dumps({"added": [], "dropped": [], "changed": [], "verdict": "pass"})
INVENTED = "Large right pneumothorax."


@dataclass
class Reply:
    status: int = 200
    content: str | None = None  # chat message content; None -> `body` is sent as is
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def section(user: str, heading: str) -> str:
    """The text under one heading of a prompt we built (headings are blank-line separated)."""
    return user.split(heading + "\n", 1)[1].split("\n\n", 1)[0]


def is_judge(request: dict) -> bool:
    return CLEANED_HEADING in request["messages"][-1]["content"]


def faithful(request: dict, number: int) -> Reply:
    """A well-behaved model: the rewrite returns the rule-stage draft, the judge passes it."""
    user = request["messages"][-1]["content"]
    return Reply(content=PASS if is_judge(request) else section(user, DRAFT_HEADING))


def inventing(request: dict, number: int) -> Reply:
    """A model that adds a finding to every rewrite, and a judge that waves it through."""
    if is_judge(request):
        return Reply(content=PASS)
    draft = section(request["messages"][-1]["content"], DRAFT_HEADING)
    return Reply(content=f"FINDINGS: {INVENTED} " + draft.removeprefix("FINDINGS: "))


class ChatServer:
    """A chat-completions endpoint on 127.0.0.1 (port chosen by the OS), run in a thread.
    `behaviour(request_json, request_number) -> Reply`; requests and their headers are recorded."""

    def __init__(self, behaviour: Callable[[dict, int], Reply] = faithful):
        self.behaviour = behaviour
        self.requests: list[tuple[dict, dict[str, str]]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = json.loads(raw)
                with server._lock:
                    server.requests.append((request, dict(self.headers)))
                    number = len(server.requests)
                reply = server.behaviour(request, number)
                time.sleep(reply.delay_s)
                body = reply.body if reply.content is None else json.dumps(
                    {"id": f"c{number}", "object": "chat.completion", "model": request["model"],
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.content},
                                  "finish_reason": "stop"}]})  # fmt: skip
                payload = body.encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def client_for(server: ChatServer, **overrides: object) -> ChatClient:
    fields = {"url": server.url, "model": "test-model", "timeout_s": 2.0, "max_retries": 3,
              "backoff_base_s": 0.01, "backoff_max_s": 2.0} | overrides  # fmt: skip
    return ChatClient(LLMConfig(**fields), api_key=SECRET)


MESSAGES = [{"role": "user", "content": "hello"}]
RAW = ("FINDINGS: Stable moderate cardiomegaly. Small left pleural effusion is again seen. No pneumothorax. "
       "IMPRESSION: Findings discussed with Dr. ___ at 8:45. Left effusion, unchanged from ___.")  # fmt: skip


# ---- the HTTP client -------------------------------------------------------------------------------

def test_client_returns_the_message_content_and_sends_the_key_as_bearer_token():
    with ChatServer(lambda request, n: Reply(content="FINDINGS: Clear lungs.")) as server:
        assert client_for(server).complete(MESSAGES) == "FINDINGS: Clear lungs."
    request, headers = server.requests[0]
    assert request["model"] == "test-model" and request["messages"] == MESSAGES
    assert headers["Authorization"] == f"Bearer {SECRET}"


def test_server_errors_are_retried_until_an_answer_comes():
    def flaky(request: dict, n: int) -> Reply:
        return Reply(status=500, body="overloaded") if n <= 2 else Reply(content="ok")

    with ChatServer(flaky) as server:
        client = client_for(server)
        assert client.complete(MESSAGES) == "ok"
    assert len(server.requests) == 3 and client.retries == 2


def test_rate_limit_waits_as_long_as_retry_after_says():
    def limited(request: dict, n: int) -> Reply:
        return Reply(status=429, body="slow down", headers={"Retry-After": "1"}) if n == 1 else Reply(content="ok")

    with ChatServer(limited) as server:
        start = time.monotonic()
        assert client_for(server, backoff_base_s=0.001).complete(MESSAGES) == "ok"
        waited = time.monotonic() - start
    assert 1.0 <= waited < 3.0  # Retry-After (1 s), not the 1 ms backoff


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_a_hung_request_times_out_and_is_retried():
    with ChatServer(lambda request, n: Reply(content="late" if n == 1 else "ok", delay_s=1.0 if n == 1 else 0)) \
            as server:  # fmt: skip
        assert client_for(server, timeout_s=0.3).complete(MESSAGES) == "ok"
    assert len(server.requests) == 2


def test_garbage_bodies_are_retried_then_reported_as_llm_error():
    with ChatServer(lambda request, n: Reply(body="<html>502 Bad Gateway</html>")) as server:
        with pytest.raises(LLMError, match="malformed chat-completions response"):
            client_for(server, max_retries=2).complete(MESSAGES)
    assert len(server.requests) == 3


def test_a_rejected_request_is_not_retried():
    with ChatServer(lambda request, n: Reply(status=400, body='{"error": "bad model"}')) as server:
        with pytest.raises(LLMError, match="HTTP 400"):
            client_for(server).complete(MESSAGES)
    assert len(server.requests) == 1


def test_the_api_key_never_reaches_errors_or_logs(caplog: pytest.LogCaptureFixture):
    def echo_key(request: dict, n: int) -> Reply:  # a badly behaved proxy that echoes the request headers
        return Reply(status=503, body=f"upstream refused Authorization: Bearer {SECRET}")

    caplog.set_level(logging.DEBUG)
    with ChatServer(echo_key) as server, pytest.raises(LLMError) as failure:
        client_for(server, max_retries=1).complete(MESSAGES)
    assert "upstream refused" in str(failure.value) and SECRET not in str(failure.value)
    assert "upstream refused" in caplog.text and SECRET not in caplog.text


# ---- reading model answers ---------------------------------------------------------------------

def test_verdict_is_read_from_fenced_json_with_prose_around_it():
    answer = 'Here is my check:\n```json\n{"added": [], "dropped": ["small left effusion"], "changed": [],' \
             ' "verdict": "fail"}\n```'  # fmt: skip
    assert parse_verdict(answer) == Verdict(passed=False, dropped=("small left effusion",))


def test_a_pass_that_lists_an_issue_counts_as_a_fail():
    answer = json.dumps({"added": ["pneumothorax"], "dropped": [], "changed": [], "verdict": "pass"})
    assert not parse_verdict(answer).passed


@pytest.mark.parametrize("answer", ["I think it is fine.", '{"verdict": "maybe"}',
                                    '{"verdict": "pass", "added": "none"}', '{"added": [], "verdict'])
def test_malformed_verdicts_are_format_errors(answer: str):
    with pytest.raises(FormatError):
        parse_verdict(answer)


def test_rewrite_is_read_past_a_preamble_and_code_fence():
    sections = parse_rewrite("Sure! Here it is:\n```\nFINDINGS: Mild cardiomegaly. IMPRESSION: No acute process.\n```")
    assert sections.as_text() == "FINDINGS: Mild cardiomegaly. IMPRESSION: No acute process."
    with pytest.raises(FormatError):
        parse_rewrite("The report looks clean to me.")


# ---- the stage: rewrite, judge, guard ------------------------------------------------------------

def run_stage(server: ChatServer, rounds: int = 3, raw: str = RAW) -> tuple:
    rules = clean_report(raw)
    original = rules.original.as_text()
    stage = LLMStage(client_for(server, max_retries=1), rounds=rounds, labeler=label_report)
    return stage.run(original, rules.text, label_report(original)), rules


def test_a_faithful_rewrite_passing_judge_and_guard_is_accepted():
    with ChatServer(faithful) as server:
        outcome, rules = run_stage(server)
    assert outcome.text == rules.text and outcome.flags == () and outcome.rounds == 1
    user = server.requests[0][0]["messages"][-1]["content"]
    assert section(user, ORIGINAL_HEADING) == rules.original.as_text()


def test_the_label_guard_catches_an_invented_finding_the_judge_let_through():
    with ChatServer(inventing) as server:
        outcome, _ = run_stage(server)
    assert outcome.text is None
    assert outcome.flags[0].startswith("guard_labels_changed") and "Pneumothorax:0->1" in outcome.flags[0]


def test_a_rejected_rewrite_is_retried_with_the_judges_feedback():
    def strict_once(request: dict, n: int) -> Reply:
        if is_judge(request) and n == 2:
            return Reply(content=json.dumps({"added": [], "dropped": ["small left pleural effusion"],
                                             "changed": [], "verdict": "fail"}))  # fmt: skip
        return faithful(request, n)

    with ChatServer(strict_once) as server:
        outcome, rules = run_stage(server)
    assert outcome.text == rules.text and outcome.rounds == 2
    retry = server.requests[2][0]["messages"][-1]["content"]
    assert PREVIOUS_HEADING in retry and "dropped: small left pleural effusion" in retry


def test_a_judge_that_never_answers_in_json_keeps_the_rule_text():
    def chatty_judge(request: dict, n: int) -> Reply:
        return Reply(content="Looks good to me!") if is_judge(request) else faithful(request, n)

    with ChatServer(chatty_judge) as server:
        outcome, _ = run_stage(server, rounds=2)
    assert outcome.text is None and outcome.flags[0].startswith("judge_unreadable")
    assert sum(is_judge(request) for request, _ in server.requests) == 2


def test_an_endpoint_that_keeps_failing_keeps_the_rule_text_and_says_why():
    with ChatServer(lambda request, n: Reply(status=500, body="down")) as server:
        outcome, _ = run_stage(server)
    assert outcome.text is None and outcome.flags[0].startswith("llm_failed") and "HTTP 500" in outcome.flags[0]


def test_rewrites_that_keep_noise_are_sent_back():
    def lazy(request: dict, n: int) -> Reply:
        if is_judge(request):
            return Reply(content=PASS)
        return Reply(content="FINDINGS: Moderate cardiomegaly, unchanged from ___.")

    with ChatServer(lazy) as server:
        outcome, _ = run_stage(server, rounds=2)
    assert outcome.text is None and outcome.flags[0].startswith("llm_rejected") and "placeholder" in outcome.flags[0]
    assert not any(is_judge(request) for request, _ in server.requests)
