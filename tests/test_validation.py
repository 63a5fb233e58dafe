"""Argument validation: every problem at once, located in `a[1].b` form, and never an HTTP request.

Each table row is (tool, args, MISSIVE_DEFAULT_* values, {location: fragment of its message}). The located problems
must be exactly the listed ones unless the row says otherwise, so a rule that stops reporting, reports twice or
reports at the wrong place fails.
"""

import json

import pytest
from mcp.shared.exceptions import MCPError

import missive_mcp as m
from conftest import API, call, make_config, text

NEVER_SENDS = "this server never sends: drafts are saved for a person to review and send in Missive"
ATT = {"base64_data": "aGVsbG8=", "filename": "hello.txt"}
ENV_ORG_TEAM = {"ORGANIZATION": "org-env", "TEAM": "team-env"}


def problems(result, tool: str) -> dict[str, str]:
    """{location: messages} of a validation error; asserts the header and one `<loc>: <message>` per line.

    A location may carry several distinct problems (e.g. empty and blank); their messages are joined with " | ".
    """
    assert result.is_error, text(result)
    header, *lines = text(result).split("\n")
    assert header == f"Invalid arguments for {tool}:"
    assert lines, "no problem listed"
    assert len(lines) == len(set(lines)), f"a problem is listed twice: {lines}"
    out = {}
    for line in lines:
        loc, sep, message = line.partition(": ")
        assert sep and loc and message, f"malformed problem line {line!r}"
        out[loc] = f"{out[loc]} | {message}" if loc in out else message
    return out


def check(api, tool, args, env, expected, exact=True):
    result = call(tool, args, make_config(defaults=env))
    found = problems(result, tool)
    assert len(api.calls) == 0
    for loc, fragment in expected.items():
        assert loc in found, f"no problem at {loc}; got {found}"
        assert fragment.lower() in found[loc].lower(), f"{loc}: {found[loc]!r} lacks {fragment!r}"
    if exact:
        assert set(found) == set(expected), f"unexpected problems: {set(found) - set(expected)}"
    return found


# Minimal valid arguments per tool, so a row can add exactly one fault.
BASE = {
    "missive_list_contacts": {"contact_book": "b1"},
    "missive_list_contact_groups": {"contact_book": "b1", "kind": "group"},
    "missive_list_conversations": {"inbox": True},
    "missive_create_message": {"account": "a1", "from_field": {"id": "x"}},
    "missive_create_post": {"text": "note"},
    "missive_create_draft": {},
    "missive_create_task": {"title": "t"},
    "missive_update_task": {"task_id": "t1"},
    "missive_list_messages": {"email_message_id": "<a@b>"},
}


def base(tool, **more):
    return {**BASE.get(tool, {}), **more}


# ---- unknown keys at every depth (S4) ---------------------------------------------------------------------------

UNKNOWN = [
    ("missive_list_contacts", base("missive_list_contacts", bogus=1), "bogus"),
    ("missive_get_contact", {"contact_id": "c1", "email": "x@y"}, "email"),
    ("missive_create_contacts", {"contacts": [{"contact_book": "b", "email": "x@y"}]}, "contacts[0].email"),
    ("missive_create_contacts", {"contacts": [{"contact_book": "b", "infos": [{"kind": "email", "label": "work",
                                                                               "bogus": 1}]}]},
     "contacts[0].infos[0].bogus"),
    ("missive_update_contacts", {"contacts": [{"id": "c1"}, {"id": "c2", "memberships": [
        {"group": {"kind": "group", "name": "VIP", "id": "g1"}}]}]}, "contacts[1].memberships[0].group.id"),
    ("missive_create_teams", {"teams": [{"name": "a", "organization": "o", "business_hours": {
        "tz": "UTC", "t": [{"d": 1, "s": [0, 1], "x": 1}]}}]}, "teams[0].business_hours.t[0].x"),
    ("missive_update_teams", {"ids": ["t1"], "teams": [{"id": "t1", "business_hours": {"tz": "UTC", "t": [],
                                                                                       "days": []}}]},
     "teams[0].business_hours.days"),
    ("missive_update_conversations", {"ids": ["c1"], "conversations": [{"id": "c1", "archive": True}]},
     "conversations[0].archive"),
    ("missive_create_post", base("missive_create_post", attachments=[{"text": "x", "fields": [
        {"title": "a", "value": "b", "bogus": 1}]}]), "attachments[0].fields[0].bogus"),
    ("missive_create_post", base("missive_create_post", notification={"title": "a", "body": "b", "icon": "x"}),
     "notification.icon"),
    ("missive_create_draft", {"from_field": {"address": "a@b", "reply_to": "x"}}, "from_field.reply_to"),
    ("missive_create_draft", {"to_fields": [{"address": "a@b"}], "attachments": [{**ATT, "url": "x"}]},
     "attachments[0].url"),
    ("missive_create_message", base("missive_create_message", cc_fields=[{"address": "a@b", "phone": "1"}]),
     "cc_fields[0].phone"),
    ("missive_create_responses", {"responses": [{"organization": "o", "to_fields": [{"address": "a@b", "x": 1}]}]},
     "responses[0].to_fields[0].x"),
    ("missive_update_shared_labels", {"shared_labels": [{"id": "l1", "organization": "o"}]},
     "shared_labels[0].organization"),  # Missive rejects it; not in the schema
    ("missive_update_responses", {"responses": [{"id": "r1", "user": "u1"}]}, "responses[0].user"),
    ("missive_update_task", base("missive_update_task", organization="o"), "organization"),
    ("missive_list_tasks", {"offset": 10}, "offset"),  # cursor list: no offset
    ("missive_list_conversation_messages", {"conversation_id": "c1", "offset": 1}, "offset"),
    ("missive_get_message", {"message_ids": ["m1"], "format": "text"}, "format"),
    ("missive_help", {"topic": "index", "verbose": True}, "verbose"),
]


@pytest.mark.parametrize("tool, args, loc", UNKNOWN, ids=lambda v: None)
def test_unknown_key_is_located_at_the_key(api, tool, args, loc):
    check(api, tool, args, {}, {loc: "unknown argument"})


def test_unknown_keys_at_several_depths_all_reported(api):
    args = {"bogus": 1, "contacts": [{"contact_book": "b", "x": 1},
                                     {"contact_book": "b", "infos": [{"kind": "url", "label": "blog", "y": 2}]}]}
    check(api, "missive_create_contacts", args, {},
          {"bogus": "unknown argument", "contacts[0].x": "unknown argument",
           "contacts[1].infos[0].y": "unknown argument"})


# ---- types, limits, lengths, enums, required ------------------------------------------------------------------------

SCHEMA = [
    # wrong types
    ("missive_list_contacts", base("missive_list_contacts", limit="10"), {"limit": "integer"}),
    ("missive_list_contacts", base("missive_list_contacts", include_deleted="true"), {"include_deleted": "boolean"}),
    ("missive_list_conversations", {"inbox": 1}, {"inbox": "boolean", "arguments": "mailbox"}),
    ("missive_create_contacts", {"contacts": {"contact_book": "b"}}, {"contacts": "array"}),
    ("missive_update_task", base("missive_update_task", title=5), {"title": "string"}),
    ("missive_create_task", base("missive_create_task", assignees="u1"), {"assignees": "array"}),
    ("missive_get_contact", {"contact_id": 42}, {"contact_id": "string"}),
    ("missive_create_draft", {"to_fields": "a@b"}, {"to_fields": "array"}),
    ("missive_create_post", base("missive_create_post", notification="hi"), {"notification": "object"}),
    ("missive_list_contacts", base("missive_list_contacts", limit=10.5), {"limit": "integer"}),
    # booleans are not integers (S6)
    ("missive_list_contacts", base("missive_list_contacts", limit=True), {"limit": "integer"}),
    ("missive_list_contacts", base("missive_list_contacts", offset=False), {"offset": "integer"}),
    ("missive_list_conversations", {"inbox": True, "until": True}, {"until": "integer"}),
    ("missive_create_task", base("missive_create_task", due_at=True), {"due_at": "integer"}),
    ("missive_create_teams", {"teams": [{"name": "a", "organization": "o", "inactivity_period": False}]},
     {"teams[0].inactivity_period": "integer"}),
    ("missive_create_teams", {"teams": [{"name": "a", "organization": "o", "business_hours": {
        "tz": "UTC", "t": [{"d": True, "s": [0, False]}]}}]},
     {"teams[0].business_hours.t[0].d": "integer", "teams[0].business_hours.t[0].s[1]": "integer"}),
    ("missive_create_post", base("missive_create_post", attachments=[{"text": "x", "timestamp": True}]),
     {"attachments[0].timestamp": "integer"}),
    # timestamps are >= 0
    ("missive_list_contacts", base("missive_list_contacts", modified_since=-1), {"modified_since": "0"}),
    ("missive_list_tasks", {"due_at_gteq": -5}, {"due_at_gteq": "0"}),
    ("missive_create_message", base("missive_create_message", delivered_at=-1), {"delivered_at": "0"}),
    ("missive_update_task", base("missive_update_task", due_at=-1), {"due_at": "0"}),
    ("missive_list_contacts", base("missive_list_contacts", offset=-1), {"offset": "0"}),
    ("missive_create_teams", {"teams": [{"name": "a", "organization": "o", "business_hours": {
        "tz": "UTC", "t": [{"d": 7, "s": [-1, 3600]}]}}]},
     {"teams[0].business_hours.t[0].d": "6", "teams[0].business_hours.t[0].s[0]": "0"}),
    ("missive_create_teams", {"teams": [{"name": "a", "organization": "o", "inactivity_period": -1}]},
     {"teams[0].inactivity_period": "0"}),
    # get_message local shaping
    ("missive_get_message", {"message_ids": ["m1"], "max_body_chars": 0}, {"max_body_chars": "1"}),
    ("missive_get_message", {"message_ids": ["m1"], "body_format": "markdown"}, {"body_format": "markdown"}),
    # attachments: maxItems 25
    ("missive_create_draft", {"attachments": [ATT] * 26}, {"attachments": "25"}),
    ("missive_create_message", base("missive_create_message", attachments=[ATT] * 26), {"attachments": "25"}),
    ("missive_create_post", base("missive_create_post", attachments=[{"text": "x"}] * 26), {"attachments": "25"}),
    # maxLength
    ("missive_create_post", {"text": "x" * 8001}, {"text": "8000"}),
    ("missive_create_post", {"markdown": "x" * 8001}, {"markdown": "8000"}),
    ("missive_create_task", {"title": "x" * 1001}, {"title": "1000"}),
    ("missive_update_task", base("missive_update_task", title="x" * 1001), {"title": "1000"}),
    ("missive_create_task", base("missive_create_task", description="x" * 10001), {"description": "10000"}),
    ("missive_update_task", base("missive_update_task", description="x" * 10001), {"description": "10000"}),
    ("missive_list_messages", {"email_message_id": "<" + "x" * 1000 + ">"}, {"email_message_id": "1000"}),
    ("missive_create_responses", {"responses": [{"organization": "o", "title": "x" * 501, "subject": "y" * 501}]},
     {"responses[0].title": "500", "responses[0].subject": "500"}),
    ("missive_update_responses", {"responses": [{"id": "r1", "title": "x" * 501}]}, {"responses[0].title": "500"}),
    # minLength / blank
    ("missive_create_task", {"title": ""}, {"title": "empty"}),
    ("missive_update_task", base("missive_update_task", title=""), {"title": "empty"}),
    ("missive_list_contacts", base("missive_list_contacts", search=""), {"search": "empty"}),
    ("missive_list_conversations", {"inbox": True, "email": ""}, {"email": "empty"}),
    ("missive_list_conversations", {"inbox": True, "domain": ""}, {"domain": "empty"}),
    ("missive_list_messages", {"email_message_id": ""}, {"email_message_id": "empty"}),
    ("missive_list_messages", {"email_message_id": "   "}, {"email_message_id": "blank"}),
    ("missive_create_shared_labels", {"shared_labels": [{"name": "", "organization": "o"}]},
     {"shared_labels[0].name": "empty"}),
    ("missive_create_teams", {"teams": [{"name": "", "organization": "o"}]}, {"teams[0].name": "empty"}),
    ("missive_create_draft", {"references": ["<a@b>", ""]}, {"references[1]": "empty"}),
    ("missive_create_draft", {"references": ["<a@b> <c@d>"]}, {"references[0]": "whitespace"}),
    ("missive_create_draft", {"cc_fields": [{"address": "", "name": "x"}]}, {"cc_fields[0].address": "empty"}),
    ("missive_create_draft", {"attachments": [{"base64_data": "", "filename": ""}]},
     {"attachments[0].base64_data": "empty", "attachments[0].filename": "empty"}),
    ("missive_create_contacts", {"contacts": [{"contact_book": "b", "memberships": [
        {"group": {"kind": "group", "name": ""}}]}]}, {"contacts[0].memberships[0].group.name": "empty"}),
    # uniqueItems
    ("missive_get_message", {"message_ids": ["m1", "m2", "m1"]}, {"message_ids": "duplicate"}),
    ("missive_update_teams", {"ids": ["t1", "t1"], "teams": [{"id": "t1"}, {"id": "t2"}]},
     {"ids": "duplicate", "teams[1].id": "not in ids"}),
    ("missive_update_conversations", {"ids": ["c1", "c1"], "conversations": [{"id": "c1"}, {"id": "c2"}]},
     {"ids": "duplicate", "conversations[1].id": "not in ids"}),
    # enums
    ("missive_list_contacts", base("missive_list_contacts", order="first_name"), {"order": "first_name"}),
    ("missive_list_contact_groups", {"contact_book": "b1", "kind": "company"}, {"kind": "company"}),
    ("missive_list_tasks", {"state": "done", "type": "subtask"}, {"state": "done", "type": "subtask"}),
    ("missive_create_task", base("missive_create_task", state="done"), {"state": "done"}),
    ("missive_update_task", base("missive_update_task", state="open"), {"state": "open"}),
    ("missive_create_contacts", {"contacts": [{"contact_book": "b", "infos": [{"kind": "fax", "label": "work"}]}]},
     {"contacts[0].infos[0].kind": "fax"}),
    ("missive_create_contacts", {"contacts": [{"contact_book": "b", "memberships": [
        {"group": {"kind": "team", "name": "x"}}]}]}, {"contacts[0].memberships[0].group.kind": "team"}),
    ("missive_create_shared_labels", {"shared_labels": [{"name": "a", "organization": "o", "visibility": "all"}]},
     {"shared_labels[0].visibility": "all"}),
    ("missive_create_teams", {"teams": [{"name": "a", "organization": "o", "team_mention_behavior": "x",
                                         "user_reply_behavior": "y", "received_reply_behavior": "z",
                                         "team_sidebar_behavior": "w"}]},
     {"teams[0].team_mention_behavior": "x", "teams[0].user_reply_behavior": "y",
      "teams[0].received_reply_behavior": "z", "teams[0].team_sidebar_behavior": "w"}),
    ("missive_create_draft", {"from_field": {"phone_number": "+1", "type": "sms"}}, {"from_field.type": "sms"}),
    ("missive_help", {"topic": "secrets"}, {"topic": "secrets"}),
    # minProperties on parties
    ("missive_create_message", {"account": "a1", "from_field": {}}, {"from_field": "empty"}),
    ("missive_create_message", base("missive_create_message", to_fields=[{"id": "x"}, {}]),
     {"to_fields[1]": "empty"}),
    ("missive_create_message", base("missive_create_message", bcc_fields=[{}]), {"bcc_fields[0]": "empty"}),
    ("missive_create_draft", {"from_field": {}, "to_fields": [{}]}, {"from_field": "empty", "to_fields[0]": "empty"}),
    # dependentRequired on post attachments
    ("missive_create_post", {"attachments": [{"title": "ok"}, {"base64_data": "aGk="}]},
     {"attachments[1].filename": "base64_data"}),
    # required (schema)
    ("missive_list_contact_groups", {"contact_book": "b1"}, {"kind": "required"}),
    ("missive_create_message", {"account": "a1"}, {"from_field": "required"}),
    ("missive_create_task", {}, {"title": "required"}),
    ("missive_merge_conversations", {"source_conversation_id": "s1"}, {"target_conversation_id": "required"}),
    ("missive_update_conversations", {"conversations": [{"id": "c1"}]}, {"ids": "required"}),
    ("missive_update_conversations", {"ids": ["c1"], "conversations": [{"close": True}]},
     {"conversations[0].id": "required"}),
    ("missive_create_teams", {"teams": [{"organization": "o"}]}, {"teams[0].name": "required"}),
    ("missive_create_teams", {"teams": [{"name": "a", "organization": "o", "business_hours": {"t": [{"d": 1}]}}]},
     {"teams[0].business_hours.tz": "required", "teams[0].business_hours.t[0].s": "required"}),
    ("missive_update_teams", {"ids": ["t1"], "teams": [{"id": "t1", "business_hours": {
        "tz": "UTC", "t": [{"d": 1, "s": [1]}, {"d": 2, "s": [1, 2, 3]}]}}]},
     {"teams[0].business_hours.t[0].s": "2", "teams[0].business_hours.t[1].s": "2"}),
    ("missive_create_post", base("missive_create_post", notification={"title": "a"}),
     {"notification.body": "required"}),
    ("missive_create_draft", {"bcc_fields": [{"name": "x"}]}, {"bcc_fields[0].address": "required"}),
    ("missive_create_responses", {"responses": [{"organization": "o", "attachments": [{"filename": "a"}]}]},
     {"responses[0].attachments[0].base64_data": "required"}),
    ("missive_create_contacts", {"contacts": [{"contact_book": "b", "infos": [{"kind": "email"}]}]},
     {"contacts[0].infos[0].label": "required"}),
    ("missive_update_task", {"title": "x"}, {"task_id": "required"}),
    ("missive_list_messages", {}, {"email_message_id": "required"}),
]


@pytest.mark.parametrize("tool, args, expected", SCHEMA, ids=lambda v: None)
def test_schema_problem(api, tool, args, expected):
    check(api, tool, args, {}, expected)


# ---- limits per tool, derived from the table -------------------------------------------------------------------------

LIMITS = {"offset": (1, 200), "conversations": (1, 50), "sub": (1, 10), "tasks": (2, 50)}


def _limit_range(tool):
    kind, key = tool.paging[0], tool.paging[1]
    if key == "tasks":
        return LIMITS["tasks"]
    if kind == "offset":
        return LIMITS["offset"]
    return LIMITS["conversations"] if key == "conversations" else LIMITS["sub"]


PAGED = [name for name, tool in m.TOOLS.items() if tool.paging]


def _paged_args(name, **more):
    args = {"conversation_id": "c1"} if "conversation_id" in m.TOOLS[name].params else {}
    return {**args, **BASE.get(name, {}), **more}


def test_paged_tools_are_the_expected_ones():
    assert len(PAGED) == 14


@pytest.mark.parametrize("name", PAGED)
def test_limit_outside_range_is_refused(api, name):
    low, high = _limit_range(m.TOOLS[name])
    for limit, bound in ((low - 1, str(low)), (high + 1, str(high))):
        check(api, name, _paged_args(name, limit=limit), {}, {"limit": bound})


@pytest.mark.parametrize("name", PAGED)
def test_limit_bounds_are_accepted(api, name):
    tool = m.TOOLS[name]
    low, high = _limit_range(tool)
    path = tool.path.replace("{conversation_id}", "c1")
    api.get(API + path, json={tool.paging[1]: []})
    for limit in (low, high):
        result = call(name, _paged_args(name, limit=limit))
        assert not result.is_error, text(result)
    assert [dict(c.request.params)["limit"] for c in api.calls] == [str(low), str(high)]


# ---- batch sizes: 1-50 for every batch list ----------------------------------------------------------------------

CREATE_ITEM = {"contacts": {"contact_book": "b1"}, "shared_labels": {"name": "L", "organization": "o1"},
               "teams": {"name": "T", "organization": "o1"}, "responses": {"organization": "o1"}}


def _batch_args(tool_name, n):
    """Valid arguments whose batch lists hold n entries (distinct ids; the fields a create item needs)."""
    tool, ids = m.TOOLS[tool_name], [f"id{i}" for i in range(n)]
    if "message_ids" in tool.params:
        return {"message_ids": ids}
    # the batch list: the argument that is a list of objects (the body key it travels under)
    items = next(name for name, spec in tool.params.items() if spec.get("items", {}).get("type") == "object")
    if "ids" in tool.params:  # ids matched by items (I4)
        return {"ids": ids, items: [{"id": i} for i in ids]}
    if tool.ids_from:  # ids taken from the items
        return {items: [{"id": i} for i in ids]}
    return {items: [dict(CREATE_ITEM[items]) for _ in ids]}


# Every list limited to 1-50 in any schema, so a new batch tool is covered automatically.
BATCH = [(name, key) for name, tool in m.TOOLS.items() for key, schema in tool.params.items()
         if schema.get("type") == "array" and schema.get("maxItems") == 50]


def test_batch_lists_include_the_known_ones():
    assert len(BATCH) == 12
    assert {("missive_get_message", "message_ids"), ("missive_update_conversations", "ids"),
            ("missive_update_teams", "teams"), ("missive_create_responses", "responses")} <= set(BATCH)


@pytest.mark.parametrize("tool, list_name", BATCH)
def test_batch_sizes(api, tool, list_name):
    empty = _batch_args(tool, 1)
    empty[list_name] = []
    found = problems(call(tool, empty), tool)
    assert "at least 1" in found[list_name]
    found = problems(call(tool, _batch_args(tool, 51)), tool)
    assert "50" in found[list_name]
    assert len(api.calls) == 0
    # 50 is fine: exactly one request carrying all 50, never trimmed
    args = _batch_args(tool, 50)
    path = m.TOOLS[tool].path
    if m.TOOLS[tool].path_params:
        ids = args.get("message_ids") or args.get("ids") or [item["id"] for item in args[list_name]]
        path = path.split("{")[0] + ",".join(ids)
    api.add(m.TOOLS[tool].method, API + path, json={})
    result = call(tool, args)
    assert not result.is_error, text(result)
    assert len(api.calls) == 1
    if m.TOOLS[tool].method != "GET" and list_name != "ids":
        assert len(json.loads(api.calls[0].request.body)[list_name]) == 50


# ---- code rules ---------------------------------------------------------------------------------------------------

CODE = [
    # mutual exclusions
    ("missive_list_conversations", {"inbox": True, "email": "a@b.c", "domain": "b.c"}, {}, "email", "domain"),
    ("missive_list_conversations", {"inbox": True, "email": "a@b.c", "contact_organization": "co1"}, {},
     "email", "contact_organization"),
    ("missive_list_conversations", {"inbox": True, "domain": "b.c", "contact_organization": "co1"}, {},
     "domain", "contact_organization"),
    ("missive_create_responses", {"responses": [{"organization": "o1"}, {"organization": "o1", "user": "u1"}]}, {},
     "responses[1]", "user"),
]


@pytest.mark.parametrize("tool, args, env, first, second", CODE, ids=lambda v: None)
def test_mutual_exclusion(api, tool, args, env, first, second):
    found = problems(call(tool, args, make_config(defaults=env)), tool)
    assert len(api.calls) == 0
    lines = [f"{loc}: {msg}" for loc, msg in found.items()]
    assert len(lines) == 1, lines
    assert first in lines[0] and second in lines[0]


@pytest.mark.parametrize("args", [{}, {"inbox": False, "all": False}, {"organization": "o1"},
                                  {"email": "a@b.c", "limit": 5}])
def test_list_conversations_needs_a_mailbox(api, args):
    found = problems(call("missive_list_conversations", args), "missive_list_conversations")
    assert any("at least one mailbox filter is required" in msg for msg in found.values()), found
    assert len(api.calls) == 0


@pytest.mark.parametrize("mailbox", [*({name: True} for name in m.MAILBOXES),
                                     *({name: "x1"} for name in m.MAILBOX_IDS)], ids=str)
def test_each_mailbox_alone_is_enough(api, mailbox):
    api.get(API + "/conversations", json={"conversations": []})
    assert not call("missive_list_conversations", mailbox).is_error


def test_merge_source_must_differ_from_target(api):
    check(api, "missive_merge_conversations", {"source_conversation_id": "c1", "target_conversation_id": "c1"}, {},
          {"target_conversation_id": "differ"})


@pytest.mark.parametrize("args", [{"subtask": True}, {"subtask": True, "references": []}])
def test_subtask_needs_conversation_or_references(api, args):
    check(api, "missive_create_task", {"title": "t", **args}, {}, {"subtask": "conversation"})


@pytest.mark.parametrize("args", [{}, {"text": ""}, {"markdown": ""}, {"attachments": []},
                                  {"text": "", "markdown": "", "attachments": []}, {"conversation": "c1"}])
def test_post_needs_content(api, args):
    found = problems(call("missive_create_post", args), "missive_create_post")
    assert len(found) == 1 and "text, markdown or attachments" in next(iter(found.values())), found
    assert len(api.calls) == 0


@pytest.mark.parametrize("tool, item", [("missive_create_responses", {"organization": "o1", "external_id": "e1"}),
                                        ("missive_create_responses", {"user": "u1", "external_id": "e1"}),
                                        ("missive_update_responses", {"id": "r1", "external_id": "e1"})])
def test_response_external_id_needs_source(api, tool, item):
    check(api, tool, {"responses": [item]}, {}, {"responses[0].external_source": "external_id"})


def test_create_responses_needs_an_owner(api):
    check(api, "missive_create_responses", {"responses": [{"user": "u1"}, {"title": "x"}]}, {},
          {"responses[1].organization": "MISSIVE_DEFAULT_ORGANIZATION"})


# ---- E2 / E3: the organization and team rules ---------------------------------------------------------------------

CONV_TOOLS = {  # tool -> (valid args without the rule fields, prefix of the located problem)
    "missive_create_draft": ({}, ""),
    "missive_create_post": ({"text": "note"}, ""),
    "missive_create_message": ({"account": "a1", "from_field": {"id": "x"}}, ""),
    "missive_update_conversations": ({"ids": ["c1"]}, "conversations[0]."),
}
ORG_FIELDS = ("add_users", "add_assignees", "remove_assignees", "add_shared_labels")


def _conv_args(tool, **fields):
    args, prefix = CONV_TOOLS[tool]
    if prefix:
        return {**args, "conversations": [{"id": "c1", **fields}]}, prefix
    return {**args, **fields}, prefix


@pytest.mark.parametrize("field", ORG_FIELDS)
@pytest.mark.parametrize("tool", CONV_TOOLS)
def test_org_rule_without_fallback(api, tool, field):
    args, prefix = _conv_args(tool, **{field: ["x1"]})
    found = check(api, tool, args, {"TEAM": "team-env"}, {f"{prefix}organization": "required"})
    assert "MISSIVE_DEFAULT_ORGANIZATION" in found[f"{prefix}organization"]


@pytest.mark.parametrize("tool", CONV_TOOLS)
def test_team_rule_without_fallback(api, tool):
    args, prefix = _conv_args(tool, add_to_team_inbox=True)
    found = check(api, tool, args, {"ORGANIZATION": "org-env"}, {f"{prefix}team": "required"})
    assert "MISSIVE_DEFAULT_TEAM" in found[f"{prefix}team"]


def _sent_item(api, tool):
    body = json.loads(api.calls[0].request.body)
    return body["conversations"][0] if tool == "missive_update_conversations" else next(iter(body.values()))


def _register(api, tool):
    path = m.TOOLS[tool].path.replace("{ids}", "c1")
    api.add(m.TOOLS[tool].method, API + path, json={})


@pytest.mark.parametrize("field", ORG_FIELDS)
@pytest.mark.parametrize("tool", CONV_TOOLS)
def test_org_rule_with_env_fallback(api, tool, field):
    _register(api, tool)
    args, _ = _conv_args(tool, **{field: ["x1"]}, add_to_team_inbox=True)
    result = call(tool, args, make_config(defaults=ENV_ORG_TEAM))
    assert not result.is_error, text(result)
    item = _sent_item(api, tool)
    assert item["organization"] == "org-env" and item["team"] == "team-env"


@pytest.mark.parametrize("tool", CONV_TOOLS)
def test_empty_arrays_and_false_do_not_trigger_the_rules(api, tool):
    _register(api, tool)
    args, _ = _conv_args(tool, **{field: [] for field in ORG_FIELDS}, add_to_team_inbox=False)
    result = call(tool, args, make_config(defaults={}))
    assert not result.is_error, text(result)
    item = _sent_item(api, tool)
    assert "organization" not in item and "team" not in item


def test_update_conversations_items_get_env_only_when_required(api):
    api.patch(API + "/conversations/c1,c2,c3", json={})
    args = {"ids": ["c1", "c2", "c3"], "conversations": [
        {"id": "c1", "close": True, "add_users": []},
        {"id": "c2", "add_users": ["u1"]},
        {"id": "c3", "add_to_team_inbox": True}]}
    result = call("missive_update_conversations", args, make_config(defaults=ENV_ORG_TEAM))
    assert not result.is_error, text(result)
    sent = json.loads(api.calls[0].request.body)["conversations"]
    assert sent == [{"id": "c1", "close": True, "add_users": []},
                    {"id": "c2", "add_users": ["u1"], "organization": "org-env"},
                    {"id": "c3", "add_to_team_inbox": True, "team": "team-env"}]


def test_each_item_reports_its_own_missing_organization(api):
    args = {"ids": ["c1", "c2", "c3"], "conversations": [
        {"id": "c1", "add_users": ["u1"]}, {"id": "c2", "close": True},
        {"id": "c3", "add_shared_labels": ["l1"], "add_to_team_inbox": True}]}
    check(api, "missive_update_conversations", args, {},
          {"conversations[0].organization": "required", "conversations[2].organization": "required",
           "conversations[2].team": "required"})


# ---- create_task's organization rule ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, env", [
    ({"team": "t1"}, {}),
    ({"assignees": ["u1"]}, {}),
    ({"add_users": ["u1"]}, {}),
    ({}, {"TEAM": "team-env"}),  # MISSIVE_DEFAULT_TEAM without MISSIVE_DEFAULT_ORGANIZATION
    ({"assignees": ["u1"], "add_users": ["u2"], "team": "t1"}, {"TEAM": "team-env"}),
], ids=lambda v: None)
def test_create_task_organization_required(api, args, env):
    check(api, "missive_create_task", {"title": "t", **args}, env, {"organization": "required"})


@pytest.mark.parametrize("args, env", [
    ({"assignees": [], "add_users": []}, {}),
    ({"team": "t1", "organization": "o1"}, {"TEAM": "team-env"}),
    ({}, {"TEAM": "team-env", "ORGANIZATION": "org-env"}),
    ({"subtask": True, "conversation": "c1"}, {}),
    ({"subtask": True, "references": ["<a@b>"]}, {}),
    ({"subtask": False}, {}),
], ids=lambda v: None)
def test_create_task_accepted(api, args, env):
    api.post(API + "/tasks", json={"tasks": {"id": "t9"}})
    result = call("missive_create_task", {"title": "t", **args}, make_config(defaults=env))
    assert not result.is_error, text(result)


# ---- env fallbacks that are required, and env values that are not ids (I5) -----------------------------------------

@pytest.mark.parametrize("tool, args, loc, variable", [
    ("missive_list_contacts", {}, "contact_book", "MISSIVE_DEFAULT_CONTACT_BOOK"),
    ("missive_list_contact_groups", {"kind": "group"}, "contact_book", "MISSIVE_DEFAULT_CONTACT_BOOK"),
    ("missive_create_contacts", {"contacts": [{"contact_book": "b"}, {"first_name": "x"}]},
     "contacts[1].contact_book", "MISSIVE_DEFAULT_CONTACT_BOOK"),
    ("missive_create_message", {"from_field": {"id": "x"}}, "account", "MISSIVE_DEFAULT_ACCOUNT"),
    ("missive_create_shared_labels", {"shared_labels": [{"name": "a"}]}, "shared_labels[0].organization",
     "MISSIVE_DEFAULT_ORGANIZATION"),
    ("missive_create_teams", {"teams": [{"name": "a", "organization": "o"}, {"name": "b"}]}, "teams[1].organization",
     "MISSIVE_DEFAULT_ORGANIZATION"),
], ids=lambda v: None)
def test_required_env_fallback_missing(api, tool, args, loc, variable):
    found = check(api, tool, args, {}, {loc: "required"})
    assert variable in found[loc]


def test_env_values_are_stripped_and_blank_means_unset():
    config = m.Config.from_env({"MISSIVE_API_TOKEN": "tok-12345678", "MISSIVE_DEFAULT_ORGANIZATION": "  org1\n",
                                "MISSIVE_DEFAULT_TEAM": "   ", "MISSIVE_DEFAULT_CONTACT_BOOK": "",
                                "MISSIVE_DEFAULT_FROM_NAME": " Northwind Returns "})
    assert config.defaults == {"ORGANIZATION": "org1", "FROM_NAME": "Northwind Returns"}


BAD_ENV = [
    ("missive_list_users", {}, "ORGANIZATION", "organization"),
    ("missive_list_conversations", {"inbox": True}, "ORGANIZATION", "organization"),
    ("missive_list_tasks", {}, "ORGANIZATION", "organization"),
    ("missive_list_contacts", {}, "CONTACT_BOOK", "contact_book"),
    ("missive_list_contact_groups", {"kind": "group"}, "CONTACT_BOOK", "contact_book"),
    ("missive_create_contacts", {"contacts": [{"first_name": "x"}]}, "CONTACT_BOOK", "contacts[0].contact_book"),
    ("missive_create_message", {"from_field": {"id": "x"}}, "ACCOUNT", "account"),
    ("missive_create_draft", {}, "TEAM", "team"),
    ("missive_create_draft", {}, "ORGANIZATION", "organization"),
    ("missive_create_post", {"text": "x"}, "TEAM", "team"),
    ("missive_create_task", {"title": "t"}, "TEAM", "team"),
    ("missive_create_task", {"title": "t", "assignees": ["u1"]}, "ORGANIZATION", "organization"),
    ("missive_create_shared_labels", {"shared_labels": [{"name": "a"}]}, "ORGANIZATION",
     "shared_labels[0].organization"),
    ("missive_create_teams", {"teams": [{"name": "a"}]}, "ORGANIZATION", "teams[0].organization"),
    ("missive_create_responses", {"responses": [{"title": "a"}]}, "ORGANIZATION", "responses[0].organization"),
    ("missive_update_conversations", {"ids": ["c1"], "conversations": [{"id": "c1", "add_users": ["u"]}]},
     "ORGANIZATION", "conversations[0].organization"),
]


@pytest.mark.parametrize("bad", ["not an id", "../x", "a/b", "x" * 129, "org\n1"])
@pytest.mark.parametrize("tool, args, key, loc", BAD_ENV, ids=lambda v: None)
def test_env_default_that_is_not_an_id(api, tool, args, key, loc, bad):
    found = check(api, tool, args, {"ORGANIZATION": "org-env", "TEAM": "team-env", "CONTACT_BOOK": "b-env",
                                    "ACCOUNT": "a-env", key: bad}, {loc: f"MISSIVE_DEFAULT_{key}"})
    assert "not a valid id" in found[loc]


@pytest.mark.parametrize("tool, args", [
    ("missive_list_users", {"organization": "o1"}),  # passed: the env value is never used
    ("missive_update_conversations", {"ids": ["c1"], "conversations": [{"id": "c1", "close": True}]}),
    ("missive_create_task", {"title": "t"}),  # organization not required here
])
def test_unused_bad_env_default_is_no_problem(api, tool, args):
    path = m.TOOLS[tool].path.replace("{ids}", "c1")
    api.add(m.TOOLS[tool].method, API + path, json={})
    result = call(tool, args, make_config(defaults={"ORGANIZATION": "../evil"}))
    assert not result.is_error, text(result)
    assert "evil" not in api.calls[0].request.url and "evil" not in str(api.calls[0].request.body)


# ---- I4: ids and items --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tool, items", [("missive_update_conversations", "conversations"),
                                         ("missive_update_teams", "teams")])
def test_ids_must_match_items(api, tool, items):
    check(api, tool, {"ids": ["c1", "c2"], items: [{"id": "c1"}, {"id": "c9"}]}, {},
          {f"{items}[1].id": "'c9' is not in ids"})
    check(api, tool, {"ids": ["c1", "c2"], items: [{"id": "c1"}]}, {}, {items: "2"})
    check(api, tool, {"ids": ["c1", "c2"], items: [{"id": "c1"}, {"id": "c1"}]}, {},
          {f"{items}[1].id": "twice"})
    check(api, tool, {"ids": ["c1"], items: [{"id": "c1"}, {"id": "c1"}]}, {},
          {f"{items}[1].id": "twice", items: "1"})


def test_i4_message_matches_the_spec_example(api):
    found = problems(call("missive_update_conversations",
                          {"ids": ["c1", "c2"], "conversations": [{"id": "c1"}, {"id": "c9"}]}),
                     "missive_update_conversations")
    assert "conversations[1].id: " + found["conversations[1].id"] == "conversations[1].id: 'c9' is not in ids"


@pytest.mark.parametrize("tool, items", [("missive_update_contacts", "contacts"),
                                         ("missive_update_shared_labels", "shared_labels"),
                                         ("missive_update_responses", "responses")])
def test_item_ids_must_be_unique(api, tool, items):
    check(api, tool, {items: [{"id": "a1"}, {"id": "b1"}, {"id": "a1"}]}, {}, {f"{items}[2].id": "twice"})


# ---- every problem at once (S2) -------------------------------------------------------------------------------------

def test_schema_and_code_problems_reported_together(api):
    args = {"bogus": 1, "text": "x" * 8001, "add_users": ["u1"], "add_to_team_inbox": True, "conversation": "a/b",
            "reopen": "no", "send": True}
    check(api, "missive_create_post", args, {},
          {"bogus": "unknown argument", "send": "unknown argument", "text": "8000", "organization": "required",
           "team": "required", "conversation": "a/b", "reopen": "boolean"})


def test_every_item_of_a_batch_is_checked(api):
    args = {"ids": ["c1", "c2", "c3"], "conversations": [
        {"id": "c1", "bogus": 1}, {"id": "c2", "close": "yes", "add_assignees": ["u1"]}, {"id": "c4"}]}
    check(api, "missive_update_conversations", args, {},
          {"conversations[0].bogus": "unknown argument", "conversations[1].close": "boolean",
           "conversations[1].organization": "required", "conversations[2].id": "not in ids"})


# ---- S8 ordering: no token, unknown tool, hidden tools --------------------------------------------------------------

NO_TOKEN_START = "MISSIVE_API_TOKEN is not set."


def test_no_token_valid_arguments(api):
    result = call("missive_list_users", {}, make_config(token=None))
    assert result.is_error
    assert text(result) == m.NO_TOKEN
    assert text(result).startswith(NO_TOKEN_START) and "Preferences → API" in text(result)
    assert len(api.calls) == 0


def test_no_token_appends_argument_problems(api):
    result = call("missive_create_post", {"bogus": 1, "conversation": "a/b"}, make_config(token=None))
    assert result.is_error
    first, *rest = text(result).split("\n")
    assert text(result).startswith(NO_TOKEN_START)
    locations = {line.partition(": ")[0] for line in rest}
    assert {"bogus", "conversation", "arguments"} <= locations
    assert len(api.calls) == 0


@pytest.mark.parametrize("name", ["missive_delete_draft", "missive_send_draft", "", "MISSIVE_LIST_USERS"])
def test_unknown_tool_is_a_protocol_error(api, clients, name):
    with pytest.raises(MCPError) as raised:
        call(name, {}, *clients())
    assert raised.value.code == -32602
    assert len(api.calls) == 0


def test_unknown_tool_beats_missing_token(api, clients):
    with pytest.raises(MCPError) as raised:
        call("missive_delete_post", {"bogus": 1}, *clients(token=None))
    assert raised.value.code == -32602


WRITE_TOOLS = [name for name, tool in m.TOOLS.items() if not tool.annotations["readOnlyHint"]]
READ_TOOLS = [name for name, tool in m.TOOLS.items() if tool.annotations["readOnlyHint"] and tool.route]


def test_tool_profiles_split_as_expected():
    assert len(WRITE_TOOLS) == 15 and len(READ_TOOLS) == 21


@pytest.mark.parametrize("name", WRITE_TOOLS)
def test_read_only_mode_hides_write_tools(api, name):
    result = call(name, {}, make_config(read_only=True))
    assert result.is_error
    assert "MISSIVE_READ_ONLY" in text(result) and name in text(result)
    assert len(api.calls) == 0


def test_read_only_mode_keeps_read_tools(api):
    api.get(API + "/users", json={"users": []})
    assert not call("missive_list_users", {}, make_config(read_only=True)).is_error
    assert not call("missive_help", {"topic": "safety"}, make_config(read_only=True, tools=frozenset())).is_error


@pytest.mark.parametrize("name", ["missive_get_contact", "missive_create_draft", "missive_list_conversations"])
def test_tools_allowlist_hides_other_tools(api, name):
    result = call(name, {"contact_id": "c1"}, make_config(tools=frozenset({"missive_list_users"})))
    assert result.is_error
    assert "MISSIVE_TOOLS" in text(result) and name in text(result)
    assert len(api.calls) == 0


def test_tools_allowlist_allows_listed_tool(api):
    api.get(API + "/users", json={"users": []})
    assert not call("missive_list_users", {}, make_config(tools=frozenset({"missive_list_users"}))).is_error
