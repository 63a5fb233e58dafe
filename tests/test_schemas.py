"""The reviewed snapshot in schemas/ and the portability rules every input schema must follow
(tool-surface.md S1, S1b, S6, S7, S9, I1, §1.7 and the inventory of §1.9)."""

import json
import os
import re
from pathlib import Path

import jsonschema
import pytest

import missive_mcp as m
from spec import SPEC, expected_annotations

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "schemas"
REGENERATE = "run `python missive_mcp.py --write-schemas` and review the diff"

ID_PATTERN = "^[A-Za-z0-9_-]{1,128}$"
# Subschema-holding keywords (JSON Schema 2020-12) and how they hold their subschemas.
SINGLE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
          "unevaluatedItems", "unevaluatedProperties", "additionalItems")
LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
MAPS = ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions")
# Every timestamp (Ts) property name used in the spec.
TS_NAMES = {"until", "modified_since", "delivered_at", "due_at", "due_at_gteq", "due_at_lteq", "timestamp"}


def walk(schema, path="$"):
    """Yield (path, subschema) for the schema and every subschema below it, including boolean ones."""
    yield path, schema
    if not isinstance(schema, dict):
        return
    for key in SINGLE:
        if key in schema:
            yield from walk(schema[key], f"{path}.{key}")
    for key in LISTS:
        for i, sub in enumerate(schema.get(key) or []):
            yield from walk(sub, f"{path}.{key}[{i}]")
    for key in MAPS:
        for name, sub in (schema.get(key) or {}).items():
            yield from walk(sub, f"{path}.{key}.{name}")


def named_properties(schema):
    """Yield (path, property name, property schema) at every depth."""
    for path, sub in walk(schema):
        if isinstance(sub, dict):
            for name, prop in (sub.get("properties") or {}).items():
                yield f"{path}.properties.{name}", name, prop


ALL = sorted(SPEC)


# ---- the snapshot --------------------------------------------------------------------------------------------------

def test_schemas_snapshot_is_current(tmp_path):
    """schemas/ in the repository is exactly what write_schemas produces; review any drift before committing."""
    fresh = tmp_path / "schemas"
    m.write_schemas(str(fresh))
    expected = {p.name: p.read_bytes() for p in fresh.iterdir()}
    assert len(expected) == len(SPEC) == 37
    assert SCHEMAS.is_dir(), f"schemas/ is missing: {REGENERATE}"
    committed = {p.name: p.read_bytes() for p in SCHEMAS.iterdir() if p.is_file()}
    assert committed, f"schemas/ is empty: {REGENERATE}"
    missing, extra = sorted(set(expected) - set(committed)), sorted(set(committed) - set(expected))
    assert not missing and not extra, f"schemas/ file set drifted (missing {missing}, stale {extra}): {REGENERATE}"
    changed = sorted(name for name in expected if committed[name] != expected[name])
    assert not changed, f"schemas/ content drifted in {changed}: {REGENERATE}"


def test_snapshot_content_matches_the_tool():
    for name in ALL:
        tool = m.TOOLS[name]
        snapshot = json.loads(json.dumps(tool.snapshot()))
        route, _profile, title = SPEC[name]
        assert snapshot["name"] == name
        assert snapshot["title"] == title
        assert snapshot["inputSchema"] == tool.schema
        assert snapshot["annotations"] == expected_annotations(name)
        assert (snapshot["method"], snapshot["path"]) == (tuple(route.split()) if route else (None, None))
        assert isinstance(snapshot["description"], str) and snapshot["description"].strip()


# ---- the inventory and annotations (§1.7, §1.9) --------------------------------------------------------------------

def test_inventory_matches_spec():
    assert sorted(m.TOOLS) == ALL
    assert len(m.TOOLS) == 37


@pytest.mark.parametrize("name", ALL)
def test_annotations_and_route_per_spec(name):
    tool = m.TOOLS[name]
    route, _profile, title = SPEC[name]
    assert tool.title == title
    assert tool.annotations == expected_annotations(name)
    assert tool.route == route
    definition = m.mcp_tool(tool).model_dump(by_alias=True, exclude_none=True)
    assert definition["title"] == title
    assert definition["annotations"] == expected_annotations(name)  # all five set explicitly
    assert "outputSchema" not in definition


# ---- portability and strictness of every schema ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_schema_rules(name):
    schema = m.TOOLS[name].schema
    assert schema.get("type") == "object"
    jsonschema.Draft202012Validator.check_schema(schema)
    dumped = json.dumps(schema)
    for forbidden in ('"$ref"', '"$defs"', '"$schema"', '"prefixItems"', '"definitions"'):
        assert forbidden not in dumped, f"{name}: {forbidden} is not portable (S1b)"
    for path, sub in walk(schema):
        if path.endswith(".additionalProperties"):
            assert sub is False, f"{name} {path}: must be false"
            continue
        assert isinstance(sub, dict), f"{name} {path}: boolean subschema (S1b)"
        kinds = sub.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        assert "number" not in kinds, f"{name} {path}: numbers are integers (S6)"
        if "object" in kinds or "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{name} {path}: additionalProperties: false (S1)"
        if "default" in sub:
            assert (name, path) == ("missive_help", "$.properties.topic"), f"{name} {path}: no default (S9)"
        for key in ("minItems", "maxItems"):
            if key in sub:
                assert isinstance(sub[key], int)
        if sub.get("type") == "array":
            assert isinstance(sub.get("items"), dict), f"{name} {path}: arrays need an items schema"


@pytest.mark.parametrize("name", ALL)
def test_numbers_are_integers(name):
    for path, prop_name, prop in named_properties(m.TOOLS[name].schema):
        if prop_name in ("limit", "offset") or prop_name in TS_NAMES:
            assert prop.get("type") == "integer", f"{name} {path}: must be integer (S6)"
            assert prop.get("minimum", -1) >= 0, f"{name} {path}: needs a minimum"
        if prop_name in TS_NAMES:
            assert prop.get("minimum") == 0, f"{name} {path}: Ts has minimum 0 (S7)"


def test_help_topic_default():
    topic = m.TOOLS["missive_help"].schema["properties"]["topic"]
    assert topic["default"] == "index"
    assert topic["type"] == "string"
    assert set(topic["enum"]) == {"index", "overview", "architecture", "tools", "usage", "authentication", "safety",
                                  "conventions", "extending", "troubleshooting", "audit", "version"}
    assert "required" not in m.TOOLS["missive_help"].schema


@pytest.mark.parametrize("name", [n for n in ALL if SPEC[n][0] and "{" in SPEC[n][0]])
def test_path_values_use_the_id_pattern(name):
    """I1: every value placed in a URL path is an Id (or a list of Ids, or the ids of the items)."""
    schema = m.TOOLS[name].schema
    props = schema["properties"]
    for param in re.findall(r"{(\w+)}", SPEC[name][0]):
        assert param in schema.get("required", []) or param == "ids", f"{name}: {param} must be required"
        if param in props:
            prop = props[param]
            if prop.get("type") == "array":
                assert prop["items"] == {"type": "string", "pattern": ID_PATTERN}
                assert prop.get("minItems") == 1 and prop.get("maxItems") == 50 and prop.get("uniqueItems") is True
                assert param in schema["required"]
            else:
                assert prop.get("type") == "string" and prop.get("pattern") == ID_PATTERN, f"{name}: {param}"
        else:
            # {ids} taken from the items of the one array argument (update_contacts / shared_labels / responses)
            assert param == "ids", f"{name}: path parameter {param} has no property"
            lists = [key for key, value in props.items() if value.get("type") == "array"]
            assert len(lists) == 1, f"{name}: cannot tell where {{ids}} come from"
            items = props[lists[0]]
            assert lists[0] in schema["required"]
            assert items.get("minItems") == 1 and items.get("maxItems") == 50
            item = items["items"]
            assert "id" in item.get("required", [])
            assert item["properties"]["id"].get("type") == "string"
            assert item["properties"]["id"].get("pattern") == ID_PATTERN


def test_resource_id_fields_use_the_id_pattern():
    """I1 spot checks: fields holding Missive resource ids are Ids; Message-IDs and external ids are not."""
    ids = {
        "missive_create_draft": ["organization", "team", "account", "conversation"],
        "missive_create_post": ["organization", "team", "conversation"],
        "missive_create_message": ["account", "conversation", "organization", "team"],
        "missive_list_conversations": ["shared_label", "team_inbox", "team_closed", "team_all", "organization",
                                       "contact_organization"],
        "missive_list_tasks": ["organization", "team", "assignee", "conversation"],
        "missive_merge_conversations": ["target_conversation_id"],
        "missive_list_contacts": ["contact_book"],
    }
    for name, fields in ids.items():
        props = m.TOOLS[name].schema["properties"]
        for field in fields:
            assert props[field].get("pattern") == ID_PATTERN, f"{name}.{field}"
    for name, field in (("missive_create_draft", "add_assignees"), ("missive_create_post", "add_shared_labels"),
                        ("missive_create_task", "assignees")):
        assert m.TOOLS[name].schema["properties"][field]["items"].get("pattern") == ID_PATTERN
    not_ids = [("missive_list_messages", "email_message_id"), ("missive_create_message", "external_id")]
    for name, field in not_ids:
        assert m.TOOLS[name].schema["properties"][field].get("pattern") != ID_PATTERN, f"{name}.{field}"
    refs = m.TOOLS["missive_create_draft"].schema["properties"]["references"]["items"]
    assert refs.get("pattern") != ID_PATTERN


# Parameters marked "env" in the spec: required only after the env fallback, so never in the schema's required.
ENV_REQUIRED = [
    ("missive_list_contacts", None, "contact_book"),
    ("missive_list_contact_groups", None, "contact_book"),
    ("missive_create_message", None, "account"),
    ("missive_create_contacts", "contacts", "contact_book"),
    ("missive_create_shared_labels", "shared_labels", "organization"),
    ("missive_create_teams", "teams", "organization"),
    ("missive_create_responses", "responses", "organization"),
]


@pytest.mark.parametrize("name, items, field", ENV_REQUIRED)
def test_env_filled_parameters_are_not_schema_required(name, items, field):
    schema = m.TOOLS[name].schema
    target = schema["properties"][items]["items"] if items else schema
    assert field in target["properties"]
    assert field not in target.get("required", [])


def test_fixed_length_pair_is_portable():
    """S1b: business_hours.t[].s is an array of exactly two integers, written without prefixItems."""
    for name in ("missive_create_teams", "missive_update_teams"):
        team = m.TOOLS[name].schema["properties"]["teams"]["items"]
        pair = team["properties"]["business_hours"]["properties"]["t"]["items"]["properties"]["s"]
        assert pair["type"] == "array" and pair["minItems"] == 2 and pair["maxItems"] == 2
        assert pair["items"]["type"] == "integer"


def test_create_draft_cannot_express_sending():
    never = {"send", "send_at", "auto_followup", "external_response_id", "external_response_variables"}
    schema = m.TOOLS["missive_create_draft"].schema
    names = {prop_name for _path, prop_name, _prop in named_properties(schema)}
    assert not names & never
    assert not set(schema.get("required", [])) & never
    assert schema["additionalProperties"] is False


def test_no_tool_reaches_a_forbidden_endpoint():
    for name, tool in m.TOOLS.items():
        if tool.route is None:
            continue
        method, path = tool.route.split()
        assert method in ("GET", "POST", "PATCH"), name
        assert not path.startswith(("/hooks", "/analytics")), name
        if method == "POST":
            assert path != "/drafts" or name == "missive_create_draft"


def test_write_schemas_output_is_stable(tmp_path):
    """Deterministic output: two runs give identical bytes, each file is JSON with a final newline."""
    first, second = tmp_path / "a", tmp_path / "b"
    written = m.write_schemas(str(first))
    m.write_schemas(str(second))
    assert len(written) == 37
    for path in sorted(first.iterdir()):
        data = path.read_bytes()
        assert data == (second / path.name).read_bytes()
        assert data.endswith(b"\n") and b"\r\n" not in data
        loaded = json.loads(data)
        assert loaded["name"] + ".json" == path.name
    assert sorted(os.listdir(first)) == sorted(n + ".json" for n in SPEC)


# ---- the request section: what each tool sends, reviewed in the same diff --------------------------------------------

# tool-surface.md §1.8, by hand: which MISSIVE_DEFAULT_* values a tool may put into what it sends.
DEFAULTS_SENT = {
    "missive_list_contacts": {"CONTACT_BOOK"}, "missive_list_contact_groups": {"CONTACT_BOOK"},
    "missive_create_contacts": {"CONTACT_BOOK"},
    **{name: {"ORGANIZATION"} for name in ("missive_list_conversations", "missive_list_shared_labels",
                                            "missive_list_teams", "missive_list_users", "missive_list_responses",
                                            "missive_list_tasks", "missive_create_shared_labels", "missive_create_teams",
                                            "missive_create_responses")},
    "missive_create_draft": {"ORGANIZATION", "TEAM", "FROM_ADDRESS", "FROM_NAME"},
    "missive_create_post": {"ORGANIZATION", "TEAM"}, "missive_create_message": {"ORGANIZATION", "TEAM", "ACCOUNT"},
    "missive_update_conversations": {"ORGANIZATION", "TEAM"}, "missive_create_task": {"ORGANIZATION", "TEAM"},
}


@pytest.mark.parametrize("name", ALL)
def test_snapshot_names_every_default_a_tool_may_send(name):
    rules = " ".join(m.TOOLS[name].snapshot()["request"].get("rules", []))
    named = set(re.findall(r"MISSIVE_DEFAULT_([A-Z_]+)", rules))
    assert named == DEFAULTS_SENT.get(name, set()), name


@pytest.mark.parametrize("name", ALL)
def test_snapshot_request_shows_where_every_argument_goes(name):
    tool, request = m.TOOLS[name], m.TOOLS[name].snapshot()["request"]
    if tool.route is None:
        assert request == {"sends": "nothing: answered locally"}
        return
    body = request.get("body", [])
    sent = request.get("query", []) + (next(iter(body.values())) if isinstance(body, dict) else body)
    placed = set(sent) | set(request.get("local_only", [])) | set(request.get("path", {}))
    assert placed == set(tool.params) - ({"ids"} if tool.ids_from else set()) | set(request.get("path", {})), name
    for rule in tool.rules:
        assert rule.says.strip() and rule.says in request["rules"]
    for step in tool.steps:
        assert step.says.strip() and all(route in step.says or route in " ".join(request["steps"])
                                         for route in step.reads)


def test_snapshot_shows_the_refused_keys_and_renamed_ones():
    draft = m.TOOLS["missive_create_draft"].snapshot()["request"]["rules"]
    assert any(line.startswith("refused: send, send_at, auto_followup") and "never sends" in line for line in draft)
    merge = m.TOOLS["missive_merge_conversations"].snapshot()["request"]["rules"]
    assert "target_conversation_id is sent as target" in merge
    conversations = m.TOOLS["missive_list_conversations"].snapshot()["request"]["rules"]
    assert any(line.endswith(": sent only when true") and "inbox" in line for line in conversations)


# ---- the module reads in one sitting: the figures the audit issue sets ----------------------------------------------

SOURCE = (REPO / "missive_mcp.py").read_text(encoding="utf-8")
MODULE = __import__("ast").parse(SOURCE)


def test_the_tool_table_starts_in_the_first_fifth_of_the_file():
    lines = SOURCE.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("def tool_rows("))
    assert start / len(lines) <= 0.2, f"the table starts at line {start + 1} of {len(lines)}"


def test_sections_come_in_the_auditors_order():
    banners = [line[2:] for previous, line in zip(SOURCE.splitlines(), SOURCE.splitlines()[1:])
               if previous.startswith("# ----") and not line.startswith("# ----")]
    order = ["Constants", "Errors", "Configuration", "The tool table", "Rules beside", "Steps beside",
             "One tool call", "The HTTP chokepoint", "The rate budget", "MCP wiring", "Help text", "Command line",
             "Appendix"]
    assert [next(o for o in order if b.startswith(o)) for b in banners if any(b.startswith(o) for o in order)] == order


@pytest.mark.parametrize("name", ALL)
def test_every_route_appears_literally_in_the_source(name):
    """grep for a path finds its tool: no route is built by string formatting."""
    route = m.TOOLS[name].route
    if route is not None:
        assert f'route="{route}"' in SOURCE, route


def test_every_public_function_class_and_method_has_a_docstring():
    import ast

    missing, scopes = [], [MODULE, *(node for node in MODULE.body if isinstance(node, ast.ClassDef))]
    for scope in scopes:  # the module's functions and classes, and the methods of its classes (not closures)
        for node in scope.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                    not node.name.startswith("_") and not (ast.get_docstring(node) or "").strip():
                missing.append(f"{node.name} (line {node.lineno})")
    assert missing == []


def test_no_code_outside_the_table_branches_on_a_tool_name():
    """Behaviour that belongs to one tool is a column or a rule of its row, never `if name == ...`."""
    import ast

    found = []
    for node in ast.walk(MODULE):
        if isinstance(node, (ast.Compare, ast.Subscript, ast.Dict)):
            for leaf in ast.walk(node):
                if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str) and \
                        leaf.value.startswith("missive_") and leaf.value[8:].isidentifier() and leaf.value in m.TOOLS:
                    found.append(f"{leaf.value} (line {leaf.lineno})")
    assert found == []
