"""Error mapping (tool-surface.md §1.6, missive-api.md §3): every failure of the API or the network becomes one
isError result with a fixed first line and a hint; nothing leaks (token, headers, tracebacks) and the server keeps
serving afterwards.

Against a `responses` mock, which pins each mapping's exact text. test_reliability.py and test_peer.py have tests
that read like some of these (5xx, 429, retries) but drive real sockets against the fake: they check the
transport (what is retried, when the deadline cuts), not the wording. Both are kept on purpose."""

import email.utils
import http
import json
import re
import time

import pytest
import requests
import urllib3.exceptions

import missive_mcp as m
from conftest import API, TOKEN, call, client_factory, text

# One tool per verb, with arguments that pass validation, and the route the mock must answer.
GET = ("missive_list_users", {}, "GET", "/users")
POST = ("missive_create_draft", {"subject": "Hello", "body": "Draft body"}, "POST", "/drafts")
PATCH = ("missive_update_task", {"task_id": "task-1", "title": "New title"}, "PATCH", "/tasks/task-1")
VERBS = {"GET": GET, "POST": POST, "PATCH": PATCH}
FOLLOW_UP = ("missive_list_organizations", "/organizations", {"organizations": [{"id": "org-1", "name": "Org"}]})

FIRST_LINE = re.compile(r"^Missive API error (\d{3}): (.+)$")


# Against the responses mock: a 5 s deadline, no real backoff, and one attempt unless a test allows retries.
clients = client_factory(deadline=5.0, backoff_base=0.0, max_attempts=1)


def run_tool(verb, config, client):
    tool, args, _method, _path = VERBS[verb]
    return call(tool, dict(args), config=config, client=client)


def register(api, verb, **kwargs):
    _tool, _args, method, path = VERBS[verb]
    api.add(method, API + path, **kwargs)


def assert_clean(result_text: str):
    """Nothing that must never reach the model (§1.6 "Never")."""
    assert TOKEN not in result_text
    assert "Authorization" not in result_text
    assert "Bearer" not in result_text
    assert "Traceback" not in result_text
    assert 'File "' not in result_text


def api_error(result, status: int) -> tuple[str, str]:
    """Check the two-line shape `Missive API error <status>: <message>` / `Hint: …`; return (message, hint)."""
    assert result.is_error is True
    body = text(result)
    assert_clean(body)
    lines = body.split("\n")
    assert len(lines) == 2, body
    match = FIRST_LINE.match(lines[0])
    assert match, lines[0]
    assert int(match.group(1)) == status
    assert lines[1].startswith("Hint: ") and len(lines[1]) > len("Hint: ") + 10, lines[1]
    return peer_words(match.group(2)), lines[1]


def peer_words(message: str) -> str:
    """Missive's own words arrive as one JSON-quoted line; the server's own phrases (reason phrases) unquoted."""
    return json.loads(message) if message.startswith('"') else message


def assert_still_serving(api, config, client):
    """A following successful call on the same client works (the server is not wedged by the error)."""
    tool, path, payload = FOLLOW_UP
    api.add("GET", API + path, json=payload)
    result = call(tool, {}, config=config, client=client)
    assert result.is_error is False, text(result)
    assert json.loads(text(result)) == payload


# ---- status codes and hints ---------------------------------------------------------------------------------------

HINTS = {
    400: ("rejected", "field"),
    401: ("token", "revoked", "Preferences → API"),
    403: ("may not", "admin"),
    404: ("not found", "list tool"),
    422: ("rejected", "field"),
}


@pytest.mark.parametrize("verb", ["GET", "POST", "PATCH"])
@pytest.mark.parametrize("status", sorted(HINTS))
def test_4xx_first_line_and_hint(api, clients, verb, status):
    config, client = clients()
    register(api, verb, status=status, json={"error": f"problem number {status}"})
    message, hint = api_error(run_tool(verb, config, client), status)
    assert message == f"problem number {status}"
    words = HINTS[status]
    if status == 404 and not m.TOOLS[VERBS[verb][0]].path_params:
        words = ("MISSIVE_API_URL", "/v1")  # a route without ids cannot be "not found": the base URL is wrong
    for word in words:
        assert word.lower() in hint.lower(), (word, hint)
    assert len(api.calls) == 1
    assert_still_serving(api, config, client)


@pytest.mark.parametrize("status", [500, 502, 503])
@pytest.mark.parametrize("verb", ["GET", "POST"])
def test_5xx_hint(api, clients, verb, status):
    config, client = clients()
    register(api, verb, status=status, body="")
    message, hint = api_error(run_tool(verb, config, client), status)
    assert message == {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}[status]
    assert "missive-side" in hint.lower()
    if verb == "POST":
        assert "may or may not have happened" in hint
        assert "before repeating" in hint
    else:
        assert "may or may not" not in hint
    assert_still_serving(api, config, client)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_post_5xx_is_never_retried(api, clients, status):
    """A POST that may have arrived is not repeated (a write is never duplicated), even with retries enabled."""
    config, client = clients(max_attempts=3)
    register(api, "POST", status=status, json={"error": "boom"})
    api_error(run_tool("POST", config, client), status)
    assert len(api.calls) == 1


def test_get_503_is_retried_then_succeeds(api, clients):
    config, client = clients(max_attempts=3)
    register(api, "GET", status=503, body="")
    register(api, "GET", json={"users": [{"id": "u1"}]})
    result = run_tool("GET", config, client)
    assert result.is_error is False, text(result)
    assert json.loads(text(result)) == {"users": [{"id": "u1"}]}
    assert len(api.calls) == 2


# test_security.py checks every redirect status; this one checks the error's shape and that the client serves on.
def test_redirect_is_not_followed(api, clients):
    config, client = clients()
    register(api, "GET", status=302, headers={"Location": "https://elsewhere.test/steal"}, body="")
    result = run_tool("GET", config, client)
    assert result.is_error is True
    assert text(result).startswith("Missive API error 302: ")
    assert_clean(text(result))
    assert len(api.calls) == 1  # the Location was not requested
    assert_still_serving(api, config, client)


# ---- 429 and the rate budget --------------------------------------------------------------------------------------

@pytest.mark.parametrize("verb", ["GET", "POST"])
def test_429_with_retry_after(api, clients, verb):
    now = [1000.0]
    config, client = clients(rate_wait=1.0, budget=m.RateBudget(clock=lambda: now[0]))
    register(api, verb, status=429, body="", headers={"Retry-After": "30"})
    message, hint = api_error(run_tool(verb, config, client), 429)
    assert message == "Too Many Requests"
    assert "rate limit" in hint.lower()
    assert re.search(r"\b30 seconds\b", hint), hint
    # Every call now holds back until Retry-After has passed: no request leaves, and the answer says so.
    started = time.monotonic()
    held = call(FOLLOW_UP[0], {}, config=config, client=client)
    assert held.is_error is True
    assert time.monotonic() - started < 3
    assert len(api.calls) == 1
    assert_clean(text(held))
    now[0] += 31  # the pause is over
    assert_still_serving(api, config, client)


def test_429_retry_after_beyond_deadline_fails_fast(api, clients):
    """With retries enabled, a Retry-After longer than the call's deadline is reported at once, not slept on."""
    config, client = clients(deadline=30.0, max_attempts=3)
    register(api, "GET", status=429, json={"error": "slow down"}, headers={"Retry-After": "120"})
    started = time.monotonic()
    message, hint = api_error(run_tool("GET", config, client), 429)
    assert time.monotonic() - started < 5.0  # neither the 120 s nor the 30 s deadline was slept through
    assert message == "slow down"
    assert re.search(r"\b120 seconds\b", hint), hint
    assert len(api.calls) == 1


def test_429_retry_after_http_date(api, clients):
    config, client = clients()
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    register(api, "GET", status=429, body="", headers={"Retry-After": when})
    _message, hint = api_error(run_tool("GET", config, client), 429)
    seconds = int(re.search(r"wait (\d+) seconds", hint).group(1))
    assert 15 <= seconds <= 21, hint


@pytest.mark.parametrize("verb", ["GET", "POST"])
def test_429_is_retried_when_the_wait_fits(api, clients, verb):
    """A 429 means Missive did not process the request, so even a POST may be repeated once the wait is over."""
    config, client = clients(max_attempts=3)
    register(api, verb, status=429, body="", headers={"Retry-After": "0"})
    register(api, verb, status=201, json={"ok": "yes"})
    result = run_tool(verb, config, client)
    assert result.is_error is False, text(result)
    assert len(api.calls) == 2


# ---- body shapes (missive-api.md §3.1) ----------------------------------------------------------------------------

LONG = "é" * 2000
SHAPES = [
    pytest.param({"json": {"error": "x is invalid"}}, "x is invalid", id="error-string"),
    pytest.param({"json": {"errors": "x is invalid"}}, "x is invalid", id="errors-string"),
    pytest.param({"json": {"errors": ["first problem", "second problem"]}}, '["first problem","second problem"]',
                 id="errors-list"),
    pytest.param({"json": {"errors": {"title": ["can't be blank"]}}}, '{"title":["can\'t be blank"]}',
                 id="errors-object"),
    pytest.param({"json": {"message": "x is invalid"}}, "x is invalid", id="message-string"),
    pytest.param({"json": {"error": {"message": "x is invalid"}}}, "x is invalid", id="error-object-message"),
    pytest.param({"json": {"error": "from error", "message": "from message"}}, "from error", id="error-first"),
    pytest.param({"body": ""}, "Bad Request", id="empty-body"),
    pytest.param({"body": "   \n  "}, "Bad Request", id="blank-body"),
    pytest.param({"body": "Upstream   said\n\n no\tthanks  "}, "Upstream said no thanks", id="plain-text"),
    pytest.param({"json": {"error": LONG}}, "é" * 499 + "…", id="capped-500"),
    pytest.param({"body": "word " * 400}, " ".join(["word"] * 400)[:499] + "…", id="capped-raw-text"),
    pytest.param({"json": {"detail": "unusual"}}, '{"detail":"unusual"}', id="unknown-keys"),
]


@pytest.mark.parametrize("kwargs, expected", SHAPES)
def test_error_body_shapes(api, clients, kwargs, expected):
    config, client = clients()
    register(api, "GET", status=400, **kwargs)
    result = run_tool("GET", config, client)
    message, _hint = api_error(result, 400)
    assert message == expected
    assert len(message) <= 500
    if "json" in kwargs:  # Missive's words are quoted, so they can never pass for the server's own text
        assert text(result).startswith('Missive API error 400: "')


@pytest.mark.parametrize("status", [302, 400, 401, 403, 404, 405, 409, 410, 422, 500, 502, 503, 504])
def test_empty_body_message_is_the_reason_phrase(api, clients, status):
    """§1.6: with no usable body the message is the HTTP reason phrase, whatever the status."""
    config, client = clients()
    register(api, "GET", status=status, body="")
    result = run_tool("GET", config, client)
    assert result.is_error is True
    first = text(result).split("\n")[0]
    assert first == f"Missive API error {status}: {http.HTTPStatus(status).phrase}"


def test_html_error_page_is_collapsed_to_text(api, clients):
    config, client = clients()
    page = ("<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title>\n<style>body { color: red; }</style>"
            "</head>\n<body>\n  <center><h1>502    Bad Gateway</h1></center>\n  <hr>\n  <center>nginx</center>\n"
            "</body>\n</html>\n" + "<!-- padding -->\n" * 100)
    register(api, "GET", status=502, body=page, content_type="text/html")
    message, _ = api_error(run_tool("GET", config, client), 502)
    assert "Bad Gateway" in message and "nginx" in message
    assert "\n" not in message and "  " not in message and "\t" not in message
    assert len(message) <= 500
    assert_still_serving(api, config, client)


def test_token_echoed_in_error_body_is_scrubbed(api, clients):
    config, client = clients()
    register(api, "GET", status=401, json={"error": f"invalid token {TOKEN} (Authorization: Bearer {TOKEN})"})
    result = run_tool("GET", config, client)
    assert result.is_error is True
    assert TOKEN not in text(result)
    assert text(result).startswith("Missive API error 401: ")


# ---- 2xx without JSON (a write's empty or non-JSON 2xx is a success: test_tools.py's results section) ------------

def test_non_json_2xx_to_a_read_is_an_error(api, clients):
    """A read that got no JSON read nothing: the model must not take it for an answer."""
    config, client = clients()
    register(api, "GET", status=200, body="<html><body>Sign in to the Wi-Fi</body></html> " + TOKEN,
             content_type="text/html")
    message, hint = api_error(run_tool("GET", config, client), 200)
    assert message.startswith("<html><body>Sign in to the Wi-Fi") and TOKEN not in message
    assert "JSON" in hint and "MISSIVE_API_URL" in hint
    assert len(api.calls) == 1
    assert_still_serving(api, config, client)


# ---- network failures and timeouts --------------------------------------------------------------------------------

def refused():
    """What requests raises when the TCP connect itself fails (nothing was sent)."""
    reason = urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection: [Errno 111] refused")
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, API + "/users", reason=reason))


NETWORK = [
    # (verb, exception factory, phrases the first line must contain)
    pytest.param("GET", refused, ["could not connect to missive.test"], id="get-refused"),
    pytest.param("POST", refused, ["could not connect to missive.test"], id="post-refused"),
    pytest.param("GET", lambda: requests.exceptions.ConnectTimeout("connect timed out"),
                 ["could not connect to missive.test"], id="get-connect-timeout"),
    pytest.param("POST", lambda: requests.exceptions.ConnectTimeout("connect timed out"),
                 ["could not connect to missive.test"], id="post-connect-timeout"),
    pytest.param("GET", lambda: requests.exceptions.ReadTimeout("read timed out"), ["no response within 7 s"],
                 id="get-read-timeout"),
    pytest.param("POST", lambda: requests.exceptions.ReadTimeout("read timed out"),
                 ["no response within 7 s", "outcome is unknown", "may or may not have happened"],
                 id="post-read-timeout"),
    pytest.param("PATCH", lambda: requests.exceptions.ReadTimeout("read timed out"),
                 ["no response within 7 s", "may or may not"], id="patch-read-timeout"),
    pytest.param("GET", lambda: requests.exceptions.ConnectionError("Connection aborted."), [], id="get-dropped"),
    pytest.param("POST", lambda: requests.exceptions.ConnectionError("Connection aborted."),
                 ["outcome is unknown"], id="post-dropped"),
]


@pytest.mark.parametrize("verb, exc, phrases", NETWORK)
def test_network_failures(api, clients, verb, exc, phrases):
    config, client = clients(deadline=10.0, read_timeout=7.0)
    register(api, verb, body=exc())
    result = run_tool(verb, config, client)
    assert result.is_error is True
    body = text(result)
    assert_clean(body)
    assert body.startswith("Missive API request failed: "), body
    lines = body.split("\n")
    assert len(lines) == 2 and lines[1].startswith("Hint: "), body
    for phrase in phrases:
        assert phrase in body, (phrase, body)
    if verb == "GET":
        assert "MISSIVE_API_URL" in lines[1] or "network" in lines[1].lower()
    assert_still_serving(api, config, client)


@pytest.mark.parametrize("exc", [lambda: requests.exceptions.ReadTimeout("read timed out"),
                                 lambda: requests.exceptions.ConnectionError("Connection aborted.")],
                         ids=["read-timeout", "dropped"])
def test_post_that_may_have_arrived_is_not_retried(api, clients, exc):
    config, client = clients(max_attempts=3)
    register(api, "POST", body=exc())
    result = run_tool("POST", config, client)
    assert result.is_error is True
    assert "unknown" in text(result)
    assert len(api.calls) == 1


def test_get_network_failure_is_retried(api, clients):
    config, client = clients(max_attempts=3)
    register(api, "GET", body=refused())
    register(api, "GET", json={"users": []})
    result = run_tool("GET", config, client)
    assert result.is_error is False, text(result)
    assert len(api.calls) == 2


def test_unexpected_exception_becomes_an_error_result(api, clients):
    """A bug below the handler must not escape it: isError, no traceback, and the server keeps serving."""
    config, client = clients()
    register(api, "GET", body=RuntimeError(f"kaboom {TOKEN}"))
    result = run_tool("GET", config, client)
    assert result.is_error is True
    assert_clean(text(result))
    assert_still_serving(api, config, client)


def test_errors_then_success_on_one_client(api, clients):
    """A sequence of different failures on one client, then a success: no state is left broken."""
    config, client = clients(deadline=10.0, read_timeout=7.0)
    register(api, "GET", status=500, body="")
    register(api, "GET", body=requests.exceptions.ReadTimeout("read timed out"))
    register(api, "GET", status=404, json={"message": "gone"})
    register(api, "GET", body=refused())
    outcomes = [text(run_tool("GET", config, client)).split("\n")[0] for _ in range(4)]
    assert outcomes[0] == "Missive API error 500: Internal Server Error"
    assert outcomes[1].startswith("Missive API request failed: no response within 7 s")
    assert outcomes[2] == 'Missive API error 404: "gone"'
    assert outcomes[3].startswith("Missive API request failed: could not connect to missive.test")
    assert_still_serving(api, config, client)
