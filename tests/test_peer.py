"""A hostile or broken peer: regression tests named after the attack they stop.

Every exchange ends by the call's deadline whatever the peer does (each phase: headers, chunk framing, body),
every transport failure becomes a clear error by method (GET retried, a write "outcome unknown"), text from the
peer is contained, proxies never see the token in clear, and no log level writes argument values.

Time bounds here are wide on purpose: a fault would hold the call for 30 s, and the assertion allows the 2 s
deadline plus several seconds of slack, so a loaded machine cannot make a test fail.
"""

import asyncio
import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

import missive_mcp as m
from conftest import StdioServer, client_factory, text, timed
from fake_missive import HOSTILE_ERROR_BODIES, FakeMissive

TOKEN = "test-token"  # FakeMissive's default
DEADLINE = 2.0
SLACK = 4.0  # far below the 30 s a fault would hold the call, far above a loaded machine's scheduling noise


# Against conftest's fake: the deadline above, a read timeout far beyond it (so the deadline is what ends a stall)
# and a tiny backoff.
clients = client_factory(token=TOKEN, deadline=DEADLINE, rate_wait=DEADLINE, read_timeout=30.0, connect_timeout=2.0,
                         backoff_base=0.01)


@pytest.fixture
def client(fake, clients):
    """One (Config, MissiveClient) against the fake; the token's user counts as looked up, so a call sends only
    its own request."""
    cfg, made = clients(fake.url)
    made.me = {}
    return cfg, made


def post_args(fake, text_):
    return {"conversation": fake.data["conversations"][0]["id"], "text": text_}


# ---- every call ends by its deadline, whatever the peer does ----------------------------------------------------------

DRIPS = {
    "header_drip": {"interval": 0.05, "seconds": 30},
    "chunk_drip": {"interval": 0.05, "seconds": 30},
    "body_drip": {"interval": 0.05, "seconds": 30},
    "stall_after_headers": {"seconds": 30},
    "late": {"seconds": 30},
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", DRIPS)
def test_dripping_or_stalling_peer_cannot_outlive_the_deadline(fake, client, kind):
    """test_header_drip_cannot_outlive_the_deadline and its siblings for chunk sizes, bodies and stalls."""
    fake.inject(kind, times=5, path_prefix="/users", **DRIPS[kind])
    result, elapsed = timed(*client, "missive_list_users")
    message = text(result)
    assert result.is_error
    assert "deadline" in message and "MISSIVE_DEADLINE" in message
    assert elapsed < DEADLINE + SLACK
    _, made = client
    deadline = time.monotonic() + SLACK
    while made.budget.in_flight and time.monotonic() < deadline:  # the torn-down exchange gave its slot back
        time.sleep(0.01)
    assert made.budget.in_flight == 0


@pytest.mark.slow
def test_five_dripping_calls_cannot_starve_the_next_one_past_a_deadline(fake, client):
    fake.inject("header_drip", times=5, path_prefix="/users", interval=0.05, seconds=30)
    cfg, made = client

    async def scenario():
        drips = [asyncio.ensure_future(m.call_tool(cfg, made, "missive_list_users", {})) for _ in range(5)]
        give_up = time.monotonic() + SLACK
        while made.budget.in_flight < 5:  # every slot is held by a drip now
            assert time.monotonic() < give_up, "the five drips did not all take a slot"
            await asyncio.sleep(0.01)
        started = time.monotonic()
        dripped = await asyncio.gather(*drips)
        after = await m.call_tool(cfg, made, "missive_list_organizations", {})
        return dripped, after, time.monotonic() - started

    dripped, after, waited = asyncio.run(scenario())
    assert all(result.is_error for result in dripped)
    assert not after.is_error, text(after)
    assert waited < DEADLINE + SLACK


# ---- every transport failure is mapped, in every phase -----------------------------------------------------------------

BROKEN = {  # kind -> options: answers that break after the status line
    "short_body": {},
    "broken_chunking": {"how": "size"},
    "broken_chunking_crlf": {"how": "crlf"},
    "bad_gzip": {},
    "truncated_gzip": {},
    "reset_after_write": {},
}


def _inject(fake, kind, **options):
    fake.inject(kind.removesuffix("_crlf"), **options)


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_answer_to_a_read_is_retried_then_succeeds(fake, client, kind):
    _inject(fake, kind, times=1, method="GET", path_prefix="/users", **BROKEN[kind])
    result, _ = timed(*client, "missive_list_users")
    message = text(result)
    assert not result.is_error, message
    assert '"users"' in message
    assert len(fake.received("GET", "/users")) == 2


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_answer_to_a_read_every_time_is_a_network_error_not_internal(fake, client, kind):
    _inject(fake, kind, times=5, method="GET", path_prefix="/users", **BROKEN[kind])
    result, _ = timed(*client, "missive_list_users")
    message = text(result)
    assert result.is_error
    assert message.startswith("Missive API request failed: ") and "Internal error" not in message
    assert message.count("\n") == 1 and "\nHint: " in message


@pytest.mark.parametrize("kind", [*BROKEN, "late_drop"])
def test_lost_answer_to_a_write_is_outcome_unknown_and_never_repeated(fake, client, kind):
    """The write reached Missive; its answer broke: "try again" would duplicate it."""
    if kind == "late_drop":
        fake.inject("late", method="POST", path_prefix="/posts", seconds=0.2, drop=True)
    else:
        _inject(fake, kind, method="POST", path_prefix="/posts", **BROKEN[kind])
    result, _ = timed(*client, "missive_create_post", post_args(fake, f"lost {kind}"))
    message = text(result)
    assert result.is_error
    assert "The outcome is unknown" in message and "before repeating" in message
    assert len(fake.applied_writes("POST", "/posts")) == 1  # applied once, never sent again


@pytest.mark.parametrize("kind, options", [pytest.param("late", {"seconds": 30}, marks=pytest.mark.slow),
                                           ("big_after_write", {})])
def test_late_or_oversized_answer_to_a_post_is_outcome_unknown(fake, client, kind, options):
    fake.inject(kind, method="POST", path_prefix="/posts", **options)
    result, elapsed = timed(*client, "missive_create_post", post_args(fake, f"late {kind}"))
    message = text(result)
    assert result.is_error
    assert "The outcome is unknown" in message
    assert "ask for less" not in message.lower() and "try again" not in message.lower()
    assert len(fake.applied_writes("POST", "/posts")) == 1
    assert elapsed < DEADLINE + SLACK


def test_lost_answer_to_a_patch_says_it_may_have_been_applied(fake, client):
    fake.inject("big_after_write", method="PATCH")
    conversation = fake.data["conversations"][0]["id"]
    result, _ = timed(*client, "missive_update_conversations",
                      {"ids": [conversation], "conversations": [{"id": conversation, "subject": "x"}]})
    message = text(result)
    assert result.is_error
    assert "may or may not have been applied" in message and "idempotent" in message
    assert len(fake.applied_writes("PATCH")) == 1


def test_deeply_nested_json_answer_is_a_clear_error(fake, client):
    fake.inject("deep_json", times=3, path_prefix="/users", depth=100_000)
    result, _ = timed(*client, "missive_list_users")
    message = text(result)
    assert result.is_error and "nests deeper than" in message and "Internal error" not in message


def test_moderately_deep_json_answer_is_refused_before_shaping(fake, client):
    """Deep enough for json to parse but not for recursive shaping: refused at a stated depth."""
    fake.inject("deep_json", times=3, path_prefix="/users", depth=500)
    result, _ = timed(*client, "missive_list_users")
    message = text(result)
    assert result.is_error and f"nests deeper than {m.MAX_JSON_DEPTH} levels" in message


# ---- text from the peer is contained -----------------------------------------------------------------------------------

@pytest.mark.parametrize("where, status", [("json", 200), ("error", 401), ("text", 500)])
def test_token_echoed_with_json_escapes_never_reaches_the_model(fake, client, where, status):
    fake.inject("token_echo", times=3, path_prefix="/users", where=where, status=status)
    result, _ = timed(*client, "missive_list_users")
    message = text(result)
    escaped = "".join(f"\\u{ord(c):04x}" for c in TOKEN)
    assert TOKEN not in message and escaped not in message.replace("\\\\", "\\").lower()
    assert "[redacted]" in message or result.is_error


@pytest.mark.parametrize("form", ["\\u{:04x}", "\\u{:04X}", "%{:02x}", "&#{};", "&#x{:x}"])
def test_token_echoed_in_any_escaped_form_is_redacted(form):
    """Every character written escaped, or only some: an echo reaches neither a result nor a log line whole."""
    for every in (1, 3):
        echoed = "".join(form.format(ord(c)) if i % every == 0 else c for i, c in enumerate(TOKEN))
        assert m.redact(f"token {echoed} was revoked", TOKEN) == "token [redacted] was revoked"
    assert m.redact("100% plain \\ text &#38; more", TOKEN) == "100% plain \\ text &#38; more"


@pytest.mark.parametrize("body", HOSTILE_ERROR_BODIES)
def test_error_text_cannot_pose_as_the_servers_own_hint(fake, client, body):
    fake.inject("error", status=422, body=body, path_prefix="/users")
    result, _ = timed(*client, "missive_list_users")
    message = text(result)
    assert result.is_error
    lines = message.split("\n")
    assert len(lines) == 2 and lines[1].startswith("Hint: Missive rejected the values")
    assert lines[0].startswith('Missive API error 422: "') and lines[0].endswith('"')
    assert len(lines[0]) < 600


def test_hostile_names_reach_the_model_only_as_visible_text(clients):
    with FakeMissive(token=TOKEN, hostile_names=True) as fake:
        result, _ = timed(*clients(fake.url, deadline=10.0), "missive_list_organizations")
    message = text(result)
    data = json.loads(message)
    for organization in data["organizations"]:
        name = organization.get("name", "")
        assert not any(0xE0000 <= ord(c) <= 0xE007F or c in "\u202e\u200b\x1b\x07" for c in name), repr(name)


# ---- proxies and logs --------------------------------------------------------------------------------------------------

class _RecordingProxy(BaseHTTPRequestHandler):
    seen = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(502)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_http_loopback_never_sends_the_token_through_an_environment_proxy(fake, clients, monkeypatch):
    proxy = HTTPServer(("127.0.0.1", 0), _RecordingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{proxy.server_address[1]}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, address)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        result, _ = timed(*clients(fake.url, deadline=10.0), "missive_list_users")
    finally:
        proxy.shutdown()
        proxy.server_close()  # shutdown() only stops the loop; the listening socket stays open until closed
    assert not result.is_error, text(result)
    assert _RecordingProxy.seen == []
    assert len(fake.received("GET", "/users")) == 1


class _HeaderEcho(BaseHTTPRequestHandler):
    """Answers with a header line that has no colon and repeats the request's Authorization header."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = b'{"users": []}'
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Echo %s\r\n\r\n%s" % (len(body), self.headers["Authorization"].encode(), body))
        self.close_connection = True

    def log_message(self, *args):
        pass


class _GzipThenMore(BaseHTTPRequestHandler):
    """A complete gzip answer followed by more bytes than the body cap, which zlib would keep as unused data."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                         b"Connection: close\r\n\r\n" + gzip.compress(b'{"users": []}'))
        try:
            for _ in range(m.MAX_BODY_BYTES // 65536 + 2):
                self.wfile.write(b"x" * 65536)
        except OSError:
            pass  # the client stopped reading: what the test wants
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_data_after_a_gzip_stream_is_refused_not_buffered(clients):
    peer = HTTPServer(("127.0.0.1", 0), _GzipThenMore)
    threading.Thread(target=peer.serve_forever, daemon=True).start()
    try:
        result, _ = timed(*clients(f"http://127.0.0.1:{peer.server_address[1]}/v1", deadline=10.0),
                          "missive_list_users")
    finally:
        peer.shutdown()
        peer.server_close()
    assert result.is_error
    assert "compressed answer has data after its end" in text(result)


def test_token_echoed_in_a_malformed_header_never_reaches_stderr():
    # urllib3 warns "Failed to parse headers" with the line it could not read: the log filter redacts it.
    peer = HTTPServer(("127.0.0.1", 0), _HeaderEcho)
    threading.Thread(target=peer.serve_forever, daemon=True).start()
    server = StdioServer(f"http://127.0.0.1:{peer.server_address[1]}/v1", TOKEN)
    try:
        server.initialize()
        server.request(2, "tools/call", {"name": "missive_list_users", "arguments": {}})
        server.response(2, 30)
    finally:
        server.close()
        peer.shutdown()
        peer.server_close()
    stderr = bytes(server.stderr).decode(errors="replace")
    assert "Echo Bearer [redacted]" in stderr  # the warning itself is still there, without the token
    assert TOKEN not in stderr


def test_https_keeps_the_companys_proxy_and_ca_settings(clients, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.test:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/corp-ca.pem")
    _, made = clients(m.DEFAULT_API_URL)
    settings = made.session.merge_environment_settings(m.DEFAULT_API_URL + "/users", {}, None, None, None)
    assert settings["proxies"].get("https") == "http://proxy.corp.test:3128"  # a CONNECT tunnel: TLS end to end
    assert settings["verify"] == "/etc/corp-ca.pem"


@pytest.mark.slow
def test_debug_log_level_never_writes_argument_values(fake, stdio):
    """MISSIVE_LOG_LEVEL=debug must not make the SDK or urllib3 log request lines or message contents."""
    needle = "needle-9137@secret.example"
    book = fake.data["contact_books"][0]["id"]
    server = stdio(MISSIVE_LOG_LEVEL="debug")
    server.initialize()
    server.request(2, "tools/call", {"name": "missive_list_contacts",
                                     "arguments": {"contact_book": book, "search": needle}})
    assert server.wait_for(2, 30) and server.answered(2)
    server.close()
    err = server.stderr.decode()
    assert len(fake.received("GET", "/contacts")) == 1  # the search really went out
    assert needle not in err and "search=" not in err
    assert "tool=missive_list_contacts" in err  # debug still shows this module's own lines


# ---- the soak: hostile-peer faults mixed into ordinary traffic ------------------------------------------------------

SOAK_FAULTS = (
    "500", "503", "reset", "garbage",
    ("header_drip", {"interval": 0.01, "seconds": 4}), ("chunk_drip", {"interval": 0.01, "seconds": 4}),
    ("body_drip", {"interval": 0.002, "seconds": 4}), ("stall_after_headers", {"seconds": 4}),
    ("short_body", {}), ("broken_chunking", {}), ("bad_gzip", {}), ("truncated_gzip", {}),
    ("deep_json", {"depth": 3000}), ("late", {"seconds": 4}), ("late", {"seconds": 0.1, "drop": True}),
    ("big_after_write", {"size": 5_100_000}), ("reset_after_write", {}),
)


@pytest.mark.slow
def test_soak_with_hostile_peer_faults_loses_nothing_and_duplicates_nothing(clients):
    """300 calls, 20 % of them meeting a hostile fault: 0 internal errors, 0 duplicate writes, every call
    answered within its deadline plus the margin, and the budget back at zero."""
    deadline = 2.0
    with FakeMissive(token=TOKEN, latency=0.002, seed=7, windows=((400, 1.0),)) as fake:
        fake.fault_rate = 0.2
        fake.fault_kinds = SOAK_FAULTS
        cfg, made = clients(fake.url, deadline=deadline, rate_wait=deadline, read_timeout=1.0, connect_timeout=1.0,
                            windows=((400, 1.0),))
        made.me = {}
        conversations = [c["id"] for c in fake.data["conversations"] if not c.get("_guest_only")][:40]
        calls = []
        for i in range(300):
            conversation = conversations[i % len(conversations)]
            if i % 10 == 3:
                calls.append(("missive_create_post", {"conversation": conversation, "text": f"soak post {i}"}))
            elif i % 10 == 7:
                calls.append(("missive_update_conversations", {
                    "ids": [conversation], "conversations": [{"id": conversation, "subject": f"soak {i}"}]}))
            else:
                calls.append([("missive_list_users", {}), ("missive_get_conversation", {"conversation_id": conversation}),
                              ("missive_list_conversations", {"inbox": True, "limit": 5})][i % 3])
        outcomes = []

        async def soak():
            queue = list(calls)

            async def worker():
                while queue:
                    name, args = queue.pop(0)
                    started = time.monotonic()
                    result = await m.call_tool(cfg, made, name, args)
                    outcomes.append((name, args, result, time.monotonic() - started))

            await asyncio.gather(*(worker() for _ in range(8)))

        try:
            asyncio.run(soak())
            settled = time.monotonic() + 10
            while made.budget.in_flight and time.monotonic() < settled:
                time.sleep(0.05)
            in_flight = made.budget.in_flight
        finally:
            fake.fault_rate = 0.0
        writes = fake.applied_writes()
    problems = []
    for name, args, result, elapsed in outcomes:
        message = text(result)
        if elapsed > deadline + 1.0 + SLACK:
            problems.append(f"{name} took {elapsed:.1f} s")
        if "Internal error" in message:
            problems.append(f"{name}: {message[:160]}")
        if result.is_error and not message.startswith(("Missive API error ", "Missive API request failed: ",
                                                       "Rate budget exhausted")):
            problems.append(f"{name}: unclear error {message[:160]}")
        if name == "missive_create_post":
            applied = [w for w in writes if w.body and w.body.get("posts", {}).get("text") == args["text"]]
            if len(applied) > 1:
                problems.append(f"DUPLICATE {args['text']}")
            if not result.is_error and len(applied) != 1:
                # The one success that applies nothing: "garbage" is a 200 HTML page that is not the route's
                # answer, and a write answered 2xx with a non-JSON body is an ok result that says so (the decision
                # recorded in test_reliability's soak). Every other success must have been applied exactly once.
                statuses = [r.status for r in fake.received("POST", "/posts")
                            if r.body and r.body.get("posts", {}).get("text") == args["text"]]
                if applied or "non-JSON body" not in message or statuses[-1:] != [200]:
                    problems.append(f"{args['text']}: success but applied {len(applied)} times")
            if result.is_error and applied and "outcome is unknown" not in message and "may or may not" not in message:
                problems.append(f"{args['text']}: applied, but the error did not say so: {message[:160]}")
    assert problems == []
    assert len(outcomes) == 300
    assert in_flight == 0
    assert sum(1 for rec in fake.received() if rec.status in (0, 500, 503)) >= 20  # the faults did happen


def test_https_proxy_dripping_its_connect_answer_cannot_outlive_the_deadline(clients, monkeypatch):
    """The CONNECT answer is read before TLS: the socket is registered right after the TCP connect, so the
    deadline's teardown reaches it and the slot comes back."""
    import socket

    stop = threading.Event()

    def drip(conn):
        with conn:
            try:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n")
                while not stop.wait(0.2):
                    conn.sendall(b"X")
            except OSError:
                pass

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    cfg, made = clients("https://missive.test/v1")
    made.me = {}
    try:
        result, elapsed = timed(cfg, made, "missive_list_users")
        settled = time.monotonic() + SLACK
        while made.budget.in_flight and time.monotonic() < settled:
            time.sleep(0.01)
        assert made.budget.in_flight == 0
    finally:
        stop.set()
        listener.close()
    assert result.is_error and "deadline" in text(result)
    assert elapsed < DEADLINE + SLACK


@pytest.mark.parametrize("header", ["Retry-After", "X-RateLimit-Reset"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_a_retry_time_that_is_not_a_number_is_no_internal_error(fake, client, header, value):
    fake.inject("error", times=5, status=429, body={"error": "slow"}, path_prefix="/users")
    with pytest.MonkeyPatch.context() as patch:
        real = m._retry_after
        patch.setattr(m, "_retry_after", lambda headers: real({header: value}))
        result, _ = timed(*client, "missive_list_users")
        message = text(result)
    assert "Internal error" not in message
