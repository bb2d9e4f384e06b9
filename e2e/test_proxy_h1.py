"""The HTTP/1.1 engine (issue: engine) against a scripted upstream: framing, keep-alive,
pipelining, bodies both ways with backpressure, trailers, 100-continue, hop-by-hop headers,
X-Forwarded-*, pooling and retries, timeouts, and every bad input of the issue. Both sides are
asserted: what the client got and what the upstream received."""
import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from helpers import free_port
from mockup import pattern


@pytest.fixture
def fwd(start_fwd, upstream):
    return start_fwd(upstream.addr)


def curl(*args, timeout=30):
    return subprocess.run(["curl", "-sS", *map(str, args)], capture_output=True, timeout=timeout)


def raw(port, data, timeout=5.0, until_close=True):
    """Sends bytes, returns what came back until the server closed (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
            if not until_close and b"\r\n\r\n" in out:
                break
        return out


def status_of(resp):
    return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/") else None


def still_serves(port):
    r = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(r) == 200, r[:200]


# ---- forwarding and headers ---------------------------------------------------------------

def test_forward_and_both_sides(fwd, upstream):
    r = curl("-i", "-H", "X-Custom: 1", "-H", "Connection: keep-alive, X-Drop-Me",
             "-H", "X-Drop-Me: secret", "-H", "Keep-Alive: timeout=5",
             "-H", "X-Forwarded-For: 10.9.9.9", f"{fwd.url}/?a=1")
    assert r.returncode == 0
    assert r.stdout.startswith(b"HTTP/1.1 200 OK\r\n")
    assert r.stdout.endswith(b"\r\n\r\nhello\n")
    req = upstream.last()
    assert req.method == "GET" and req.target == "/?a=1" and req.version == "HTTP/1.1"
    assert req.header("host") == f"127.0.0.1:{fwd.port}"
    assert req.header("x-custom") == "1"
    # hop-by-hop headers (and those named in Connection) stay on the client's hop
    for h in ("connection", "keep-alive", "x-drop-me"):
        assert req.header(h) is None, h
    assert req.header("x-forwarded-for") == "10.9.9.9, 127.0.0.1"
    assert req.header("x-forwarded-proto") == "http"
    assert req.header("x-forwarded-host") == f"127.0.0.1:{fwd.port}"


def test_response_hop_by_hop_removed_and_reason_kept(fwd, upstream):
    r = raw(fwd.port, b"GET /status/418 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 418 X\r\n")
    assert b"\r\nConnection: close\r\n" in r


def test_keepalive_and_pool_reuse(fwd, upstream):
    with socket.create_connection(("127.0.0.1", fwd.port)) as s:
        for i in range(5):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"hello\n"):
                data += s.recv(4096)
            assert data.startswith(b"HTTP/1.1 200")
    reqs = upstream.wait_requests(5)
    assert {r.conn_id for r in reqs} == {reqs[0].conn_id}, "one pooled upstream connection"
    assert "reused=true" in fwd.proc.log()


def test_pipelined_requests_answered_in_order(fwd, upstream):
    batch = b"".join(
        f"GET /bytes/{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for n in (10, 20000, 3))
    batch += b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    r = raw(fwd.port, batch)
    parts = r.split(b"HTTP/1.1 200 OK")
    assert len(parts) == 5
    assert [r.target for r in upstream.wait_requests(4)] == ["/bytes/10", "/bytes/20000",
                                                             "/bytes/3", "/"]
    assert pattern(10) in parts[1] and pattern(20000) in parts[2] and r.endswith(b"hello\n")


def test_head_204_304_have_no_body(fwd, upstream):
    r = raw(fwd.port, b"HEAD /bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /status/304 HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    heads = r.split(b"\r\n\r\n")
    assert heads[0].startswith(b"HTTP/1.1 200") and b"Content-Length: 1000" in heads[0]
    assert heads[1].startswith(b"HTTP/1.1 204")
    assert heads[2].startswith(b"HTTP/1.1 304")
    assert heads[3].startswith(b"HTTP/1.1 200") and heads[4] == b"hello\n"


def test_http10_client(fwd, upstream):
    r = raw(fwd.port, b"GET /stream/5000 HTTP/1.0\r\n\r\n")
    head, _, body = r.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert b"chunked" not in head.lower(), "no chunked coding for HTTP/1.0"
    assert body == pattern(5000)
    # the upstream still gets an HTTP/1.1 request with a Host
    assert upstream.last().version == "HTTP/1.1" and upstream.last().header("host")


def test_absolute_form_target(fwd, upstream):
    r = raw(fwd.port, b"GET http://example.test:81/?q=1 HTTP/1.1\r\nHost: other\r\n"
                      b"Connection: close\r\n\r\n")
    assert status_of(r) == 200
    req = upstream.last()
    assert req.target == "/?q=1" and req.header("host") == "example.test:81"


# ---- bodies ---------------------------------------------------------------------------------

def test_10mib_upload_and_download(fwd, upstream, tmp_path):
    blob = os.urandom(10 * 1024 * 1024)
    f = tmp_path / "blob"
    f.write_bytes(blob)
    r = curl("--data-binary", f"@{f}", "-H", "Content-Type: application/octet-stream",
             f"{fwd.url}/echo")
    assert r.returncode == 0 and hashlib.sha256(r.stdout).digest() == hashlib.sha256(blob).digest()
    assert upstream.last().body == blob
    r = curl(f"{fwd.url}/stream/{10 * 1024 * 1024}")
    assert r.stdout == pattern(10 * 1024 * 1024)


def test_chunked_upload_with_trailers_and_chunked_response_trailers(fwd, upstream):
    body = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in (b"hello ", b"chunked ", b"world"))
    r = raw(fwd.port, b"POST /echo-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                      b"Connection: close\r\n\r\n" + body + b"0\r\nX-Sum: 42\r\n\r\n")
    req = upstream.last()
    assert req.body == b"hello chunked world"
    assert req.header("transfer-encoding") == "chunked"
    assert req.trailers == [("X-Sum", "42")], "request trailers forwarded"
    head, _, rest = r.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert rest.endswith(b"0\r\nX-Body-Length: 19\r\n\r\n"), rest[-60:]
    assert b"hello chunked world" in rest.replace(b"\r\n", b"").replace(b"13", b"")


def test_expect_100_continue(fwd, upstream, tmp_path):
    f = tmp_path / "b"
    f.write_bytes(b"z" * 300000)
    r = curl("-v", "-H", "Expect: 100-continue", "--data-binary", f"@{f}", f"{fwd.url}/echo")
    assert r.returncode == 0
    assert b"HTTP/1.1 100 Continue" in r.stderr
    assert r.stdout == b"z" * 300000
    assert upstream.last().header("expect") is None, "Expect is answered by the proxy"


def test_upstream_100_continue_is_not_forwarded(fwd, upstream):
    r = raw(fwd.port, b"GET /continue HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 200") and r.endswith(b"after continue\n")


def test_close_delimited_response_becomes_chunked(fwd, upstream):
    r = raw(fwd.port, b"GET /close-delimited/70000 HTTP/1.1\r\nHost: x\r\n"
                      b"Connection: close\r\n\r\n")
    head, _, body = r.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body.endswith(b"0\r\n\r\n")


def test_slow_client_does_not_make_the_proxy_buffer(start_fwd, upstream):
    f = start_fwd(upstream.addr)
    base = f.rss_kb()
    size = 200 * 1024 * 1024
    s = socket.create_connection(("127.0.0.1", f.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(f"GET /stream/{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    got = 0
    for _ in range(50):  # read slowly for ~1 s
        got += len(s.recv(65536))
        time.sleep(0.02)
    grown = f.rss_kb() - base
    s.close()
    assert got < 20 * 1024 * 1024
    assert grown < 16 * 1024, f"proxy grew {grown} KiB while the client was slow"
    still_serves(f.port)


def test_slow_upstream_does_not_make_the_proxy_buffer_uploads(start_fwd, upstream):
    f = start_fwd(upstream.addr)
    upstream.slow_read_delay = 0.05
    base = f.rss_kb()
    size = 100 * 1024 * 1024
    s = socket.create_connection(("127.0.0.1", f.port))
    s.settimeout(0.2)
    s.sendall(f"POST /slow-read HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
              f"Connection: close\r\n\r\n".encode())
    sent = 0
    chunk = b"u" * 65536
    t0 = time.time()
    while time.time() - t0 < 1.0:
        try:
            sent += s.send(chunk)
        except (socket.timeout, BlockingIOError):
            pass
    grown = f.rss_kb() - base
    s.close()
    assert sent < 40 * 1024 * 1024, "the client was held back"
    assert grown < 16 * 1024, f"proxy grew {grown} KiB while the upstream was slow"
    # The upload can never finish now; do not wait out the grace period.
    f.proc.stop(signal.SIGINT)


# ---- upstream failures ----------------------------------------------------------------------

def test_refused_upstream_gives_502_json(start_fwd):
    dead = free_port()
    f = start_fwd(f"127.0.0.1:{dead}")
    r = curl("-i", f.url + "/")
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502")
    assert b"Content-Type: application/json" in head
    assert json.loads(body) == {"status": "error", "code": 502,
                                "message": "upstream connect failed"}
    assert "cannot connect to upstream" in f.proc.log()


def test_garbage_from_upstream_gives_502(fwd, upstream):
    r = raw(fwd.port, b"GET /garbage HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(r) == 502
    still_serves(fwd.port)


def test_oversized_upstream_header_gives_502(fwd, upstream):
    r = raw(fwd.port, b"GET /huge-header HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(r) == 502
    still_serves(fwd.port)


def test_upstream_that_never_answers_gives_504(start_fwd, upstream):
    f = start_fwd(upstream.addr, "--read-timeout", 300)
    t0 = time.time()
    r = raw(f.port, b"GET /never HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(r) == 504
    assert 0.25 < time.time() - t0 < 3
    still_serves(f.port)


@pytest.mark.parametrize("path", ["/abort-body", "/abort-chunked"])
def test_upstream_closing_mid_body_aborts_the_response(fwd, upstream, path):
    r = curl(f"{fwd.url}{path}")
    assert r.returncode == 18, (r.returncode, r.stdout, r.stderr)  # partial file: never complete
    still_serves(fwd.port)


def test_stale_pooled_connection_is_retried(fwd, upstream):
    assert curl(f"{fwd.url}/close-once").stdout == b"first\n"
    # The pooled connection will be closed by the upstream when it sees the next request.
    r = curl(f"{fwd.url}/close-once")
    assert r.stdout == b"first\n", r
    reqs = upstream.wait_requests(3)
    assert reqs[1].conn_id == reqs[0].conn_id and reqs[2].conn_id != reqs[0].conn_id


def test_pool_is_bounded(start_fwd, upstream):
    f = start_fwd(upstream.addr, "--pool-size", 2)
    threads = [threading.Thread(target=curl, args=(f"{f.url}/bytes/100000",)) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.3)
    out = subprocess.run(["ss", "-Htn", "state", "established", f"dport = :{upstream.port}"],
                         capture_output=True, text=True).stdout
    assert len(out.strip().splitlines()) <= 2, out


# ---- bad input ------------------------------------------------------------------------------

BAD_REQUESTS = [
    ("cl_and_te", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("two_cl", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
               b"hello!", 400),
    ("negative_cl", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
    ("alpha_cl", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    ("te_not_chunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("te_chunked_not_final", b"POST / HTTP/1.1\r\nHost: x\r\n"
                             b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("bad_chunk_size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"zz\r\nhello\r\n0\r\n\r\n", 400),
    ("overlong_chunk_size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"fffffffffffffffffff\r\nhello\r\n", 400),
    ("bare_lf_in_value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nb\r\n\r\n", 400),
    ("bare_cr_in_value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
    ("nul_in_header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
    ("obs_fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n", 400),
    ("space_before_colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n", 400),
    ("no_host", b"GET / HTTP/1.1\r\nX-A: a\r\n\r\n", 400),
    ("two_hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("bad_method", b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("long_uri", b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("huge_headers", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 40000 + b"\r\n\r\n", 431),
    ("too_many_headers", b"GET / HTTP/1.1\r\nHost: x\r\n" +
     b"".join(b"X-%d: a\r\n" % i for i in range(150)) + b"\r\n", 431),
]


@pytest.mark.parametrize("name,data,status", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request(fwd, upstream, name, data, status):
    before = len(upstream.requests)
    r = raw(fwd.port, data)
    assert status_of(r) == status, r[:300]
    assert b"Connection: close" in r
    assert len(upstream.requests) == before, "nothing reached the upstream"
    still_serves(fwd.port)


def test_slowloris_gets_408_and_close(start_fwd, upstream):
    f = start_fwd(upstream.addr, "--header-timeout", 1000)
    s = socket.create_connection(("127.0.0.1", f.port))
    t0 = time.time()
    s.settimeout(0.2)
    out = b""
    for ch in b"GET / HTTP/1.1\r\nHost: x\r\n":
        try:
            s.send(bytes([ch]))
        except OSError:
            break
        try:
            data = s.recv(4096)
            out += data
            if out.endswith(b"}") or not data:
                break
        except socket.timeout:
            pass
        if time.time() - t0 > 4:
            break
    s.close()
    assert status_of(out) == 408, out
    assert time.time() - t0 < 3
    still_serves(f.port)


def test_idle_keepalive_timeout_closes(start_fwd, upstream):
    f = start_fwd(upstream.addr, "--keepalive-timeout", 300)
    with socket.create_connection(("127.0.0.1", f.port), timeout=3) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"hello\n"):
            data += s.recv(4096)
        t0 = time.time()
        assert s.recv(10) == b""
        assert time.time() - t0 < 2


def test_body_read_timeout(start_fwd, upstream):
    f = start_fwd(upstream.addr, "--body-timeout", 300)
    r = raw(f.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
    assert status_of(r) == 408
    still_serves(f.port)


def test_graceful_shutdown_finishes_inflight(start_fwd, upstream):
    f = start_fwd(upstream.addr)
    results = {}

    def slow():
        results["r"] = curl("--limit-rate", "2M", f"{f.url}/bytes/{4 * 1024 * 1024}")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    f.proc.send(15)
    t.join(15)
    assert results["r"].returncode == 0
    assert results["r"].stdout == pattern(4 * 1024 * 1024)
    assert f.proc.wait(10) == 0


# ---- hooks that finish later (SL_PENDING + sl_session_resume) ---------------------------------

def test_pending_hooks_resume(start_fwd, upstream):
    f = start_fwd(upstream.addr, "--pending-filter", 30, "--pending-peer", 30)
    t0 = time.time()
    r = raw(f.port, b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert time.time() - t0 >= 0.15, "three requests, each waited 60 ms in hooks"
    parts = r.split(b"HTTP/1.1 200 OK")
    assert len(parts) == 4 and parts[2].endswith(b"hello") and r.endswith(b"hello\n")
    assert [q.target for q in upstream.wait_requests(3)] == ["/bytes/10", "/echo", "/"]


def test_client_gone_while_a_hook_is_pending(start_fwd, upstream):
    f = start_fwd(upstream.addr, "--pending-peer", 300)
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", f.port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.close()
    time.sleep(0.6)
    assert upstream.requests == [], "nothing went upstream for clients that left"
    assert f.proc.alive()
    still_serves(f.port)


def test_client_that_leaves_before_the_response_abandons_the_request(fwd, upstream):
    """Like nginx's 499: a client that closes while the upstream has not answered is gone;
    the upstream request is dropped at once, not after the read timeout."""
    with socket.create_connection(("127.0.0.1", fwd.port)) as s:
        s.sendall(b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream.wait_requests(1)
    t0 = time.monotonic()
    assert fwd.proc.wait_log(r"GET /never -> 0 err=SL_EDOWNSTREAM_CLOSED", timeout=5)
    assert time.monotonic() - t0 < 3
    still_serves(fwd.port)
