"""Command line and configuration: the reviewer/setup modes, start-up checks, Config.from_env and --check."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

import missive_mcp as m
from conftest import API, TOKEN, make_config, subprocess_env
from spec import BAD_API_URLS, BAD_TOKENS, GOOD_API_URLS, READ_TOOLS, SPEC, shows_part_of

REPO = Path(__file__).resolve().parent.parent
MODULE = str(REPO / "missive_mcp.py")


def cli(*args, **env):
    """Run `python missive_mcp.py <args>` with a clean MISSIVE_* environment plus `env`."""
    return subprocess.run([sys.executable, "missive_mcp.py", *args], cwd=REPO, env=subprocess_env(**env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


# ---- --help, --version --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_help_documents_every_mode():
    result = cli("--help")
    assert result.returncode == 0
    assert result.stderr == ""
    for option in ("--check", "--list-tools", "--write-schemas", "--print-config", "--version"):
        assert option in result.stdout, option
    unwrapped = "".join(result.stdout.split())  # argparse wraps "claude-desktop" across lines
    for client in ("claude-desktop", "claude-code", "cursor", "vscode"):
        assert client in unwrapped, client


@pytest.mark.slow
def test_version():
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"missive-mcp {m.__version__}"


# ---- --write-schemas ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_write_schemas_writes_every_tool_and_removes_only_its_own_stale_snapshots(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    stale = {**m.TOOLS["missive_get_task"].snapshot(), "name": "missive_old_tool"}
    (target / "missive_old_tool.json").write_text(json.dumps(stale))
    users = {"missive_notes.json": "{}\n", "missive_mine.json": json.dumps({"name": "missive_mine", "mine": 1}),
             "missive_broken.json": "{not json", "missive_other.json": json.dumps({**stale, "name": "missive_x"}),
             "notes.txt": "keep me"}
    for name, content in users.items():
        (target / name).write_text(content)
    result = cli("--write-schemas", str(target), MISSIVE_API_TOKEN=TOKEN)
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    written = sorted(p.name for p in target.iterdir())
    assert written == sorted([f"{name}.json" for name in SPEC] + list(users))
    for name in SPEC:
        snapshot = json.loads((target / f"{name}.json").read_text(encoding="utf-8"))
        assert snapshot["name"] == name
        assert snapshot["inputSchema"] == m.TOOLS[name].schema


# ---- --print-config -----------------------------------------------------------------------------------------------

def _server_entry(client, config):
    return config["servers"]["missive"] if client == "vscode" else config["mcpServers"]["missive"]


@pytest.mark.slow
@pytest.mark.parametrize("client", ["claude-desktop", "claude-code", "cursor", "vscode"])
def test_print_config(client):
    result = cli("--print-config", client, MISSIVE_API_TOKEN=TOKEN)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)  # stdout is the file itself: `--print-config X > file` works
    assert "Put this in" in result.stderr
    entry = _server_entry(client, config)
    assert os.path.isabs(entry["command"]) and entry["command"] == sys.executable
    assert entry["args"] == [MODULE]
    token = entry["env"]["MISSIVE_API_TOKEN"]
    assert token != TOKEN and ("REPLACE" in token or token.startswith("${")), token
    assert TOKEN not in result.stdout and TOKEN not in result.stderr


# ---- --list-tools -------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("read_only", ["0", "1"])
def test_list_tools(read_only):
    result = cli("--list-tools", MISSIVE_READ_ONLY=read_only)
    assert result.returncode == 0, result.stderr
    lines = {}
    for line in result.stdout.splitlines():
        for name in SPEC:
            if f"`{name}`" in line:
                lines[name] = line
    assert sorted(lines) == sorted(SPEC)
    disabled = {name for name, line in lines.items() if "disabled" in line}
    if read_only == "1":
        assert disabled == set(SPEC) - READ_TOOLS
        assert "read-only" in result.stdout.splitlines()[0]
    else:
        assert disabled == set()


# ---- start-up failures --------------------------------------------------------------------------------------------

# One mistake per variable a person can make; each must read as one clear line, no traceback. The URL and token
# cases are spec.py's tables, which test_security.py checks in process. An environment variable cannot hold a NUL
# character (execve refuses it), so that token is checked in process only.
BAD_SETTINGS = {
    "MISSIVE_API_URL": {case: (url, ()) for case, url in BAD_API_URLS.items()},
    "MISSIVE_API_TOKEN": {case: (value, hidden) for case, (value, _refusal, hidden) in BAD_TOKENS.items()
                          if "\x00" not in value},
    "MISSIVE_TOOLS": {"unknown_entries": ("contacts, missive_send_email", ()), "only_a_comma": (",", ()),
                      "blank_entries": (" , ", ())},
    "MISSIVE_READ_ONLY": {"not_a_boolean": ("maybe", ())},
    "MISSIVE_ALLOW_REMOTE_CONTENT": {"not_a_boolean": ("sometimes", ())},
    "MISSIVE_DEADLINE": {"not_a_number": ("soon", ())},
    "MISSIVE_LOG_LEVEL": {"unknown_level": ("loud", ())},
}
BAD_CASES = [pytest.param(name, value, hidden, id=f"{name}-{case}")
             for name, cases in BAD_SETTINGS.items() for case, (value, hidden) in cases.items()]


@pytest.mark.slow
@pytest.mark.parametrize("args", [("--list-tools",), ("--check",)], ids=["list-tools", "check"])
@pytest.mark.parametrize("name, value, hidden", BAD_CASES)
def test_bad_configuration_exits_2_with_one_clear_message(args, name, value, hidden):
    env = {"MISSIVE_API_TOKEN": TOKEN, name: value}
    result = cli(*args, **env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"missive-mcp: {name} ")
    assert "Traceback" not in result.stderr and TOKEN not in result.stderr
    assert shows_part_of(result.stderr, hidden) == []  # not even part of a refused token


@pytest.mark.slow
@pytest.mark.parametrize("url", [url for url, _kept in GOOD_API_URLS.values()], ids=GOOD_API_URLS)
def test_good_api_url_starts(url):
    result = cli("--list-tools", MISSIVE_API_TOKEN=TOKEN, MISSIVE_API_URL=url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_every_configuration_problem_is_reported_at_once():
    with pytest.raises(m.ConfigError) as error:
        m.Config.from_env({"MISSIVE_API_URL": "ftp://x", "MISSIVE_READ_ONLY": "maybe", "MISSIVE_DEADLINE": "0"})
    assert [line.split()[0] for line in str(error.value).splitlines()] == \
        ["MISSIVE_API_URL", "MISSIVE_READ_ONLY", "MISSIVE_DEADLINE"]


@pytest.mark.slow
def test_unknown_tools_entry_suggests_the_closest_names():
    result = cli("--list-tools", MISSIVE_TOOLS="contacts, missive_send_email, conversatons, Missive_List_User")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "missive_send_email" in result.stderr
    assert "conversatons (did you mean conversations" in result.stderr
    assert "missive_list_user (did you mean missive_list_users" in result.stderr
    assert "presets: read, triage" in result.stderr and "--list-tools" in result.stderr
    assert "Traceback" not in result.stderr


def test_tools_names_groups_and_presets_ignore_case():
    config = m.Config.from_env({"MISSIVE_TOOLS": "Missive_List_Users, CONTACTS, Triage"})
    assert "missive_list_users" in config.tools and "missive_update_contacts" in config.tools
    assert m.tool_selection_choices()["triage"] <= config.tools


def test_presets_are_small_enough_for_cursor_and_name_real_tools():
    groups = {tool.group for tool in m.TOOLS.values()}
    choices = m.tool_selection_choices()
    for preset in m.TOOL_PRESETS:
        names = choices[preset]
        assert preset not in groups and preset not in m.TOOLS
        assert names and names <= set(m.TOOLS), preset
        assert len(names) + 1 <= 30, preset  # leaves room under Cursor's 40 for other servers
    assert len(choices["triage"]) == 17  # the README says so
    read = m.Config.from_env({"MISSIVE_TOOLS": "read"})
    assert all(m.TOOLS[name].annotations["readOnlyHint"] for name in read.tools)


# ---- Config.from_env ----------------------------------------------------------------------------------------------

def test_from_env_defaults():
    config = m.Config.from_env({})
    assert config.token is None
    assert config.api_url == "https://public.missiveapp.com/v1"
    assert config.defaults == {}
    assert config.read_only is False and config.tools is None
    assert all(config.enabled(tool) for tool in m.TOOLS.values())


def test_from_env_strips_whitespace_and_treats_blank_as_unset():
    config = m.Config.from_env({
        "MISSIVE_API_TOKEN": f"  {TOKEN}\n", "MISSIVE_DEFAULT_ORGANIZATION": " org-1 ", "MISSIVE_DEFAULT_TEAM": "   ",
        "MISSIVE_DEFAULT_CONTACT_BOOK": "", "MISSIVE_DEFAULT_FROM_ADDRESS": " me@example.com\t",
        "MISSIVE_DEFAULT_FROM_NAME": " Me ", "MISSIVE_DEFAULT_ACCOUNT": "\tacc-1", "MISSIVE_READ_ONLY": " ",
        "MISSIVE_TOOLS": "  ", "MISSIVE_LOG_LEVEL": " ",
    })
    assert config.token == TOKEN
    assert config.defaults == {"ORGANIZATION": "org-1", "FROM_ADDRESS": "me@example.com", "FROM_NAME": "Me",
                               "ACCOUNT": "acc-1"}
    assert config.read_only is False and config.tools is None and config.log_level == "warning"


@pytest.mark.parametrize("value, expected", [("1", True), (" 1 ", True), ("true", True), ("TRUE", True),
                                             ("yes", True), ("0", False), ("false", False), ("", False)])
def test_read_only_parsing(value, expected):
    config = m.Config.from_env({"MISSIVE_READ_ONLY": value})
    assert config.read_only is expected
    if expected:
        enabled = {name for name, tool in m.TOOLS.items() if config.enabled(tool)}
        assert enabled == READ_TOOLS


def test_read_only_rejects_garbage():
    with pytest.raises(m.ConfigError, match="MISSIVE_READ_ONLY"):
        m.Config.from_env({"MISSIVE_READ_ONLY": "maybe"})


def test_tools_groups_and_names():
    config = m.Config.from_env({"MISSIVE_TOOLS": " conversations , contacts,missive_create_draft ,"})
    expected = {name for name, (route, _p, _t) in SPEC.items()
                if route and route.split()[1].startswith(("/conversations", "/contact"))}
    expected.add("missive_create_draft")
    assert config.tools == frozenset(expected)
    assert "missive_list_conversation_posts" in config.tools and "missive_update_contacts" in config.tools
    enabled = {name for name, tool in m.TOOLS.items() if config.enabled(tool)}
    assert enabled == expected | {"missive_help"}
    assert "missive_list_users" not in enabled and "missive_create_post" not in enabled


def test_tools_and_read_only_combine():
    config = m.Config.from_env({"MISSIVE_TOOLS": "conversations,missive_create_draft", "MISSIVE_READ_ONLY": "1"})
    enabled = {name for name, tool in m.TOOLS.items() if config.enabled(tool)}
    assert "missive_create_draft" not in enabled and "missive_update_conversations" not in enabled
    assert "missive_list_conversations" in enabled and "missive_help" in enabled


def test_tools_unknown_entry_lists_valid_groups():
    with pytest.raises(m.ConfigError) as error:
        m.Config.from_env({"MISSIVE_TOOLS": "contacts,bogus_group"})
    message = str(error.value)
    assert "bogus_group" in message and "MISSIVE_TOOLS" in message
    assert "conversations" in message and "triage" in message


def test_timeouts_and_log_level():
    config = m.Config.from_env({"MISSIVE_CONNECT_TIMEOUT": " 2.5 ", "MISSIVE_READ_TIMEOUT": "12",
                                "MISSIVE_DEADLINE": "45", "MISSIVE_RATE_WAIT": "7", "MISSIVE_LOG_LEVEL": " DEBUG "})
    assert (config.connect_timeout, config.read_timeout, config.deadline, config.rate_wait) == (2.5, 12.0, 45.0, 7.0)
    assert config.log_level == "debug"
    defaults = m.Config.from_env({})
    assert (defaults.connect_timeout, defaults.read_timeout, defaults.deadline, defaults.rate_wait) == \
        (5.0, 30.0, 90.0, 60.0)


@pytest.mark.parametrize("name", ["MISSIVE_CONNECT_TIMEOUT", "MISSIVE_READ_TIMEOUT", "MISSIVE_DEADLINE",
                                  "MISSIVE_RATE_WAIT"])
@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf", "99999"])
def test_bad_timeouts_are_refused(name, value):
    with pytest.raises(m.ConfigError, match=name):
        m.Config.from_env({name: value})


def test_bad_log_level_is_refused():
    with pytest.raises(m.ConfigError, match="MISSIVE_LOG_LEVEL"):
        m.Config.from_env({"MISSIVE_LOG_LEVEL": "verbose"})


# ---- --check (run_check) ------------------------------------------------------------------------------------------

def mock_account(api):
    api.add("GET", API + "/users", json={"users": [
        {"id": "user-me", "name": "Ann Admin", "email": "ann@example.com", "me": True},
        {"id": "user-2", "name": "Bob", "email": "bob@example.com", "me": False}]})
    api.add("GET", API + "/organizations", json={"organizations": [{"id": "org-1", "name": "Northwind"}]})
    api.add("GET", API + "/teams", json={"teams": [{"id": "team-1", "name": "Returns"},
                                                    {"id": "team-2", "name": "Sales"}]})
    api.add("GET", API + "/contact_books", json={"contact_books": [{"id": "book-1", "name": "Customers"}]})


def check_report(config, api=None) -> tuple[int, str]:
    out = io.StringIO()
    status = m.run_check(config, out=out)
    return status, out.getvalue()


def env_block(report: str) -> dict:
    """The JSON "env" block --check prints last, ready to paste."""
    start = report.index("\n{", report.index('For the "env" block'))
    return json.loads(report[start:report.index("\n}", start) + 2])


def test_check_success(api):
    mock_account(api)
    status, report = check_report(make_config())
    assert status == 0
    for ident in ("org-1", "team-1", "team-2", "book-1", "user-me", "user-2"):
        assert ident in report
    for name in ("Northwind", "Returns", "Customers", "Ann Admin", "Bob"):
        assert name in report
    me = next(line for line in report.splitlines() if "user-me" in line and "Ann Admin" in line)
    other = next(line for line in report.splitlines() if "user-2" in line)
    assert "(you)" in me and "(you)" not in other
    assert env_block(report) == {"MISSIVE_DEFAULT_ORGANIZATION": "org-1", "MISSIVE_DEFAULT_TEAM": "team-1",
                                 "MISSIVE_DEFAULT_CONTACT_BOOK": "book-1"}
    assert "claude_desktop_config.json" in report
    assert TOKEN not in report
    assert all(call.request.method == "GET" for call in api.calls)
    assert all(call.request.headers["Authorization"] == f"Bearer {TOKEN}" for call in api.calls)


def test_check_keeps_a_valid_default_in_the_block(api):
    mock_account(api)
    status, report = check_report(make_config(defaults={"TEAM": "team-2"}))
    assert status == 0
    assert env_block(report)["MISSIVE_DEFAULT_TEAM"] == "team-2"


@pytest.mark.parametrize("key, value, closest", [("ORGANIZATION", "northwind", "org-1"),
                                                 ("TEAM", "team-3", "team-1"), ("TEAM", "Sales", "team-2"),
                                                 ("CONTACT_BOOK", "book-9", "book-1")])
def test_check_flags_a_default_that_is_not_among_the_listed_ids(api, key, value, closest):
    mock_account(api)
    status, report = check_report(make_config(defaults={key: value}))
    assert status == 7 and 7 in m.CHECK_STATUS
    flagged = next(line for line in report.splitlines() if line.startswith(f"MISSIVE_DEFAULT_{key}={value} "))
    assert "is not one of the" in flagged and closest in flagged.split("closest:")[1]
    assert f"MISSIVE_DEFAULT_{key}" not in env_block(report)  # never suggested back as if it were fine


def test_check_escapes_hostile_names_so_nothing_can_be_forged(api):
    """A name with a newline must not forge a "suggested" line; escape sequences must not reach the terminal."""
    api.add("GET", API + "/users", json={"users": [
        {"id": "user-me", "name": "Ann\x1b[2J\x1b]8;;http://evil.test\x07", "email": "a@x.test", "me": True}]})
    api.add("GET", API + "/organizations", json={"organizations": [
        {"id": "org-1", "name": "Northwind\nMISSIVE_API_URL=http://evil.test/v1  # suggested"}]})
    api.add("GET", API + "/teams", json={"teams": [{"id": "team-1\u202e", "name": "Returns\r\u2028Sales"}]})
    api.add("GET", API + "/contact_books", json={"contact_books": [{"id": 'b", "MISSIVE_API_URL": "x', "name": "B"}]})
    status, report = check_report(make_config())
    assert status == 0
    assert "\x1b" not in report and "\u202e" not in report and "\u2028" not in report and "\r" not in report
    assert not any(line.lstrip().startswith("MISSIVE_API_URL") for line in report.splitlines())
    # the bidi override was stripped from the team id like any invisible character; the forged id is not an id
    assert env_block(report) == {"MISSIVE_DEFAULT_ORGANIZATION": "org-1", "MISSIVE_DEFAULT_TEAM": "team-1"}
    assert "Northwind\\nMISSIVE_API_URL" in report  # shown, escaped, on its one line


def test_check_never_suggests_replacing_a_set_default(api):
    mock_account(api)
    status, report = check_report(make_config(defaults={"ORGANIZATION": "org-9"}))
    assert status == 7
    assert env_block(report).get("MISSIVE_DEFAULT_ORGANIZATION") is None
    assert env_block(report)["MISSIVE_DEFAULT_CONTACT_BOOK"] == "book-1"


def test_check_rejected_token(api):
    api.add("GET", API + "/users", status=401, json={"error": f"Invalid token {TOKEN}"})
    status, report = check_report(make_config())
    assert status == 4  # documented in --help: 4 token rejected
    assert "rejected" in report.lower()
    assert TOKEN not in report
    assert len(api.calls) == 1


def test_check_without_token(api):
    status, report = check_report(make_config(token=None))
    assert status == 3
    assert "MISSIVE_API_TOKEN" in report
    assert len(api.calls) == 0


@pytest.mark.slow
def test_check_network_error(api):
    api.add("GET", API + "/users", body=requests.exceptions.ConnectionError("Connection refused"))
    status, report = check_report(make_config(deadline=10.0), api)
    assert status == 6
    assert "failed" in report.lower()
    assert TOKEN not in report and "Traceback" not in report


@pytest.mark.parametrize("status, code", [(403, 4), (404, 5), (500, 5)])
def test_check_api_errors(api, status, code):
    api.add("GET", API + "/users", status=status, json={"error": "API access requires the Productive plan"})
    result, report = check_report(make_config(deadline=10.0))
    assert result == code
    assert "failed" in report.lower()
    assert TOKEN not in report


def test_check_404_points_at_the_base_url(api):
    api.add("GET", API + "/users", status=404, body="")
    status, report = check_report(make_config())
    assert status == 5
    assert "MISSIVE_API_URL" in report and "/v1" in report


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_check_asks_for_the_token_at_a_terminal_without_echo(fake):
    """No shell-specific prompt (zsh has no `read -s`): --check asks itself when the token is unset."""
    import select

    master, slave = os.openpty()
    process = subprocess.Popen([sys.executable, MODULE, "--check"], stdin=slave, stdout=slave, stderr=slave,
                               env=subprocess_env(MISSIVE_API_URL=fake.url), start_new_session=True)
    os.close(slave)
    seen, typed = b"", False
    try:
        while process.poll() is None or select.select([master], [], [], 0)[0]:
            ready, _, _ = select.select([master], [], [], 20)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if not typed and b"Missive API token (input hidden): " in seen:
                os.write(master, fake.token.encode() + b"\n")
                typed = True
    finally:
        os.close(master)
        process.wait(timeout=20)
    text = seen.decode("utf-8", "replace")
    assert typed, text
    assert process.returncode == 0, text
    assert "Token OK for Priya Natarajan" in text
    assert fake.token not in text  # typed without echo
