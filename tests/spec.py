"""Independent oracles shared by several test files.

Everything here is written by hand from the specification (tool-surface.md, missive-api.md) or read off the
fixtures, and deliberately NOT derived from missive_mcp: a test compares the module against these values, so a
change in the module cannot quietly change what the tests expect. Keep it that way; when the specification
changes, change this file by hand. Test files import from here, never from one another.
"""

# tool-surface.md §1.9, copied by hand: name -> (route, annotation profile, title). Not derived from the module.
SPEC = {
    "missive_list_contacts": ("GET /contacts", "READ", "List contacts"),
    "missive_get_contact": ("GET /contacts/{contact_id}", "READ", "Get a contact"),
    "missive_create_contacts": ("POST /contacts", "CREATE", "Create contacts"),
    "missive_update_contacts": ("PATCH /contacts/{ids}", "DESTRUCTIVE-IDEM", "Update contacts"),
    "missive_list_contact_books": ("GET /contact_books", "READ", "List contact books"),
    "missive_list_contact_groups": ("GET /contact_groups", "READ", "List contact groups"),
    "missive_list_conversations": ("GET /conversations", "READ", "List conversations"),
    "missive_get_conversation": ("GET /conversations/{conversation_id}", "READ", "Get a conversation"),
    # issue "Beyond the 36": one new read tool; its other routes are listed in its snapshot's request section.
    "missive_read_conversation": ("GET /conversations/{conversation_id}", "READ", "Read a whole conversation"),
    "missive_update_conversations": ("PATCH /conversations/{ids}", "UPDATE", "Update conversations"),
    "missive_merge_conversations": ("POST /conversations/{source_conversation_id}/merge", "DESTRUCTIVE",
                                    "Merge two conversations"),
    "missive_list_conversation_messages": ("GET /conversations/{conversation_id}/messages", "READ",
                                           "List a conversation's messages"),
    "missive_list_conversation_comments": ("GET /conversations/{conversation_id}/comments", "READ",
                                           "List a conversation's comments"),
    "missive_list_conversation_drafts": ("GET /conversations/{conversation_id}/drafts", "READ",
                                         "List a conversation's drafts"),
    "missive_list_conversation_posts": ("GET /conversations/{conversation_id}/posts", "READ",
                                        "List a conversation's posts"),
    "missive_get_message": ("GET /messages/{message_ids}", "READ", "Get messages"),
    "missive_list_messages": ("GET /messages", "READ", "Find messages by Message-ID"),
    "missive_create_message": ("POST /messages", "CREATE", "Create a custom-channel message"),
    "missive_create_draft": ("POST /drafts", "CREATE", "Create a draft (never sends)"),
    "missive_create_post": ("POST /posts", "DESTRUCTIVE", "Create a post"),
    "missive_list_shared_labels": ("GET /shared_labels", "READ", "List shared labels"),
    "missive_create_shared_labels": ("POST /shared_labels", "CREATE", "Create shared labels"),
    "missive_update_shared_labels": ("PATCH /shared_labels/{ids}", "UPDATE", "Update shared labels"),
    "missive_list_teams": ("GET /teams", "READ", "List teams"),
    "missive_create_teams": ("POST /teams", "CREATE", "Create teams"),
    "missive_update_teams": ("PATCH /teams/{ids}", "UPDATE", "Update teams"),
    "missive_list_users": ("GET /users", "READ", "List users"),
    "missive_list_organizations": ("GET /organizations", "READ", "List organizations"),
    "missive_list_responses": ("GET /responses", "READ", "List canned responses"),
    "missive_get_response": ("GET /responses/{response_id}", "READ", "Get a canned response"),
    "missive_create_responses": ("POST /responses", "CREATE", "Create canned responses"),
    "missive_update_responses": ("PATCH /responses/{ids}", "DESTRUCTIVE-IDEM", "Update canned responses"),
    "missive_list_tasks": ("GET /tasks", "READ", "List tasks"),
    "missive_get_task": ("GET /tasks/{task_id}", "READ", "Get a task"),
    "missive_create_task": ("POST /tasks", "CREATE", "Create a task"),
    "missive_update_task": ("PATCH /tasks/{task_id}", "DESTRUCTIVE-IDEM", "Update a task"),
    "missive_help": (None, "HELP", "Missive MCP help"),
}

# tool-surface.md §1.7: readOnlyHint, destructiveHint, idempotentHint, openWorldHint.
PROFILES = {
    "READ": (True, False, True, True),
    "CREATE": (False, False, False, True),
    "UPDATE": (False, False, True, True),
    "DESTRUCTIVE": (False, True, False, True),
    "DESTRUCTIVE-IDEM": (False, True, True, True),
    "HELP": (True, False, True, False),
}
HINT_NAMES = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")


def expected_annotations(name: str) -> dict:
    _route, profile, title = SPEC[name]
    return {"title": title, **dict(zip(HINT_NAMES, PROFILES[profile]))}


# The tools MISSIVE_READ_ONLY=1 keeps: readOnlyHint true in §1.7 (missive_help included).
READ_TOOLS = frozenset(name for name, (_route, profile, _title) in SPEC.items() if PROFILES[profile][0])


# The 12-message thread of tests/fixtures/thread (fake_missive.THREAD_ID): one distinctive sentence of each
# message's own text, oldest first (read off the fixtures by hand).
NEW_TEXT = [
    "six tents have cracked pole sections",
    "Could you send me the lot number",
    "five are lot RL-2405-118",
    "Both lots come from the same supplier batch",
    "We have 9 complete pole sets",
    "My replies are inline below in blue",
    "Marcus shipped the six pole sets at 13:10",
    "Could you send a credit note for the express freight",
    "ask billing this morning",
    "The credit note CN-7702-01 for EUR 38.50 is attached",
    "one bag contains the poles of the Ridgeline 3P",
    "we really need the last 4P pole set by Wednesday 31 July",
]


# ---- MISSIVE_API_URL and MISSIVE_API_TOKEN (tool-surface.md, configuration) --------------------------------------
# One table each, used by the in-process checks (test_security.py) and by the command-line exit-status check
# (test_cli.py), so a case added here is checked everywhere. Bad values are named after the attack or the mistake.

BAD_API_URLS = {
    # the token would cross the network in clear
    "plain_http_to_missive": "http://public.missiveapp.com/v1",
    "plain_http_to_another_host": "http://missive.test/v1",
    "http_to_a_loopback_address_not_allowed": "http://127.0.0.2/v1",
    "http_to_a_private_address": "http://10.0.0.1/v1",
    "http_to_a_host_named_like_localhost": "http://localhost.evil.test/v1",
    "http_to_a_name_resolving_to_loopback": "http://127.0.0.1.nip.io/v1",
    "http_with_localhost_as_user_info": "http://localhost@evil.test/v1",
    # user-info: credentials in the URL, or a host that is not the one it looks like
    "user_and_password": "https://user:pw@missive.test/v1",
    "user_and_password_on_missive": "https://user:secret@public.missiveapp.com/v1",
    "user_only": "https://user@missive.test/v1",
    "empty_user_info": "https://@missive.test/v1",
    "empty_user_info_on_missive": "https://@public.missiveapp.com/v1",
    # a query or fragment ends the path: requests would go to ".../v1?/users" (GET /v1)
    "query_with_a_token": "https://missive.test/v1?token=x",
    "query": "https://public.missiveapp.com/v1?x=1",
    "empty_query": "https://missive.test/v1?",
    "empty_query_on_missive": "https://public.missiveapp.com/v1?",
    "fragment": "https://missive.test/v1#frag",
    "fragment_on_missive": "https://public.missiveapp.com/v1#frag",
    "empty_fragment": "https://missive.test/v1#",
    "empty_fragment_on_missive": "https://public.missiveapp.com/v1#",
    # not an http(s) URL to a host
    "ftp": "ftp://missive.test/v1",
    "ftp_to_missive": "ftp://public.missiveapp.com/v1",
    "file": "file:///etc/passwd",
    "javascript": "javascript:alert(1)",
    "relative_path": "/v1",
    "no_scheme": "missive.test/v1",
    "no_scheme_missive": "public.missiveapp.com/v1",
    "scheme_relative": "//missive.test/v1",
    "no_host": "https:///v1",
    "not_a_url": "not a url",
    # parsers disagree, or nothing listens
    "unclosed_ipv6_bracket": "http://[::1/v1",
    "port_out_of_range": "https://public.missiveapp.com:99999/v1",
    "port_not_a_number": "https://public.missiveapp.com:port/v1",
    "port_zero": "https://public.missiveapp.com:0/v1",
    "backslash_in_the_host": "https://evil.example\\.missiveapp.com/v1",
    "space_in_the_path": "https://public.missiveapp.com/v 1",
}

# name -> (value, what Config.from_env keeps); each is also checked with blanks around it.
GOOD_API_URLS = {
    "missive": ("https://public.missiveapp.com/v1", "https://public.missiveapp.com/v1"),
    "missive_trailing_slash": ("https://public.missiveapp.com/v1/", "https://public.missiveapp.com/v1"),
    "port_and_path_trailing_slash": ("https://missive.test:8443/api/v1/", "https://missive.test:8443/api/v1"),
    "proxy_with_port_and_path": ("https://proxy.example:8443/missive/v1", "https://proxy.example:8443/missive/v1"),
    "host_only": ("https://proxy.example.org", "https://proxy.example.org"),
    "blanks_around": ("  https://missive.test/v1  ", "https://missive.test/v1"),
    "http_to_loopback": ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
    "http_to_localhost": ("http://localhost/v1", "http://localhost/v1"),
    "http_to_localhost_trailing_slash": ("http://localhost/v1/", "http://localhost/v1"),
    "http_to_ipv6_loopback": ("http://[::1]:9000/v1", "http://[::1]:9000/v1"),
    "http_to_ipv6_loopback_trailing_slash": ("http://[::1]:9/v1/", "http://[::1]:9/v1"),
}

_PAT = "missive_pat-0123456789abcdef-test-token"  # well-formed (conftest.TOKEN); some cases add a mistake to it
# name -> (value, how the refusal reads after "MISSIVE_API_TOKEN ", parts of the value no message may show: the
# value is never echoed, not even in part). Named after what the character would do in an Authorization header.
BAD_TOKENS = {
    "space_splits_the_header": ("missive_pat-abc def", "contains", ("abc", "def")),
    "tab": ("missive_pat-abc\tdef", "contains", ("abc", "def")),
    "newline_injects_a_header": ("missive_pat-abc\ndef", "contains", ("abc", "def")),
    "nul_truncates_the_header": ("missive_pat-abc\x00def", "contains", ("abc", "def")),
    "terminal_colour_escape": ("missive_pat-abc\x1b[31mdef", "contains", ("abc", "def")),
    "delete_character": ("missive_pat-abc\x7fdef", "contains", ("abc", "def")),
    "zero_width_space": ("missive_pat-abc\u200bdef", "contains", ("abc", "def")),
    "no_break_space": ("missive_pat-abc\u00a0def", "contains", ("abc", "def")),
    "line_separator": ("missive_pat-abc\u2028def", "contains", ("abc", "def")),
    "non_ascii_letter": ("missive_pat-abc\u00e9def", "contains", ("abc", "def")),
    "short_with_a_newline": ("tok\nen", "contains", ("tok",)),
    "short_with_a_tab": ("a\tb", "contains", ()),
    "trailing_word": (_PAT + " extra", "contains", (_PAT, "extra")),
    "trailing_non_ascii_letter": (_PAT + "\u00e9", "contains", (_PAT,)),
    "trailing_clear_screen_escape": (_PAT + "\x1b[2J", "contains", (_PAT,)),
    "too_short_to_be_a_token": ("t", "is too short", ()),
}


def shows_part_of(message: str, hidden) -> list:
    """The parts of a refused token that a message shows ("tok" is looked for outside the word "token")."""
    return [part for part in hidden if part in (message.replace("token", "") if "token".startswith(part) else message)]
