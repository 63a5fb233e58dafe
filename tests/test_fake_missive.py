"""Fast tests of the fake Missive API itself (tests/fake_missive.py)."""

import email.utils
import gzip
import html
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from fake_missive import (HOSTILE_ERROR_BODIES, HOSTILE_NAMES, JSON_TYPE, THREAD, THREAD_ID, THREAD_MESSAGES,
                          TRIAGE, TRIAGE_FIRST, FakeMissive, thread_bodies)

AUTH = {"Authorization": "Bearer test-token"}


@pytest.fixture
def client(fake):
    """call(method, path, **kwargs) -> requests.Response, with the right token and a timeout: raw HTTP to
    conftest's fake (not a MissiveClient, whose answers are what the other files check)."""
    session = requests.Session()
    session.headers.update(AUTH)

    def call(method, path, **kwargs):
        return session.request(method, fake.url + path, timeout=10, **kwargs)

    yield call
    session.close()


def first_id(fake, key, index=0):
    return fake.data[key][index]["id"]


# ---- auth, routing, recording -----------------------------------------------------------------------------------

def test_auth(fake):
    url = fake.url + "/users"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5).json() == {"error": "Unauthorized"}
    assert requests.get(url, headers={"Authorization": "Bearer "}, timeout=5).status_code == 401
    assert requests.get(url, headers=AUTH, timeout=5).status_code == 200
    with FakeMissive(token=None) as anyone:
        assert requests.get(anyone.url + "/users", headers={"Authorization": "Bearer x"}, timeout=5).ok
        assert requests.get(anyone.url + "/users", timeout=5).status_code == 401


def test_unknown_paths_and_methods_are_recorded(fake, client):
    assert client("GET", "/nope").status_code == 404
    assert requests.get(fake.url.removesuffix("/v1") + "/users", headers=AUTH, timeout=5).status_code == 404
    r = client("DELETE", f"/responses/{first_id(fake, 'responses')}")
    assert r.status_code == 405 and "GET" in r.headers["Allow"]
    assert client("DELETE", "/drafts/abc").status_code == 404
    deletes = fake.received("DELETE")
    assert [d.route for d in deletes] == [f"/responses/{first_id(fake, 'responses')}", "/drafts/abc"]
    assert [d.status for d in deletes] == [405, 404]


def test_recorded_fields(fake, client):
    client("PATCH", f"/tasks/{first_id(fake, 'tasks')}?x=1&y=", json={"tasks": {"title": "New"}})
    (rec,) = fake.received("PATCH")
    assert rec.path == f"/v1/tasks/{first_id(fake, 'tasks')}" and rec.route == rec.path[3:]
    assert rec.query == {"x": ["1"], "y": [""]}
    assert rec.body == {"tasks": {"title": "New"}} and json.loads(rec.raw_body) == rec.body
    assert rec.headers["authorization"] == "Bearer test-token" and rec.status == 200
    assert fake.received(path="/tasks/" + first_id(fake, "tasks")) == [rec]
    assert client("POST", "/tasks", data=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    assert fake.requests[-1].body is None and fake.requests[-1].raw_body == b"{not json"


def test_reset(fake, client):
    fake.inject("500")
    client("GET", "/users")
    client("GET", "/users")
    fake.inject("500")
    fake.reset()
    assert fake.requests == [] and fake.count_429 == 0 and fake.max_in_flight == 0
    assert client("GET", "/users").status_code == 200


# ---- envelope shapes --------------------------------------------------------------------------------------------

def test_single_reads_are_arrays_of_one(fake, client):
    conv, contact, response = first_id(fake, "conversations"), first_id(fake, "contacts"), first_id(fake, "responses")
    assert [c["id"] for c in client("GET", f"/conversations/{conv}").json()["conversations"]] == [conv]
    assert [c["id"] for c in client("GET", f"/contacts/{contact}").json()["contacts"]] == [contact]
    assert [c["id"] for c in client("GET", f"/responses/{response}").json()["responses"]] == [response]
    deleted = next(c["id"] for c in fake.data["contacts"] if c["deleted"])
    assert client("GET", f"/contacts/{deleted}").status_code == 404
    assert client("GET", "/conversations/unknown").json() == {"error": "Not found"}


def test_conversation_shape(fake, client):
    conv = client("GET", "/conversations/9d2f4c1a-5b6e-4f70-8a91-2c3d4e5f6a01").json()["conversations"][0]
    assert conv["latest_message_subject"] == "Re: Broken hinge on order 5531"
    assert conv["organization"] == {"id": "41c7e0d2-9a3b-4c5d-8e6f-7a8b9c0d1e02", "name": "Northwind Outfitters"}
    assert conv["assignees"][0]["name"] == "Priya Natarajan" and conv["assignees"][0]["assigned"] is True
    assert conv["shared_labels"] == [{"id": "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e05", "name": "Warranty"}]
    assert conv["messages_count"] == 12 and not any(k.startswith("_") for k in conv)


def test_messages_object_for_one_id_array_for_several(fake, client):
    one, two = first_id(fake, "messages"), first_id(fake, "messages", 1)
    single = client("GET", f"/messages/{one}").json()["messages"]
    assert single["id"] == one and single["body"].startswith("<div")
    assert single["conversation"]["id"] == first_id(fake, "conversations")
    assert [m["id"] for m in client("GET", f"/messages/{one},{two}").json()["messages"]] == [one, two]
    assert client("GET", f"/messages/{one},unknown").status_code == 404
    found = client("GET", "/messages", params={"email_message_id": "<CAB7x9q2@mail.example.net>"}).json()
    assert [m["id"] for m in found["messages"]] == [one]
    listed = client("GET", f"/conversations/{first_id(fake, 'conversations')}/messages").json()["messages"]
    assert listed[0]["id"] == one and "body" not in listed[0]


def test_tasks_list_ids_and_get_expanded(fake, client):
    task = fake.data["tasks"][0]
    listed = client("GET", "/tasks").json()["tasks"]
    assert listed[0]["id"] == task["id"] and listed[0]["assignees"] == task["assignees"]
    got = client("GET", f"/tasks/{task['id']}").json()["tasks"]
    assert isinstance(got, dict) and got["assignees"][0]["name"] == "Priya Natarajan"
    assert got["team"]["name"] == "Returns"
    patched = client("PATCH", f"/tasks/{task['id']}", json={"tasks": {"state": "closed", "assignees": []}}).json()
    assert patched["tasks"]["state"] == "closed" and patched["tasks"]["assignees"] == []
    created = client("POST", "/tasks", json={"tasks": {"title": "T", "team": first_id(fake, "teams"),
                                                     "organization": first_id(fake, "organizations")}})
    assert created.status_code == 201 and created.json()["tasks"]["title"] == "T"


def test_post_answers(fake, client):
    conv = first_id(fake, "conversations", 3)
    draft = client("POST", "/drafts", json={"drafts": {"body": "Hi", "conversation": conv}})
    assert draft.status_code == 201 and draft.json()["drafts"]["conversation"] == conv
    post = client("POST", "/posts", json={"posts": {"text": "note"}}).json()["posts"]
    assert post["id"] and post["conversation"] != conv  # no conversation: a new one
    assert client("GET", f"/conversations/{post['conversation']}/posts").json()["posts"][0]["text"] == "note"
    contacts = client("POST", "/contacts", json={"contacts": [{"first_name": "A"}, {"first_name": "B"}]})
    assert contacts.status_code == 201 and [c["first_name"] for c in contacts.json()["contacts"]] == ["A", "B"]
    assert client("POST", "/contacts", json={"contacts": {"first_name": "A"}}).status_code == 400  # not an array
    fake.empty_post_201 = True
    empty = client("POST", "/shared_labels", json={"shared_labels": [{"name": "X"}]})
    assert empty.status_code == 201 and empty.content == b""


def test_batch_patch_and_merge(fake, client):
    a, b = first_id(fake, "conversations", 1), first_id(fake, "conversations", 2)
    body = {"conversations": [{"id": b, "close": True}, {"id": a, "subject": "Renamed"}]}
    r = client("PATCH", f"/conversations/{a},{b}", json=body)
    assert r.status_code == 200 and [c["id"] for c in r.json()["conversations"]] == [b, a]
    assert r.json()["conversations"][1]["subject"] == "Renamed" and r.json()["conversations"][0]["closed_at"]
    merged = client("POST", f"/conversations/{a}/merge", json={"target": b}).json()["conversations"]
    assert [c["id"] for c in merged] == [b]
    assert client("GET", f"/conversations/{a}").json()["conversations"][0]["id"] == b


# ---- validations (missive-api.md §3.2) --------------------------------------------------------------------------

def test_validation_texts(fake, client):
    label, team = first_id(fake, "shared_labels", 1), first_id(fake, "teams")
    checks = [
        (client("GET", "/conversations"), 400, "You need to paginate at least one mailbox"),
        (client("GET", "/tasks", params={"limit": 1}), 400, "min 'limit' value is 2"),
        (client("POST", "/posts", json={"posts": {"notification": {"title": "t", "body": "b"}}}), 422,
         "Validation failed: text, markdown or attachments needed"),
        (client("PATCH", f"/teams/{team}", json={"teams": [{"name": "No id"}]}), 400, "Invalid resource ID(s)"),
        (client("PATCH", f"/shared_labels/{label}", json={"shared_labels": [{"id": label, "organization": "o"}]}),
         400, "Unpermitted parameters: organization"),
        (client("PATCH", "/teams/nope", json={"teams": [{"id": "nope"}]}), 404, "Not found"),
        (client("POST", "/drafts", json={"drafts": {"from_field": {"address": "x@elsewhere.test"}}}), 400,
         "'from_field' does not match an available sender"),
        (client("POST", "/posts", json={"posts": {"text": "t", "add_shared_labels": [label]}}), 400,
         "'organization' is required when 'add_shared_labels' is defined"),
        (client("GET", "/contacts"), 400, "param is missing or the value is empty: contact_book"),
    ]
    for response, status, text in checks:
        assert (response.status_code, response.json()) == (status, {"error": text})
    assert client("GET", "/contact_groups", params={"contact_book": first_id(fake, "contact_books")}).status_code == 400


# ---- pagination -------------------------------------------------------------------------------------------------

def test_conversation_cursor_paging_is_inclusive(fake, client):
    seen, until, pages = {}, None, 0
    while True:
        params = {"all": "true", **({"until": until} if until is not None else {})}
        page = client("GET", "/conversations", params=params).json()["conversations"]
        pages += 1
        assert len(page) <= 25
        if until is not None:
            assert page[0]["last_activity_at"] == until  # the boundary item repeats
        new = [c for c in page if c["id"] not in seen]
        seen.update((c["id"], c) for c in page)
        if len(page) < 25 or not new:
            break
        until = min(c["last_activity_at"] for c in page)
    expected = {c["id"] for c in fake.data["conversations"] if not {"trashed", "junked"} & set(c["_mailboxes"])}
    assert set(seen) == expected and pages == 3
    times = [c["last_activity_at"] for c in fake.data["conversations"]]
    assert times[24] == times[25]  # a tie straddles the default page boundary


def test_sub_list_and_offset_paging(fake, client):
    path = f"/conversations/{first_id(fake, 'conversations')}/comments"
    first = client("GET", path).json()["comments"]
    assert len(first) == 10 and first == sorted(first, key=lambda c: -c["created_at"])
    second = client("GET", path, params={"until": first[-1]["created_at"]}).json()["comments"]
    assert len({c["id"] for c in first + second}) == 12
    assert len(client("GET", path, params={"limit": 3}).json()["comments"]) == 3
    book = first_id(fake, "contact_books")
    whole = client("GET", "/contacts", params={"contact_book": book}).json()["contacts"]
    part = client("GET", "/contacts", params={"contact_book": book, "limit": 4, "offset": 4}).json()["contacts"]
    assert part == whole[4:8] and len(whole) == 11


# ---- rate limits ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sliding_window_429():
    with FakeMissive(windows=((5, 1.0),)) as f:
        statuses = [requests.get(f.url + "/users", headers=AUTH, timeout=5) for _ in range(7)]
        assert [r.status_code for r in statuses] == [200] * 5 + [429] * 2
        assert statuses[0].headers["X-RateLimit-Limit"] == "5" and statuses[0].headers["X-RateLimit-Remaining"] == "4"
        limited = statuses[-1]
        assert limited.json() == {"error": "Too many requests"} and limited.headers["Retry-After"] == "1"
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        assert int(limited.headers["X-RateLimit-Reset"]) >= int(time.time())
        assert f.count_429 == 2
        time.sleep(1.05)
        assert requests.get(f.url + "/users", headers=AUTH, timeout=5).status_code == 200


def test_concurrency_429():
    with FakeMissive(max_concurrent=2, latency=0.4, windows=()) as f:
        barrier, results = threading.Barrier(6), []

        def worker():
            barrier.wait()
            results.append(requests.get(f.url + "/users", headers=AUTH, timeout=10))

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) >= 2 and codes.count(429) >= 1 and set(codes) == {200, 429}
        assert f.count_429 == codes.count(429) and f.max_in_flight >= 3
        assert all(r.headers["Retry-After"] == "1" for r in results if r.status_code == 429)


# ---- faults -----------------------------------------------------------------------------------------------------

def test_fault_429_forms(fake, client):
    fake.inject(429, retry_after=3)
    fake.inject("429", retry_after=2, retry_after_date=True, reset_in=30)
    first, second = client("GET", "/users"), client("GET", "/users")
    assert first.status_code == 429 and first.headers["Retry-After"] == "3" and "X-RateLimit-Limit" in first.headers
    assert email.utils.parsedate_to_datetime(second.headers["Retry-After"]).timestamp() > time.time()
    assert abs(int(second.headers["X-RateLimit-Reset"]) - (time.time() + 30)) < 5
    assert fake.count_429 == 0 and [r.status for r in fake.requests] == [429, 429]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_fault_5xx_html(fake, client, status):
    fake.inject(str(status))
    r = client("GET", "/users")
    assert r.status_code == status and r.text.startswith("<html>") and "text/html" in r.headers["Content-Type"]
    assert client("GET", "/users").status_code == 200


def test_fault_reset_drops_connection(fake, client):
    fake.inject("reset", method="POST")
    with pytest.raises(requests.ConnectionError):
        client("POST", "/posts", json={"posts": {"text": "x"}})
    assert fake.requests[-1].status == 0 and fake.requests[-1].body == {"posts": {"text": "x"}}
    assert client("GET", "/users").status_code == 200


def test_fault_hang_then_answers(fake, client):
    fake.inject("hang", seconds=0.2)
    assert client("GET", "/users").status_code == 200


def test_stop_interrupts_hang_and_latency():
    f = FakeMissive(latency=30).start()
    f.inject("hang", seconds=60)
    errors = []

    def call():
        try:
            requests.get(f.url + "/users", headers=AUTH, timeout=20)
        except requests.RequestException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    while len(f.requests) < 2:
        time.sleep(0.01)
    started = time.monotonic()
    f.stop()
    for t in threads:
        t.join(timeout=10)
    assert time.monotonic() - started < 8 and len(errors) == 2
    assert [r.status for r in f.requests] == [0, 0]


@pytest.mark.parametrize("kind,status,content", [
    ("garbage", 200, b"<html>oops</html>"),
    ("empty", 201, b""),
])
def test_fault_fixed_bodies(fake, client, kind, status, content):
    fake.inject(kind)
    r = client("GET", "/users")
    assert (r.status_code, r.content) == (status, content)


def test_fault_truncated(fake, client):
    fake.inject("truncated")
    r = client("GET", "/users")
    assert r.status_code == 200 and r.content.startswith(b'{"users":[')
    with pytest.raises(ValueError):
        r.json()


def test_fault_big(fake, client):
    fake.inject("big", size=300_000)
    r = client("GET", "/conversations", params={"inbox": "true"})
    assert len(r.content) == 300_000 and int(r.headers["Content-Length"]) == 300_000
    assert len(r.json()["conversations"]) > 10


def test_fault_error_shapes(fake, client):
    fake.inject("error", body={"errors": ["bad one", "bad two"]}, status=422)
    fake.inject("error", body={"error": {"message": "nested"}})
    fake.inject("error", body="plain text failure", status=503)
    fake.inject("error", body="", status=404)
    got = [client("GET", "/users") for _ in range(4)]
    assert [r.status_code for r in got] == [422, 400, 503, 404]
    assert got[0].json() == {"errors": ["bad one", "bad two"]} and got[1].json() == {"error": {"message": "nested"}}
    assert got[2].text == "plain text failure" and got[3].content == b""


def test_fault_matching_and_times(fake, client):
    fake.inject("500", times=2, method="POST", path_prefix="/posts")
    assert client("GET", "/posts").status_code == 405  # GET does not match the fault (and has no route)
    assert client("GET", "/users").status_code == 200
    body = {"posts": {"text": "x"}}
    assert [client("POST", "/posts", json=body).status_code for _ in range(3)] == [500, 500, 201]
    with pytest.raises(ValueError):
        fake.inject("meteor")
    with pytest.raises(TypeError):
        fake.inject("429", retry_afterr=1)


def test_random_faults(fake, client):
    fake.fault_rate, fake.fault_kinds = 1.0, ("502", "garbage")
    assert {client("GET", "/users").status_code for _ in range(10)} <= {502, 200}
    assert all(r.status in (502, 200) for r in fake.requests)
    fake.fault_rate = 0.0
    assert client("GET", "/users").json()["users"][0]["me"] is True


# ---- hostile peers: raw faults, seen through plain sockets ------------------------------------------------------

def port_of(fake) -> int:
    return int(fake.url.split(":")[2].split("/")[0])


def raw_exchange(fake, method="GET", path="/organizations", body=None, wait=15.0):
    """Send one request on a plain socket and read until the fake closes: (bytes received, seconds taken)."""
    payload = b"" if body is None else json.dumps(body).encode()
    head = (f"{method} /v1{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer test-token\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port_of(fake)), timeout=wait) as sock:
        sock.sendall(head.encode() + payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data, time.monotonic() - started


def split_head(data: bytes):
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, data[:300]
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0], headers, rest


def normal_body(fake, path="/organizations") -> bytes:
    return requests.get(fake.url + path, headers=AUTH, timeout=10).content


@pytest.mark.slow
def test_header_drip_never_finishes_the_head(fake):
    fake.inject("header_drip", interval=0.1, seconds=1.0)
    data, took = raw_exchange(fake)
    status_line, _, dripped = data.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK" and b"\r\n\r\n" not in data
    assert f"Content-Type: {JSON_TYPE}\r\nX-Drip: xxxxxxxxxxxxxxxxxxxxxx".encode().startswith(dripped)
    assert 1 <= len(dripped) <= 12  # one byte per 0.1 s for 1 s, not the whole head at once
    assert took >= 1.0 and fake.requests[-1].status == 200


@pytest.mark.slow
def test_chunk_drip_never_finishes_the_size_line(fake):
    fake.inject("chunk_drip", interval=0.1, seconds=1.0)
    data, took = raw_exchange(fake)
    status_line, headers, rest = split_head(data)
    assert status_line == "HTTP/1.1 200 OK" and headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    assert 1 <= len(rest) <= 12 and rest == b"1" + b"0" * (len(rest) - 1)  # no CRLF: the line never ends
    assert took >= 1.0


@pytest.mark.slow
def test_body_drip_sends_the_real_body_byte_by_byte(fake):
    expected = normal_body(fake)
    fake.inject("body_drip", interval=0.1, seconds=1.0)
    data, took = raw_exchange(fake)
    _, headers, rest = split_head(data)
    assert int(headers["content-length"]) == len(expected)
    assert 1 <= len(rest) <= 12 and expected.startswith(rest) and took >= 1.0
    fake.inject("body_drip", interval=0.0, seconds=30)  # no pause: the whole body, still one byte per write
    _, _, rest = split_head(raw_exchange(fake)[0])
    assert rest == expected


def test_stall_after_headers_sends_no_body(fake):
    fake.inject("stall_after_headers", seconds=0.5)
    data, took = raw_exchange(fake)
    status_line, headers, rest = split_head(data)
    assert status_line == "HTTP/1.1 200 OK" and int(headers["content-length"]) > 0 and rest == b""
    assert took >= 0.5


def test_short_body_promises_more_than_it_sends(fake):
    expected = normal_body(fake)
    fake.inject("short_body")
    _, headers, rest = split_head(raw_exchange(fake)[0])
    assert int(headers["content-length"]) == len(expected) and rest == expected[:len(expected) // 2]
    fake.inject("short_body")
    conn = http.client.HTTPConnection("127.0.0.1", port_of(fake), timeout=10)
    conn.request("GET", "/v1/organizations", headers=AUTH)
    with pytest.raises(http.client.IncompleteRead):
        conn.getresponse().read()
    conn.close()


@pytest.mark.parametrize("how,framing", [
    ("size", lambda body: b"%x\r\n%s\r\nzz\r\n" % (len(body) // 2, body[:len(body) // 2])),
    ("crlf", lambda body: b"%x\r\n%s0\r\n\r\n" % (len(body), body)),
])
def test_broken_chunking(fake, how, framing):
    expected = normal_body(fake)
    fake.inject("broken_chunking", how=how)
    _, headers, rest = split_head(raw_exchange(fake)[0])
    assert headers["transfer-encoding"] == "chunked" and rest.startswith(framing(expected))
    fake.inject("broken_chunking", how=how)
    conn = http.client.HTTPConnection("127.0.0.1", port_of(fake), timeout=10)
    conn.request("GET", "/v1/organizations", headers=AUTH)
    with pytest.raises(http.client.HTTPException):
        conn.getresponse().read()
    conn.close()
    with pytest.raises(ValueError):
        fake.inject("broken_chunking", how="sideways")


def test_bad_and_truncated_gzip(fake):
    expected = normal_body(fake)
    fake.inject("bad_gzip")
    _, headers, rest = split_head(raw_exchange(fake)[0])
    assert headers["content-encoding"] == "gzip" and rest == expected  # plain JSON under a gzip label
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(rest)
    fake.inject("truncated_gzip")
    _, headers, rest = split_head(raw_exchange(fake)[0])
    whole = gzip.compress(expected, mtime=0)
    assert headers["content-encoding"] == "gzip" and int(headers["content-length"]) == len(rest)
    assert rest == whole[:len(whole) // 2]
    with pytest.raises(EOFError):
        gzip.decompress(rest)


def json_depth(text: bytes) -> int:
    """Nesting depth of a JSON document, without recursion (strings hold no brackets here)."""
    depth = deepest = 0
    for byte in text:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
            assert depth >= 0
    assert depth == 0
    return deepest


def test_deep_json(fake, client):
    fake.inject("deep_json")
    r = client("GET", "/users")
    assert r.status_code == 200 and r.content.startswith(b'{"users":[[[') and json_depth(r.content) == 100_000
    assert r.content == b'{"users":' + b"[" * 99_999 + b"]" * 99_999 + b"}"
    with pytest.raises(RecursionError):
        json.loads(r.content)
    fake.inject("deep_json", depth=40)
    value = client("GET", "/users").json()["users"]
    for _ in range(38):
        (value,) = value
    assert value == []


@pytest.mark.parametrize("where,status,content_type", [
    ("json", 200, JSON_TYPE), ("error", 401, JSON_TYPE), ("text", 200, "text/plain; charset=utf-8"),
])
def test_token_echo(fake, client, where, status, content_type):
    fake.inject("token_echo", where=where, **({"status": 401} if where == "error" else {}))
    r = client("GET", "/conversations", params={"inbox": "true"})
    escaped = "".join(f"\\u{ord(c):04x}" for c in "test-token").encode()
    assert (r.status_code, r.headers["Content-Type"]) == (status, content_type)
    assert r.content.count(b"test-token") == 1 and r.content.count(escaped) == 1
    if where == "json":
        conv = r.json()["conversations"][0]
        assert "test-token" in conv["subject"] and "test-token" in conv["latest_message_subject"]
    elif where == "error":
        assert r.json()["error"].count("test-token") == 2


def test_late_applies_the_write_before_answering(fake):
    body = {"posts": {"text": "late post", "conversation": first_id(fake, "conversations", 5)}}
    fake.inject("late", seconds=60, method="POST")
    with socket.create_connection(("127.0.0.1", port_of(fake)), timeout=15) as sock:
        payload = json.dumps(body).encode()
        sock.sendall(b"POST /v1/posts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-token\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
        give_up = time.monotonic() + 10
        while not fake.applied_writes():
            assert time.monotonic() < give_up
            time.sleep(0.01)
        assert [p["text"] for p in fake.data["posts"]].count("late post") == 1
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):  # applied, yet not a byte of the answer has left
            sock.recv(1)
        sock.setblocking(True)
        fake.stop()  # ends the hold: the connection drops, unanswered
        assert sock.recv(1) == b""
    (rec,) = fake.applied_writes()
    assert rec.body == body and rec.status == 0 and fake.requests == [rec]


def test_late_answers_or_drops_after_the_hold(fake, client):
    fake.inject("late", seconds=0.3, method="POST")
    started = time.monotonic()
    r = client("POST", "/posts", json={"posts": {"text": "slow"}})
    assert r.status_code == 201 and r.json()["posts"]["text"] == "slow" and time.monotonic() - started >= 0.3
    fake.inject("late", seconds=0.0, drop=True, method="PATCH")
    cid = first_id(fake, "conversations", 6)
    with pytest.raises(requests.ConnectionError):
        client("PATCH", f"/conversations/{cid}", json={"conversations": [{"id": cid, "subject": "dropped"}]})
    assert fake.data["conversations"][6]["subject"] == "dropped"
    assert [(r.method, r.status) for r in fake.applied_writes()] == [("POST", 201), ("PATCH", 0)]


def test_big_after_write(fake, client):
    fake.inject("big_after_write", size=1_000_000, method="POST")
    r = client("POST", "/posts", json={"posts": {"text": "big answer"}})
    assert r.status_code == 201 and len(r.content) == 1_000_000
    answer = r.json()
    assert answer["posts"]["text"] == "big answer" and set(answer) == {"posts", "padding"}
    assert [p["text"] for p in fake.data["posts"]].count("big answer") == 1


def test_reset_after_write(fake, client):
    fake.inject("reset_after_write", method="POST")
    with pytest.raises(requests.ConnectionError):
        client("POST", "/posts", json={"posts": {"text": "lost answer"}})
    assert [p["text"] for p in fake.data["posts"]].count("lost answer") == 1
    (rec,) = fake.applied_writes()
    assert rec.status == 0 and rec.body == {"posts": {"text": "lost answer"}}


def test_applied_writes_lists_only_writes_that_changed_data(fake, client):
    cid = first_id(fake, "conversations", 4)
    client("GET", "/users")
    client("POST", "/posts", json={"posts": {"text": "one"}})
    client("POST", "/posts", json={"posts": {}})  # 400: nothing changed
    fake.inject("500", method="POST")  # refused before the route: nothing changed
    client("POST", "/posts", json={"posts": {"text": "two"}})
    fake.inject("truncated", method="PATCH")  # performed, then answered badly
    client("PATCH", f"/conversations/{cid}", json={"conversations": [{"id": cid, "color": "good"}]})
    applied = fake.applied_writes()
    assert [(r.method, r.route, r.status) for r in applied] == [("POST", "/posts", 201),
                                                                ("PATCH", f"/conversations/{cid}", 200)]
    assert applied[0].body == {"posts": {"text": "one"}} and fake.applied_writes("PATCH") == applied[1:]
    fake.reset()
    assert fake.applied_writes() == []


@pytest.mark.parametrize("kind", ["header_drip", "chunk_drip", "body_drip", "stall_after_headers", "late"])
def test_stop_ends_every_slow_fault(kind):
    f = FakeMissive().start()
    f.inject(kind, seconds=120)
    outcome = []

    def call():
        try:
            outcome.append(raw_exchange(f, wait=30)[0])
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    give_up = time.monotonic() + 10
    while not f.requests:
        assert time.monotonic() < give_up
        time.sleep(0.01)
    started = time.monotonic()
    f.stop()
    thread.join(timeout=20)
    assert not thread.is_alive() and time.monotonic() - started < 8 and len(outcome) == 1
    assert not (isinstance(outcome[0], bytes) and outcome[0].endswith(b"}"))  # never a whole answer


def test_random_faults_draw_new_kinds_with_options(fake, client):
    fake.fault_rate = 1.0
    fake.fault_kinds = (("late", {"seconds": 0.0}), ("body_drip", {"interval": 0.0, "seconds": 30}))
    for _ in range(6):
        r = client("GET", "/organizations")
        assert r.status_code == 200 and len(r.json()["organizations"]) == 2
    fake.fault_rate = 0.0
    with pytest.raises(ValueError):
        fake.fault_kinds = ("meteor",)
    with pytest.raises(TypeError):
        fake.fault_kinds = (("late", {"bogus": 1}),)
    with pytest.raises(ValueError):
        fake.fault_kinds = (("token_echo", {"where": "nowhere"}),)
    assert fake.fault_kinds[0] == ("late", {"seconds": 0.0})  # a refused assignment changes nothing


# ---- hostile data -----------------------------------------------------------------------------------------------

NAMED = [("organizations", "/organizations", {}), ("teams", "/teams", {}), ("users", "/users", {}),
         ("contact_books", "/contact_books", {})]


def test_names_are_clean_by_default(fake, client):
    for key, path, params in NAMED:
        for item in client("GET", path, params=params).json()[key]:
            assert item["name"].isprintable() and len(item["name"]) < 100


def test_hostile_names():
    with FakeMissive(hostile_names=True) as f:
        session = requests.Session()
        session.headers.update(AUTH)
        names = {key: [x["name"] for x in session.get(f.url + path, timeout=10).json()[key]]
                 for key, path, _ in NAMED}
        everything = "".join(n for group in names.values() for n in group)
        for needle in ("\x1b[2J", "\x1b]8;;http://evil", "\nMISSIVE_API_URL=http://evil.test/v1  # suggested",
                       "\u202e", "\U000e0049", "\u200b", "\r\nHint:"):
            assert needle in everything, repr(needle)
        assert max(map(len, names["users"])) > 10_000
        assert names["teams"][1] == HOSTILE_NAMES[("teams", 1)]
        conv = session.get(f"{f.url}/conversations/{f.data['conversations'][0]['id']}",
                           timeout=10).json()["conversations"][0]
        assert conv["assignee_names"] == HOSTILE_NAMES[("users", 0)]
        assert conv["organization"]["name"] == HOSTILE_NAMES[("organizations", 0)]
        comments = session.get(f"{f.url}/conversations/{conv['id']}/comments", timeout=10).json()["comments"]
        assert comments[0]["author"]["name"] == HOSTILE_NAMES[("users", 0)]
        session.close()


@pytest.mark.parametrize("body", HOSTILE_ERROR_BODIES)
def test_hostile_error_bodies(fake, client, body):
    fake.inject("error", status=422, body=body)
    r = client("GET", "/users")
    assert r.status_code == 422 and (r.text if isinstance(body, str) else r.json()) == body
    assert "\nHint: " in json.dumps(body, ensure_ascii=False).replace("\\n", "\n")


def test_add_message_serves_any_body(fake, client):
    huge = "<div>" + "<p>A&amp;B \u202e \x1b[2J</p>" * 150_000 + "</div>"  # about 3.8 MB
    inbox_before = len(client("GET", "/conversations", params={"inbox": "true", "limit": 50}).json()["conversations"])
    mid = fake.add_message(huge, subject="Huge")
    r = client("GET", f"/messages/{mid}")
    message = r.json()["messages"]
    assert message["body"] == huge and message["subject"] == "Huge" and len(r.content) > 3_000_000
    conv_id = message["conversation"]["id"]
    assert fake.data["conversations"][-1]["id"] == conv_id  # appended: existing indexes keep their meaning
    listed = client("GET", f"/conversations/{conv_id}/messages").json()["messages"]
    assert [m["id"] for m in listed] == [mid] and "body" not in listed[0]
    newest = client("GET", "/conversations", params={"inbox": "true"}).json()["conversations"][0]
    assert newest["id"] == conv_id and newest["messages_count"] == 1
    assert inbox_before <= len(client("GET", "/conversations", params={"inbox": "true", "limit": 50}
                                      ).json()["conversations"])
    first = first_id(fake, "conversations")
    other = fake.add_message("<p>second</p>", conversation_id=first, delivered_at=1)
    assert other in [m["id"] for m in client("GET", f"/conversations/{first}/messages",
                                             params={"until": 1}).json()["messages"]]
    assert client("GET", f"/conversations/{first}").json()["conversations"][0]["messages_count"] == 13
    with pytest.raises(KeyError):
        fake.add_message("<p>x</p>", conversation_id="nope")


# ---- realistic thread and inbox ---------------------------------------------------------------------------------

def page_all(client, path, key, cursor):
    """Every item of a cursor list, following `until` (inclusive) page by page; also the page sizes."""
    seen, sizes, until = {}, [], None
    while True:
        page = client("GET", path, params={} if until is None else {"until": until}).json()[key]
        sizes.append(len(page))
        new = [x for x in page if x["id"] not in seen]
        seen.update((x["id"], x) for x in page)
        if len(page) < 10 or not new:
            return list(seen.values()), sizes
        until = page[-1][cursor]


def visible_text(body: str) -> str:
    body = re.sub(r"(?is)<head.*?</head>", " ", body)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


def test_thread_lists_page_and_count_consistently(fake, client):
    assert fake.data["conversations"][THREAD]["id"] == THREAD_ID
    conv = client("GET", f"/conversations/{THREAD_ID}").json()["conversations"][0]
    messages, sizes = page_all(client, f"/conversations/{THREAD_ID}/messages", "messages", "delivered_at")
    comments, comment_sizes = page_all(client, f"/conversations/{THREAD_ID}/comments", "comments", "created_at")
    posts = client("GET", f"/conversations/{THREAD_ID}/posts").json()["posts"]
    drafts = client("GET", f"/conversations/{THREAD_ID}/drafts").json()["drafts"]
    assert sizes[0] == 10 and comment_sizes[0] == 10  # both need a second page
    assert (conv["messages_count"], len(messages), len(comments), len(posts), len(drafts)) == (12, 12, 11, 3, 1)
    assert conv["drafts_count"] == 1 and conv["attachments_count"] == sum(len(m["attachments"]) for m in messages) == 7
    assert conv["latest_message_subject"] == "RE: Re: Damaged tent poles in wholesale order #7702"
    assert [a["name"] for a in conv["assignees"]] == ["Priya Natarajan", "Marcus Bell"]
    times = [m["delivered_at"] for m in messages]
    assert times == sorted(times, reverse=True) and len(set(times)) == 12
    activity = [c["created_at"] for c in comments] + [p["created_at"] for p in posts] + times
    assert conv["last_activity_at"] == max(activity + [drafts[0]["delivered_at"]])
    # Notes and posts fall between the messages, not all before or after them.
    between = [t for t in [c["created_at"] for c in comments] + [p["created_at"] for p in posts]
               if min(times) < t < max(times)]
    assert len(between) >= 10 and len({sum(t > m for m in times) for t in between}) >= 5
    inbox_ids = {c["id"] for c in page_all_conversations(client, {"inbox": "true"})}
    assert THREAD_ID in inbox_ids


def test_thread_headers_chain_and_lookup(fake, client):
    listed, _ = page_all(client, f"/conversations/{THREAD_ID}/messages", "messages", "delivered_at")
    oldest_first = listed[::-1]
    ids = [m["email_message_id"] for m in oldest_first]
    assert ids == [spec[6] for spec in THREAD_MESSAGES] and len(set(ids)) == 12
    people = set()
    for c, m in enumerate(oldest_first):
        assert m["references"] == ids[:c] and m["in_reply_to"] == ids[c - 1:c]
        assert m["preview"] and "body" not in m and m["subject"].endswith("Damaged tent poles in wholesale order #7702")
        people |= {p["address"] for p in [m["from_field"], *m["to_fields"], *m["cc_fields"]]}
        found = client("GET", "/messages", params={"email_message_id": m["email_message_id"]}).json()["messages"]
        assert [x["id"] for x in found] == [m["id"]]
    assert people >= {"mei.lin@alpinesupply.example", "julien.moreau@alpinesupply.example",
                      "priya@northwind.test", "marcus@northwind.test"}
    assert {m["subject"].split("Damaged")[0] for m in oldest_first} == {"", "Re: ", "RE: Re: ", "Re: Re: "}
    agents = [m for m in oldest_first if m["author"]]
    assert {m["from_field"]["address"] for m in agents} == {"priya@northwind.test", "marcus@northwind.test"}
    full = client("GET", "/messages/" + ",".join(m["id"] for m in oldest_first)).json()["messages"]
    assert [m["body"] for m in full] == list(thread_bodies())
    assert all(m["conversation"]["id"] == THREAD_ID for m in full)


def test_thread_bodies_quote_history_in_client_styles():
    bodies = thread_bodies()
    whole = "".join(bodies)
    for marker in ('<div class="gmail_quote">', 'class="gmail_attr">On Mon, 22 Jul 2024 at 09:14, Mei Lin &lt;',
                   '<blockquote class="gmail_quote" style=', 'id="divRplyFwdMsg"',
                   "border-top:solid #E1E1E1 1.0pt", 'class="MsoNormal"', '<blockquote type="cite">On 23 Jul 2024',
                   "\n&gt; Thanks Julien", "\n&gt;&gt; Hello Priya", "---------- Forwarded message ---------",
                   "Le&nbsp;lun. 22 juil. 2024 à&nbsp;10:02", "a écrit&nbsp;:", 'gmail_signature_prefix">-- </span>',
                   "\n-- \nMarcus Bell", "cid:image001.png", "northwind-logo-120.png", "are confidential",
                   "Sent from my iPhone"):
        assert marker in whole, marker
    # Each reply that quotes carries the previous message's text: the last one holds the history back to the
    # inline reply, and the forwarded mail (from outside the thread) rides along inside it.
    texts = [visible_text(b) for b in bodies]
    for c, name in enumerate(spec[0] for spec in THREAD_MESSAGES):
        if "{{history}}" in (Path(__file__).parent / "fixtures" / "thread" / name).read_text(encoding="utf-8"):
            assert visible_text(bodies[c - 1])[:200] in texts[c], name
    for phrase in ("[Mei] Yes please, option 1", "claims@freightline.example", "We opened the pole sets"):
        assert phrase in texts[-1]
    inline = texts[5]  # answers interleaved with the quoted lines: not pure history
    assert inline.index("1. We send 6") < inline.index("[Mei] Yes please") < inline.index("2. You return") \
        < inline.index("[Mei] Not needed")
    assert len(bodies[-1]) > 3 * len(bodies[1])


def page_all_conversations(client, params):
    seen, until = {}, None
    while True:
        page = client("GET", "/conversations", params={**params, "limit": 50, **({"until": until} if until else {})}
                      ).json()["conversations"]
        new = [c for c in page if c["id"] not in seen]
        seen.update((c["id"], c) for c in page)
        if len(page) < 50 or not new:
            return list(seen.values())
        until = min(c["last_activity_at"] for c in page)


def test_inbox_holds_fifty_realistic_conversations(fake, client):
    first = client("GET", "/conversations", params={"inbox": "true", "limit": 50}).json()["conversations"]
    assert len(first) == 50
    inbox = page_all_conversations(client, {"inbox": "true"})
    assert len(inbox) == 51
    full = [c for c in inbox if "messages_count" in c]
    guests = [c for c in inbox if set(c) == {"id", "last_activity_at"}]
    assert len(guests) == 2 and len(full) == 49
    assert sum(bool(c["assignees"]) for c in full) >= 20 and sum(not c["assignees"] for c in full) >= 10
    assert sum(bool(c["shared_labels"]) for c in full) >= 10 and sum(c["team"] is None for c in full) >= 3
    assert len({c["organization"]["id"] for c in full}) == 2 and len({c["messages_count"] for c in full}) >= 4
    flags = [u for c in full for u in c["users"]]
    assert any(u["flagged"] for u in flags) and any(u["assigned"] for u in flags)
    assert not any(u["closed"] for u in flags)
    triage = fake.data["conversations"][TRIAGE_FIRST:TRIAGE_FIRST + len(TRIAGE)]
    assert [c["latest_message_subject"].removeprefix("Re: ") for c in triage] == \
        [subject.removeprefix("Re: ") for subject, *_ in TRIAGE]
    for conv in [fake.data["conversations"][THREAD], *triage]:  # counts agree with the sub-lists
        if conv["_guest_only"]:
            continue
        shown = client("GET", f"/conversations/{conv['id']}").json()["conversations"][0]
        messages, _ = page_all(client, f"/conversations/{conv['id']}/messages", "messages", "delivered_at")
        assert shown["messages_count"] == len(messages) and shown["last_activity_at"] >= messages[0]["delivered_at"]


# ---- standalone -------------------------------------------------------------------------------------------------

def test_command_line():
    script = Path(__file__).with_name("fake_missive.py")
    with subprocess.Popen([sys.executable, str(script), "--port", "0", "--token", "T"],
                          stderr=subprocess.PIPE, text=True) as proc:  # closes the stderr pipe on the way out
        try:
            url = proc.stderr.readline().strip()
            assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
            assert requests.get(url + "/organizations", headers={"Authorization": "Bearer T"}, timeout=5).ok
        finally:
            proc.terminate()
            proc.wait(timeout=10)
