"""End to end over MCP: the in-process server in both protocol eras, and one real stdio subprocess."""

import asyncio
import json
import re
import threading

import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

import missive_mcp as m
from conftest import API, TOKEN, run, text
from spec import READ_TOOLS, SPEC, expected_annotations

MODES = ["legacy", "2026-07-28"]
MODERN = "2026-07-28"
WAIT = 10  # seconds: the bound on every wait in this file
LIMIT = 30  # seconds: the bound on each test's whole exchange
USERS = {"users": [{"id": "u1", "name": "Ann", "me": True, "email": None}]}


class Harness:
    """create_server(config, client) for a pair from conftest's clients; connect(mode) gives an mcp.Client."""

    def __init__(self, config, client):
        self.server = m.create_server(config, client)

    def connect(self, mode):
        return Client(self.server, mode=mode, read_timeout_seconds=WAIT)


@pytest.fixture
def harness(clients):
    """harness(**config) -> a Harness; clients(...) takes the same arguments and closes the client after the test."""
    return lambda **config: Harness(*clients(**config))


async def server_identity(client, mode):
    """(server info, instructions) as this era delivers them: initialize in legacy, server/discover in modern."""
    if mode == "legacy":
        init = client.session.initialize_result
        assert init is not None
        return init.server_info, init.instructions
    raw = await client.session.send_discover(MODERN)
    result = types.DiscoverResult.model_validate(raw)
    client.session.adopt(result)
    return client.server_info, client.instructions


# ---- identity and instructions --------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_server_identity_and_instructions(harness, mode):
    h = harness()

    async def body():
        async with h.connect(mode) as client:
            return await server_identity(client, mode)

    info, instructions = run(body(), LIMIT)
    assert info.name == "missive"
    assert info.version == m.__version__
    assert instructions == m.INSTRUCTIONS
    assert instructions and len(instructions) <= 2500
    lowered = instructions.lower()
    assert "mailbox" in lowered and "missive_list_conversations" in instructions  # the mailbox filter
    assert re.search(r"\bids\b", lowered) and "list" in lowered  # ids come from list tools
    assert "organization" in lowered and "assignees" in lowered  # the organization rule
    assert "replace" in lowered  # replace, not merge
    assert re.search(r"never sends?\b", lowered)  # never-send


# ---- tools/list ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_tools_list(harness, mode):
    h = harness()

    async def body():
        async with h.connect(mode) as client:
            return await client.list_tools()

    listing = run(body(), LIMIT)
    assert listing.next_cursor is None
    tools = {tool.name: tool for tool in listing.tools}
    assert len(listing.tools) == 37 and sorted(tools) == sorted(SPEC)
    for name, tool in tools.items():
        dumped = tool.model_dump(by_alias=True, exclude_none=True, mode="json")
        assert dumped["title"] == SPEC[name][2]
        assert dumped["description"].strip()
        assert dumped["annotations"] == expected_annotations(name), name  # all five, per §1.7 / §1.9
        assert dumped["inputSchema"] == m.TOOLS[name].schema, name
        assert "outputSchema" not in dumped


@pytest.mark.parametrize("mode", MODES)
def test_read_only_mode_lists_and_allows_only_read_tools(harness, api, mode):
    h = harness(read_only=True)

    async def body():
        async with h.connect(mode) as client:
            listing = await client.list_tools()
            hidden = await client.call_tool("missive_create_draft", {"body": "hello"})
            allowed = await client.call_tool("missive_help", {"topic": "index"})
            return listing, hidden, allowed

    listing, hidden, allowed = run(body(), LIMIT)
    names = {tool.name for tool in listing.tools}
    assert names == READ_TOOLS and "missive_help" in names
    assert all(tool.annotations.read_only_hint is True for tool in listing.tools)
    assert hidden.is_error is True
    assert "MISSIVE_READ_ONLY" in text(hidden)
    assert allowed.is_error is False
    assert len(api.calls) == 0


@pytest.mark.parametrize("mode", MODES)
def test_tools_allowlist(harness, api, mode):
    h = harness(tools=frozenset({"missive_list_users", "missive_create_draft"}))

    async def body():
        async with h.connect(mode) as client:
            listing = await client.list_tools()
            hidden = await client.call_tool("missive_list_teams", {})
            return listing, hidden

    listing, hidden = run(body(), LIMIT)
    assert {tool.name for tool in listing.tools} == {"missive_list_users", "missive_create_draft", "missive_help"}
    assert hidden.is_error is True and "MISSIVE_TOOLS" in text(hidden)
    assert len(api.calls) == 0


# ---- tools/call ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_call_success_validation_error_and_unknown_tool(harness, api, mode):
    h = harness()
    api.add("GET", API + "/users", json=USERS)

    async def body():
        async with h.connect(mode) as client:
            ok = await client.call_tool("missive_list_users", {})
            bad = await client.call_tool("missive_get_contact", {"contact_id": "../etc", "bogus": 1})
            with pytest.raises(MCPError) as unknown:
                await client.call_tool("missive_delete_contact", {"contact_id": "c1"})
            after = await client.call_tool("missive_help", {"topic": "version"})
            return ok, bad, unknown.value, after

    ok, bad, unknown, after = run(body(), LIMIT)
    assert ok.is_error is False
    assert text(ok) == '{"users":[{"id":"u1","name":"Ann","me":true}]}'
    assert ok.structured_content is None
    assert bad.is_error is True
    lines = text(bad).split("\n")
    assert lines[0] == "Invalid arguments for missive_get_contact:"
    assert any(line.startswith("contact_id: ") for line in lines[1:])
    assert "bogus: unknown argument" in lines
    assert unknown.error.code == -32602
    assert after.is_error is False and m.__version__ in text(after)
    assert len(api.calls) == 1  # the invalid and unknown calls sent nothing
    call = api.calls[0].request
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.url == API + "/users"


@pytest.mark.parametrize("mode", MODES)
def test_no_token(harness, api, mode):
    h = harness(token=None)

    async def body():
        async with h.connect(mode) as client:
            info, _instructions = await server_identity(client, mode)
            listing = await client.list_tools()
            helped = await client.call_tool("missive_help", {})
            refused = await client.call_tool("missive_list_users", {})
            refused_bad = await client.call_tool("missive_get_task", {"task_id": "a/b"})
            return info, listing, helped, refused, refused_bad

    info, listing, helped, refused, refused_bad = run(body(), LIMIT)
    assert info.name == "missive"
    assert len(listing.tools) == 37
    assert helped.is_error is False and "missive-mcp" in text(helped)
    assert refused.is_error is True
    assert text(refused).startswith("MISSIVE_API_TOKEN is not set.")
    assert refused_bad.is_error is True
    assert text(refused_bad).startswith("MISSIVE_API_TOKEN is not set.")
    assert "task_id" in text(refused_bad)  # argument problems are appended (§1.6)
    assert len(api.calls) == 0


@pytest.mark.parametrize("mode", MODES)
def test_bad_configuration_still_serves_and_every_call_says_why(api, harness, mode):
    """A configuration mistake reaches the person in the client: the handshake works, the tools are listed, and
    every call (help included) answers with the mistake and how to fix it; nothing is sent."""
    with pytest.raises(m.ConfigError) as error:
        m.Config.from_env({"MISSIVE_API_TOKEN": TOKEN, "MISSIVE_API_URL": "http://[::1/v1", "MISSIVE_TOOLS": "bogus"})
    h = harness(config=m.Config.failed(error.value))

    async def body():
        async with h.connect(mode) as client:
            await server_identity(client, mode)
            listing = await client.list_tools()
            return listing, [await client.call_tool(name, args) for name, args in
                             [("missive_help", {}), ("missive_list_users", {}), ("missive_get_task", {"task_id": "x"})]]

    listing, results = run(body(), LIMIT)
    assert len(listing.tools) == len(m.TOOLS)
    for result in results:
        assert result.is_error is True
        message = text(result)
        assert "MISSIVE_API_URL is not a valid URL" in message and "MISSIVE_TOOLS has unknown entries" in message
        assert "nothing was sent" in message and "restart" in message
    assert len(api.calls) == 0


# ---- concurrency --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_slow_call_does_not_block_other_requests(harness, api, mode):
    h = harness()
    entered, release = threading.Event(), threading.Event()

    def slow(request):
        entered.set()
        release.wait(WAIT)
        return 200, {}, json.dumps(USERS)

    api.add_callback("GET", API + "/users", callback=slow)
    api.add("GET", API + "/organizations", json={"organizations": [{"id": "o1", "name": "Org"}]})

    async def body():
        async with h.connect(mode) as client:
            slow_call = asyncio.ensure_future(client.call_tool("missive_list_users", {}))
            try:
                assert await asyncio.to_thread(entered.wait, WAIT), "the slow request never started"
                listing = await asyncio.wait_for(client.list_tools(cache_mode="bypass"), WAIT)
                other = await asyncio.wait_for(client.call_tool("missive_list_organizations", {}), WAIT)
                assert not slow_call.done()  # the first call really was still blocked meanwhile
            finally:
                release.set()
            first = await asyncio.wait_for(slow_call, WAIT)
            return listing, other, first

    try:
        listing, other, first = run(body(), LIMIT)
    finally:
        release.set()
    assert len(listing.tools) == 37
    assert other.is_error is False and json.loads(text(other))["organizations"][0]["id"] == "o1"
    assert first.is_error is False and json.loads(text(first))["users"][0]["id"] == "u1"


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_tools_list_and_help_answer_while_a_huge_hostile_body_converts(harness, api, mode, monkeypatch):
    """Answer-sized work runs off the event loop: while a 4.5 MB hostile body converts, tools/list and
    missive_help are answered, and the conversion is still running when they are (an order, not a clock)."""
    from fixtures.hostile_bodies import SHAPES

    body = SHAPES["table_cells"](4_500_000)
    api.add("GET", API + "/messages/m1", json={"messages": {"id": "m1", "body": body}})
    converting, real = threading.Event(), m.render_html

    def render(*args, **kwargs):
        converting.set()
        return real(*args, **kwargs)

    monkeypatch.setattr(m, "render_html", render)
    h = harness(deadline=120.0)

    async def scenario():
        async with h.connect(mode) as client:
            reading = asyncio.ensure_future(client.call_tool(
                "missive_get_message", {"message_ids": ["m1"], "max_body_chars": 10_000_000}))
            assert await asyncio.to_thread(converting.wait, WAIT), "the conversion never started"
            listing = await asyncio.wait_for(client.list_tools(cache_mode="bypass"), WAIT)
            helped = await asyncio.wait_for(client.call_tool("missive_help", {"topic": "version"}), WAIT)
            still_converting = not reading.done()
            read = await asyncio.wait_for(reading, 100)
            return listing, helped, still_converting, read

    listing, helped, still_converting, read = run(scenario(), 110)
    assert len(listing.tools) == 37 and helped.is_error is False
    assert still_converting, "the body converted before tools/list and missive_help were answered"
    assert read.is_error is False and len(text(read)) > 100_000


# ---- a real subprocess over stdio ---------------------------------------------------------------------------------

# What the shared fake's seeded GET /users becomes: its four users, compact, each fact once (read off the seed).
FAKE_USERS_TEXT = json.dumps({"users": [
    {"id": "b5c6d7e8-f901-4a2b-8c3d-4e5f6a7b8c04", "name": "Priya Natarajan", "email": "priya@northwind.test",
     "avatar_url": "https://avatars.example/priya.png", "me": True},
    {"id": "2d3538b7-ac84-54fb-a253-c0dbee0335fd", "name": "Marcus Bell", "email": "marcus@northwind.test",
     "avatar_url": "https://avatars.example/marcus.png"},
    {"id": "c20bca83-c231-5e2d-a6f8-0ffe6e97b087", "name": "Aiko Tanaka", "email": "aiko@northwind.test",
     "avatar_url": "https://avatars.example/aiko.png"},
    {"id": "e1c07b80-4de2-5a1d-920d-0052a0364343", "name": "Léa Dubois", "email": "lea@contoso.test",
     "avatar_url": "https://avatars.example/lea.png"},
]}, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.slow
def test_stdio_subprocess_end_to_end(fake, stdio):
    server = stdio()  # conftest's fake, with its own token; otherwise a real client's environment
    server.request(1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                     "clientInfo": {"name": "t", "version": "0"}})
    init = server.response(1, WAIT)["result"]
    assert init["protocolVersion"] == "2025-11-25"
    assert init["serverInfo"]["name"] == "missive"
    assert init["serverInfo"]["version"] == m.__version__
    assert init["capabilities"]["tools"]["listChanged"] is True
    assert init["instructions"] == m.INSTRUCTIONS
    server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    server.request(2, "tools/list", {})
    tools = server.response(2, WAIT)["result"]["tools"]
    assert len(tools) == 37 and sorted(t["name"] for t in tools) == sorted(SPEC)
    assert {t["name"]: t["annotations"] for t in tools} == {name: expected_annotations(name) for name in SPEC}

    server.request(3, "tools/call", {"name": "missive_list_users", "arguments": {}})
    called = server.response(3, WAIT)["result"]
    assert called.get("isError") is not True
    assert called["content"] == [{"type": "text", "text": FAKE_USERS_TEXT}]
    sent = [(r.method, r.path, r.query, r.headers.get("authorization")) for r in fake.received()]
    assert sent == [("GET", "/v1/users", {}, f"Bearer {fake.token}")]

    server.request(4, "tools/call", {"name": "missive_get_contact", "arguments": {"contact_id": "a/b"}})
    assert server.response(4, WAIT)["result"]["isError"] is True
    assert len(fake.received()) == 1

    assert server.close() == 0  # closing stdin ends the server promptly and cleanly
    for line in server.lines:  # stdout carries JSON-RPC and nothing else
        assert line.endswith(b"\n")
        assert json.loads(line)["jsonrpc"] == "2.0", line
    stderr = server.stderr.decode(errors="replace")
    assert fake.token not in stderr and "Traceback" not in stderr, stderr
