"""Shared helpers: a strict `responses` mock of the Missive API and a synchronous way to call a tool."""

import asyncio

import pytest
import responses

import missive_mcp as m

API = "https://missive.test/v1"
TOKEN = "missive_pat-0123456789abcdef-test-token"


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
        # the tests of learn_me and of the views use their own client.
        client.me = {}
    try:
        return asyncio.run(m.call_tool(config, client, tool, args))
    finally:
        if own:
            client.close()


def text(result) -> str:
    """The single text block of a tool result."""
    assert len(result.content) == 1
    return result.content[0].text


@pytest.fixture
def api():
    """A strict mock of the API: unmatched requests fail, and so do registered ones that were never used."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock
