"""TCP proxying (`protocol: tcp` listeners): bytes both ways intact (100 MiB, sha256 on each
side), half-close in both directions, backpressure (sluice's memory stays flat while a slow
reader is fed 100+ MiB), connect failures, idle timeout, round robin and live backend changes,
graceful shutdown with a transfer in flight, TLS termination, metrics, and bad configs refused
with their key path. Every test checks what the client got *and* what the upstream saw."""
import hashlib
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

from gw import Gateway, check_config, wait_until
from helpers import free_port, port_closed

MIB = 1024 * 1024


# ---- upstreams ------------------------------------------------------------------------------

class Upstream:
    """A TCP (or unix socket) server on loopback: handler(conn, rec) runs in a thread per
    connection; rec is a dict the test reads afterwards (what the server received, EOF seen)."""

    def __init__(self, handler, unix_path=None):
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(str(unix_path))
            self.addr = f"unix:{unix_path}"
        else:
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", 0))
            self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.sock.listen(128)
        self.handler = handler
        self.recs = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            rec = {"sha": hashlib.sha256(), "n": 0, "eof": False, "error": None,
                   "done": threading.Event()}
            with self.lock:
                self.recs.append(rec)
            threading.Thread(target=self._run, args=(conn, rec), daemon=True).start()

    def _run(self, conn, rec):
        try:
            self.handler(conn, rec)
        except OSError as e:
            rec["error"] = e
        finally:
            conn.close()
            rec["done"].set()

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def record(rec, data):
    rec["sha"].update(data)
    rec["n"] += len(data)


def echo(conn, rec, greeting=b""):
    """Sends greeting, then echoes everything; at EOF shuts its write side down."""
    if greeting:
        conn.sendall(greeting)
    while True:
        b = conn.recv(256 * 1024)
        if not b:
            rec["eof"] = True
            conn.shutdown(socket.SHUT_WR)
            return
        record(rec, b)
        conn.sendall(b)


def greeter(name):
    return lambda conn, rec: echo(conn, rec, greeting=name.encode() + b"\n")


def recv_exact(s, n):
    out = bytearray()
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            raise AssertionError(f"EOF after {len(out)} of {n} bytes")
        out += b
    return bytes(out)


def recv_all(s, sha=None):
    """Reads to EOF; returns the byte count (and feeds sha)."""
    n = 0
    while True:
        b = s.recv(1024 * 1024)
        if not b:
            return n
        n += len(b)
        if sha:
            sha.update(b)


def tcp_gateway(procs, tmp_path, backends, upstream_extra=None, extra=None, listener_extra=None,
                threads=1):
    port = free_port()
    listener = {"name": "pipe", "listen": f"127.0.0.1:{port}", "protocol": "tcp",
                "upstream": "app"}
    listener.update(listener_extra or {})
    up = {"backends": backends}
    up.update(upstream_extra or {})
    g = Gateway(procs, tmp_path, {"upstreams": {"app": up}}, more_listeners=[listener],
                extra=extra, threads=threads)
    g.tcp_port = port
    return g


def connect(g, timeout=30):
    return socket.create_connection(("127.0.0.1", g.tcp_port), timeout=timeout)


def vm_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def metric(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.split()[-1])
    return None


# ---- data intact, half-close -----------------------------------------------------------------

def test_echo_100mib_intact_both_ways(procs, tmp_path):
    up = Upstream(echo)
    g = tcp_gateway(procs, tmp_path, [up.addr])
    data = os.urandom(100 * MIB)
    want = hashlib.sha256(data).hexdigest()
    s = connect(g)

    def send():
        view = memoryview(data)
        for i in range(0, len(data), MIB):
            s.sendall(view[i:i + MIB])
        s.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=send)
    t.start()
    got = hashlib.sha256()
    n = recv_all(s, got)
    t.join()
    s.close()
    assert n == len(data)
    assert got.hexdigest() == want                       # client side: the echo, intact
    rec = up.recs[0]
    assert rec["done"].wait(10)
    assert rec["n"] == len(data) and rec["sha"].hexdigest() == want   # upstream side
    assert rec["eof"]                                    # the client's EOF reached the upstream
    m = g.metrics()
    assert metric(m, "sluice_tcp_connections_total", listener="pipe") == 1
    assert metric(m, "sluice_tcp_bytes_total", listener="pipe", direction="in") == len(data)
    assert metric(m, "sluice_tcp_bytes_total", listener="pipe", direction="out") == len(data)
    wait_until(lambda: metric(g.metrics(), "sluice_tcp_connections_active", listener="pipe") == 0,
               what="the connection to be counted closed")
    up.close()


def test_client_half_close_still_receives_the_answer(procs, tmp_path):
    """The client shuts its write side down; the upstream sees EOF, then answers 4 MiB, which
    the client still receives in full."""
    answer = os.urandom(4 * MIB)

    def reply_after_eof(conn, rec):
        while True:
            b = conn.recv(65536)
            if not b:
                break
            record(rec, b)
        rec["eof"] = True
        conn.sendall(answer)

    up = Upstream(reply_after_eof)
    g = tcp_gateway(procs, tmp_path, [up.addr])
    s = connect(g)
    s.sendall(b"the whole request")
    s.shutdown(socket.SHUT_WR)
    got = bytearray()
    while True:
        b = s.recv(MIB)
        if not b:
            break
        got += b
    s.close()
    assert bytes(got) == answer
    rec = up.recs[0]
    assert rec["done"].wait(10)
    assert rec["eof"] and rec["n"] == len(b"the whole request")


def test_upstream_half_close_reaches_the_client(procs, tmp_path):
    """The upstream sends a banner and shuts its write side down, but keeps reading: the client
    gets the banner then EOF, and can still send; the upstream receives it all."""

    def banner_then_listen(conn, rec):
        conn.sendall(b"banner\n")
        conn.shutdown(socket.SHUT_WR)
        while True:
            b = conn.recv(65536)
            if not b:
                rec["eof"] = True
                return
            record(rec, b)

    up = Upstream(banner_then_listen)
    g = tcp_gateway(procs, tmp_path, [up.addr])
    s = connect(g, timeout=10)
    got = bytearray()
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += b
    assert bytes(got) == b"banner\n"                     # then EOF: the half-close arrived
    payload = os.urandom(2 * MIB)
    s.sendall(payload)                                   # the other direction still flows
    s.shutdown(socket.SHUT_WR)
    assert s.recv(10) == b""
    s.close()
    rec = up.recs[0]
    assert rec["done"].wait(10)
    assert rec["n"] == len(payload)
    assert rec["sha"].hexdigest() == hashlib.sha256(payload).hexdigest()
    assert rec["eof"]


def test_unix_socket_backend(procs, tmp_path):
    up = Upstream(greeter("unix"), unix_path=tmp_path / "up.sock")
    g = tcp_gateway(procs, tmp_path, [up.addr])
    with connect(g, timeout=10) as s:
        assert recv_exact(s, 5) == b"unix\n"
        s.sendall(b"ping")
        assert recv_exact(s, 4) == b"ping"
    up.close()


# ---- backpressure -------------------------------------------------------------------------------

SLOW_TOTAL = 120 * MIB
SLOW_RATE = 60 * MIB          # bytes per second the slow side reads


def slow_read(sock, total, rec=None, sha=None):
    """Reads `total` bytes at about SLOW_RATE."""
    t0, n = time.monotonic(), 0
    while n < total:
        b = sock.recv(64 * 1024)
        if not b:
            break
        n += len(b)
        if rec is not None:
            record(rec, b)
        if sha is not None:
            sha.update(b)
        ahead = n / SLOW_RATE - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    return n


class RssSampler:
    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, vm_rss_kb(self.pid))
            time.sleep(0.02)

    def end(self):
        self.stop.set()
        self.t.join()
        return self.peak


@pytest.mark.parametrize("slow", ["upstream", "client"])
def test_slow_reader_keeps_memory_bounded(procs, tmp_path, slow):
    """120 MiB pushed as fast as possible towards a side that reads at 60 MiB/s: sluice stops
    reading the fast side instead of buffering, so its RSS stays within a few MiB."""
    block = os.urandom(MIB)
    blocks = SLOW_TOTAL // MIB
    want = hashlib.sha256(block * blocks).hexdigest()

    def upstream(conn, rec):
        if slow == "upstream":
            slow_read(conn, SLOW_TOTAL, rec=rec)
        else:
            for _ in range(blocks):
                conn.sendall(block)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass
        rec["eof"] = True

    up = Upstream(upstream)
    g = tcp_gateway(procs, tmp_path, [up.addr])
    connect(g).close()                         # warm-up: the worker's pools exist
    time.sleep(0.3)
    base = vm_rss_kb(g.proc.pid)
    sampler = RssSampler(g.proc.pid)
    s = connect(g, timeout=60)
    t0 = time.monotonic()
    if slow == "upstream":
        for _ in range(blocks):
            s.sendall(block)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(10) == b""
        rec = up.recs[-1]
        assert rec["done"].wait(60)
        assert rec["n"] == SLOW_TOTAL and rec["sha"].hexdigest() == want
    else:
        sha = hashlib.sha256()
        assert slow_read(s, SLOW_TOTAL, sha=sha) == SLOW_TOTAL
        assert sha.hexdigest() == want
        s.shutdown(socket.SHUT_WR)
        assert s.recv(10) == b""
    elapsed = time.monotonic() - t0
    s.close()
    peak = sampler.end()
    growth_mib = (peak - base) / 1024
    # The fast side was held back: the transfer took about as long as the slow reader needs...
    assert elapsed > 0.7 * SLOW_TOTAL / SLOW_RATE
    # ...and sluice did not hold the difference in memory (it would be ~100 MiB otherwise).
    assert growth_mib < 16, f"RSS grew by {growth_mib:.1f} MiB (base {base} kB, peak {peak} kB)"
    up.close()


# ---- failures and timeouts ----------------------------------------------------------------------

def test_connect_refused_closes_the_client_promptly(procs, tmp_path):
    dead = free_port()                          # nothing listens there
    g = tcp_gateway(procs, tmp_path, [f"127.0.0.1:{dead}"])
    s = connect(g, timeout=10)
    t0 = time.monotonic()
    try:
        got = s.recv(10)
    except ConnectionResetError:
        got = b""
    assert got == b"" and time.monotonic() - t0 < 2
    s.close()
    g.wait_log(r"upstream connect failed: connection refused")
    assert metric(g.metrics(), "sluice_tcp_connect_failures_total", listener="pipe") == 1
    assert g.proc.alive()


def test_connect_retries_the_next_backend(procs, tmp_path):
    up = Upstream(greeter("alive"))
    dead = f"127.0.0.1:{free_port()}"
    g = tcp_gateway(procs, tmp_path, [dead, up.addr])
    for _ in range(4):                          # every connection lands on the live backend
        with connect(g, timeout=10) as s:
            assert recv_exact(s, 6) == b"alive\n"
    assert len(up.recs) == 4
    # Each connection's first pick is the dead one (a retry takes the next pick, so the rotation
    # comes back to it): one failed attempt per connection, no health checks yet.
    assert metric(g.metrics(), "sluice_tcp_connect_failures_total", listener="pipe") == 4
    up.close()


def test_connect_timeout(procs, tmp_path):
    """A backend that never answers the SYN (a full accept queue): the connect timeout closes
    the client."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    fillers = []
    for _ in range(4):                          # fill the accept queue; further SYNs are dropped
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(blackhole.getsockname())
        fillers.append(f)
    time.sleep(0.2)
    g = tcp_gateway(procs, tmp_path, [f"127.0.0.1:{blackhole.getsockname()[1]}"],
                    upstream_extra={"timeouts": {"connect": "300ms"}})
    s = connect(g, timeout=10)
    t0 = time.monotonic()
    try:
        got = s.recv(10)
    except ConnectionResetError:
        got = b""
    took = time.monotonic() - t0
    assert got == b"" and 0.2 < took < 3, took
    g.wait_log(r"upstream connect failed: upstream connect timed out")
    s.close()
    for f in fillers:
        f.close()
    blackhole.close()


def test_idle_timeout_closes_both_sides(procs, tmp_path):
    up = Upstream(echo)
    g = tcp_gateway(procs, tmp_path, [up.addr], upstream_extra={"timeouts": {"idle": "500ms"}})
    s = connect(g, timeout=10)
    for i in range(5):                          # traffic keeps it alive past the timeout
        if i:
            time.sleep(0.2)
        s.sendall(b"tick")
        assert recv_exact(s, 4) == b"tick"
    t0 = time.monotonic()
    assert s.recv(10) == b""                    # then silence: closed
    took = time.monotonic() - t0
    assert 0.3 < took < 3, took
    s.close()
    rec = up.recs[0]
    assert rec["done"].wait(5) and rec["eof"]   # the upstream connection was closed too
    assert rec["n"] == 20


def test_upstream_reset_resets_the_client(procs, tmp_path):
    def reset(conn, rec):
        record(rec, conn.recv(100))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    up = Upstream(reset)
    g = tcp_gateway(procs, tmp_path, [up.addr])
    s = connect(g, timeout=10)
    s.sendall(b"hello")
    with pytest.raises(ConnectionResetError):
        while s.recv(10):
            pass
    s.close()
    assert up.recs[0]["n"] == 5


# ---- balancing and live changes -----------------------------------------------------------------

def greeting_of(g):
    with connect(g, timeout=10) as s:
        line = b""
        while not line.endswith(b"\n"):
            b = s.recv(100)
            assert b
            line += b
        return line.decode().strip()


def test_round_robin_with_weights(procs, tmp_path):
    a, b = Upstream(greeter("A")), Upstream(greeter("B"))
    g = tcp_gateway(procs, tmp_path, [{"address": a.addr, "weight": 3}, b.addr])
    seen = [greeting_of(g) for _ in range(8)]
    assert seen.count("A") == 6 and seen.count("B") == 2, seen
    assert len(a.recs) == 6 and len(b.recs) == 2
    a.close()
    b.close()


def test_backend_change_applies_to_new_connections_only(procs, tmp_path):
    a, b = Upstream(greeter("A")), Upstream(greeter("B"))
    g = tcp_gateway(procs, tmp_path, [a.addr])
    old = connect(g)
    assert recv_exact(old, 2) == b"A\n"
    data = os.urandom(32 * MIB)
    sent = hashlib.sha256()
    got = hashlib.sha256()
    chunk = MIB

    def pump(lo, hi):
        for i in range(lo, hi, chunk):
            piece = data[i:i + chunk]
            old.sendall(piece)
            sent.update(piece)
            got.update(recv_exact(old, len(piece)))

    pump(0, len(data) // 2)                               # streaming on A...
    st, _, body = g.admin_call("PUT", "/upstreams/app/backends", [b.addr])
    assert st == 200, body
    assert greeting_of(g) == "B"                          # new connections go to B
    pump(len(data) // 2, len(data))                       # ...while the old one keeps A
    old.shutdown(socket.SHUT_WR)
    assert old.recv(10) == b""
    old.close()
    assert sent.hexdigest() == got.hexdigest()
    assert a.recs[0]["done"].wait(10) and a.recs[0]["n"] == len(data)
    assert len(a.recs) == 1

    # PUT /config too: back to A for new connections
    st, res = g.put_config({"upstreams": {"app": {"backends": [a.addr]}}})
    assert st == 200, res
    assert greeting_of(g) == "A"
    # an upstream a tcp listener uses cannot be removed
    st, res = g.put_config({"upstreams": {"other": {"backends": [a.addr]}}})
    assert st == 400
    assert 'listeners[1].upstream: unknown upstream "app"' in res["message"], res
    assert greeting_of(g) == "A"                          # the running config stayed
    a.close()
    b.close()


# ---- shutdown -----------------------------------------------------------------------------------

def test_sigterm_lets_a_transfer_finish(procs, tmp_path):
    up = Upstream(echo)
    g = tcp_gateway(procs, tmp_path, [up.addr], extra={"grace_period_seconds": 20})
    s = connect(g)
    data = os.urandom(48 * MIB)
    want = hashlib.sha256(data).hexdigest()
    got = hashlib.sha256()
    n = 0
    for i in range(0, len(data), MIB):                   # ~2 s: SIGTERM lands in the middle
        piece = data[i:i + MIB]
        s.sendall(piece)
        got.update(recv_exact(s, len(piece)))
        n += len(piece)
        if i == 8 * MIB:
            g.proc.send(signal.SIGTERM)
            wait_until(lambda: port_closed(g.tcp_port), what="the listener to close")
        time.sleep(0.04)
    s.shutdown(socket.SHUT_WR)
    assert s.recv(10) == b""
    s.close()
    assert n == len(data) and got.hexdigest() == want
    assert g.proc.wait(timeout=10) == 0                  # exits once the transfer ended
    assert up.recs[0]["n"] == len(data) and up.recs[0]["sha"].hexdigest() == want
    up.close()


def test_grace_period_expiry_closes_idle_connections(procs, tmp_path):
    up = Upstream(echo)
    g = tcp_gateway(procs, tmp_path, [up.addr], extra={"grace_period_seconds": 1})
    s = connect(g, timeout=10)
    s.sendall(b"x")
    assert recv_exact(s, 1) == b"x"
    t0 = time.monotonic()
    g.proc.send(signal.SIGTERM)
    try:
        got = s.recv(10)
    except ConnectionResetError:
        got = b""
    assert got == b"" and 0.5 < time.monotonic() - t0 < 5
    assert g.proc.wait(timeout=10) == 0
    assert up.recs[0]["done"].wait(5)
    s.close()
    up.close()


# ---- TLS, metrics, configs ----------------------------------------------------------------------

def test_tls_terminating_tcp_listener(procs, tmp_path, certs):
    up = Upstream(echo)
    g = tcp_gateway(procs, tmp_path, [up.addr], listener_extra={"tls": {"certificates": [
        {"cert": str(certs / "server.crt"), "key": str(certs / "server.key")}]}})
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    data = os.urandom(8 * MIB)
    with ctx.wrap_socket(connect(g), server_hostname="localhost") as s:
        for i in range(0, len(data), MIB):
            s.sendall(data[i:i + MIB])
            assert recv_exact(s, MIB) == data[i:i + MIB]
    rec = up.recs[0]
    assert rec["done"].wait(10)
    assert rec["sha"].hexdigest() == hashlib.sha256(data).hexdigest()   # plaintext upstream
    up.close()


def test_metrics_are_promtool_clean(procs, tmp_path):
    up = Upstream(echo)
    g = tcp_gateway(procs, tmp_path, [up.addr])
    with connect(g, timeout=10) as s:
        s.sendall(b"12345")
        assert recv_exact(s, 5) == b"12345"
        m = g.metrics()
        assert metric(m, "sluice_tcp_connections_active", listener="pipe") == 1
        assert metric(m, "sluice_tcp_bytes_total", listener="pipe", direction="in") == 5
    r = subprocess.run(["promtool", "check", "metrics"], input=g.metrics(), capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    up.close()


@pytest.mark.parametrize("listener,upstreams,message", [
    ({"protocol": "tcp"}, {"app": {"backends": ["127.0.0.1:1"]}},
     "listeners[1].upstream: required for a tcp listener"),
    ({"protocol": "tcp", "upstream": "nope"}, {"app": {"backends": ["127.0.0.1:1"]}},
     'listeners[1].upstream: unknown upstream "nope"'),
    ({"upstream": "app"}, {"app": {"backends": ["127.0.0.1:1"]}},
     "listeners[1].upstream: only a tcp listener has an upstream"),
    ({"protocol": "udp", "upstream": "app"}, {"app": {"backends": ["127.0.0.1:1"]}},
     'listeners[1].protocol: unknown value "udp" (http, tcp)'),
    ({"protocol": "tcp", "upstream": 7}, {"app": {"backends": ["127.0.0.1:1"]}},
     "listeners[1].upstream: expected a string"),
])
def test_bad_tcp_configs_are_refused(tmp_path, listener, upstreams, message):
    doc = {"listeners": [{"listen": f"127.0.0.1:{free_port()}"},
                         dict({"listen": f"127.0.0.1:{free_port()}"}, **listener)],
           "upstreams": upstreams}
    r = check_config(tmp_path, json.dumps(doc), name="t.json")
    assert r.returncode == 1, r.stdout
    assert message in r.stderr, r.stderr


def test_good_tcp_config_passes(tmp_path):
    doc = {"listeners": [{"name": "db", "listen": "127.0.0.1:15432", "protocol": "tcp",
                          "upstream": "pg"}],
           "upstreams": {"pg": {"backends": ["127.0.0.1:5432", "unix:/run/pg.sock"],
                                "timeouts": {"connect": "1s", "idle": "1h"}}}}
    r = check_config(tmp_path, json.dumps(doc), name="t.json")
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr


def test_source_address_from_client_bind_to_ipv4(procs, tmp_path):
    def tell_peer(conn, rec):
        conn.sendall(conn.getpeername()[0].encode() + b"\n")

    up = Upstream(tell_peer)
    g = tcp_gateway(procs, tmp_path, [up.addr], extra={"client_bind_to_ipv4": ["127.0.0.2"]})
    assert greeting_of(g) == "127.0.0.2"                 # what the upstream saw
    up.close()


def test_tls_upstream(procs, tmp_path, nginx_tls, certs):
    """A plain tcp listener whose upstream is reached over TLS (verified against the lab CA,
    with SNI): the client speaks plain HTTP/1.0, nginx answers what its TLS side saw."""
    g = tcp_gateway(procs, tmp_path, [nginx_tls.addr("plain")],
                    upstream_extra={"tls": {"sni": "advanced.pingora.local",
                                            "ca": str(certs / "ca.crt")}})
    with connect(g, timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: advanced.pingora.local\r\n\r\n")
        answer = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            answer += b
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"sni=advanced.pingora.local" in answer and b"proto=TLSv1.3" in answer, answer


def test_tls_upstream_with_a_bad_certificate_is_refused(procs, tmp_path, nginx_tls, certs):
    g = tcp_gateway(procs, tmp_path, [nginx_tls.addr("plain")],
                    upstream_extra={"tls": {"sni": "wrong.example", "ca": str(certs / "ca.crt")}})
    with connect(g, timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
    g.wait_log(r"TLS handshake with upstream wrong.example failed")
