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

