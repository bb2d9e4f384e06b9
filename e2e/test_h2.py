"""HTTP/2 clients (issue: TLS and HTTP/2): h2 over TLS by ALPN, h2c by prior knowledge and by
Upgrade, many concurrent streams, flow control both ways, trailers, resets in both directions,
GOAWAY on shutdown, and protocol violations answered as RFC 9113 says while other connections
keep being served. Peers: curl, nghttp, h2load and a Python h2 client; what the HTTP/1.1
upstream received is asserted too."""
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time

import h2.errors
import h2.settings
import pytest

from h2client import H2Client
from helpers import free_port
from mockup import pattern


@pytest.fixture
def fwd(start_fwd, upstream):
    return start_fwd(upstream.addr)


@pytest.fixture
def tls_fwd(start_fwd, upstream, certs):
    return start_fwd(upstream.addr, "--tls-cert", certs / "server.crt", "--tls-key",
                     certs / "server.key", "--h2")


def curl(*args, timeout=60):
    return subprocess.run(["curl", "-sS", *map(str, args)], capture_output=True, timeout=timeout)


def still_serves(port):
    c = H2Client(port)
    r = c.get("/")
    c.close()
    assert r.status == 200 and bytes(r.body) == b"hello\n"


# ---- the three ways in -----------------------------------------------------------------------

def test_h2_over_tls_by_alpn(tls_fwd, upstream, certs):
    r = curl("-i", "--http2", "--cacert", certs / "ca.crt", "-H", "Cookie: a=1",
             "-H", "Cookie: b=2", f"https://localhost:{tls_fwd.port}/x?q=1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"HTTP/2 200") and r.stdout.endswith(b"\r\n\r\nhello\n")
    req = upstream.last()
    assert req.version == "HTTP/1.1" and req.target == "/x?q=1"
    assert req.header("host") == f"localhost:{tls_fwd.port}"  # from :authority
    assert req.header("x-forwarded-proto") == "https"
    assert req.header("cookie") == "a=1; b=2", "cookie crumbs joined for HTTP/1.1"
    assert tls_fwd.wait_log(r"GET /x\?q=1 -> 200 .* alpn=h2")


def test_h2c_prior_knowledge_and_nghttp(fwd, upstream):
    r = curl("-i", "--http2-prior-knowledge", f"http://127.0.0.1:{fwd.port}/bytes/1000")
    assert r.stdout.startswith(b"HTTP/2 200") and r.stdout.endswith(pattern(1000))
    r = subprocess.run(["nghttp", "-n", "-s", f"http://127.0.0.1:{fwd.port}/a",
                        f"http://127.0.0.1:{fwd.port}/b"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    targets = sorted(x.target for x in upstream.requests)
    assert targets == ["/a", "/b", "/bytes/1000"]


def test_h2c_upgrade(fwd, upstream):
    r = curl("-i", "--http2", f"http://127.0.0.1:{fwd.port}/bytes/300")
    assert r.stdout.startswith(b"HTTP/1.1 101 Switching Protocols"), r.stdout[:200]
    assert b"\r\n\r\nHTTP/2 200" in r.stdout and r.stdout.endswith(pattern(300))
    req = upstream.last()
    # the upgrade's own fields stay on the client's hop
    assert req.header("upgrade") is None and req.header("http2-settings") is None
    assert req.header("connection") is None


def test_h2c_upgrade_bad_settings_refused(fwd):
    with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                  b"Upgrade: h2c\r\nHTTP2-Settings: !!!not-base64!!!\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    still_serves(fwd.port)


def test_h2c_disabled_on_tls_listener_without_alpn_h2(start_fwd, upstream, certs):
    # a TLS listener without --h2 offers only http/1.1
    f = start_fwd(upstream.addr, "--tls-cert", certs / "server.crt", "--tls-key",
                  certs / "server.key")
    r = curl("-i", "--http2", "--cacert", certs / "ca.crt", f"https://localhost:{f.port}/")
    assert r.stdout.startswith(b"HTTP/1.1 200")


# ---- streams ---------------------------------------------------------------------------------

def test_many_concurrent_streams(fwd, upstream):
    c = H2Client(fwd.port)
    sizes = [1 + i * 997 for i in range(100)]
    sids = [c.request(f"/bytes/{n}") for n in sizes]
    rs = c.wait(sids, timeout=60)
    for n, r in zip(sizes, rs):
        assert r.status == 200 and bytes(r.body) == pattern(n), n
        assert r.header("content-length") == str(n)
    c.close()
    assert len(upstream.requests) == 100
    r = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "32",
                        f"http://127.0.0.1:{fwd.port}/"], capture_output=True, text=True,
                       timeout=120)
    assert "2000 succeeded, 0 failed, 0 errored" in r.stdout, r.stdout


def test_10mib_both_ways_h2_to_h1(tls_fwd, upstream, certs, tmp_path):
    blob = os.urandom(10 * 1024 * 1024)
    f = tmp_path / "blob"
    f.write_bytes(blob)
    r = curl("--http2", "--cacert", certs / "ca.crt", "--data-binary", f"@{f}",
             f"https://localhost:{tls_fwd.port}/echo")
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(blob).digest()
    req = upstream.last()
    assert req.body == blob and req.header("content-length") == str(len(blob))
    r = curl("--http2", "--cacert", certs / "ca.crt",
             f"https://localhost:{tls_fwd.port}/stream/{10 << 20}")
    assert r.stdout == pattern(10 << 20)


def test_upload_without_length_goes_chunked(fwd, upstream):
    c = H2Client(fwd.port)
    body = os.urandom(300000)
    sid = c.request("/echo", method="POST", body=body)  # no content-length
    r = c.wait(sid)[0]
    assert r.status == 200 and bytes(r.body) == body
    req = upstream.last()
    assert req.header("transfer-encoding") == "chunked" and req.body == body


def test_trailers_both_ways(fwd, upstream):
    c = H2Client(fwd.port)
    sid = c.request("/echo-chunked", method="POST", body=None, end=False,
                    headers=[("te", "trailers")])
    c.conn.send_data(sid, b"hello ")
    c.conn.send_data(sid, b"world")
    c.conn.send_headers(sid, [("x-checksum", "42")], end_stream=True)
    c.flush()
    r = c.wait(sid)[0]
    assert r.status == 200 and bytes(r.body) == b"hello world"
    assert (b"x-body-length", b"11") in r.trailers, r.trailers
    req = upstream.last()
    assert req.body == b"hello world" and req.trailers == [("x-checksum", "42")]


def test_flow_control_backpressure_slow_client(fwd, upstream):
    """A client that does not open its window: sluice stops reading the upstream instead of
    buffering the whole body; once the client reads, every byte arrives."""
    size = 64 << 20
    c = H2Client(fwd.port, window=65535)
    c.window_updates = False
    sid = c.request(f"/stream/{size}")
    deadline = time.time() + 2
    while time.time() < deadline:
        c.pump(0.1)
    got = len(c.responses[sid].body)
    assert got <= 65535, got  # the stream window bounds what was sent
    rss = int(next(l for l in open(f"/proc/{fwd.p.pid}/status")
                   if l.startswith("VmRSS:")).split()[1])
    assert rss < 60 * 1024, f"RSS {rss} KiB while a client does not read"
    c.window_updates = True
    c.conn.acknowledge_received_data(got, sid)
    c.conn.increment_flow_control_window(1 << 30 - 1)
    c.flush()
    r = c.wait(sid, timeout=120)[0]
    assert r.ended and len(r.body) == size
    assert bytes(r.body[:1000]) == pattern(1000)


def test_client_reset_cancels_upstream_and_keeps_connection(fwd, upstream):
    c = H2Client(fwd.port)
    sid = c.request("/never")
    upstream.wait_requests(1)
    conns_before = upstream.connections
    c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    c.flush()
    time.sleep(0.3)
    assert fwd.wait_log("GET /never -> .* err=SL_EDOWNSTREAM_CLOSED")
    r = c.get("/bytes/10")  # the same connection serves on
    assert r.status == 200 and bytes(r.body) == pattern(10)
    assert upstream.connections == conns_before + 1, "the reset stream's upstream was dropped"
    c.close()


def test_upstream_failure_mid_response_resets_only_that_stream(fwd, upstream):
    c = H2Client(fwd.port)
    bad = c.request("/abort-body")
    good = c.request("/bytes/5000")
    rb, rg = c.wait([bad, good])
    assert rb.status == 200 and rb.reset == h2.errors.ErrorCodes.INTERNAL_ERROR
    assert rg.status == 200 and bytes(rg.body) == pattern(5000)
    assert not c.closed
    c.close()


def test_errors_are_responses_on_their_stream(start_fwd):
    f = start_fwd(f"127.0.0.1:{free_port()}")  # nothing listens there
    c = H2Client(f.port)
    r = c.get("/")
    assert r.status == 502 and b"upstream connect failed" in bytes(r.body)
    assert r.header("content-type") == "application/json"
    c.close()


def test_head_and_204(fwd, upstream):
    c = H2Client(fwd.port)
    r = c.get("/bytes/1234", method="HEAD")
    assert r.status == 200 and r.header("content-length") == "1234" and r.body == b""
    r = c.get("/status/204")
    assert r.status == 204 and r.body == b""
    c.close()


def test_expect_100_continue(fwd, upstream):
    c = H2Client(fwd.port)
    sid = c.request("/echo", method="POST", end=False,
                    headers=[("expect", "100-continue"), ("content-length", "5")])
    deadline = time.time() + 5
    while not c.responses[sid].informational and time.time() < deadline:
        c.pump(0.1)
    assert c.responses[sid].informational[0][0] == (b":status", b"100")
    c.send_body(sid, b"hello")
    r = c.wait(sid)[0]
    assert r.status == 200 and bytes(r.body) == b"hello"


# ---- shutdown and idleness -------------------------------------------------------------------

def test_goaway_on_graceful_shutdown_lets_streams_finish(start_fwd, upstream, tmp_path):
    """nghttp uploads 1 MiB to an upstream that reads it slowly; SIGTERM in the middle: the
    client gets GOAWAY(NO_ERROR) naming its stream, and the stream still completes."""
    f = start_fwd(upstream.addr)
    upstream.slow_read_delay = 0.05
    body = tmp_path / "body"
    body.write_bytes(os.urandom(1 << 20))
    client = subprocess.Popen(["nghttp", "-v", "-d", str(body),
                               f"http://127.0.0.1:{f.port}/slow-read"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace")
    time.sleep(0.8)
    f.send(signal.SIGTERM)
    out, _ = client.communicate(timeout=60)
    assert client.returncode == 0, out[-2000:]
    assert "recv GOAWAY frame" in out and "last_stream_id=13" in out, out[-3000:]
    assert ":status: 200" in out
    assert len(upstream.last().body) == 1 << 20
    assert f.wait_log(r"POST /slow-read -> 200")


def test_idle_connection_gets_goaway(start_fwd, upstream):
    f = start_fwd(upstream.addr, "--keepalive-timeout", 300)
    c = H2Client(f.port)
    assert c.get("/").status == 200
    assert c.wait_closed(timeout=5)
    assert c.goaway is not None and c.goaway[0] == h2.errors.ErrorCodes.NO_ERROR


# ---- protocol violations (RFC 9113) ----------------------------------------------------------

def test_bad_preface_closes_only_that_connection(tls_fwd, certs):
    import ssl
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    ctx.set_alpn_protocols(["h2"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_fwd.port)),
                         server_hostname="localhost") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not the h2 preface
        s.settimeout(5)
        data = b""
        try:
            while True:
                d = s.recv(4096)
                if not d:
                    break
                data += d
        except (ConnectionResetError, ssl.SSLError):
            pass
        assert b"HTTP/1.1 200" not in data
    c = H2Client(tls_fwd.port, tls_ca=certs / "ca.crt")
    assert c.get("/").status == 200


def test_connection_specific_header_is_a_stream_error(fwd, upstream):
    c = H2Client(fwd.port)
    r = c.get("/", headers=[("connection", "keep-alive")])
    assert r.reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
    r = c.get("/", headers=[("te", "gzip")])
    assert r.reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert not upstream.requests
    assert c.get("/").status == 200, "the connection stays usable"


def test_invalid_pseudo_headers(fwd, upstream):
    c = H2Client(fwd.port)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "x")],
                        end_stream=True)  # no :path
    c.responses[sid] = __import__("h2client").Response(sid)
    c.flush()
    r = c.wait(sid)[0]
    assert r.reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                              (":bogus", "1")], end_stream=True)
    c.responses[sid] = __import__("h2client").Response(sid)
    c.flush()
    assert c.wait(sid)[0].reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert not upstream.requests


def test_frames_on_closed_stream_end_the_connection(fwd):
    c = H2Client(fwd.port)
    sid = c.request("/")
    c.wait(sid)
    # DATA on a stream that is closed: a connection error STREAM_CLOSED
    frame = (5).to_bytes(3, "big") + b"\x00\x01" + sid.to_bytes(4, "big") + b"hello"
    c.sock.sendall(frame)
    assert c.wait_closed()
    assert c.goaway and c.goaway[0] == h2.errors.ErrorCodes.STREAM_CLOSED
    still_serves(fwd.port)


def test_oversized_headers_get_431(fwd, upstream):
    c = H2Client(fwd.port)
    r = c.get("/", headers=[(f"x-h{i}", "v" * 1000) for i in range(60)])
    assert r.status == 431 or r.reset is not None
    r = c.get("/", headers=[(f"x-n{i}", "v") for i in range(200)])  # too many fields
    assert r.status == 431
    assert not upstream.requests
    assert c.get("/").status == 200


def test_too_many_concurrent_streams_refused(start_fwd, upstream):
    """Streams beyond SETTINGS_MAX_CONCURRENT_STREAMS (128): nghttp2 ends such a connection
    with GOAWAY(PROTOCOL_ERROR) once the client acknowledged the setting; the first 128
    streams were accepted and other connections are unharmed."""
    f = start_fwd(upstream.addr)
    c = H2Client(f.port)
    c.pump(0.3)  # the server's SETTINGS, acknowledged
    frames = b""
    for sid in range(1, 2 * 130, 2):  # raw HEADERS: the h2 package would refuse to send them
        block = c.conn.encoder.encode([(":method", "GET"), (":path", "/never"),
                                       (":scheme", "http"), (":authority", "x")])
        frames += len(block).to_bytes(3, "big") + b"\x01\x05" + sid.to_bytes(4, "big") + block
    c.sock.sendall(frames)
    c.sock.settimeout(5)
    data = b""
    try:
        while True:
            d = c.sock.recv(65536)
            if not d:
                break
            data += d
    except OSError:
        pass
    goaway = None
    i = 0
    while i + 9 <= len(data):
        ln = int.from_bytes(data[i:i + 3], "big")
        if data[i + 3] == 7:
            goaway = (int.from_bytes(data[i + 9:i + 13], "big") & 0x7FFFFFFF,
                      int.from_bytes(data[i + 13:i + 17], "big"))
        i += 9 + ln
    assert goaway and goaway[1] == h2.errors.ErrorCodes.PROTOCOL_ERROR, goaway
    assert goaway[0] <= 2 * 128 - 1
    time.sleep(0.3)
    assert len(upstream.requests) <= 128
    still_serves(f.port)


def test_continuation_flood_ends_connection(fwd):
    c = H2Client(fwd.port)
    c.pump(0.2)
    sid = 1
    block = c.conn.encoder.encode([(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                   (":authority", "x")])
    # HEADERS without END_HEADERS, then endless CONTINUATION frames
    c.sock.sendall(len(block).to_bytes(3, "big") + b"\x01\x01" + sid.to_bytes(4, "big") + block)
    piece = b"\x00" * 0  # empty CONTINUATIONs
    try:
        for _ in range(100):
            c.sock.sendall(len(piece).to_bytes(3, "big") + b"\x09\x00" + sid.to_bytes(4, "big"))
    except OSError:
        pass
    assert c.wait_closed()
    still_serves(fwd.port)


def test_rapid_reset_flood_ends_that_connection_only(fwd, upstream):
    """CVE-2023-44487: HEADERS then RST_STREAM, thousands of times."""
    c = H2Client(fwd.port)
    other = H2Client(fwd.port)
    for i in range(3000):
        sid = c.conn.get_next_available_stream_id()
        try:
            c.conn.send_headers(sid, [(":method", "GET"), (":path", "/never"),
                                      (":scheme", "http"), (":authority", "x")],
                                end_stream=True)
            c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            if i % 50 == 0:
                c.flush()
        except (OSError, h2.exceptions.ProtocolError):
            break
    try:
        c.flush()
    except OSError:
        pass
    assert c.wait_closed(timeout=10), "the flooding connection is ended"
    assert c.goaway is None or c.goaway[0] != h2.errors.ErrorCodes.NO_ERROR
    assert fwd.wait_log("GOAWAY")
    r = other.get("/bytes/10")
    assert r.status == 200, "other connections are served"
    assert len(upstream.requests) < 3000
    other.close()


def test_client_leaves_while_hook_pending(start_fwd, upstream):
    f = start_fwd(upstream.addr, "--pending-filter", 300)
    c = H2Client(f.port)
    c.request("/")
    c.pump(0.05)
    c.close()  # gone while request_filter has not resumed
    time.sleep(0.6)
    still_serves(f.port)
    assert f.wait_log(r"GET / -> .* err=SL_EDOWNSTREAM_CLOSED")


# ---- HTTP/1.1 clients through an HTTP/2 upstream --------------------------------------------

@pytest.fixture
def h2_chain(start_fwd, upstream):
    """client --h1--> front --h2c--> back --h1--> mock upstream: the front one's upstream side
    speaks HTTP/2 (the back one is a sluice taking h2c by prior knowledge)."""
    back = start_fwd(upstream.addr)
    front = start_fwd(f"127.0.0.1:{back.port}", "--upstream-alpn", "h2")
    return front, back


def test_10mib_both_ways_h1_to_h2(h2_chain, upstream, tmp_path):
    front, back = h2_chain
    blob = os.urandom(10 * 1024 * 1024)
    f = tmp_path / "blob"
    f.write_bytes(blob)
    r = curl("--http1.1", "--data-binary", f"@{f}", f"http://127.0.0.1:{front.port}/echo")
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(blob).digest()
    assert upstream.last().body == blob
    r = curl("--http1.1", f"http://127.0.0.1:{front.port}/stream/{10 << 20}")
    assert r.stdout == pattern(10 << 20)
    # the back one saw HTTP/2 streams from the front one, on one connection
    assert back.wait_log(r"POST /echo -> 200")
    assert front.log().count("reused=false") == 1


def test_many_h1_clients_share_one_h2_upstream_connection(h2_chain, upstream):
    front, back = h2_chain
    threads, results = [], []

    def one(i):
        r = curl("--http1.1", f"http://127.0.0.1:{front.port}/bytes/{1000 + i}")
        results.append(r.stdout == pattern(1000 + i))
    for i in range(50):
        t = threading.Thread(target=one, args=(i,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(60)
    assert len(results) == 50 and all(results)
    ss = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{back.port} )"],
                        capture_output=True, text=True).stdout
    assert 1 <= len(ss.splitlines()) <= 2, ss


def test_upstream_stream_reset_reaches_the_h1_client(h2_chain, upstream):
    front, back = h2_chain
    # the back one resets its stream (its upstream dies mid-body): the front one's client gets
    # a response cut short, and the front one stays usable
    r = subprocess.run(["curl", "-sS", "--http1.1", f"http://127.0.0.1:{front.port}/abort-body"],
                       capture_output=True, timeout=30)
    assert r.returncode != 0 and len(r.stdout) < 1000
    assert front.wait_log(r"upstream failed mid-response|GET /abort-body -> 200 err=SL_E")
    r = curl("--http1.1", f"http://127.0.0.1:{front.port}/bytes/10")
    assert r.stdout == pattern(10)
