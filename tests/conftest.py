"""Shared helpers: a strict `responses` mock of the Missive API, the fake Missive over a real socket, clients made
and closed for a test, a synchronous way to call a tool, and the stdio server as an MCP client runs it.

Hand-written expectations shared by several files live in spec.py; a test file never imports another.
"""

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import responses

import missive_mcp as m
from fake_missive import FakeMissive

API = "https://missive.test/v1"
TOKEN = "missive_pat-0123456789abcdef-test-token"
MODULE = Path(m.__file__).resolve()


def make_config(**overrides) -> m.Config:
    """A Config as the environment would give it, with a token and a fake base URL unless overridden."""
    return m.Config(**{"token": TOKEN, "api_url": API, **overrides})


def call(tool: str, args=None, config: m.Config | None = None, client: m.MissiveClient | None = None):
    """Run one tool call to completion; returns the MCP CallToolResult."""
    config = config or make_config()
    own = client is None
    if own:
        client = m.MissiveClient(config, backoff_base=0.0)
        # The token's user counts as already looked up (unknown), so a list call sends only its own request;
        # the tests of learn_me and of the views use a client from `clients`.
        client.me = {}
    try:
        return asyncio.run(m.call_tool(config, client, tool, args))
    finally:
        if own:
            client.close()


def run(coro, limit: float):
    """asyncio.run with an upper bound of `limit` seconds, so a hang fails the test instead of the suite."""
    return asyncio.run(asyncio.wait_for(coro, limit))


def timed(config: m.Config, client: m.MissiveClient, tool: str, args=None, limit: float = 45.0):
    """One tool call through call_tool, bounded like run(); returns (CallToolResult, seconds it took)."""
    started = time.monotonic()
    result = run(m.call_tool(config, client, tool, {} if args is None else args), limit)
    return result, time.monotonic() - started


def assert_linear(function, hostile, ordinary, ratio: float = 20) -> None:
    """function(hostile) costs less than `ratio` times function(ordinary) (counted as at least 10 ms): a wide ratio
    against ordinary work of the same size or larger, not a clock bound, so a loaded machine cannot fail it while a
    quadratic scan does."""
    def cost(value):
        started = time.perf_counter()
        function(value)
        return time.perf_counter() - started

    assert cost(hostile) < ratio * max(cost(ordinary), 0.01)


def text(result) -> str:
    """The single text block of a tool result."""
    assert len(result.content) == 1
    assert result.content[0].type == "text"
    return result.content[0].text


def subprocess_env(**settings) -> dict:
    """This process's environment without any MISSIVE_* variable (a developer's own must not leak in), plus
    `settings`: the environment a test gives `python missive_mcp.py`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MISSIVE_")}
    env.update(settings)
    return env


@pytest.fixture
def api():
    """A strict mock of the API: unmatched requests fail, and so do registered ones that were never used."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def fake():
    """A started FakeMissive with its defaults (token "test-token", Missive's own rate windows, no latency)."""
    with FakeMissive() as server:
        yield server


# ---- clients --------------------------------------------------------------------------------------------------------

CONFIG_FIELDS = frozenset(field.name for field in dataclasses.fields(m.Config))
BUDGET_OPTIONS = frozenset({"max_concurrent", "windows"})


def client_factory(**defaults):
    """A `clients` fixture whose factory makes (Config, MissiveClient) pairs; every client is closed after the test.

    A test module declares its own defaults with ``clients = client_factory(...)``. Defaults and the keyword
    arguments of ``clients(api_url=None, *, config=None, **overrides)`` are Config fields (token, deadline,
    read_timeout, ...; the rest as make_config gives them), MissiveClient options (budget, backoff_base,
    max_attempts, rng), or max_concurrent and windows, which build a fresh RateBudget for each client unless a
    budget is given. ``config=`` uses that Config as it is, instead of one built from the defaults.
    """
    @pytest.fixture
    def clients():
        made = []

        def make(api_url=None, *, config=None, **overrides):
            options = {**defaults, **overrides}
            if api_url is not None:
                options["api_url"] = api_url
            fields = {key: options.pop(key) for key in CONFIG_FIELDS & options.keys()}
            budget = {key: options.pop(key) for key in BUDGET_OPTIONS & options.keys()}
            if config is not None and (api_url is not None or CONFIG_FIELDS & overrides.keys()):
                raise TypeError("clients(): give a whole config or Config fields, not both")
            if "budget" in overrides and BUDGET_OPTIONS & overrides.keys():
                raise TypeError("clients(): give a budget or max_concurrent/windows, not both")
            if budget and "budget" not in options:
                options["budget"] = m.RateBudget(**budget)
            config = make_config(**fields) if config is None else config
            client = m.MissiveClient(config, **options)
            made.append(client)
            return config, client

        yield make
        for client in made:
            client.close()

    return clients


# The default, for tests that need a client of their own (the token's user not yet looked up, a guarded session):
# make_config's values and no real backoff, like call()'s own client.
clients = client_factory(backoff_base=0.0)


# ---- the stdio server -----------------------------------------------------------------------------------------------

class StdioServer:
    """``python missive_mcp.py`` as an MCP client would run it; stdout and stderr are drained by threads."""

    def __init__(self, api_url: str, token: str, **env):
        env = subprocess_env(MISSIVE_API_TOKEN=token, MISSIVE_API_URL=api_url, PYTHONUNBUFFERED="1", **env)
        self.proc = subprocess.Popen([sys.executable, str(MODULE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=str(MODULE.parent))
        self.lines: list[bytes] = []
        self.stderr = bytearray()
        self._cond = threading.Condition()
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=lambda: [self.stderr.extend(chunk) for chunk in iter(
                             lambda: self.proc.stderr.read1(65536), b"")], daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def send(self, message) -> None:
        data = message if isinstance(message, bytes) else (json.dumps(message) + "\n").encode()
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def request(self, id_, method, params=None) -> None:
        message = {"jsonrpc": "2.0", "id": id_, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def messages(self) -> list:
        with self._cond:
            return [json.loads(line) for line in self.lines]

    def answered(self, id_) -> list:
        return [msg for msg in self.messages() if msg.get("id") == id_ and ("result" in msg or "error" in msg)]

    def wait_for(self, id_, timeout: float) -> bool:
        give_up = time.monotonic() + timeout
        with self._cond:
            while not any(b'"id":%d,' % id_ in line or b'"id":%d}' % id_ in line for line in self.lines):
                left = give_up - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def response(self, id_, timeout: float) -> dict:
        """The one response to request id_, waited for up to `timeout` seconds."""
        assert self.wait_for(id_, timeout), f"no answer to request {id_}"
        [message] = self.answered(id_)
        return message

    def memory_kb(self) -> dict:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return {key: int(value.split()[0]) for key, value in re.findall(r"^(VmRSS|VmHWM):\s+(.+)$", status, re.M)}

    def initialize(self) -> None:
        self.request(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                       "clientInfo": {"name": "missive-mcp-tests", "version": "1"}})
        assert self.wait_for(1, 15), "no answer to initialize"
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def close(self) -> int | None:
        """End the input and return the exit status (killed after 5 s if it does not exit)."""
        status = self.proc.poll()
        if status is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                status = self.proc.wait(5)  # a server that is not stuck exits promptly at end of input
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # Release every pipe: stdin (if the server exited on its own), and stdout/stderr once the readers saw EOF.
        for reader in self._readers:
            reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
        return status


@pytest.fixture
def stdio(fake):
    """stdio(**env) starts a StdioServer against the test's `fake` with its token; all are closed after the test."""
    servers = []

    def start(**env):
        servers.append(StdioServer(fake.url, fake.token, **env))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
