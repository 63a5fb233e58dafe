"""The README's commands, inventory and variable table are checked against the module, so they cannot drift."""

import pathlib
import re

import missive_mcp as m

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def test_setup_section_has_exactly_two_commands_and_ci_runs_the_test_one():
    commands = re.findall(r"```sh\n(.*?)\n```", _section("Set up"), re.S)
    assert len(commands) == 2, commands
    install_and_run, test = commands
    assert "pip install -e ." in install_and_run and "missive_mcp.py" in install_and_run
    assert "pytest" in test
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test in ci.splitlines(), "'.ci/run' must run exactly the README's test command"


def test_inventory_lists_every_tool_with_its_route_and_kind():
    expected = [f"| `{tool.name}` | {f'`{tool.route}`' if tool.route else 'none (local)'} | {m._flags(tool)} |"
                for tool in m.TOOLS.values()]
    rows = [line for line in _section("Tools").splitlines() if line.startswith("| `missive_")]
    assert rows == expected, "README tool table is out of date; expected rows:\n" + "\n".join(expected)


def test_environment_table_lists_every_variable():
    rows = [line for line in _section("Environment variables").splitlines() if line.startswith("| `MISSIVE_")]
    assert [row.split("`")[1] for row in rows] == list(m.ENV_VARS)


def test_readme_never_shows_a_token_on_a_command_line():
    for command in re.findall(r"```sh\n(.*?)\n```", README, re.S):
        assert "MISSIVE_API_TOKEN=missive_pat" not in command


def _commands() -> list[str]:
    """Every command line of the README's sh blocks and inline code that runs this server."""
    blocks = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    inline = re.findall(r"`([^`\n]*(?:missive-mcp|missive_mcp\.py)[^`\n]*)`", README)
    return [line for block in blocks for line in block.splitlines()] + inline


def test_readme_commands_use_the_venv_or_the_console_script():
    """A bare `python` after the venv install is a ModuleNotFoundError waiting to happen."""
    for block in re.findall(r"```sh\n(.*?)\n```", README, re.S):
        for command in re.split(r"&&|\n", block):
            words = command.split()
            if words and re.fullmatch(r"python3?(\.\d+)?", words[0]):
                assert words[1:3] == ["-m", "venv"], command  # only creating the venv uses the system python


def test_every_flag_the_readme_shows_exists():
    import subprocess
    import sys

    shown = {flag for command in _commands() if "missive" in command
             for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]+", command)}
    assert {"--check", "--print-config", "--list-tools", "--write-schemas", "--help"} <= shown
    help_text = subprocess.run([sys.executable, str(ROOT / "missive_mcp.py"), "--help"], capture_output=True,
                               text=True, timeout=30, check=True).stdout
    for flag in shown:
        assert flag in help_text, flag


def test_readme_print_config_examples_parse_with_the_clients_it_names():
    for client in re.findall(r"--print-config (\w[\w-]*)", README):
        if client != "CLIENT":
            assert client in m.CLIENTS, client
