"""upstreams.NAME.tunnel (SPEC §4): backends reached through an HTTP CONNECT forward proxy.

The proxy is a real squid on loopback (a generated config in the test's directory, an
unprivileged port, CONNECT allowed to the test's ports only, optionally basic auth with
Debian's basic_ncsa_auth), plus small Python proxies that misbehave (refuse, answer garbage,
stay silent). Each test asserts what the client got, what the upstream saw (SNI, Host, the
connection it came on) and what squid saw (its access.log has one line per CONNECT, written
when the tunnel closes)."""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from gw import Gateway, check_config
from helpers import free_port, wait_port
from mockup import MockUpstream

SQUID = "/usr/sbin/squid"
NCSA = "/usr/lib/squid/basic_ncsa_auth"

pytestmark = pytest.mark.skipif(not os.path.exists(SQUID), reason="squid is not installed")


# ---- squid --------------------------------------------------------------------------------

class Squid:
    """squid -N on 127.0.0.1:<port>. CONNECT is allowed to `ports` only (403 otherwise); with
    `users` ({name: password}) every request needs proxy credentials (407 otherwise)."""

    def __init__(self, ports, users=None):
        # squid run as root works as its own user (proxy): its files live where that user can
        # reach them, not under pytest's private tmp_path.
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-squid-"))
        os.chmod(self.dir, 0o777)
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log = self.dir / "access.log"
        auth = ""
        if users:
            pw = self.dir / "htpasswd"
            lines = []
            for user, password in users.items():
                h = subprocess.run(["openssl", "passwd", "-apr1", password], check=True,
                                   capture_output=True, text=True).stdout.strip()
                lines.append(f"{user}:{h}\n")
            pw.write_text("".join(lines))
            os.chmod(pw, 0o644)
            auth = (f"auth_param basic program {NCSA} {pw}\n"
                    "auth_param basic realm sluice-test\n"
                    "acl authed proxy_auth REQUIRED\n"
                    "http_access deny !authed\n")
        d = self.dir
        (d / "squid.conf").write_text(
            f"http_port 127.0.0.1:{self.port}\n"
            f"pid_filename {d}/squid.pid\n"
            f"access_log stdio:{d}/access.log squid\n"
            f"cache_log {d}/cache.log\n"
            "cache_store_log none\n"
            f"coredump_dir {d}\n"
            "cache deny all\n"
            "shutdown_lifetime 0 seconds\n"
            f"acl test_ports port {' '.join(str(p) for p in ports)}\n"
            "acl CONNECT method CONNECT\n"
            "http_access deny CONNECT !test_ports\n"
            + auth +
            "http_access allow localhost\n"
            "http_access deny all\n")
        self.proc = subprocess.Popen([SQUID, "-N", "-d", "1", "-f", str(d / "squid.conf")],
                                     stdout=open(d / "stderr.log", "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_port(self.port, timeout=30)
        except TimeoutError:
            self.close()
            raise AssertionError("squid did not start:\n" + (d / "stderr.log").read_text())

    def connects(self):
        """squid's CONNECT lines as (result code/status, target, user)."""
        try:
            text = self.log.read_text()
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            f = line.split()
            if len(f) >= 8 and f[5] == "CONNECT":
                out.append((f[3], f[6], f[7]))
        return out

    def wait_connects(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.connects()
            if len(c) >= n:
                return c
            time.sleep(0.05)
        raise TimeoutError(f"squid logged {self.connects()}, wanted {n} CONNECT lines")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def squids():
    started = []

    def start(ports, users=None):
        s = Squid(ports, users)
        started.append(s)
        return s
    yield start
    for s in started:
        s.close()


# ---- upstreams ------------------------------------------------------------------------------

class NginxEcho:
    """nginx with a TLS server (the lab's upstream certificate: advanced.pingora.local,
    *.api.pingora.local) and a plain one, both answering what they saw:
    "sni=... host=... conn=... reqs=... proto=..."."""

    def __init__(self, tmp_path, certs):
        self.dir = tmp_path / "nginx-echo"
        self.dir.mkdir()
        self.tls_port, self.plain_port = free_port(), free_port()
        body = ("'sni=$ssl_server_name host=$http_host conn=$connection "
                "reqs=$connection_requests proto=$server_protocol\\n'")
        loc = f"location / {{ return 200 {body}; }}"
        user = "user root; " if os.geteuid() == 0 else ""
        conf = (f"{user}worker_processes 1; daemon off; pid {self.dir}/nginx.pid;"
                f" error_log {self.dir}/error.log; events {{ worker_connections 256; }}"
                f" http {{ access_log off; client_body_temp_path {self.dir}; default_type"
                f" text/plain; keepalive_requests 1000;"
                f" server {{ listen 127.0.0.1:{self.tls_port} ssl http2;"
                f" ssl_certificate {certs}/upstream.crt; ssl_certificate_key {certs}/upstream.key;"
                f" {loc} }}"
                f" server {{ listen 127.0.0.1:{self.plain_port}; {loc} }} }}")
        (self.dir / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(["nginx", "-c", str(self.dir / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.tls_port)
        wait_port(self.plain_port)

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def echo(tmp_path, certs):
    n = NginxEcho(tmp_path, certs)
    yield n
    n.close()


def fields(body):
    return dict(kv.split("=", 1) for kv in body.decode().split())


def route_all(upstream):
    return [{"match": {"path": "/", "path_type": "prefix"}, "upstream": upstream}]


def routes(*names):
    return [{"match": {"path": f"/{n}", "path_type": "prefix"}, "upstream": n} for n in names]


def error_message(body):
    return json.loads(body)["message"]


# ---- through squid --------------------------------------------------------------------------

def test_tls_upstream_through_squid_sni_host_and_one_pooled_tunnel(procs, tmp_path, certs, echo,
                                                                    squids):
    sq = squids([echo.tls_port])
    tls = {"sni": "advanced.pingora.local", "ca": str(certs / "ca.crt")}
    g = Gateway(procs, tmp_path, {
        "upstreams": {
            "adv": {"backends": [f"127.0.0.1:{echo.tls_port}"], "tls": tls,
                    "tunnel": {"connect_proxy": sq.addr}},
            # Host rewritten; the name is also the SNI (no tls.sni), checked against the
            # certificate's *.api.pingora.local.
            "v2": {"backends": [f"127.0.0.1:{echo.tls_port}"], "host": "v2.api.pingora.local",
                   "tls": {"ca": str(certs / "ca.crt")}, "tunnel": {"connect_proxy": sq.addr}},
        },
        "routes": routes("adv", "v2"),
    })
    seen = []
    for i in range(5):
        status, _, body = g.get(f"/adv/{i}", host="app.example.test")
        assert status == 200, body
        seen.append(fields(body))
    assert {f["sni"] for f in seen} == {"advanced.pingora.local"}
    assert {f["host"] for f in seen} == {"app.example.test"}  # the client's Host goes on
    assert len({f["conn"] for f in seen}) == 1  # one upstream connection, i.e. one tunnel
    assert [f["reqs"] for f in seen] == ["1", "2", "3", "4", "5"]
    status, _, body = g.get("/v2")
    assert status == 200, body
    f = fields(body)
    assert f["sni"] == "v2.api.pingora.local" and f["host"] == "v2.api.pingora.local"
    assert f["conn"] != seen[0]["conn"]  # another SNI: another pooled connection
    reused = re.search(r'^sluice_upstream_connections_reused_total\{upstream="adv"\} (\d+)',
                       g.metrics(), re.M)
    assert reused and int(reused.group(1)) == 4
    # squid writes a CONNECT line when its tunnel closes: stop sluice, its pool closes.
    g.proc.stop()
    lines = sq.wait_connects(2)
    assert sorted(lines) == [("TCP_TUNNEL/200", f"127.0.0.1:{echo.tls_port}", "-")] * 2


def test_plain_http_through_squid_and_a_host_name_the_proxy_resolves(procs, tmp_path, squids):
    up = MockUpstream()
    try:
        sq = squids([up.port])
        g = Gateway(procs, tmp_path, {
            "upstreams": {
                "ip": {"backends": [up.addr], "tunnel": {"connect_proxy": sq.addr}},
                # Not resolved by sluice (no dns key, no resolver involved): squid gets the name.
                "name": {"backends": [f"localhost:{up.port}"], "host": "named.example.test",
                         "tunnel": {"connect_proxy": sq.addr}},
            },
            "routes": routes("ip", "name"),
        })
        status, _, body = g.get("/ip/a?x=1", host="plain.example.test")
        assert status == 200 and body == b"hello\n"
        status, _, body = g.get("/name/b")
        assert status == 200 and body == b"hello\n"
        reqs = up.wait_requests(2)
        assert (reqs[0].method, reqs[0].target) == ("GET", "/ip/a?x=1")
        assert reqs[0].header("host") == "plain.example.test"
        assert reqs[1].target == "/name/b" and reqs[1].header("host") == "named.example.test"
        assert reqs[0].conn_id != reqs[1].conn_id  # two targets, two tunnels
        g.proc.stop()
        assert sorted(t for _, t, _ in sq.wait_connects(2)) == sorted(
            [f"127.0.0.1:{up.port}", f"localhost:{up.port}"])
    finally:
        up.close()


def test_h2_upstream_through_squid(procs, tmp_path, certs, echo, squids):
    sq = squids([echo.tls_port])
    g = Gateway(procs, tmp_path, {
        "upstreams": {"h2": {"backends": [f"127.0.0.1:{echo.tls_port}"], "protocol": "h2",
                             "tls": {"sni": "advanced.pingora.local", "ca": str(certs / "ca.crt")},
                             "tunnel": {"connect_proxy": sq.addr}}},
        "routes": route_all("h2"),
    })
    bodies = [fields(g.get(f"/{i}")[2]) for i in range(3)]
    assert {b["proto"] for b in bodies} == {"HTTP/2.0"}
    assert {b["sni"] for b in bodies} == {"advanced.pingora.local"}
    assert len({b["conn"] for b in bodies}) == 1  # streams of one multiplexed connection
    g.proc.stop()
    assert sq.wait_connects(1) == [("TCP_TUNNEL/200", f"127.0.0.1:{echo.tls_port}", "-")]


def test_proxy_authentication_407_and_200(procs, tmp_path, echo, squids):
    sq = squids([echo.plain_port], users={"alice": "s3cret pass"})
    target = f"127.0.0.1:{echo.plain_port}"
    g = Gateway(procs, tmp_path, {
        "upstreams": {
            "none": {"backends": [target], "tunnel": {"connect_proxy": sq.addr}},
            "user": {"backends": [target], "tunnel": {
                "connect_proxy": sq.addr, "auth": {"user": "alice", "password": "s3cret pass"}}},
            "value": {"backends": [target], "tunnel": {
                "connect_proxy": sq.addr, "auth": "Basic YWxpY2U6czNjcmV0IHBhc3M="}},
            "wrong": {"backends": [target], "tunnel": {
                "connect_proxy": sq.addr, "auth": {"user": "alice", "password": "nope"}}},
        },
        "routes": routes("none", "user", "value", "wrong"),
    })
    status, _, body = g.get("/none")
    assert status == 502
    assert error_message(body) == (f"upstream proxy {sq.addr} refused CONNECT: "
                                   "407 Proxy Authentication Required")
    conns = set()
    for name in ("user", "value"):
        status, _, body = g.get(f"/{name}")
        assert status == 200 and fields(body)["host"] == f"127.0.0.1:{g.port}", body
        conns.add(fields(body)["conn"])
    assert len(conns) == 1  # the same proxy, target and credentials: one pooled tunnel
    status, _, body = g.get("/wrong")
    assert status == 502 and "407" in error_message(body)
    g.wait_log(r"CONNECT 127\.0\.0\.1:\d+: upstream proxy .* refused CONNECT: 407 Proxy "
               r"Authentication Required")
    # GET /config: credentials redacted.
    conf = json.loads(g.admin_call("GET", "/config")[2])
    ups = conf["upstreams"]
    assert ups["user"]["tunnel"]["auth"] == {"user": "alice", "password": "<redacted>"}
    assert ups["value"]["tunnel"]["auth"] == "<redacted>"
    assert ups["none"]["tunnel"] == {"connect_proxy": sq.addr}
    g.proc.stop()
    lines = sq.wait_connects(3)
    assert sorted(lines) == sorted([("TCP_DENIED/407", target, "-"),  # no credentials
                                    ("TCP_DENIED/407", target, "alice"),  # a wrong password
                                    ("TCP_TUNNEL/200", target, "alice")])


def test_proxy_refuses_the_port_403(procs, tmp_path, echo, squids):
    sq = squids([echo.tls_port])  # the plain port is not allowed
    g = Gateway(procs, tmp_path, {
        "upstreams": {"u": {"backends": [f"127.0.0.1:{echo.plain_port}"],
                            "tunnel": {"connect_proxy": sq.addr}}},
        "routes": route_all("u"),
    })
    status, _, body = g.get("/")
    assert status == 502
    assert error_message(body) == f"upstream proxy {sq.addr} refused CONNECT: 403 Forbidden"
    assert sq.wait_connects(1) == [("TCP_DENIED/403", f"127.0.0.1:{echo.plain_port}", "-")]
    # Still serving, and a failed CONNECT leaves nothing pooled.
    assert g.get("/")[0] == 502
    assert len(sq.wait_connects(2)) == 2


def test_tcp_listener_through_squid(procs, tmp_path, squids):
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def echo_one(c):
        with c:
            try:
                c.sendall(b"greeting\n")  # server first: reaches the client through the tunnel
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    c.sendall(d)
            except OSError:
                pass  # the client (wait_port's probe, or the test) closed without reading

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=echo_one, args=(c,), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    sq = squids([port])
    lport = free_port()
    g = Gateway(procs, tmp_path, {
        "upstreams": {"t": {"backends": [f"127.0.0.1:{port}"],
                            "tunnel": {"connect_proxy": sq.addr}}},
    }, more_listeners=[{"name": "tcp", "listen": f"127.0.0.1:{lport}", "protocol": "tcp",
                        "upstream": "t"}])
    wait_port(lport)  # this connection goes through the tunnel too
    data = os.urandom(1 << 20)
    with socket.create_connection(("127.0.0.1", lport), timeout=10) as c:
        got = b""
        while not got.endswith(b"\n"):
            got += c.recv(100)
        assert got == b"greeting\n"
        # (No half-close: squid ends a tunnel when either side ends its half.)
        threading.Thread(target=c.sendall, args=(data,), daemon=True).start()
        back = bytearray()
        while len(back) < len(data):
            d = c.recv(65536)
            if not d:
                break
            back += d
    assert len(back) == len(data) and bytes(back) == data
    lines = sq.wait_connects(2)
    assert set(lines) == {("TCP_TUNNEL/200", f"127.0.0.1:{port}", "-")}
    srv.close()


def test_tcp_listener_tls_upstream_through_squid(procs, tmp_path, certs, echo, squids):
    """A tcp listener whose upstream has tls: the client's plain bytes go out over TLS (SNI from
    the backend's host name, resolved by squid) inside the tunnel."""
    sq = squids([echo.tls_port])
    lport = free_port()
    g = Gateway(procs, tmp_path, {
        "upstreams": {"t": {"backends": [f"localhost:{echo.tls_port}"],
                            "tls": {"sni": "advanced.pingora.local", "ca": str(certs / "ca.crt")},
                            "tunnel": {"connect_proxy": sq.addr}}},
    }, more_listeners=[{"name": "tcp", "listen": f"127.0.0.1:{lport}", "protocol": "tcp",
                        "upstream": "t"}])
    wait_port(lport)
    with socket.create_connection(("127.0.0.1", lport), timeout=10) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: raw.example.test\r\nConnection: close\r\n\r\n")
        resp = b""
        while True:
            d = c.recv(65536)
            if not d:
                break
            resp += d
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), resp
    f = fields(body)
    assert f["sni"] == "advanced.pingora.local" and f["host"] == "raw.example.test"
    assert ("TCP_TUNNEL/200", f"localhost:{echo.tls_port}", "-") in sq.wait_connects(2)


# ---- misbehaving proxies ----------------------------------------------------------------------

class FakeProxy:
    """A proxy that reads one request head and then does `behave(conn, head)`; the heads it
    read are kept."""

    def __init__(self, behave):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.heads = []
        self.conns = []
        self.behave = behave
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                d = c.recv(4096)
                if not d:
                    return
                head += d
            self.heads.append(head)
            self.behave(c, head)
        except OSError:
            pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def fake_proxy():
    made = []

    def make(behave):
        p = FakeProxy(behave)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def test_garbage_and_closing_proxies(procs, tmp_path, fake_proxy):
    garbage = fake_proxy(lambda c, h: (c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"), c.close()))
    closing = fake_proxy(lambda c, h: c.close())
    huge = fake_proxy(lambda c, h: c.sendall(b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 20000))
    g = Gateway(procs, tmp_path, {
        "upstreams": {n: {"backends": ["127.0.0.1:9"], "tunnel": {"connect_proxy": p.addr}}
                      for n, p in (("garbage", garbage), ("closing", closing), ("huge", huge))},
        "routes": routes("garbage", "closing", "huge"),
    })
    status, _, body = g.get("/garbage")
    assert status == 502
    assert error_message(body).startswith(
        f"upstream proxy {garbage.addr} sent an invalid response to CONNECT")
    status, _, body = g.get("/closing")
    assert status == 502
    assert error_message(body) == (f"upstream proxy {closing.addr} closed the connection "
                                   "before answering CONNECT")
    status, _, body = g.get("/huge")
    assert status == 502 and "header larger than" in error_message(body)
    assert garbage.heads[0] == b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n"
    assert g.get("/garbage")[0] == 502  # still serving


def test_silent_proxy_times_out_with_504(procs, tmp_path, fake_proxy):
    silent = fake_proxy(lambda c, h: time.sleep(30))
    down = free_port()  # nothing listens there
    g = Gateway(procs, tmp_path, {
        "upstreams": {
            "silent": {"backends": ["127.0.0.1:9"], "timeouts": {"connect": "500ms"},
                       "tunnel": {"connect_proxy": silent.addr}},
            "down": {"backends": ["127.0.0.1:9"], "tunnel": {"connect_proxy": f"127.0.0.1:{down}"}},
        },
        "routes": routes("silent", "down"),
    })
    t0 = time.monotonic()
    status, _, body = g.get("/silent")
    elapsed = time.monotonic() - t0
    assert status == 504
    assert 0.4 <= elapsed < 3
    assert error_message(body) == f"upstream proxy {silent.addr} did not answer CONNECT in time"
    status, _, body = g.get("/down")
    assert status == 502
    assert error_message(body) == (f"cannot connect to upstream proxy 127.0.0.1:{down}: "
                                   "connection refused")


def test_request_carries_credentials_and_lead_bytes_reach_the_upstream_side(procs, tmp_path,
                                                                           fake_proxy):
    """The proxy's 200 and the upstream's whole response arrive in one write: the bytes after
    the answer's head are the response (HTTP/1.1 server-first bytes are unusual, but a proxy
    that writes its answer and the first tunnel bytes together is not)."""
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nlead!\n"

    def behave(c, head):
        c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n" + resp)
        time.sleep(1)
        c.close()
    p = fake_proxy(behave)
    g = Gateway(procs, tmp_path, {
        "upstreams": {"u": {"backends": ["192.0.2.7:8080"], "tunnel": {
            "connect_proxy": p.addr, "auth": {"user": "bob", "password": "pa:ss"}}}},
        "routes": route_all("u"),
    })
    status, _, body = g.get("/")
    assert status == 200 and body == b"lead!\n"
    assert p.heads[0] == (b"CONNECT 192.0.2.7:8080 HTTP/1.1\r\nHost: 192.0.2.7:8080\r\n"
                          b"Proxy-Authorization: Basic Ym9iOnBhOnNz\r\n\r\n")


# ---- configuration ------------------------------------------------------------------------------

BASE = """
listeners: [{name: web, listen: "127.0.0.1:0"}]
upstreams:
  u:
    backends: [%s]
    tunnel: %s
%s
routes: [{match: {path: /}, upstream: u}]
"""


@pytest.mark.parametrize("backends,tunnel,extra,msg", [
    ("127.0.0.1:80", '"127.0.0.1:3128"', "", "upstreams.u.tunnel: expected a mapping"),
    ("127.0.0.1:80", "{}", "", "upstreams.u.tunnel.connect_proxy: required"),
    ("127.0.0.1:80", "{connect_proxy: proxy.corp:3128}", "",
     'upstreams.u.tunnel.connect_proxy: "proxy.corp:3128" is not ip:port'),
    ("127.0.0.1:80", '{connect_proxy: "127.0.0.1:0"}', "",
     'upstreams.u.tunnel.connect_proxy: "127.0.0.1:0" is not ip:port'),
    ("127.0.0.1:80", "{connect_proxy: 127.0.0.1:3128, proxy: x}", "",
     "upstreams.u.tunnel.proxy: unknown key"),
    ("127.0.0.1:80", "{connect_proxy: 127.0.0.1:3128, auth: 5}", "",
     "upstreams.u.tunnel.auth: expected the Proxy-Authorization value"),
    ("127.0.0.1:80", '{connect_proxy: 127.0.0.1:3128, auth: "Basic a\\r\\nX-Evil: 1"}', "",
     "upstreams.u.tunnel.auth: a Proxy-Authorization value"),
    ("127.0.0.1:80", "{connect_proxy: 127.0.0.1:3128, auth: {user: \"a:b\", password: x}}", "",
     "upstreams.u.tunnel.auth.user: no colon"),
    ("127.0.0.1:80", "{connect_proxy: 127.0.0.1:3128, auth: {user: a}}", "",
     "upstreams.u.tunnel.auth.password: required"),
    ("127.0.0.1:80", "{connect_proxy: 127.0.0.1:3128, auth: {user: a, password: b, x: 1}}", "",
     "upstreams.u.tunnel.auth.x: unknown key"),
    ("blue.example:80", "{connect_proxy: 127.0.0.1:3128}", "    dns: {watch: true}",
     "upstreams.u.dns: not with tunnel"),
    ("unix:/tmp/x.sock", "{connect_proxy: 127.0.0.1:3128}", "",
     "upstreams.u.backends[0]: \"unix:/tmp/x.sock\" is a unix socket"),
])
def test_t_rejects_bad_tunnels(tmp_path, backends, tunnel, extra, msg):
    r = check_config(tmp_path, BASE % (backends, tunnel, extra))
    assert r.returncode == 1, r.stdout + r.stderr
    assert msg in r.stdout + r.stderr


def test_t_accepts_good_tunnels(tmp_path):
    for tunnel in ["{connect_proxy: 127.0.0.1:3128}", '{connect_proxy: "[::1]:3128"}',
                   "{connect_proxy: unix:/run/proxy.sock, auth: Bearer abc.def}",
                   "{connect_proxy: 10.0.0.1:8080, auth: {user: u, password: p w}}"]:
        r = check_config(tmp_path, BASE % ("blue.example:443", tunnel, ""))
        assert r.returncode == 0, (tunnel, r.stdout + r.stderr)
