"""Built-in filters through the real gateway: what the upstream received and what the client got
(SPEC §4's examples; lessons 8, 10, 11, 12, 40)."""
import socket
import time

import pytest

from gw import Gateway
from mockup import MockUpstream


@pytest.fixture
def up():
    u = MockUpstream()
    yield u
    u.close()


def route(up, *filters, path="/"):
    return {"upstreams": {"u": {"backends": [up.addr]}},
            "routes": [{"match": {"path": path}, "upstream": "u", "filters": list(filters)}]}


def test_request_headers(procs, tmp_path, up):
    g = Gateway(procs, tmp_path, route(up, {"request_headers": {
        "set": {"X-Pingora-Proxy": "true"}, "add": {"X-Multi": "2"},
        "remove": ["User-Agent"], "copy": {"X-Trace": "X-Trace-Copy"}}}))
    g.get("/", headers={"User-Agent": "curl/x", "x-pingora-proxy": "false", "X-Multi": "1",
                        "X-Trace": "abc"})
    r = up.last()
    assert r.header_all("x-pingora-proxy") == ["true"], "set replaces, never duplicates"
    assert r.header("user-agent") is None
    assert r.header_all("x-multi") == ["1", "2"]
    assert r.header("x-trace-copy") == "abc"


def test_response_headers_lesson_11(procs, tmp_path, up):
    g = Gateway(procs, tmp_path, route(up, {"response_headers": {
        "set": {"X-Content-Type-Options": "nosniff"}, "remove": ["Content-Type"],
        "copy": {"Content-Length": "X-Legacy-Length", "Date": "X-Legacy-Date"}}}))
    status, headers, body = g.get("/")
    assert status == 200 and body == b"hello\n"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Type" not in headers
    assert headers["X-Legacy-Length"] == "6"
    assert "X-Legacy-Date" not in headers, "no Date from this upstream: nothing to copy"


def test_query_lesson_10(procs, tmp_path, up):
    g = Gateway(procs, tmp_path, route(up, {"query": {
        "remove_prefix": ["debug="], "append": {"ref": "pingora"}}}))
    g.get("/search?q=rust&debug=true&sort=asc")
    assert up.last().target == "/search?q=rust&sort=asc&ref=pingora"
    g.get("/search?d%65bug=1&x=2")
    assert up.last().target == "/search?x=2&ref=pingora"
    g.get("/plain")
    assert up.last().target == "/plain?ref=pingora"


def test_query_removing_everything_leaves_no_question_mark(procs, tmp_path, up):
    g = Gateway(procs, tmp_path, route(up, {"query": {"remove_prefix": ["debug="]}}))
    g.get("/p?debug=1&debug=2")
    assert up.last().target == "/p"


def raw_post(port, chunks, headers=b""):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Connection: close\r\n" + headers + b"\r\n")
        for c in chunks:
            s.sendall(b"%x\r\n%s\r\n" % (len(c), c))
            time.sleep(0.05)
        s.sendall(b"0\r\n\r\n")
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
        return out


def test_body_inspect_lesson_12(procs, tmp_path, up):
    g = Gateway(procs, tmp_path, route(up, {"body_inspect": {"deny": ["rogue"]}}))
    r = raw_post(g.port, [b"Hello World"])
    assert r.startswith(b"HTTP/1.1 200")
    assert up.last().body == b"Hello World"
    n = len(up.requests)
    r = raw_post(g.port, [b"I am a ro", b"gue agent"])   # split across chunks
    assert r.startswith(b"HTTP/1.1 500"), r[:100]
    assert len(up.requests) == n, "the upstream never got a complete request"


def test_body_inspect_ignore_case(procs, tmp_path, up):
    g = Gateway(procs, tmp_path, route(up, {"body_inspect": {"deny": ["rogue"],
                                                             "ignore_case": True}}))
    assert raw_post(g.port, [b"RO", b"GUE"]).startswith(b"HTTP/1.1 500")


def test_body_inspect_limit_lesson_40(procs, tmp_path, up):
    g = Gateway(procs, tmp_path, route(up, {"body_inspect": {
        "deny": ["rogue"], "max_buffer": 100, "on_overflow": "reject"}}))
    with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n"
                  b"Connection: close\r\n\r\n" + b"a" * 101)
        assert s.recv(100).startswith(b"HTTP/1.1 413")
    assert len(up.requests) == 0, "refused before anything went upstream"
    assert raw_post(g.port, [b"a" * 60, b"b" * 41]).startswith(b"HTTP/1.1 413")
    assert raw_post(g.port, [b"a" * 50, b"b" * 50]).startswith(b"HTTP/1.1 200")
    assert up.last().body == b"a" * 50 + b"b" * 50


def test_body_inspect_pass_beyond_limit(procs, tmp_path, up):
    g = Gateway(procs, tmp_path, route(up, {"body_inspect": {"deny": ["rogue"],
                                                             "max_buffer": "1k"}}))
    body = b"x" * 4096 + b"rogue"
    with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n" % len(body) + body)
        out = b""
        while (d := s.recv(65536)):
            out += d
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(body)
    assert up.last().body == body


BAD_FILTERS = [
    ({"request_headers": {"set": {"X": "a\r\nEvil: 1"}}}, "routes[0].filters[0].request_headers.set.X"),
    ({"request_headers": {"set": {"Content-Length": "1"}}}, "Content-Length"),
    ({"query": {"remove_prefix": ["a", ""]}}, "routes[0].filters[0].query.remove_prefix[1]"),
    ({"body_inspect": {"deny": []}}, "routes[0].filters[0].body_inspect.deny"),
    ({"nosuch": {}}, "routes[0].filters[0].nosuch: unknown filter"),
]


@pytest.mark.parametrize("flt,msg", BAD_FILTERS, ids=[m for _, m in BAD_FILTERS])
def test_bad_filter_configs_refused(procs, tmp_path, up, flt, msg):
    g = Gateway(procs, tmp_path, route(up))
    status, reply = g.put_config({"routes": [{"match": {"path": "/"},
                                              "respond": {"status": 200, "body": "x"},
                                              "filters": [flt]}]})
    assert status == 400 and msg in reply["message"], reply
    assert g.get("/")[2] == b"hello\n", "the old config still serves"
