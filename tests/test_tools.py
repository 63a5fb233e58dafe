"""The request table: what every tool sends to Missive, and how its answer is shaped.

One case per request shape (at least one per API tool): the tool, its arguments, the MISSIVE_DEFAULT_* values in
effect, and the exact method, path (after /v1, percent-encoded as sent), query and JSON body Missive must receive.
Adding a row to missive_mcp.TOOLS without a case here fails `test_every_tool_has_a_case`.
"""

import json
import logging
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from responses import matchers

import missive_mcp as m
from conftest import API, TOKEN, call, make_config, text

# ---- realistic answers (missive-api.md §4 and §8) -------------------------------------------------------------------

ORG_ID = "41c7e0d2-9a3b-4c5d-8e6f-7a8b9c0d1e02"
TEAM_ID = "6e1a2b3c-4d5e-4f60-9a1b-2c3d4e5f6a03"
USER_ID = "b5c6d7e8-f901-4a2b-8c3d-4e5f6a7b8c04"
CONV_ID = "9d2f4c1a-5b6e-4f70-8a91-2c3d4e5f6a01"
MSG_ID = "e7f8a9b0-c1d2-4e3f-9a4b-5c6d7e8f9a06"
BOOK_ID = "8b9c0d1e-2f3a-4b4c-9d5e-6f7a8b9c0d09"
LABEL_ID = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e05"
CONTACT_ID = "3a4b5c6d-7e8f-4091-a2b3-c4d5e6f7a808"
RESPONSE_ID = "d2e3f4a5-b6c7-4d8e-9f0a-1b2c3d4e5f12"
TASK_ID = "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c11"

CONVERSATION = {
    "id": CONV_ID, "created_at": 1721900000, "last_activity_at": 1721911800, "subject": None,
    "latest_message_subject": "Re: Broken hinge on order 5531",
    "organization": {"id": ORG_ID, "name": "Northwind Outfitters"},
    "team": {"id": TEAM_ID, "name": "Returns", "organization": ORG_ID}, "color": "warning",
    "assignees": [{"id": USER_ID, "name": "Priya Natarajan", "email": "priya@northwind.test", "unassigned": False,
                   "closed": False, "archived": False, "assigned": True, "flagged": False}],
    "attachments_count": 2, "messages_count": 4, "drafts_count": 1, "send_later_messages_count": 0,
    "authors": [{"name": "Tomás Ruiz", "address": "tomas.ruiz@example.net"}],
    "shared_labels": [{"id": LABEL_ID, "name": "Warranty"}], "closed_at": None,
    "web_url": f"https://mail.missiveapp.com/#inbox/conversations/{CONV_ID}",
}
MESSAGE = {
    "id": MSG_ID, "type": "email", "subject": "Re: Broken hinge on order 5531",
    "preview": "Photos attached. The left hinge snapped…",
    "body": '<div dir="ltr"><p>Photos attached. The left hinge snapped.</p></div>',
    "draft": False, "delivered_at": 1721911800, "created_at": 1721911800, "updated_at": 1721911800,
    "email_message_id": "<CAB7x9q2@mail.example.net>", "references": ["<ret-5531-0@northwind.test>"],
    "from_field": {"name": "Tomás Ruiz", "address": "tomas.ruiz@example.net"},
    "to_fields": [{"name": "Returns", "address": "returns@northwind.test"}], "cc_fields": [], "bcc_fields": [],
    "attachments": [{"id": "0f1e2d3c-4b5a-4697-8887-a6b5c4d3e207", "filename": "hinge.jpg", "size": 284113}],
    "author": None, "external_id": None, "conversation": {"id": CONV_ID, "subject": None},
}
LISTED_MESSAGE = {key: value for key, value in MESSAGE.items() if key != "body"}  # list endpoints omit bodies
CONTACT = {
    "id": CONTACT_ID, "contact_book": BOOK_ID, "first_name": "Tomás", "last_name": "Ruiz", "middle_name": None,
    "notes": "Prefers email", "starred": True, "deleted": False, "modified_at": 1721800000,
    "infos": [{"kind": "email", "label": "personal", "value": "tomas.ruiz@example.net"},
              {"kind": "phone_number", "label": "mobile", "value": "+34600111222"}],
    "memberships": [{"title": "Buyer", "department": "Procurement", "location": None,
                     "group": {"id": "5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e10", "kind": "organization",
                               "name": "Ruiz Ciclos SL"}}],
}
TASK = {
    "id": TASK_ID, "title": "Ship replacement hinge", "description": "Order 5531, left side", "state": "in_progress",
    "type": "task", "due_at": 1722200000, "started_at": 1721912000, "closed_at": None, "last_activity_at": 1721912000,
    "assignees": [{"id": USER_ID, "name": "Priya Natarajan", "email": "priya@northwind.test"}],
    "team": {"id": TEAM_ID, "name": "Returns", "organization": ORG_ID}, "conversation": None,
}
SAMPLES = {
    "conversations": CONVERSATION,
    "messages": LISTED_MESSAGE,
    "comments": {"id": "cm1", "body": "Checked stock: 3 hinges left", "created_at": 1721911900,
                 "author": {"id": USER_ID, "name": "Priya Natarajan"}},
    "drafts": {**LISTED_MESSAGE, "id": "dr1", "draft": True, "delivered_at": 1721912100},
    "posts": {"id": "po1", "markdown": "**Refund approved**", "created_at": 1721912200},
    "contacts": CONTACT,
    "contact_books": {"id": BOOK_ID, "name": "Customers", "description": None, "user": None, "organization": ORG_ID,
                      "share_with_organization": True, "share_with_team": None, "share_with_users": []},
    "contact_groups": {"id": "5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e10", "name": "Ruiz Ciclos SL",
                       "kind": "organization"},
    "shared_labels": {"id": LABEL_ID, "name": "Warranty", "name_with_parent_names": "Support/Warranty",
                      "organization": ORG_ID, "color": "#E0A030", "share_with_organization": True,
                      "share_with_team": None, "share_with_users": [], "visibility": "organization"},
    "teams": {"id": TEAM_ID, "name": "Returns", "organization": ORG_ID, "active_members": [USER_ID],
              "observers": []},
    "users": {"id": USER_ID, "name": "Priya Natarajan", "email": "priya@northwind.test",
              "avatar_url": "https://avatars.example/priya.png", "me": True},
    "organizations": {"id": ORG_ID, "name": "Northwind Outfitters"},
    "responses": {"id": RESPONSE_ID, "title": "Warranty: photos needed", "subject": "Your warranty request",
                  "body": "<p>Hi {{first_name}}, could you send two photos?</p>", "organization": ORG_ID,
                  "user": None, "share_with_team": None, "shared_labels": [], "external_id": None,
                  "modified_at": 1721000000},
    "tasks": {**TASK, "assignees": [USER_ID]},  # list items carry assignee ids
}
# Endpoints that answer with one object under the envelope key, not an array (missive-api.md §4).
OBJECT_REPLIES = {
    "missive_create_draft": {"drafts": {"id": "dr2", "conversation": CONV_ID}},
    "missive_create_post": {"posts": {"id": "po2", "conversation": CONV_ID}},
    "missive_create_message": {"messages": {**LISTED_MESSAGE, "type": "custom_text"}},
    "missive_get_task": {"tasks": TASK},
    "missive_create_task": {"tasks": TASK},
    "missive_update_task": {"tasks": TASK},
}


def reply_for(tool_name: str, args: dict) -> dict:
    """What Missive answers to this call, shaped per missive-api.md §4."""
    if tool_name in OBJECT_REPLIES:
        return OBJECT_REPLIES[tool_name]
    if tool_name == "missive_get_message":  # one id: an object; several: an array
        ids = args["message_ids"]
        return {"messages": MESSAGE if len(ids) == 1 else [{**MESSAGE, "id": i} for i in ids]}
    tool = m.TOOLS[tool_name]
    key = tool.paging[1] if tool.paging else tool.path.split("/")[1]
    return {key: [SAMPLES[key]]}


# Tools whose message bodies are turned into readable text (client-side shaping, never sent).
BODY_TOOLS = {"missive_get_message", "missive_list_messages", "missive_list_conversation_drafts"}


def dropped(value):
    """The documented omission rule, written independently: drop null/false/""/[] keys, keep array elements."""
    if isinstance(value, dict):
        return {k: dropped(v) for k, v in value.items() if v is not None and v is not False and v != "" and v != []}
    if isinstance(value, list):
        return [dropped(v) for v in value]
    return value


# ---- the table --------------------------------------------------------------------------------------------------

ENV = {"ORGANIZATION": "org-env", "TEAM": "team-env", "CONTACT_BOOK": "book-env", "ACCOUNT": "acct-env",
       "FROM_ADDRESS": "returns@northwind.test", "FROM_NAME": "Northwind Returns"}
ATTACHMENT = {"base64_data": "aGVsbG8=", "filename": "hello.txt"}

# (tool, args, env defaults, method, path after /v1, query or None, JSON body or None)
CASES = [
    # --- contacts ---
    ("missive_list_contacts", {"contact_book": BOOK_ID}, {},
     "GET", "/contacts", {"contact_book": BOOK_ID}, None),
    ("missive_list_contacts",  # env fill, every param, 10.0 sent as 10, a false boolean sent as "false"
     {"search": "Tomás Ruiz", "order": "last_modified", "limit": 10.0, "offset": 20, "modified_since": 1721800000,
      "include_deleted": False}, {"CONTACT_BOOK": "book-env"},
     "GET", "/contacts", {"contact_book": "book-env", "search": "Tomás Ruiz", "order": "last_modified", "limit": "10",
                          "offset": "20", "modified_since": "1721800000", "include_deleted": "false"}, None),
    ("missive_list_contacts", {"contact_book": "book-arg", "include_deleted": True, "modified_since": 0}, ENV,
     "GET", "/contacts", {"contact_book": "book-arg", "include_deleted": "true", "modified_since": "0"}, None),
    ("missive_get_contact", {"contact_id": CONTACT_ID}, ENV,
     "GET", f"/contacts/{CONTACT_ID}", None, None),
    ("missive_create_contacts",  # per-item contact_book fill; an item's own book is kept
     {"contacts": [{"first_name": "Tomás", "last_name": "Ruiz", "starred": False,
                    "infos": [{"kind": "email", "label": "personal", "value": "tomas.ruiz@example.net"}],
                    "memberships": [{"group": {"kind": "organization", "name": "Ruiz Ciclos SL"}, "title": "Buyer"}]},
                   {"contact_book": "book-own", "first_name": "Ana"}]},
     {"CONTACT_BOOK": "book-env"},
     "POST", "/contacts", None,
     {"contacts": [{"contact_book": "book-env", "first_name": "Tomás", "last_name": "Ruiz", "starred": False,
                    "infos": [{"kind": "email", "label": "personal", "value": "tomas.ruiz@example.net"}],
                    "memberships": [{"group": {"kind": "organization", "name": "Ruiz Ciclos SL"}, "title": "Buyer"}]},
                   {"contact_book": "book-own", "first_name": "Ana"}]}),
    ("missive_update_contacts",  # batch ids from items, in item order; no env contact_book on update
     {"contacts": [{"id": "c2", "notes": "VIP"}, {"id": "c1", "infos": []}]}, ENV,
     "PATCH", "/contacts/c2,c1", None, {"contacts": [{"id": "c2", "notes": "VIP"}, {"id": "c1", "infos": []}]}),
    ("missive_list_contact_books", {}, ENV,
     "GET", "/contact_books", None, None),
    ("missive_list_contact_books", {"limit": 200, "offset": 0}, {},
     "GET", "/contact_books", {"limit": "200", "offset": "0"}, None),
    ("missive_list_contact_groups", {"kind": "organization", "limit": 5}, {"CONTACT_BOOK": "book-env"},
     "GET", "/contact_groups", {"contact_book": "book-env", "kind": "organization", "limit": "5"}, None),
    # --- conversations ---
    ("missive_list_conversations",  # mailbox booleans only when true; E5 organization from env
     {"inbox": True, "closed": False, "all": False, "flagged": True, "limit": 25.0, "until": 1721911800},
     {"ORGANIZATION": "org-env"},
     "GET", "/conversations", {"inbox": "true", "flagged": "true", "organization": "org-env", "limit": "25",
                               "until": "1721911800"}, None),
    ("missive_list_conversations",  # no env organization: the key is omitted
     {"team_inbox": TEAM_ID, "email": "tomas.ruiz@example.net"}, {},
     "GET", "/conversations", {"team_inbox": TEAM_ID, "email": "tomas.ruiz@example.net"}, None),
    ("missive_list_conversations",  # a passed organization beats the env
     {"shared_label": LABEL_ID, "organization": "org-arg", "domain": "example.net"}, ENV,
     "GET", "/conversations", {"shared_label": LABEL_ID, "organization": "org-arg", "domain": "example.net"}, None),
    ("missive_list_conversations", {"team_closed": "t1", "team_all": "t2", "contact_organization": "co1"}, {},
     "GET", "/conversations", {"team_closed": "t1", "team_all": "t2", "contact_organization": "co1"}, None),
    ("missive_get_conversation", {"conversation_id": CONV_ID}, ENV,
     "GET", f"/conversations/{CONV_ID}", None, None),
    ("missive_update_conversations",  # path in ids order, items in caller order; env only where E2/E3 need it
     {"ids": ["c2", "c1"],
      "conversations": [{"id": "c1", "close": True, "subject": "Hinge", "add_users": []},
                        {"id": "c2", "add_assignees": [USER_ID], "add_to_team_inbox": True, "reopen": False}]},
     ENV,
     "PATCH", "/conversations/c2,c1", None,
     {"conversations": [{"id": "c1", "close": True, "subject": "Hinge", "add_users": []},
                        {"id": "c2", "add_assignees": [USER_ID], "add_to_team_inbox": True, "reopen": False,
                         "organization": "org-env", "team": "team-env"}]}),
    ("missive_update_conversations",  # passed organization/team kept; add_to_team_inbox false needs no team
     {"ids": ["c1"], "conversations": [{"id": "c1", "add_shared_labels": [LABEL_ID], "organization": "org-arg",
                                        "add_to_team_inbox": False, "color": "good"}]}, ENV,
     "PATCH", "/conversations/c1", None,
     {"conversations": [{"id": "c1", "add_shared_labels": [LABEL_ID], "organization": "org-arg",
                         "add_to_team_inbox": False, "color": "good"}]}),
    ("missive_merge_conversations",  # the one unwrapped body, target renamed
     {"source_conversation_id": "src1", "target_conversation_id": "tgt1", "subject": "Hinge (merged)"}, ENV,
     "POST", "/conversations/src1/merge", None, {"target": "tgt1", "subject": "Hinge (merged)"}),
    ("missive_list_conversation_messages", {"conversation_id": CONV_ID, "limit": 5, "until": 1721911800}, ENV,
     "GET", f"/conversations/{CONV_ID}/messages", {"limit": "5", "until": "1721911800"}, None),
    ("missive_list_conversation_comments", {"conversation_id": CONV_ID, "limit": 10.0}, {},
     "GET", f"/conversations/{CONV_ID}/comments", {"limit": "10"}, None),
    ("missive_list_conversation_drafts", {"conversation_id": CONV_ID}, {},
     "GET", f"/conversations/{CONV_ID}/drafts", None, None),
    ("missive_list_conversation_posts", {"conversation_id": CONV_ID, "until": 0}, {},
     "GET", f"/conversations/{CONV_ID}/posts", {"until": "0"}, None),
    # --- messages, drafts, posts ---
    ("missive_get_message",  # body_format / max_body_chars shape the result, never sent
     {"message_ids": ["m1", "m2", "m3"], "body_format": "html", "max_body_chars": 100}, {},
     "GET", "/messages/m1,m2,m3", None, None),
    ("missive_get_message", {"message_ids": [MSG_ID]}, {},
     "GET", f"/messages/{MSG_ID}", None, None),
    ("missive_list_messages", {"email_message_id": "<CAB7x9q2@mail.example.net>"}, ENV,
     "GET", "/messages", {"email_message_id": "<CAB7x9q2@mail.example.net>"}, None),
    ("missive_create_message",  # account from env; E4 injects organization and team
     {"from_field": {"id": "cust-42", "username": "tomas", "name": "Tomás Ruiz"},
      "to_fields": [{"id": "shop", "name": "Northwind"}], "body": "Is my hinge shipped?",
      "delivered_at": 1721911800.0, "references": ["<chat-42@northwind.test>"], "external_id": "chat-42-1"},
     {"ACCOUNT": "acct-env", "ORGANIZATION": "org-env", "TEAM": "team-env"},
     "POST", "/messages", None,
     {"messages": {"account": "acct-env", "organization": "org-env", "team": "team-env",
                   "from_field": {"id": "cust-42", "username": "tomas", "name": "Tomás Ruiz"},
                   "to_fields": [{"id": "shop", "name": "Northwind"}], "body": "Is my hinge shipped?",
                   "delivered_at": 1721911800, "references": ["<chat-42@northwind.test>"],
                   "external_id": "chat-42-1"}}),
    ("missive_create_message",  # passed values beat every default
     {"account": "acct-arg", "organization": "org-arg", "team": "team-arg", "from_field": {"address": "a@x.test"},
      "add_shared_labels": [LABEL_ID], "add_to_team_inbox": True, "attachments": [ATTACHMENT]}, ENV,
     "POST", "/messages", None,
     {"messages": {"account": "acct-arg", "organization": "org-arg", "team": "team-arg",
                   "from_field": {"address": "a@x.test"}, "add_shared_labels": [LABEL_ID],
                   "add_to_team_inbox": True, "attachments": [ATTACHMENT]}}),
    ("missive_create_draft",  # from_field from FROM_ADDRESS + FROM_NAME; E4 organization/team; no quote key
     {"subject": "Re: Broken hinge", "body": "<p>We are sending a new hinge.</p>",
      "to_fields": [{"address": "tomas.ruiz@example.net", "name": "Tomás Ruiz"}], "conversation": CONV_ID}, ENV,
     "POST", "/drafts", None,
     {"drafts": {"subject": "Re: Broken hinge", "body": "<p>We are sending a new hinge.</p>",
                 "to_fields": [{"address": "tomas.ruiz@example.net", "name": "Tomás Ruiz"}], "conversation": CONV_ID,
                 "from_field": {"address": "returns@northwind.test", "name": "Northwind Returns"},
                 "organization": "org-env", "team": "team-env"}}),
    ("missive_create_draft",  # a passed from_field wins; quote_previous_message false is still sent
     {"body": "hi", "from_field": {"phone_number": "+15550100", "type": "twilio"},
      "to_fields": [{"phone_number": "+34600111222"}], "quote_previous_message": False}, ENV,
     "POST", "/drafts", None,
     {"drafts": {"body": "hi", "from_field": {"phone_number": "+15550100", "type": "twilio"},
                 "to_fields": [{"phone_number": "+34600111222"}], "quote_previous_message": False,
                 "organization": "org-env", "team": "team-env"}}),
    ("missive_create_draft",  # FROM_ADDRESS alone; no env organization/team, none invented; no account from env
     {"body": "hi", "references": ["<ret-5531-1@northwind.test>"], "quote_previous_message": True,
      "cc_fields": [{"address": "ops@northwind.test"}], "attachments": [ATTACHMENT]},
     {"FROM_ADDRESS": "returns@northwind.test", "ACCOUNT": "acct-env"},
     "POST", "/drafts", None,
     {"drafts": {"body": "hi", "references": ["<ret-5531-1@northwind.test>"], "quote_previous_message": True,
                 "cc_fields": [{"address": "ops@northwind.test"}], "attachments": [ATTACHMENT],
                 "from_field": {"address": "returns@northwind.test"}}}),
    ("missive_create_draft",  # FROM_NAME without FROM_ADDRESS is ignored
     {"body": "hi"}, {"FROM_NAME": "Northwind Returns"},
     "POST", "/drafts", None, {"drafts": {"body": "hi"}}),
    ("missive_create_post",  # E4 injection even though no rule needs it
     {"conversation": CONV_ID, "markdown": "**Refund approved**", "reopen": False,
      "notification": {"title": "Refund", "body": "Approved"}}, ENV,
     "POST", "/posts", None,
     {"posts": {"conversation": CONV_ID, "markdown": "**Refund approved**", "reopen": False,
                "notification": {"title": "Refund", "body": "Approved"},
                "organization": "org-env", "team": "team-env"}}),
    ("missive_create_post",  # attachments only; Ts 1.7e9 as float sent as int; no env
     {"attachments": [{"title": "Order 5531", "timestamp": 1721911800.0,
                       "fields": [{"title": "Status", "value": "Shipped", "short": True}]}],
      "username": "Bot", "add_users": [USER_ID], "organization": "org-arg"}, {},
     "POST", "/posts", None,
     {"posts": {"attachments": [{"title": "Order 5531", "timestamp": 1721911800,
                                 "fields": [{"title": "Status", "value": "Shipped", "short": True}]}],
                "username": "Bot", "add_users": [USER_ID], "organization": "org-arg"}}),
    # --- shared labels ---
    ("missive_list_shared_labels", {}, {"ORGANIZATION": "org-env"},
     "GET", "/shared_labels", {"organization": "org-env"}, None),
    ("missive_list_shared_labels", {"limit": 1}, {},
     "GET", "/shared_labels", {"limit": "1"}, None),
    ("missive_create_shared_labels",
     {"shared_labels": [{"name": "Warranty", "color": "#E0A030", "share_with_organization": True},
                        {"name": "Urgent", "organization": "org-own", "visibility": "delegates"}]},
     {"ORGANIZATION": "org-env"},
     "POST", "/shared_labels", None,
     {"shared_labels": [{"name": "Warranty", "color": "#E0A030", "share_with_organization": True,
                         "organization": "org-env"},
                        {"name": "Urgent", "organization": "org-own", "visibility": "delegates"}]}),
    ("missive_update_shared_labels",  # no organization injected (Missive rejects it)
     {"shared_labels": [{"id": "l1", "name": "Warranty 2"}, {"id": "l2", "parent": "l1"}]}, ENV,
     "PATCH", "/shared_labels/l1,l2", None,
     {"shared_labels": [{"id": "l1", "name": "Warranty 2"}, {"id": "l2", "parent": "l1"}]}),
    # --- teams, users, organizations ---
    ("missive_list_teams", {"organization": "org-arg", "limit": 50}, ENV,
     "GET", "/teams", {"organization": "org-arg", "limit": "50"}, None),
    ("missive_list_teams", {"offset": 0}, {"ORGANIZATION": "org-env", "TEAM": "team-env"},
     "GET", "/teams", {"organization": "org-env", "offset": "0"}, None),
    ("missive_create_teams",  # per-item organization fill; nested integers 0.0 / 3600.0 sent as ints
     {"teams": [{"name": "Returns", "emoji": ":dart:", "active_members": [USER_ID],
                 "business_hours": {"tz": "Europe/Madrid", "t": [{"d": 1.0, "s": [32400.0, 61200]}]},
                 "inactivity_period": 3600.0, "team_inbox_enabled": True},
                {"name": "Billing", "organization": "org-own"}]},
     {"ORGANIZATION": "org-env"},
     "POST", "/teams", None,
     {"teams": [{"name": "Returns", "emoji": ":dart:", "active_members": [USER_ID],
                 "business_hours": {"tz": "Europe/Madrid", "t": [{"d": 1, "s": [32400, 61200]}]},
                 "inactivity_period": 3600, "team_inbox_enabled": True, "organization": "org-env"},
                {"name": "Billing", "organization": "org-own"}]}),
    ("missive_update_teams",  # path in ids order; no organization from env
     {"ids": ["t2", "t1"], "teams": [{"id": "t1", "name": "Returns EU"}, {"id": "t2", "chat_room_enabled": False}]},
     ENV,
     "PATCH", "/teams/t2,t1", None,
     {"teams": [{"id": "t1", "name": "Returns EU"}, {"id": "t2", "chat_room_enabled": False}]}),
    ("missive_list_users", {}, {"ORGANIZATION": "org-env"},
     "GET", "/users", {"organization": "org-env"}, None),
    ("missive_list_organizations", {"offset": 50}, ENV,
     "GET", "/organizations", {"offset": "50"}, None),
    # --- responses ---
    ("missive_list_responses", {}, {},
     "GET", "/responses", None, None),
    ("missive_list_responses", {"limit": 20}, {"ORGANIZATION": "org-env"},
     "GET", "/responses", {"organization": "org-env", "limit": "20"}, None),
    ("missive_get_response", {"response_id": RESPONSE_ID}, ENV,
     "GET", f"/responses/{RESPONSE_ID}", None, None),
    ("missive_create_responses",  # organization filled only when neither organization nor user is given
     {"responses": [{"title": "Photos needed", "body": "<p>Send photos</p>"},
                    {"title": "Mine", "user": USER_ID},
                    {"title": "Theirs", "organization": "org-own", "external_id": "wa-1",
                     "external_source": "whatsapp", "attachments": [{**ATTACHMENT, "id": "tmp1"}]}]},
     {"ORGANIZATION": "org-env"},
     "POST", "/responses", None,
     {"responses": [{"title": "Photos needed", "body": "<p>Send photos</p>", "organization": "org-env"},
                    {"title": "Mine", "user": USER_ID},
                    {"title": "Theirs", "organization": "org-own", "external_id": "wa-1",
                     "external_source": "whatsapp", "attachments": [{**ATTACHMENT, "id": "tmp1"}]}]}),
    ("missive_update_responses",
     {"responses": [{"id": RESPONSE_ID, "subject": "Your warranty request", "shared_labels": [LABEL_ID]}]}, ENV,
     "PATCH", f"/responses/{RESPONSE_ID}", None,
     {"responses": [{"id": RESPONSE_ID, "subject": "Your warranty request", "shared_labels": [LABEL_ID]}]}),
    # --- tasks ---
    ("missive_list_tasks",  # E5 organization; MISSIVE_DEFAULT_TEAM is not used here
     {"state": "todo", "type": "all", "assignee": USER_ID, "due_at_gteq": 0, "due_at_lteq": 1722200000.0,
      "limit": 2, "until": 1721912000}, ENV,
     "GET", "/tasks", {"organization": "org-env", "state": "todo", "type": "all", "assignee": USER_ID,
                       "due_at_gteq": "0", "due_at_lteq": "1722200000", "limit": "2", "until": "1721912000"}, None),
    ("missive_list_tasks", {"team": "team-arg", "conversation": CONV_ID}, {},
     "GET", "/tasks", {"team": "team-arg", "conversation": CONV_ID}, None),
    ("missive_get_task", {"task_id": TASK_ID}, ENV,
     "GET", f"/tasks/{TASK_ID}", None, None),
    ("missive_create_task",  # assignees make organization required: filled from env
     {"title": "Ship replacement hinge", "assignees": [USER_ID], "due_at": 1722200000}, {"ORGANIZATION": "org-env"},
     "POST", "/tasks", None,
     {"tasks": {"title": "Ship replacement hinge", "assignees": [USER_ID], "due_at": 1722200000,
                "organization": "org-env"}}),
    ("missive_create_task",  # nothing requires organization: it is not sent
     {"title": "Check stock", "subtask": True, "conversation": CONV_ID, "assignees": []}, {"ORGANIZATION": "org-env"},
     "POST", "/tasks", None,
     {"tasks": {"title": "Check stock", "subtask": True, "conversation": CONV_ID, "assignees": []}}),
    ("missive_create_task",  # env team injected, which makes organization required: filled from env
     {"title": "Call back", "state": "todo", "add_to_inbox": False}, {"ORGANIZATION": "org-env", "TEAM": "team-env"},
     "POST", "/tasks", None,
     {"tasks": {"title": "Call back", "state": "todo", "add_to_inbox": False, "team": "team-env",
                "organization": "org-env"}}),
    ("missive_create_task",  # passed team/organization win
     {"title": "Refund", "team": "team-arg", "organization": "org-arg", "references": ["<ret-5531-0@northwind.test>"],
      "subtask": True, "add_users": [USER_ID], "description": "x" * 10000}, ENV,
     "POST", "/tasks", None,
     {"tasks": {"title": "Refund", "team": "team-arg", "organization": "org-arg",
                "references": ["<ret-5531-0@northwind.test>"], "subtask": True, "add_users": [USER_ID],
                "description": "x" * 10000}}),
    ("missive_update_task",  # assignees [] is sent (clears); no env team
     {"task_id": TASK_ID, "assignees": [], "state": "closed", "due_at": 1722200000.0}, ENV,
     "PATCH", f"/tasks/{TASK_ID}", None, {"tasks": {"assignees": [], "state": "closed", "due_at": 1722200000}}),
    ("missive_update_task", {"task_id": "tk_1-A"}, {},  # nothing but the id is passed through (S9)
     "PATCH", "/tasks/tk_1-A", None, {"tasks": {}}),
]


def _case_id(case):
    return f"{case[0].removeprefix('missive_')}-{CASES.index(case)}"


def test_every_tool_has_a_case():
    """A new row in TOOLS cannot ship without a request case."""
    api_tools = {name for name, tool in m.TOOLS.items() if tool.route is not None}
    assert api_tools == set(m.TOOLS) - {"missive_help"}
    assert len(api_tools) == 36
    composite = {name for name, tool in m.TOOLS.items() if tool.composite}
    assert composite == {"missive_read_conversation"}  # several requests per call: tests/test_conversations.py
    missing = api_tools - composite - {case[0] for case in CASES}
    assert not missing, f"tools without a case in CASES: {sorted(missing)}"


def test_cases_agree_with_the_table():
    for tool_name, _args, _env, method, path, query, body in CASES:
        tool = m.TOOLS[tool_name]
        assert tool.method == method, tool_name
        assert (body is not None) == (method != "GET"), tool_name
        assert query is None or method == "GET", tool_name


def _diagnose(api) -> str:
    """When a matcher refused the request, show what was actually sent."""
    if not api.calls:
        return "no request was sent"
    request = api.calls[0].request
    return f"sent {request.method} {request.url} body={request.body!r}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_request(api, case):
    tool_name, args, env, method, path, query, body = case
    if m.TOOLS[tool_name].view is not None:  # the pass-through is checked in Missive's own shape; views are
        args = {**args, "view": "full"}      # checked against hand-written results in test_conversations.py
    reply = reply_for(tool_name, args)
    match = [matchers.query_param_matcher(query or {}, strict_match=True)]
    if body is not None:
        match.append(matchers.json_params_matcher(body, strict_match=True))
    api.add(method, API + path, json=reply, status=201 if method == "POST" else 200, match=match)

    result = call(tool_name, args, make_config(defaults=env))

    assert not result.is_error, f"{text(result)}\n{_diagnose(api)}"
    assert len(api.calls) == 1
    request = api.calls[0].request
    assert request.method == method
    sent = urlsplit(request.url)
    assert sent.path == "/v1" + path  # percent-encoded exactly as sent
    assert parse_qs(sent.query, keep_blank_values=True) == {k: [v] for k, v in (query or {}).items()}
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == f"missive-mcp/{m.__version__}"
    if body is None:
        assert request.body is None
        assert "Content-Type" not in request.headers
    else:
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(request.body) == body
    timeout = request.req_kwargs["timeout"]  # every call has a timeout
    assert timeout is not None and all(t is not None and t > 0 for t in timeout)

    shaped = json.loads(text(result))
    shaped.pop("next_page", None)
    expected = dropped(reply)
    if tool_name in BODY_TOOLS:  # bodies are reshaped for reading (tested below); everything else passes through
        for message in _messages(shaped) + _messages(expected):
            message.pop("body", None)
    assert shaped == expected


def _messages(result: dict) -> list:
    """The items under a result's single envelope key, whether Missive sent one object or an array."""
    (items,) = result.values()
    return items if isinstance(items, list) else [items]


# ---- results --------------------------------------------------------------------------------------------------------

def _run(api, tool_name, args, reply, env=None, status=200, **kwargs):
    tool = m.TOOLS[tool_name]
    path = tool.path
    for name in tool.path_params:
        path = path.replace("{" + name + "}", args[name] if isinstance(args[name], str) else ",".join(args[name]))
    if isinstance(reply, (bytes, str)):
        api.add(tool.method, API + path, body=reply, status=status, **kwargs)
    else:
        api.add(tool.method, API + path, json=reply, status=status, **kwargs)
    result = call(tool_name, args, make_config(defaults=env or {}))
    assert not result.is_error, text(result)
    assert len(api.calls) == 1
    return text(result)


def _items(key, stamps, field):
    return {key: [{"id": f"i{n}", **({field: stamp} if stamp is not None else {})} for n, stamp in enumerate(stamps)]}


@pytest.mark.parametrize("tool_name, args, count, env, expected", [
    ("missive_list_contacts", {"contact_book": "b1", "limit": 2, "offset": 4}, 2, {},
     {"contact_book": "b1", "limit": 2, "offset": 6}),
    ("missive_list_contacts", {"limit": 2}, 3, {"CONTACT_BOOK": "book-env"},  # env-filled values excluded
     {"limit": 2, "offset": 2}),
    ("missive_list_organizations", {}, 50, {}, {"offset": 50}),  # API default limit 50
    ("missive_list_users", {"offset": 50}, 50, {"ORGANIZATION": "org-env"}, {"offset": 100}),
    ("missive_list_contact_groups", {"kind": "group", "contact_book": "b1", "limit": 1}, 1, {},
     {"kind": "group", "contact_book": "b1", "limit": 1, "offset": 1}),
    ("missive_list_organizations", {}, 49, {}, None),  # short page
    ("missive_list_teams", {"limit": 10, "offset": 10}, 9, {}, None),
], ids=lambda v: None)
def test_next_page_on_offset_lists(api, tool_name, args, count, env, expected):
    key = m.TOOLS[tool_name].paging[1]
    out = json.loads(_run(api, tool_name, args, {key: [{"id": f"x{n}"} for n in range(count)]}, env))
    assert out.get("next_page") == expected


@pytest.mark.parametrize("tool_name, args, stamps, env, expected", [
    ("missive_list_conversations", {"inbox": True, "limit": 3}, [300, 100, 200], {},
     {"inbox": True, "limit": 3, "until": 100}),  # min of the cursor field, not minus 1
    ("missive_list_conversations", {"inbox": True, "limit": 2, "until": 100}, [100, 100], {},
     {"inbox": True, "limit": 2, "until": 99}),  # stuck on one timestamp: minus 1
    ("missive_list_conversations", {"inbox": True, "limit": 2, "until": 500}, [100, 100], {},
     {"inbox": True, "limit": 2, "until": 100}),
    ("missive_list_conversations", {"inbox": True}, [1000 - n for n in range(25)], {"ORGANIZATION": "org-env"},
     {"inbox": True, "until": 976}),  # API default 25; env organization excluded
    ("missive_list_conversations", {"inbox": True}, [1000 - n for n in range(24)], {}, None),  # short page
    ("missive_list_conversations", {"inbox": True, "limit": 3}, [None, None, None], {}, None),  # no cursor field
    ("missive_list_conversations", {"inbox": True, "limit": 3}, [None, 50, 70], {},
     {"inbox": True, "limit": 3, "until": 50}),  # items without the field are skipped
    ("missive_list_conversation_messages", {"conversation_id": "c1"}, list(range(10, 20)), {},
     {"conversation_id": "c1", "until": 10}),  # sub-list default 10, delivered_at
    ("missive_list_conversation_comments", {"conversation_id": "c1", "limit": 2}, [5, 7], {},
     {"conversation_id": "c1", "limit": 2, "until": 5}),  # created_at
    ("missive_list_conversation_drafts", {"conversation_id": "c1", "limit": 2}, [9, 8, 7], {},
     {"conversation_id": "c1", "limit": 2, "until": 7}),  # more items than the limit
    ("missive_list_conversation_posts", {"conversation_id": "c1"}, list(range(9)), {}, None),
    ("missive_list_tasks", {"state": "todo"}, list(range(100, 125)), {"ORGANIZATION": "org-env"},
     {"state": "todo", "until": 100}),  # effective limit 25, last_activity_at
    ("missive_list_tasks", {"limit": 2}, [None, None], {}, None),
], ids=lambda v: None)
def test_next_page_on_cursor_lists(api, tool_name, args, stamps, env, expected):
    tool = m.TOOLS[tool_name]
    _kind, key, _default, field = tool.paging
    out = json.loads(_run(api, tool_name, args, _items(key, stamps, field), env))
    assert out.get("next_page") == expected


def test_lists_without_paging_never_get_next_page(api):
    out = json.loads(_run(api, "missive_list_messages", {"email_message_id": "<a@b>"},
                          {"messages": [{"id": f"m{n}", "delivered_at": n} for n in range(60)]}))
    assert "next_page" not in out


def test_empty_values_are_dropped_at_every_depth(api):
    reply = {"contacts": [{"id": "c1", "middle_name": None, "starred": False, "notes": "", "infos": [], "zero": 0,
                           "true": True, "empty_object": {},
                           "nested": {"a": None, "b": [None, False, "", [], 0], "c": {"d": False, "e": "x"}}}],
             "meta": None}
    out = json.loads(_run(api, "missive_get_contact", {"contact_id": "c1"}, reply))
    assert out == {"contacts": [{"id": "c1", "zero": 0, "true": True, "empty_object": {},
                                 "nested": {"b": [None, False, "", [], 0], "c": {"e": "x"}}}]}


def test_result_is_compact_json(api):
    raw = _run(api, "missive_list_users", {}, {"users": [SAMPLES["users"], {**SAMPLES["users"], "id": "u2",
                                                                            "name": "Tomás Ruiz", "me": False}]})
    assert raw == json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False)
    assert ", " not in raw and '": ' not in raw and "\n" not in raw
    assert "Tomás" in raw  # not \u00e1


@pytest.mark.parametrize("tool_name, args, status", [
    ("missive_create_draft", {"body": "hi"}, 201),
    ("missive_create_draft", {"body": "hi"}, 200),
    ("missive_create_post", {"text": "note", "conversation": "c1"}, 201),
    ("missive_update_task", {"task_id": "t1", "state": "closed"}, 200),
    ("missive_update_task", {"task_id": "t1", "state": "closed"}, 204),
    ("missive_get_contact", {"contact_id": "c1"}, 200),
    ("missive_list_users", {}, 200),
])
def test_empty_success_body(api, tool_name, args, status):
    raw = _run(api, tool_name, args, b"", status=status)
    assert raw == '{"ok":true,"status":%d,"note":"Missive returned no body"}' % status


@pytest.mark.parametrize("tool_name, args, status", [
    ("missive_create_post", {"markdown": "x"}, 201),
    ("missive_create_draft", {"subject": "Hello", "body": "Draft body"}, 201),
    ("missive_update_task", {"task_id": "task-1", "title": "New title"}, 200),
])
def test_non_json_success_body_to_a_write_is_ok_with_preview(api, tool_name, args, status):
    """A read that got no JSON is an error (test_errors.py); a write that did is not: it happened."""
    page = "<html><body>" + "Saved. " * 60 + "</body></html>"
    raw = _run(api, tool_name, args, page, status=status, content_type="text/html")
    assert json.loads(raw) == {"ok": True, "status": status, "note": "Missive returned a non-JSON body",
                               "preview": page[:200]}
    assert raw == json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False)


# ---- missive_help ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("topic", m.HELP_TOPICS)
def test_help_topic_works_without_token_or_network(api, topic):
    result = call("missive_help", {"topic": topic}, make_config(token=None))
    assert not result.is_error, text(result)
    assert text(result).startswith("#") and len(text(result)) > 40  # Markdown, not JSON
    assert len(api.calls) == 0


def test_help_tools_topic_names_every_tool(api):
    listing = text(call("missive_help", {"topic": "tools"}, make_config(token=None)))
    assert len(m.TOOLS) == 37
    for name in m.TOOLS:
        assert f"`{name}`" in listing, name
    assert len(api.calls) == 0


@pytest.mark.parametrize("args", [None, {}])
def test_help_default_topic_is_index(api, args):
    config = make_config(token=None)
    default = call("missive_help", args, config)
    assert not default.is_error
    assert text(default) == text(call("missive_help", {"topic": "index"}, config))
    assert m.__version__ in text(default)
    for topic in m.HELP_TOPICS[1:]:
        assert topic in text(default)
    assert len(api.calls) == 0


def test_help_rejects_unknown_topic(api):
    result = call("missive_help", {"topic": "secrets"}, make_config(token=None))
    assert result.is_error
    assert text(result).startswith("Invalid arguments for missive_help:\ntopic: ")
    assert len(api.calls) == 0


# ---- message bodies (get_message body_format / max_body_chars are local shaping) -------------------------------------

HTML_BODY = MESSAGE["body"]


@pytest.mark.parametrize("tool_name, args, reply", [
    ("missive_get_message", {"message_ids": [MSG_ID]}, {"messages": MESSAGE}),
    ("missive_get_message", {"message_ids": [MSG_ID, "m2"], "body_format": "text"},
     {"messages": [MESSAGE, {**MESSAGE, "id": "m2"}]}),
    ("missive_list_messages", {"email_message_id": "<CAB7x9q2@mail.example.net>"}, {"messages": [MESSAGE]}),
    ("missive_list_conversation_drafts", {"conversation_id": CONV_ID}, {"drafts": [{**MESSAGE, "draft": True}]}),
], ids=["get_one", "get_several", "list_messages", "list_drafts"])
def test_html_bodies_are_readable_text_by_default(api, tool_name, args, reply):
    out = json.loads(_run(api, tool_name, args, reply))
    for message in _messages(out):
        assert "Photos attached. The left hinge snapped." in message["body"]
        assert "<p>" not in message["body"] and "<div" not in message["body"]


def test_body_format_html_keeps_the_html(api):
    out = json.loads(_run(api, "missive_get_message", {"message_ids": [MSG_ID], "body_format": "html"},
                          {"messages": MESSAGE}))
    assert out["messages"]["body"] == HTML_BODY


def test_max_body_chars_cuts_each_body(api):
    out = json.loads(_run(api, "missive_get_message",
                          {"message_ids": [MSG_ID], "body_format": "html", "max_body_chars": 12},
                          {"messages": MESSAGE}))
    body = out["messages"]["body"]
    assert body.startswith(HTML_BODY[:12])
    assert HTML_BODY[12:40] not in body


# ---- logging: one info line per call, never argument values ----------------------------------------------------

def test_info_log_has_one_line_per_call_with_status_duration_and_retries_but_no_arguments(api, caplog):
    caplog.set_level(logging.INFO, logger="missive_mcp")
    api.add(responses.GET, f"{API}/contacts", status=503, body="busy")
    api.add(responses.GET, f"{API}/contacts", json={"contacts": []})
    assert not call("missive_list_contacts", {"contact_book": "book-1", "search": "needle-4711"}).is_error
    call("missive_list_contacts", {"contact_book": "book-1", "bogus": "needle-4711"})  # invalid: no request
    lines = [record.getMessage() for record in caplog.records if record.name == "missive_mcp"]
    assert len(lines) == 2, lines
    assert re.fullmatch(r"tool=missive_list_contacts status=200 duration_ms=\d+ retries=1", lines[0]), lines[0]
    assert re.fullmatch(r"tool=missive_list_contacts status=- duration_ms=\d+ retries=0", lines[1]), lines[1]
    assert "needle-4711" not in caplog.text and "book-1" not in caplog.text


# ---- text from Missive never carries invisible characters, in any result shape ---------------------------------------

# Characters a person cannot see, one of each kind: zero-width, bidi override and isolate, a Unicode tag, the BOM,
# a soft hyphen, a variation-selector run and a C0 control.
INVISIBLE = "\u200b\u202e\u2066\U000E0041\ufeff\u00ad\ufe0f\ufe0f\U000E0101\x1b"


def _plant(value):
    """Every string of a reply (keys too) with the invisible characters inside it."""
    if isinstance(value, str):
        return value[:1] + INVISIBLE + value[1:]
    if isinstance(value, dict):
        return {_plant(key): _plant(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plant(item) for item in value]
    return value


VIEWS = [pytest.param(case, view, id=f"{_case_id(case)}-{view}") for case in CASES
         for view in (("compact", "full") if m.TOOLS[case[0]].view is not None else (None,))]


@pytest.mark.parametrize("case, view", VIEWS)
def test_no_invisible_character_reaches_the_model_in_any_result(api, case, view):
    tool_name, args, env, method, path, _query, _body = case
    if view is not None:
        args = {**args, "view": view}
    api.add(method, API + path, json=_plant(reply_for(tool_name, args)), status=201 if method == "POST" else 200)
    result = call(tool_name, args, make_config(defaults=env))
    assert not result.is_error, text(result)
    shown = text(result)
    assert not any(c in shown for c in INVISIBLE if c != "\ufe0f"), [c for c in INVISIBLE if c in shown]
    assert "\ufe0f\ufe0f" not in shown  # a run of variation selectors (data smuggling) never survives


def test_no_invisible_character_reaches_the_model_in_an_error(api):
    api.add("GET", f"{API}/users", status=422, json={"error": f"bad{INVISIBLE}value"})
    shown = text(call("missive_list_users", {}))
    assert not any(c in shown for c in INVISIBLE), shown
    assert '"badvalue"' in shown
