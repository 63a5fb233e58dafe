"""Beyond the 36: a whole conversation in one call, the triage view, quoted history, and replies that thread.

Run against the fake Missive's realistic 12-message thread (tests/fixtures/thread/) and its 50-conversation inbox,
and against strict `responses` mocks where exact shapes are checked by hand-written expectations.
"""

import asyncio
import json

import pytest

import missive_mcp as m
from conftest import API, assert_linear, call, make_config, text
from fake_missive import THREAD_ID, FakeMissive
from spec import NEW_TEXT

COMMENT = "Hanna in billing is on it, reference INV-2024-0815."
POST = "Order #7702 partially refunded: EUR 38.50 (express freight), credit note CN-7702-01"


@pytest.fixture(scope="module")
def fake():
    """Overrides conftest's: one fake for the whole module, started once (tests reset it where they count requests)."""
    with FakeMissive() as server:
        yield server


@pytest.fixture
def run(fake, clients):
    """Call a tool against the fake with a fresh client; returns (result, parsed JSON or None)."""
    def invoke(tool, args, **config):
        result = call(tool, args, *clients(fake.url, token=fake.token, **config))
        try:
            return result, json.loads(text(result))
        except ValueError:
            return result, None

    return invoke


def read(run, **args):
    result, data = run("missive_read_conversation", {"conversation_id": THREAD_ID, **args})
    assert not result.is_error, text(result)
    return data


# ---- missive_read_conversation --------------------------------------------------------------------------------------

def test_read_conversation_is_one_call_with_every_entry_in_time_order(fake, run):
    fake.reset()
    data = read(run)
    timeline = data["timeline"]
    assert [entry["kind"] for entry in timeline].count("message") == 12
    assert [entry["kind"] for entry in timeline].count("comment") == 11
    assert [entry["kind"] for entry in timeline].count("post") == 3
    assert [entry["at"] for entry in timeline] == sorted(entry["at"] for entry in timeline)
    assert all(entry["at"].endswith("Z") and "T" in entry["at"] for entry in timeline)
    whole = text_of(data)
    for sentence in NEW_TEXT:
        assert sentence in whole, sentence
    assert COMMENT in whole and POST in whole
    assert "next_page" not in data and "omitted" not in data  # it all fit
    header = data["conversation"]
    assert header["id"] == THREAD_ID and header["url"].endswith(THREAD_ID)
    assert header["labels"] == ["Warranty", "VIP"] and header["team"] == "Returns"
    first = timeline[0]
    assert first["from"] == "Mei Lin <mei.lin@alpinesupply.example>"
    assert first["to"] == ["Returns <returns@northwind.test>"]
    assert first["attachments"][2] == "packing_slip_7702.pdf (application/pdf, 86 KB)"
    # conversation, messages (2 pages), comments (2 pages), posts, one batch read of the bodies
    routes = [(r.method, r.route.split("?")[0]) for r in fake.received()]
    assert routes.count(("GET", f"/messages/{','.join(e['id'] for e in timeline if e['kind'] == 'message')}")) == 1
    assert len(routes) <= 7 and all(method == "GET" for method, _ in routes)


def text_of(data) -> str:
    return "\n".join(entry.get("text", "") for entry in data["timeline"])


def test_read_conversation_drops_only_quoted_history_whose_source_it_shows(run):
    data = read(run)
    messages = [entry for entry in data["timeline"] if entry["kind"] == "message"]
    whole = text_of(data)
    for sentence in NEW_TEXT[6:]:  # each later message's own words appear once: no reply repeats them
        assert whole.count(sentence) == 1, sentence
    dropped = [entry for entry in messages if "[quoted history omitted: it repeats the message of" in entry["text"]]
    assert len(dropped) >= 9
    inline = messages[5]["text"]  # Mei answered inside the quote: that quote is not mere history, so it stays
    assert "[Mei] Yes please, option 1" in inline and "quoted history omitted" not in inline
    forward = messages[6]["text"]  # a forwarded mail from outside the thread stays
    assert "Forwarded message" in forward and "We confirm receipt of your damage claim FL-448812" in forward
    plain = messages[4]["text"]  # plain-text "> " quoting with the signature under the quote
    assert "> Thanks Julien" not in plain and "Warehouse & fulfilment" in plain


@pytest.mark.slow
def test_read_conversation_never_cuts_silently_and_next_page_reads_the_rest(run):
    seen, pages, args = [], 0, {"max_chars": 4000}
    while True:
        data = read(run, **args)
        pages += 1
        assert len(m._compact(data["timeline"])) <= 4000 + 3000  # the budget, give or take one entry
        seen = [entry["id"] for entry in data["timeline"]] + seen
        if "next_page" not in data:
            assert "omitted" not in data
            break
        assert "call again with next_page" in data["omitted"]
        args = {key: value for key, value in data["next_page"].items() if key != "conversation_id"}
        assert pages < 20
    assert pages > 2
    assert set(seen) == set(read(run)["timeline"][i]["id"] for i in range(26))  # nothing was skipped


def test_same_timestamp_entries_past_a_page_are_named_never_cut_silently(fake, run):
    """Thirteen messages share one second (a sender's fixed Date, an integration's delivered_at): Missive's until
    is inclusive, so no page can reach past the first 10 of them. The result says so instead of dropping three."""
    second = 1721643600
    fake.add_message("<p>filler 0</p>", delivered_at=second)
    conversation = fake.data["conversations"][-1]["id"]
    for n in range(1, 12):
        fake.add_message(f"<p>filler {n}</p>", conversation_id=conversation, delivered_at=second)
    fake.add_message("<p>LEGIT: please refund order 7702</p>", conversation_id=conversation, delivered_at=second)
    fake.add_message("<p>an older message</p>", conversation_id=conversation, delivered_at=second - 3600)
    result, data = run("missive_read_conversation", {"conversation_id": conversation})
    assert not result.is_error, text(result)
    assert [entry["at"] for entry in data["timeline"]] == ["2024-07-22T09:20:00Z"] + ["2024-07-22T10:20:00Z"] * 10
    assert data["missing"] == ("some messages at 2024-07-22T10:20:00Z may be missing: more than 10 share that second "
                               "and Missive's paging cannot reach past the first 10 of them")
    assert "next_page" not in data  # nothing a later call could read: the note is the whole truth


def test_no_missing_note_when_a_second_holds_fewer_than_a_page(fake, run):
    second = 1721643600
    fake.add_message("<p>one</p>", delivered_at=second)
    conversation = fake.data["conversations"][-1]["id"]
    for n in range(12):
        fake.add_message(f"<p>at its own second {n}</p>", conversation_id=conversation, delivered_at=second - 5 + n % 5)
    result, data = run("missive_read_conversation", {"conversation_id": conversation})
    assert len(data["timeline"]) == 13 and "missing" not in data


def test_read_conversation_cuts_a_long_body_and_says_how_to_read_it(fake, run):
    body = "<p>" + " ".join(f"word{n}" for n in range(30000)) + "</p>"
    conversation = fake.data["conversations"][0]["id"]
    message = fake.add_message(body, conversation_id=conversation)
    result, data = run("missive_read_conversation", {"conversation_id": conversation, "include": ["messages"]})
    assert not result.is_error, text(result)
    entry = next(entry for entry in data["timeline"] if entry["id"] == message)
    assert len(entry["text"]) < 12000
    assert "cut at 10,000 characters; missive_get_message reads it whole]" in entry["text"]


def test_read_conversation_with_a_subset_reads_only_those_kinds(fake, run):
    fake.reset()
    data = read(run, include=["comments"])
    assert {entry["kind"] for entry in data["timeline"]} == {"comment"}
    assert not any("/messages" in r.route or "/posts" in r.route for r in fake.received())


def test_read_conversation_fails_as_a_whole_when_a_read_fails(fake, run):
    fake.inject("500", times=3, path_prefix=f"/conversations/{THREAD_ID}/comments")
    result, _ = run("missive_read_conversation", {"conversation_id": THREAD_ID})
    assert result.is_error
    assert text(result).startswith("Missive API error 500: ")


def test_read_conversation_refuses_an_id_from_a_hostile_answer(api):
    """A message id from Missive's answer goes into a URL path: it is checked like the model's own ids."""
    api.get(f"{API}/conversations/c1", json={"conversations": [{"id": "c1", "subject": "Hi"}]})
    api.get(f"{API}/conversations/c1/messages", json={"messages": [
        {"id": "../../hooks", "delivered_at": 100}, {"id": "ok-1", "delivered_at": 90}]})
    result = call("missive_read_conversation", {"conversation_id": "c1", "include": ["messages"]})
    assert result.is_error
    assert "an id that is not valid" in text(result)
    assert all("hooks" not in c.request.url for c in api.calls)


def test_a_step_can_only_get_the_routes_its_row_declares():
    call_ = m.Call(make_config(), None, m.TOOLS["missive_create_draft"], {}, {}, 0.0)
    with pytest.raises(AssertionError, match="does not declare"):
        asyncio.run(call_.get("GET /conversations/{conversation_id}", conversation_id="c1"))
    assert "GET /messages/{message_ids}" in m.TOOLS["missive_create_draft"].reads


# ---- quoted history ---------------------------------------------------------------------------------------------------

SPLITS = {  # text -> (new text, quoted history)
    "gmail": ("Thanks!\n\nOn Mon, 3 Jun 2024 at 10:02, Ann <ann@x.test> wrote:\n\n> Photos?\n>\n> Ann",
              "Thanks!", "On Mon, 3 Jun 2024 at 10:02, Ann <ann@x.test> wrote:\n\n> Photos?\n>\n> Ann"),
    "gmail_wrapped_attribution": ("Ok\n\nOn Mon, 3 Jun 2024 at 10:02, Ann Example <ann@example.test>\nwrote:\n> Hi",
                                  "Ok", "On Mon, 3 Jun 2024 at 10:02, Ann Example <ann@example.test>\nwrote:\n> Hi"),
    "french": ("Merci\n\nLe lun. 3 juin 2024 à 10:02, Ann <a@x.test> a écrit :\n> Bonjour", "Merci",
               "Le lun. 3 juin 2024 à 10:02, Ann <a@x.test> a écrit :\n> Bonjour"),
    "outlook_quoted_header": ("Sure\n\n> From: Ann <a@x.test>\n> Sent: Monday\n>\n> Lunch?", "Sure",
                              "> From: Ann <a@x.test>\n> Sent: Monday\n>\n> Lunch?"),
    "outlook_plain": ("Sure\n\n-----Original Message-----\nFrom: Ann\nSent: Monday\nTo: Bob\n\nLunch?", "Sure",
                      "-----Original Message-----\nFrom: Ann\nSent: Monday\nTo: Bob\n\nLunch?"),
    "signature_under_quote": ("Yes\n\nOn Mon, Ann wrote:\n> Q\n\n--\nBob\nWarehouse", "Yes\n\n--\nBob\nWarehouse",
                              "On Mon, Ann wrote:\n> Q"),
    "inline_answers": ("> Q1\nA1\n> Q2\nA2", "> Q1\nA1\n> Q2\nA2", ""),
    "no_quote": ("Just text\nand more", "Just text\nand more", ""),
    "forward_is_not_history": ("FYI\n\n---------- Forwarded message ---------\nFrom: Claims <c@x.test>\nDate: "
                               "Tue\nSubject: Claim\n\nDear customer", None, None),
}


@pytest.mark.parametrize("name", SPLITS)
def test_split_quoted_history(name):
    source, new, history = SPLITS[name]
    got_new, got_history = m.split_quoted_history(source)
    if new is None:  # a forward is kept whole, as new text
        assert got_new == source and got_history == ""
    else:
        assert (got_new, got_history) == (new, history)


MARCUS = {"name": "Marcus Bell", "address": "marcus@northwind.test"}
DANA = {"name": "Dana", "address": "dana@stranger.test"}
OURS = ("<p>Hi Dana,</p><p>As agreed, we will pay the invoice of 4,800 EUR within 30 days to your usual account at "
        "Northbank, once the 40 tent poles are delivered to our Lyon warehouse.</p><p>Best regards,<br>Marcus</p>")
# Outlook's header block over our message, as a stranger's reply would carry it (Monday 2024-07-22 09:20 UTC)
FRAME = ("<p>Thanks Marcus, confirmed.</p><div>From: Marcus Bell &lt;marcus@northwind.test&gt;<br>Sent: Monday, "
         "July 22, 2024 11:20 AM<br>To: Dana<br>Subject: Order 7702</div>")
QUOTED = OURS  # the quote: clients keep the HTML they quote
GMAIL = "<p>Thanks Marcus, confirmed.</p><div>On Mon, 22 Jul 2024 at 11:20, Marcus Bell wrote:</div>"
IBAN = "GB29EVIL60161331926819"


def reply_as_read(fake, run, reply: str) -> str:
    """Our message to Dana and her reply with this HTML body, read as one conversation: the reply's text."""
    fake.add_message(OURS, subject="Order 7702", delivered_at=1721640000, from_field=MARCUS, to_fields=[DANA])
    conversation = fake.data["conversations"][-1]["id"]
    answer = fake.add_message(reply, conversation_id=conversation, subject="Re: Order 7702", delivered_at=1721643600,
                              from_field=DANA, to_fields=[MARCUS])
    result, data = run("missive_read_conversation", {"conversation_id": conversation})
    assert not result.is_error, text(result)
    return next(entry["text"] for entry in data["timeline"] if entry["id"] == answer)


@pytest.mark.parametrize("reply", [FRAME + QUOTED, GMAIL + f"<blockquote>{QUOTED}</blockquote>"])
def test_an_honest_quote_under_its_own_header_is_left_out(fake, run, reply):
    """The baseline the attacks below depart from: the same reply, quoting us exactly, is trimmed."""
    assert reply_as_read(fake, run, reply) == (
        "Thanks Marcus, confirmed.\n[quoted history omitted: it repeats the message of 2024-07-22T09:20:00Z above]")


def test_an_altered_copy_posing_as_quoted_history_is_shown(fake, run):
    """A stranger quotes our message with a new IBAN in it: not a repeat, so the model sees the whole of it."""
    altered = FRAME + QUOTED.replace("to your usual account", f"to your NEW account IBAN {IBAN}")
    shown = reply_as_read(fake, run, altered)
    assert IBAN in shown and "quoted history omitted" not in shown


QUOTE_ATTACKS = {  # name -> the stranger's reply: each hides new or altered text inside an otherwise exact quote
    # a line that begins like a header field, inside the quote or in its header block
    "header_line_in_the_quote": FRAME + QUOTED + f"<p>To: accounts payable - URGENT: our bank changed, pay the 4,800 "
                                                 f"EUR today to IBAN {IBAN}</p>",
    "header_line_in_the_frame": FRAME.replace("To: Dana", f"To: Dana, accounts payable: pay IBAN {IBAN} today")
    + QUOTED,
    "subject_line_in_the_frame": FRAME.replace("Subject: Order 7702", "Subject: Order 7702 paid to new account")
    + QUOTED,
    "number_on_the_sent_line": FRAME.replace("11:20 AM", "11:20 AM 60161331926819") + QUOTED,
    # a line that looks like an attribution ('On ... wrote ...:'), after the quote or where an attribution goes
    "attribution_line_in_the_quote": FRAME + QUOTED + f"<p>On second thought the CEO wrote that you must pay IBAN "
                                                      f"{IBAN} immediately: do not wait for delivery</p>",
    "attribution_line_at_the_start": GMAIL.replace("wrote:", f"wrote, pay IBAN {IBAN} today:")
    + f"<blockquote>{QUOTED}</blockquote>",
    # words left out of, or added to, the quoted message
    "word_deletion": FRAME + QUOTED.replace("once the 40 tent poles are delivered to our Lyon warehouse",
                                            "once the tent poles are delivered"),
    "one_word_deleted": FRAME + QUOTED.replace("the 40 tent poles", "the tent poles"),
    "added_words": FRAME + QUOTED.replace("within 30 days", "within 30 days never"),
    "changed_punctuation": FRAME + QUOTED.replace("Northbank, once", "Northbank. Once"),
    # a "[...]" that cuts a sentence short, or leaves out the message's own words rather than its quoted history
    "elision_inside_a_paragraph": FRAME + QUOTED.split("within")[0] + "[...]</p>",
    "elision_of_its_own_paragraphs": FRAME + QUOTED.split("<p>Best regards")[0] + "<p>[...]</p>",
}


@pytest.mark.parametrize("attack", QUOTE_ATTACKS)
def test_quoted_header_line_cannot_hide_new_text(fake, run, attack):
    """Named after the first attack; each case is one way a quote could pose as a repeat while adding, changing or
    leaving out text: it is shown whole, never replaced by 'it repeats the message above'."""
    shown = reply_as_read(fake, run, QUOTE_ATTACKS[attack])
    assert "quoted history omitted" not in shown
    assert "Hi Dana," in shown


MONDAY = 1721640000  # Monday 2024-07-22 09:20:00 UTC
DANAS = {"from_field": {"name": "Dana"}, "to_fields": [{"name": "Marcus"}], "subject": "Order", "delivered_at": MONDAY}


def test_inline_answers_with_new_numbers_are_never_dropped_as_history():
    earlier = "Hi Marcus,\nCan you ship the 40 poles on Monday?\nIs the price still 4,800 EUR?\nThanks, Dana"
    answer = ("Answers inline below.\n\nFrom: Dana\nSent: Monday\nTo: Marcus\nSubject: Order\n\nHi Marcus,\n"
              "Can you ship the 40 poles on Monday? Friday\nIs the price still 4,800 EUR? 5,900\nThanks, Dana")
    _new, history = m.split_quoted_history(answer)
    assert history and m.quoted_source(history, [(earlier, DANAS)]) is None
    assert m.quoted_source(history.replace(" Friday", "").replace(" 5,900", ""), [(earlier, DANAS)]) == 0


@pytest.mark.parametrize("frame, repeats", [
    ("On Mon, 22 Jul 2024 at 11:20, Dana <dana@x.test> wrote:", True),  # Gmail, in the writer's time zone
    ("Le lun. 22 juil. 2024 à 09:20, Dana <dana@x.test> a écrit :", True),
    ("On Jul 22, 2024, at 9:20 PM, Dana wrote:", True),  # UTC+12
    ("On Mon, Jul 22, 2024 at 09:20:00AM +0000, Dana wrote:", True),
    ("From: Dana\nSent: Montag, 22. Juli 2024 11:20\nTo: Marcus\nSubject: AW: Order", True),
    ("On Mon, 22 Jul 2024 at 09:20, Dana <dana@elsewhere.test> wrote:", False),  # not its address
    ("On Mon, 22 Jul 2024 at 09:20, Dana Evil <dana@x.test> wrote:", False),  # not its name
    ("On Mon, 25 Jul 2024 at 09:20, Dana wrote:", False),  # not its day in any time zone
    ("On Mon, 22 Jul 2031 at 09:20, Dana wrote:", False),  # not its year
    ("On Mon, 22 Jul 2024 at 09:20, Dana wrote: pay 7702", False),  # 7702 is no part of its metadata
    ("On Mon, 22 Jul 2024 at 09:20, Dana wrote: ☎", False),
    ("From: Dana\nSent: Monday\nImportance: High\nTo: Marcus", False),
    ("From: Dana\nTo: " + "Marcus " * 200, False),  # a header line is short
])
def test_quoted_attribution_line_must_be_made_of_the_messages_own_metadata(frame, repeats):
    """A frame line may say only what the quoted message's own fields say: names, addresses, subject, its time."""
    earlier = "Hi Marcus,\nCan you ship the poles?\nThanks, Dana"
    message = {**DANAS, "from_field": {"name": "Dana", "address": "dana@x.test"}}
    quote = frame + "\n\n" + "\n".join("> " + line for line in earlier.split("\n"))
    assert (m.quoted_source(quote, [(earlier, message)]) == 0) is repeats


def test_quoted_signature_tail_is_the_only_thing_a_quote_may_leave_out():
    earlier = "Hi Dana,\n\nWe will not pay before delivery.\n\n--\nMarcus Bell\nWarehouse\nNorthwind"
    message = {**DANAS, "from_field": {"name": "Marcus Bell"}}
    quote = "On Mon, 22 Jul 2024 at 09:20, Marcus Bell wrote:\n" + "\n".join("> " + line for line in
                                                                             earlier.split("\n"))
    assert m.quoted_source(quote, [(earlier, message)]) == 0
    assert m.quoted_source(quote.replace("> Warehouse\n> Northwind", ""), [(earlier, message)]) == 0
    assert m.quoted_source(quote.replace("> --\n> Marcus Bell\n> Warehouse\n> Northwind", ""),
                           [(earlier, message)]) == 0
    assert m.quoted_source(quote.replace("> Marcus Bell\n", ""), [(earlier, message)]) is None  # not a tail
    assert m.quoted_source(quote.replace(" not", ""), [(earlier, message)]) is None


def test_quoted_elision_may_leave_out_only_the_quoted_messages_own_history():
    """A closing "[...]" (plain-text clients) may stand for whole paragraphs of the history the message quotes."""
    earlier = ("Hi Dana,\n\nWe will pay.\n\nOnly after delivery.\n\nOn Mon, 22 Jul 2024 at 09:20, Dana wrote:\n"
               "> Hi Marcus,\n>\n> Can you pay?\n>\n> Thanks, Dana\n\n--\nMarcus")
    message = {**DANAS, "from_field": {"name": "Marcus"}}
    frame = "On Mon, 22 Jul 2024 at 09:20, Marcus wrote:\n"
    quote = frame + "\n".join("> " + line for line in earlier.split("\n"))
    assert m.quoted_source(quote, [(earlier, message)]) == 0
    assert m.quoted_source(quote.split("> > Can you")[0] + "> > [...]", [(earlier, message)]) == 0
    assert m.quoted_source(quote.split("> Only")[0] + "> [...]", [(earlier, message)]) is None  # its own words
    assert m.quoted_source(quote.split("> > Thanks")[0] + "[...]\n> > Thanks, Dana", [(earlier, message)]) is None


def test_quoted_source_is_linear_on_a_hostile_quote():
    """Many frame-like lines and a long quote: each line is tokenised once, one message is compared."""
    earlier = "Some ordinary words in a line of a long message.\n" * 2000
    known = [(earlier, DANAS)] * 40
    hostile = ("> To: Marcus Dana Monday\n" * 20000) + "> " + earlier.replace("\n", "\n> ")
    ordinary = ("> " + earlier.replace("\n", "\n> ")) * 4
    assert_linear(lambda quote: m.quoted_source(quote, known), hostile, ordinary)


def test_split_quoted_history_is_linear_on_hostile_text():
    """Many attribution-like lines and quote markers: each line is looked at a bounded number of times."""
    hostile = ("On " + "x" * 290 + " wrote:\n>\n") * 20000
    ordinary = ("Some ordinary words in a line of a long message.\n") * (len(hostile) // 48)
    assert_linear(m.split_quoted_history, hostile, ordinary)


def test_get_message_can_drop_quoted_history(api):
    body = ('<div>Thanks, that works.</div><div class="gmail_quote"><div class="gmail_attr">On Mon, 3 Jun 2024 at '
            '10:02, Ann &lt;ann@x.test&gt; wrote:<br></div><blockquote class="gmail_quote">Can you send photos?'
            '</blockquote></div>')
    for _ in range(2):
        api.get(f"{API}/messages/m1", json={"messages": {"id": "m1", "body": body}})
    kept = json.loads(text(call("missive_get_message", {"message_ids": ["m1"]})))["messages"]["body"]
    dropped = json.loads(text(call("missive_get_message", {"message_ids": ["m1"], "quoted_history": "drop"})))
    assert "> Can you send photos?" in kept  # default: as today
    assert dropped["messages"]["body"] == ("Thanks, that works.\n[quoted history omitted (3 lines); quoted_history:"
                                           " keep shows it]")


def test_quoted_history_drop_needs_text_bodies(api):
    result = call("missive_get_message", {"message_ids": ["m1"], "quoted_history": "drop", "body_format": "html"})
    assert result.is_error and "quoted_history: applies to text bodies only" in text(result)
    assert len(api.calls) == 0


# ---- the triage view ----------------------------------------------------------------------------------------------------

LISTED = {
    "id": "c1", "created_at": 1721900000, "last_activity_at": 1721911800, "subject": None,
    "latest_message_subject": "Re: Broken hinge on order 5531",
    "organization": {"id": "org1", "name": "Northwind Outfitters"},
    "team": {"id": "team1", "name": "Returns", "organization": "org1"}, "color": "warning",
    "assignees": [{"id": "u1", "name": "Priya Natarajan", "email": "priya@northwind.test", "assigned": True,
                   "flagged": True, "closed": False}],
    "assignee_names": "Priya Natarajan", "assignee_emails": "priya@northwind.test",
    "users": [{"id": "u1", "name": "Priya Natarajan", "email": "priya@northwind.test", "assigned": True,
               "flagged": True, "closed": False},
              {"id": "u2", "name": "Marcus Bell", "email": "marcus@northwind.test", "archived": True}],
    "attachments_count": 2, "messages_count": 4, "drafts_count": 1, "send_later_messages_count": 0,
    "tasks_count": 2, "completed_tasks_count": 1,
    "authors": [{"name": "Tomás Ruiz", "address": "tomas.ruiz@example.net"}],
    "external_authors": [{"name": "Tomás Ruiz", "address": "tomas.ruiz@example.net"}],
    "shared_labels": [{"id": "l1", "name": "Warranty"}], "shared_label_names": "Warranty", "closed_at": None,
    "web_url": "https://mail.missiveapp.com/#inbox/conversations/c1",
    "app_url": "missive://mail.missiveapp.com/#inbox/conversations/c1",
}
TRIAGE = {  # written by hand: every fact once, nothing a person triaging needs is lost
    "id": "c1", "subject": "Re: Broken hinge on order 5531", "last_activity": "2024-07-25T12:50:00Z",
    "created": "2024-07-25T09:33:20Z", "team": "Returns", "labels": ["Warranty"], "color": "warning",
    "from": ["Tomás Ruiz <tomas.ruiz@example.net>"], "mine": ["assigned", "flagged"],
    "people": ["Marcus Bell (archived)"], "counts": "4 messages, 1 draft, 2 attachments, 1/2 tasks done",
}


def test_list_conversations_triage_view_states_each_fact_once(api, clients):
    api.get(f"{API}/users", json={"users": [{"id": "u1", "name": "Priya Natarajan", "me": True}]})
    api.get(f"{API}/conversations", json={"conversations": [LISTED, {"id": "g1", "last_activity_at": 1721911000}]})
    result = call("missive_list_conversations", {"inbox": True, "limit": 2}, *clients())  # learns the user
    data = json.loads(text(result))
    assert data["conversations"] == [TRIAGE, {"id": "g1", "last_activity": "2024-07-25T12:36:40Z"}]
    assert data["next_page"] == {"inbox": True, "limit": 2, "until": 1721911000}  # still Unix, from Missive's page


def test_list_conversations_full_view_is_missives_objects(api):
    api.get(f"{API}/conversations", json={"conversations": [LISTED]})
    data = json.loads(text(call("missive_list_conversations", {"inbox": True, "view": "full"})))
    assert data["conversations"][0]["web_url"] == LISTED["web_url"]
    assert data["conversations"][0]["assignee_names"] == "Priya Natarajan"


def test_triage_of_the_inbox_is_a_quarter_of_missives_page(fake, run):
    """Every id and subject, at a fraction of the bytes (the benchmark prints the figure)."""
    import requests

    raw = requests.get(f"{fake.url}/conversations", params={"inbox": "true", "limit": 50},
                       headers={"Authorization": f"Bearer {fake.token}"}, timeout=10).json()
    result, data = run("missive_list_conversations", {"inbox": True, "limit": 50})
    pretty = len(json.dumps(raw, indent=2, ensure_ascii=False).encode())
    assert len(text(result).encode()) <= 0.25 * pretty
    assert [c["id"] for c in data["conversations"]] == [c["id"] for c in raw["conversations"]]
    for listed, shown in zip(raw["conversations"], data["conversations"]):
        assert shown.get("subject") == (listed.get("subject") or listed.get("latest_message_subject"))


def test_conversation_messages_compact_view(api):
    api.get(f"{API}/conversations/c1/messages", json={"messages": [{
        "id": "m1", "subject": "Re: Hi", "preview": "Photos", "delivered_at": 1721911800,
        "from_field": {"name": "Tomás Ruiz", "address": "tomas@example.net"},
        "to_fields": [{"name": "Returns", "address": "returns@northwind.test"}], "cc_fields": [],
        "attachments": [{"filename": "hinge.jpg", "media_type": "image", "sub_type": "jpeg", "size": 284113}],
        "email_message_id": "<a@b>", "references": ["<x@y>"]}]})
    data = json.loads(text(call("missive_list_conversation_messages", {"conversation_id": "c1"})))
    assert data["messages"] == [{"id": "m1", "at": "2024-07-25T12:50:00Z", "from": "Tomás Ruiz <tomas@example.net>",
                                 "to": ["Returns <returns@northwind.test>"], "subject": "Re: Hi",
                                 "preview": "Photos", "attachments": ["hinge.jpg (image/jpeg, 277 KB)"],
                                 "email_message_id": "<a@b>"}]


BEC = {"id": "m1", "type": "email", "delivered_at": 1721640000, "subject": "Urgent wire",
       "from_field": {"name": "Olivia (CEO)", "address": "olivia@northwind.test"},
       "reply_to_fields": [{"name": "Olivia (CEO)", "address": "olivia@northwind-payments.example"}],
       "to_fields": [{"name": "Priya", "address": "priya@northwind.test"}]}
SAME = {**BEC, "id": "m2", "reply_to_fields": [{"name": "Olivia (CEO)", "address": "olivia@northwind.test"}]}


def test_reply_to_hidden_from_the_read_views_is_shown(api):
    """A reply goes to Reply-To: wherever a message is read, a Reply-To other than the sender is shown beside it."""
    api.get(f"{API}/conversations/c1", json={"conversations": [{"id": "c1", "subject": "Urgent wire"}]})
    api.get(f"{API}/conversations/c1/messages", json={"messages": [BEC, SAME]})
    api.get(f"{API}/messages/m1,m2", json={"messages": [{**BEC, "body": "<p>Confirm the new IBAN today.</p>"},
                                                         {**SAME, "body": "<p>Thanks.</p>"}]})
    read = json.loads(text(call("missive_read_conversation", {"conversation_id": "c1", "include": ["messages"]})))
    api.get(f"{API}/conversations/c1/messages", json={"messages": [BEC, SAME]})
    listed = json.loads(text(call("missive_list_conversation_messages", {"conversation_id": "c1"})))["messages"]
    for bec, same in (read["timeline"], listed):
        assert bec["from"] == "Olivia (CEO) <olivia@northwind.test>"
        assert bec["reply_to"] == ["Olivia (CEO) <olivia@northwind-payments.example>"]
        assert list(bec)[list(bec).index("from") + 1] == "reply_to"  # read beside the sender
        assert "reply_to" not in same  # the same as the sender: said once


# ---- replies that thread ------------------------------------------------------------------------------------------------

ANSWERED = {
    "id": "m9", "subject": "RE: Re: Damaged tent poles", "email_message_id": "<m9@mail.example>",
    "references": ["<m1@x>", "<m5@x>"], "conversation": {"id": "conv-7", "subject": None},
    "from_field": {"name": "Mei Lin", "address": "mei@alpine.example"},
    "to_fields": [{"name": "Marcus Bell", "address": "marcus@northwind.test"}],
    "cc_fields": [{"name": "Julien", "address": "julien@alpine.example"},
                  {"name": "Priya Natarajan", "address": "PRIYA@northwind.test"}],
}
ME = {"users": [{"id": "u1", "name": "Priya Natarajan", "email": "priya@northwind.test", "me": True}]}


@pytest.fixture
def reply(api, clients):
    """reply(args, answered=ANSWERED, env=None) -> (the draft sent, the result) of a reply to message m9, with a
    client that looks up the token's user."""
    def draft(args, answered=ANSWERED, env=None):
        api.get(f"{API}/messages/m9", json={"messages": answered})
        api.get(f"{API}/users", json=ME)
        api.post(f"{API}/drafts", json={"drafts": {"id": "d1", "conversation": "conv-7"}})
        result = call("missive_create_draft", {"reply_to_message": "m9", "body": "<p>On its way</p>", **args},
                      *clients(defaults=env or {}))
        assert not result.is_error, text(result)
        sent = json.loads(next(c.request.body for c in api.calls if c.request.method == "POST"))["drafts"]
        return sent, json.loads(text(result))

    return draft


def test_reply_draft_threads_to_the_message_it_answers(reply):
    sent, result = reply({})
    assert sent == {"body": "<p>On its way</p>", "subject": "Re: Damaged tent poles", "conversation": "conv-7",
                    "to_fields": [{"address": "mei@alpine.example", "name": "Mei Lin"}],
                    "references": ["<m1@x>", "<m5@x>", "<m9@mail.example>"]}
    assert result["reply"]["to"] == ["Mei Lin <mei@alpine.example>"]
    assert "never sends" in result["reply"]["note"] and "bcc" in result["reply"]["note"]
    assert "send" not in sent and "send_at" not in sent


def test_reply_draft_to_a_hidden_reply_to_names_it_beside_the_sender(reply):
    """The draft goes to the Reply-To (as a mail client's reply would); the result shows its address and says it
    is not the sender, naming the sender's, so a lookalike domain is seen."""
    bec = {**ANSWERED, "from_field": {"name": "Olivia (CEO)", "address": "olivia@northwind.test"},
           "reply_to_fields": [{"name": "Olivia (CEO)", "address": "olivia@northwind-payments.example"}]}
    sent, result = reply({}, bec)
    assert sent["to_fields"] == [{"address": "olivia@northwind-payments.example", "name": "Olivia (CEO)"}]
    assert result["reply"]["to"] == ["Olivia (CEO) <olivia@northwind-payments.example>"]
    assert result["reply"]["to_is_reply_to"] == ("the message's Reply-To, not its sender Olivia (CEO) "
                                                 "<olivia@northwind.test>: check the address")
    _, plain = reply({}, {**bec, "reply_to_fields": [bec["from_field"]]})
    assert "to_is_reply_to" not in plain["reply"]  # Reply-To is the sender: nothing to point out
    _, given = reply({"to_fields": [{"address": "olivia@northwind.test"}]}, bec)
    assert "to_is_reply_to" not in given["reply"]  # the caller chose the recipients


def test_reply_all_copies_the_others_but_never_the_token_user(reply):
    sent, result = reply({"reply_all": True})
    assert sent["cc_fields"] == [{"address": "marcus@northwind.test", "name": "Marcus Bell"},
                                 {"address": "julien@alpine.example", "name": "Julien"}]
    assert result["reply"]["cc"] == ["Marcus Bell <marcus@northwind.test>", "Julien <julien@alpine.example>"]


def test_reply_keeps_what_the_caller_gave(reply):
    sent, _ = reply({"reply_all": True, "subject": "Custom", "to_fields": [{"address": "boss@x.test"}],
                          "cc_fields": [], "references": ["<r@x>"]})
    assert sent["subject"] == "Custom" and sent["to_fields"] == [{"address": "boss@x.test"}]
    assert sent["cc_fields"] == [] and sent["references"] == ["<r@x>"]
    assert "conversation" not in sent  # references were given: they thread it


def test_reply_to_our_own_message_goes_to_its_recipients(reply):
    own = {**ANSWERED, "from_field": {"name": "Returns", "address": "returns@northwind.test"},
           "author": {"id": "u1", "name": "Priya Natarajan"}}  # sent from Missive by one of us
    sent, _ = reply({}, own, env={"FROM_ADDRESS": "returns@northwind.test"})
    assert sent["to_fields"] == [{"address": "marcus@northwind.test", "name": "Marcus Bell"}]


def test_a_strangers_message_claiming_our_address_cannot_redirect_the_reply(reply):
    """No author: it came from outside, so its To (the stranger's choice) never becomes the reply's To."""
    spoofed = {**ANSWERED, "from_field": {"name": "Me", "address": "PRIYA@northwind.test"},
               "to_fields": [{"name": "Accounts Payable <ap@northwind.test>", "address": "attacker@evil.example"}]}
    sent, result = reply({}, spoofed)
    assert sent["to_fields"] == []
    assert result["reply"]["to"] == []


def test_reply_recipients_from_a_hostile_message_are_sanitised(reply):
    hostile = {**ANSWERED, "cc_fields": [{"name": "Boss\nBcc: x@evil.example", "address": "boss@northwind.test"},
                                         {"phone_number": "+15550100"},
                                         {"name": "Accounts Payable <ap@northwind.test>", "address": "a@evil.example"}],
               "references": ["<ok@x>", "<bad ref@x>", 9, "<" + "x" * 2000 + ">"]}
    sent, _ = reply({"reply_all": True}, hostile)
    assert sent["cc_fields"] == [{"address": "marcus@northwind.test", "name": "Marcus Bell"},
                                 {"address": "boss@northwind.test"},  # a name holding an address is dropped
                                 {"address": "a@evil.example"}]
    assert sent["references"] == ["<ok@x>", "<m9@mail.example>"]


@pytest.mark.parametrize("address", [
    "ceo@northwind.test, attacker@evil.example",  # two addresses travelling as one
    "ceo@northwind.test\r\nBcc: attacker@evil.example",  # CRLF: collapsed, it would read "... Bcc: ..."
    "ceo@northwind.test;attacker@evil.example", "CEO <attacker@evil.example>", '"ceo@northwind.test"@evil.example',
    "ceo@northwind.test@evil.example", "ceo", "ceo@", "@evil.example", "ceo(x)@evil.example",
    "ceo@north\twind.test", "x" * 65 + "@evil.example", "ceo@" + "x" * 190 + ".example",
    "ｃｅｏ@northwind.test",  # fullwidth letters: NFKC would change it
])
def test_reply_fields_holding_more_than_one_plain_address_are_dropped_and_named(reply, address):
    hostile = {**ANSWERED, "reply_to_fields": [{"name": "CEO", "address": address}],
               "cc_fields": [{"name": "Julien", "address": address}]}
    sent, result = reply({"reply_all": True}, hostile)
    assert sent["to_fields"] == []
    assert sent["cc_fields"] == [{"address": "marcus@northwind.test", "name": "Marcus Bell"}]
    shown = m._shown(m.visible_text(address), 120)  # as every string of an answer, cleaned first (\r is dropped)
    assert result["reply"]["dropped"] == [f"{where} '{shown}': not one plain address" for where in ("to", "cc")]


@pytest.mark.parametrize("name", ["ceo＠northwind.test", "ceo﹫northwind.test", "CEO ‹ceo@northwind.test›",
                                  "CEO ＜ceo at northwind.test＞"])
def test_reply_fields_with_a_lookalike_address_in_the_name_keep_only_the_address(reply, name):
    """A display name holding an address, once NFKC folds its look-alikes, poses as someone else: it is left out."""
    sent, result = reply({}, {**ANSWERED, "from_field": {"name": name, "address": "attacker@evil.example"}})
    assert sent["to_fields"] == [{"address": "attacker@evil.example"}]
    assert result["reply"]["to"] == ["attacker@evil.example"]


def test_reply_fields_keep_ordinary_addresses(reply):
    plain = {**ANSWERED, "reply_to_fields": [{"name": "Seán O'Brien", "address": "o'brien+orders@sub.alpine.example"},
                                             {"name": "Mei Lin", "address": " mei@alpine.example "}]}
    sent, result = reply({}, plain)
    assert sent["to_fields"] == [{"address": "o'brien+orders@sub.alpine.example", "name": "Seán O'Brien"},
                                 {"address": "mei@alpine.example", "name": "Mei Lin"}]
    assert "dropped" not in result["reply"]


def test_reply_fields_of_a_text_channel_take_one_phone_number(reply):
    sms = {**ANSWERED, "type": "twilio", "from_field": {"name": "Tomás", "phone_number": "+34 600 111 222"},
           "to_fields": [{"phone_number": "+15550100"}], "cc_fields": []}
    sent, _ = reply({}, sms)
    assert sent["to_fields"] == [{"name": "Tomás", "phone_number": "+34 600 111 222"}]
    _, result = reply({}, {**sms, "from_field": {"phone_number": "+34600111222, +447700900123"}})
    assert result["reply"]["dropped"] == ["to '+34600111222, +447700900123': not a phone number"]


def test_reply_subject_of_hostile_whitespace_is_read_in_linear_time(reply):
    sent, _ = reply({}, {**ANSWERED, "subject": " " * 200_000 + "Re: x"})
    assert sent["subject"] == "Re: x"


@pytest.mark.parametrize("subject, expected", [("Hello", "Re: Hello"), ("Re: Hello", "Re: Hello"),
                                               ("RE: Re: AW: Hello", "Re: Hello"), ("Re[2]: Hello", "Re: Hello"),
                                               ("Réunion", "Re: Réunion")])
def test_reply_subject_never_stacks_prefixes(reply, subject, expected):
    sent, _ = reply({}, {**ANSWERED, "subject": subject})
    assert sent["subject"] == expected


def test_reply_ignores_a_hostile_conversation_id_in_the_answer(reply):
    sent, _ = reply({}, {**ANSWERED, "conversation": {"id": "../../hooks"}})
    assert "conversation" not in sent and sent["references"][-1] == "<m9@mail.example>"


def test_reply_all_without_reply_to_message_is_refused(api):
    result = call("missive_create_draft", {"reply_all": True, "body": "x"})
    assert result.is_error and "reply_all: needs reply_to_message" in text(result)
    assert len(api.calls) == 0
