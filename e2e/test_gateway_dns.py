"""Host name backends and unix sockets in the gateway (issue 7): names resolved per request through
each worker's resolver (dnsmasq on loopback), record changes followed after their TTL, upstreams
that follow their names (`dns.watch`) as a headless Service scales, NXDOMAIN / SERVFAIL / dead and
silent DNS servers answered with a 502 that says why within the connect timeout, `dns` keys
checked by `sluice -t`; unix-socket upstreams and listeners. Both sides are asserted: what the
client got and what each upstream received. Nothing leaves loopback: every config names its DNS
server."""
import json
import os
import signal
import socket
import socketserver
import stat
import subprocess
import threading
import time

import pytest

from gw import Gateway, check_config, wait_until
from helpers import SLUICE, free_port
from mockup import MockUpstream
from test_dns import Dnsmasq, FakeDNS, dead_server

DNSMASQ = "/usr/sbin/dnsmasq"
pytestmark = pytest.mark.skipif(not os.path.exists(DNSMASQ), reason="dnsmasq is not installed")


@pytest.fixture
def dnsmasq(tmp_path):
    started = []

    def start(hosts, **kw):
        d = Dnsmasq(tmp_path, hosts, **kw)
        started.append(d)
        return d
    yield start
    for d in started:
        d.stop()


@pytest.fixture
def fake_dns():
    started = []

    def start(**kw):
        f = FakeDNS(**kw)
        started.append(f)
        return f
    yield start
    for f in started:
        f.stop()


class Ups:
    """MockUpstreams on the same port of several loopback addresses (127.0.0.2, .3, ...), as the
    pods behind one name."""

    def __init__(self, ips):
        for _ in range(20):
            self.port = free_port(ips[0])
            try:
                self.by_ip = {}
                for ip in ips:
                    self.by_ip[ip] = MockUpstream(host=ip, port=self.port)
                break
            except OSError:
                self.close()
        else:
            raise RuntimeError("no common free port")

    def counts(self):
        return {ip: len(u.requests) for ip, u in self.by_ip.items()}

    def close(self):
        for u in self.by_ip.values():
            u.close()


@pytest.fixture
def ups():
    made = []

    def make(*ips):
        u = Ups(list(ips))
        made.append(u)
        return u
    yield make
    for u in made:
        u.close()


def route_to(upstream):
    return [{"name": "main", "match": {"path": "/"}, "upstream": upstream}]


def gateway(procs, tmp_path, dns_server, upstreams, threads=1, **extra):
    conf = {"dns": {"servers": [dns_server]}, "upstreams": upstreams, "routes": route_to("u")}
    conf.update(extra)
    return Gateway(procs, tmp_path, conf, threads=threads)


def error_message(body):
    return json.loads(body)["message"]


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


# ---- sluice -t -------------------------------------------------------------------------------

GOOD = """
dns: {servers: ["127.0.0.1:5353", "[::1]", "10.0.0.2"], timeout: 500ms, tries: 3, min_ttl: 2s,
      max_ttl: 10m, negative_ttl: 0, cache_size: 100}
upstreams:
  a: {backends: ["blue.pingora.local:8080", {address: "green.test.:8080", weight: 3},
                 "127.0.0.1:1", "unix:/tmp/upstream.sock"], dns: {watch: true, family: ipv4}}
routes: [{upstream: a}]
"""


def test_t_accepts_dns_keys_and_host_name_backends(tmp_path):
    r = check_config(tmp_path, GOOD)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "configuration OK"


BAD = [
    ('dns: {servers: ["dns.example:53"]}\n',
     'dns.servers[0]: "dns.example:53" is not an IP address with an optional port'),
    ('dns: {servers: ["127.0.0.1", "1.2.3.4:99999"]}\n', 'dns.servers[1]: "1.2.3.4:99999"'),
    ('dns: {servers: "127.0.0.1"}\n', "dns.servers: expected a list"),
    ('dns: {server: ["127.0.0.1"]}\n', 'dns.server: unknown key (did you mean "servers"?)'),
    ("dns: {tries: 0}\n", "dns.tries: 0 is out of range [1, 20]"),
    ("dns: {timeout: fast}\n", "dns.timeout: expected a duration"),
    ("dns: {timeout: 0}\n", "dns.timeout: between 1ms and 1h"),
    ("dns: {min_ttl: 500ms}\n", "dns.min_ttl: 500ms: use whole seconds"),
    ("dns: {min_ttl: 60s, max_ttl: 10s}\n", "min_ttl (60s) is above max_ttl (10s)"),
    ("dns: {max_ttl: 200h}\n", "dns.max_ttl: at most 604800s"),
    ("dns: {cache_size: -1}\n", "dns.cache_size: -1 is out of range"),
    ('upstreams: {a: {backends: ["bad_name!:80"]}}\n',
     'upstreams.a.backends[0]: "bad_name!:80": expected ip:port, name:port or unix:/path'),
    ('upstreams: {a: {backends: ["-x.test:80"]}}\n', 'upstreams.a.backends[0]: "-x.test:80"'),
    ('upstreams: {a: {backends: ["1.2.3.400:80"]}}\n', 'upstreams.a.backends[0]: "1.2.3.400:80"'),
    ('upstreams: {a: {backends: ["web.test"]}}\n', 'upstreams.a.backends[0]: "web.test"'),
    ('upstreams: {a: {backends: ["web.test:0"]}}\n',
     'upstreams.a.backends[0]: "web.test:0": invalid port (1-65535)'),
    ('upstreams: {a: {backends: [{address: "web.test:70000"}]}}\n', "invalid port (1-65535)"),
    ('upstreams: {a: {backends: ["unix:"]}}\n', 'upstreams.a.backends[0]: "unix:": invalid unix'),
    ('upstreams: {a: {backends: ["w.test:80"], dns: {family: ipv5}}}\n',
     'upstreams.a.dns.family: unknown value "ipv5" (any, ipv4, ipv6)'),
    ('upstreams: {a: {backends: ["w.test:80"], dns: {watch: yes please}}}\n',
     "upstreams.a.dns.watch: expected a boolean"),
    ('upstreams: {a: {backends: ["w.test:80"], dns: {follow: true}}}\n',
     "upstreams.a.dns.follow: unknown key"),
    ('listeners: [{name: t, listen: "127.0.0.1:1", protocol: tcp, upstream: a}]\n'
     'upstreams: {a: {backends: ["127.0.0.1:2", "w.test:80"]}}\n',
     'upstreams.a.backends[1]: "w.test:80": tcp listener "t" forwards to this upstream, and tcp '
     'listeners do not resolve host names yet'),
]


@pytest.mark.parametrize("text,message", BAD)
def test_t_refuses_bad_dns_values_with_the_key_path(tmp_path, text, message):
    r = check_config(tmp_path, text + "routes: [{respond: {status: 200}}]\n")
    assert r.returncode == 1, r.stdout
    assert message in r.stderr, r.stderr


def test_t_refuses_watch_with_discovery(tmp_path):
    (tmp_path / "b.txt").write_text("127.0.0.1:1\n")
    r = check_config(tmp_path, f"upstreams: {{a: {{discovery: {{file: {tmp_path}/b.txt}}, "
                               "dns: {watch: true}}}\n")
    assert r.returncode == 1
    assert "upstreams.a.dns.watch: not with discovery" in r.stderr


# ---- names resolved per request --------------------------------------------------------------

def test_host_name_backend_carries_traffic_with_the_right_host(procs, tmp_path, dnsmasq, ups):
    up = ups("127.0.0.2")
    dm = dnsmasq({"web.test": ["127.0.0.2"]})
    g = gateway(procs, tmp_path, dm.server,
                {"u": {"backends": [f"web.test:{up.port}"]},
                 "v": {"backends": [{"address": f"web.test:{up.port}", "weight": 2}],
                       "host": "api.internal"}},
                routes=[{"match": {"path": "/v"}, "upstream": "v"},
                        {"name": "main", "match": {"path": "/"}, "upstream": "u"}])
    for _ in range(3):
        status, _, body = g.get("/", host="shop.example")
        assert (status, body) == (200, b"hello\n")
    mock = up.by_ip["127.0.0.2"]
    # SPEC: the client's Host goes upstream unless the upstream sets `host`
    assert [r.header("Host") for r in mock.requests] == ["shop.example"] * 3
    assert g.get("/v", host="shop.example")[0] == 200
    assert mock.last().header("Host") == "api.internal"
    # A client without Host (HTTP/1.0): the backend's name, not an address
    with socket.create_connection(("127.0.0.1", g.port)) as s:
        s.sendall(b"GET /plain HTTP/1.0\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.0 200")
    assert mock.last().target == "/plain" and mock.last().header("Host") == "web.test"
    # one lookup (A and AAAA), then the worker's cache
    assert dm.queries("web.test", "A") == 1
    text = g.metrics()
    assert metric(text, 'sluice_dns_lookups_total{result="ok"}') == 1
    assert metric(text, 'sluice_dns_lookups_total{result="cached"}') == 4
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # GET /upstreams and GET /config show the name as written
    u = [x for x in json.loads(g.admin_call("GET", "/upstreams")[2]) if x["name"] == "u"][0]
    assert u["backends"] == [{"address": f"web.test:{up.port}", "weight": 1, "name": "web.test",
                              "health": "unchecked"}]


def test_addresses_of_a_name_are_used_in_turn(procs, tmp_path, dnsmasq, ups):
    up = ups("127.0.0.2", "127.0.0.3", "127.0.0.4")
    dm = dnsmasq({"pods.test": ["127.0.0.2", "127.0.0.3", "127.0.0.4"]})
    g = gateway(procs, tmp_path, dm.server, {"u": {"backends": [f"pods.test:{up.port}"]}})
    for _ in range(30):
        assert g.get("/")[0] == 200
    assert up.counts() == {"127.0.0.2": 10, "127.0.0.3": 10, "127.0.0.4": 10}


def test_record_change_is_followed_after_its_ttl(procs, tmp_path, dnsmasq, ups):
    up = ups("127.0.0.2", "127.0.0.3")
    dm = dnsmasq({"web.test": ["127.0.0.2"]}, ttl=2)
    g = gateway(procs, tmp_path, dm.server, {"u": {"backends": [f"web.test:{up.port}"]}},
                threads=2)
    for _ in range(5):
        assert g.get("/")[0] == 200
    assert up.counts() == {"127.0.0.2": 5, "127.0.0.3": 0}
    dm.set_hosts({"web.test": ["127.0.0.3"]})
    changed = time.monotonic()
    # Each worker's cached answer lives out its TTL (2 s, from when that worker looked it up:
    # at most 2 s before the change), then every new request goes to the new address.
    wait_until(lambda: g.get("/")[0] == 200 and up.counts()["127.0.0.3"] >= 1, timeout=6,
               what="the new address")
    time.sleep(max(0.0, changed + 2.5 - time.monotonic()))
    before = up.counts()
    for _ in range(10):
        assert g.get("/")[0] == 200
    assert up.counts() == {"127.0.0.2": before["127.0.0.2"], "127.0.0.3": before["127.0.0.3"] + 10}


def test_connect_failure_moves_to_another_address(procs, tmp_path, dnsmasq, ups):
    up = ups("127.0.0.3")  # nothing listens on 127.0.0.2
    dm = dnsmasq({"pods.test": ["127.0.0.2", "127.0.0.3"]})
    g = gateway(procs, tmp_path, dm.server, {"u": {"backends": [f"pods.test:{up.port}"]}})
    for _ in range(10):
        assert g.get("/")[0] == 200
    assert up.counts() == {"127.0.0.3": 10}


def test_put_config_and_backends_with_host_names(procs, tmp_path, dnsmasq, ups):
    up = ups("127.0.0.2", "127.0.0.3")
    dm = dnsmasq({"a.test": ["127.0.0.2"], "b.test": ["127.0.0.3"]})
    g = gateway(procs, tmp_path, dm.server, {"u": {"backends": [f"127.0.0.2:{up.port}"]}})
    status, body = g.put_config({"upstreams": {"u": {"backends": [f"b.test:{up.port}"]}},
                                 "routes": route_to("u")})
    assert status == 200, body
    assert g.get("/")[0] == 200 and up.counts()["127.0.0.3"] == 1
    status, _, body = g.admin_call("PUT", "/upstreams/u/backends", [f"a.test:{up.port}"])
    assert status == 200, body
    assert g.get("/")[0] == 200 and up.counts()["127.0.0.2"] == 1
    status, _, body = g.admin_call("PUT", "/upstreams/u/backends", ["no such name:80"])
    assert status == 400 and b"expected ip:port, name:port or unix:/path" in body


# ---- failures --------------------------------------------------------------------------------

def test_nxdomain_is_a_502_that_names_the_name(procs, tmp_path, dnsmasq, ups):
    up = ups("127.0.0.2")
    dm = dnsmasq({"web.test": ["127.0.0.2"]})
    g = gateway(procs, tmp_path, dm.server, {"u": {"backends": [f"missing.test:{up.port}"]}})
    for _ in range(2):  # the second answer comes from the negative cache
        status, headers, body = g.get("/")
        assert status == 502
        assert error_message(body) == "upstream name missing.test: DNS name not found (NXDOMAIN)"
    assert up.counts() == {"127.0.0.2": 0}
    assert dm.queries("missing.test", "A") == 1
    g.wait_log("upstream name missing.test: DNS name not found")
    assert metric(g.metrics(), 'sluice_dns_lookups_total{result="not_found"}') == 2
    # the gateway serves on
    g.admin_call("PUT", "/upstreams/u/backends", [f"web.test:{up.port}"])
    assert g.get("/")[0] == 200


def test_servfail_is_a_502(procs, tmp_path, fake_dns):
    f = fake_dns(fault="servfail")
    g = gateway(procs, tmp_path, f.server, {"u": {"backends": ["web.test:80"]}})
    status, _, body = g.get("/")
    assert status == 502
    assert error_message(body) == "upstream name web.test: DNS server failure (SERVFAIL)"
    assert metric(g.metrics(), 'sluice_dns_lookups_total{result="server_failure"}') == 1


def test_dead_dns_server_is_a_502_within_the_connect_timeout(procs, tmp_path):
    g = gateway(procs, tmp_path, dead_server(),
                {"u": {"backends": ["web.test:80"], "timeouts": {"connect": "2s"}}})
    t0 = time.monotonic()
    status, _, body = g.get("/")
    assert time.monotonic() - t0 < 2.0
    assert status == 502
    assert error_message(body) == ("upstream name web.test: DNS timeout (DNS servers unreachable: "
                                   "connection refused)")


def test_silent_dns_server_is_a_502_at_the_connect_timeout(procs, tmp_path, fake_dns):
    f = fake_dns(fault="drop")
    g = gateway(procs, tmp_path, f.server,
                {"u": {"backends": ["web.test:80"], "timeouts": {"connect": "800ms"}}})
    t0 = time.monotonic()
    status, _, body = g.get("/")
    elapsed = time.monotonic() - t0
    assert status == 502
    assert 0.7 < elapsed < 1.6, elapsed
    assert error_message(body) == ("upstream name web.test: DNS timeout (no answer within the "
                                   "connect timeout of 800 ms)")
    assert metric(g.metrics(), 'sluice_dns_lookups_total{result="timeout"}') == 1


def test_client_leaving_during_a_lookup(procs, tmp_path, fake_dns):
    f = fake_dns(fault="drop")
    g = gateway(procs, tmp_path, f.server,
                {"u": {"backends": ["web.test:80"], "timeouts": {"connect": "1s"}}})
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", g.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.05)
    time.sleep(1.2)
    assert g.proc.alive()
    assert g.get("/health-of-the-gateway")[0] == 502  # still answering


def test_graceful_shutdown_during_a_lookup(procs, tmp_path, fake_dns):
    f = fake_dns(fault="drop")
    g = gateway(procs, tmp_path, f.server,
                {"u": {"backends": ["web.test:80"], "timeouts": {"connect": "1s"}}}, threads=2)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=g.get("/")))
    t.start()
    wait_until(lambda: f.udp_queries > 0, what="the lookup")
    g.proc.send(signal.SIGTERM)
    t.join(10)
    status, _, body = result["r"]
    assert status == 502 and "no answer within the connect timeout" in error_message(body)
    assert g.proc.wait(10) == 0  # drained: the lookup ended the request, nothing leaked


def test_shutdown_waits_for_a_lookup_whose_client_left(procs, tmp_path, fake_dns):
    f = fake_dns(fault="drop")
    g = gateway(procs, tmp_path, f.server,
                {"u": {"backends": ["web.test:80"], "timeouts": {"connect": "1s"}}})
    with socket.create_connection(("127.0.0.1", g.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: f.udp_queries > 0, what="the lookup")
    g.proc.send(signal.SIGTERM)  # no connection left, but a request still waits for DNS
    assert g.proc.wait(10) == 0
    g.wait_log("no answer within the connect timeout of 1000 ms")


def test_grace_period_ending_during_a_lookup(procs, tmp_path, fake_dns):
    f = fake_dns(fault="drop")
    g = gateway(procs, tmp_path, f.server,
                {"u": {"backends": ["web.test:80"], "timeouts": {"connect": "30s"}}},
                grace_period_seconds=1)
    s = socket.create_connection(("127.0.0.1", g.port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: f.udp_queries > 0, what="the lookup")
    t0 = time.monotonic()
    g.proc.send(signal.SIGTERM)
    assert g.proc.wait(15) == 0  # the lookup is cancelled with its connection
    assert time.monotonic() - t0 < 8
    s.close()


# ---- names followed live (dns.watch) ----------------------------------------------------------

def backends_of(g, name="u"):
    ups = json.loads(g.admin_call("GET", "/upstreams")[2])
    return [b for u in ups if u["name"] == name for b in u["backends"]]


def test_watched_name_follows_scale_up_and_down(procs, tmp_path, dnsmasq, ups):
    up = ups("127.0.0.2", "127.0.0.3", "127.0.0.4")
    dm = dnsmasq({"svc.test": ["127.0.0.2", "127.0.0.3"]}, ttl=1)
    g = gateway(procs, tmp_path, dm.server,
                {"u": {"backends": [{"address": f"svc.test:{up.port}", "weight": 2}],
                       "dns": {"watch": True}}})
    etag = g.admin_call("GET", "/config")[1]["ETag"]
    wait_until(lambda: len(backends_of(g)) == 2, what="two addresses")
    assert backends_of(g) == [
        {"address": f"127.0.0.{i}:{up.port}", "weight": 2, "name": "svc.test",
         "health": "unchecked"} for i in (2, 3)]
    for _ in range(20):
        assert g.get("/")[0] == 200
    assert up.counts() == {"127.0.0.2": 10, "127.0.0.3": 10, "127.0.0.4": 0}

    dm.set_hosts({"svc.test": ["127.0.0.2", "127.0.0.3", "127.0.0.4"]})
    wait_until(lambda: len(backends_of(g)) == 3, timeout=6, what="scale up")
    g.wait_log(r"svc.test now resolves to 3 address\(es\): 127.0.0.2, 127.0.0.3, 127.0.0.4")
    for _ in range(30):
        assert g.get("/")[0] == 200
    assert up.counts() == {"127.0.0.2": 20, "127.0.0.3": 20, "127.0.0.4": 10}

    dm.set_hosts({"svc.test": ["127.0.0.4"]})
    wait_until(lambda: len(backends_of(g)) == 1, timeout=6, what="scale down")
    for _ in range(10):
        assert g.get("/")[0] == 200
    assert up.counts() == {"127.0.0.2": 20, "127.0.0.3": 20, "127.0.0.4": 20}

    # The name disappears: the last addresses stay, with a warning
    dm.set_hosts({"other.test": ["127.0.0.9"]})
    g.wait_log(r"svc.test: DNS name not found \(NXDOMAIN\); keeping its last 1 address", timeout=6)
    assert g.get("/")[0] == 200 and up.counts()["127.0.0.4"] == 21
    assert [b["address"] for b in backends_of(g)] == [f"127.0.0.4:{up.port}"]
    # None of this was a configuration change: GET /config is as written, same hash
    status, headers, body = g.admin_call("GET", "/config")
    assert headers["ETag"] == etag
    assert json.loads(body)["upstreams"]["u"]["backends"] == [
        {"address": f"svc.test:{up.port}", "weight": 2}]
    text = g.metrics()
    assert metric(text, "sluice_dns_watched_names") == 1
    assert metric(text, "sluice_dns_watch_changes_total") == 3


def test_watched_name_not_resolved_yet_is_resolved_per_request(procs, tmp_path, dnsmasq, ups):
    up = ups("127.0.0.2")
    dm = dnsmasq({"other.test": ["127.0.0.9"]}, ttl=1)
    g = gateway(procs, tmp_path, dm.server,
                {"u": {"backends": [f"later.test:{up.port}"], "dns": {"watch": True}}},
                threads=2)
    status, _, body = g.get("/")
    assert status == 502 and "later.test: DNS name not found" in error_message(body)
    assert [b["address"] for b in backends_of(g)] == [f"later.test:{up.port}"]
    dm.set_hosts({"later.test": ["127.0.0.2"]})
    wait_until(lambda: backends_of(g)[0]["address"] == f"127.0.0.2:{up.port}", timeout=8,
               what="the first answer")
    assert g.get("/")[0] == 200


def test_watch_follows_config_changes(procs, tmp_path, dnsmasq, ups):
    up = ups("127.0.0.2", "127.0.0.3")
    dm = dnsmasq({"a.test": ["127.0.0.2"], "b.test": ["127.0.0.3"]}, ttl=1)
    g = gateway(procs, tmp_path, dm.server,
                {"u": {"backends": [f"a.test:{up.port}"], "dns": {"watch": True}}})
    wait_until(lambda: backends_of(g)[0]["address"] == f"127.0.0.2:{up.port}", what="a.test")
    status, body = g.put_config({"upstreams": {"u": {"backends": [f"b.test:{up.port}"],
                                                     "dns": {"watch": True}}},
                                 "routes": route_to("u")})
    assert status == 200, body
    wait_until(lambda: backends_of(g)[0]["address"] == f"127.0.0.3:{up.port}", what="b.test")
    assert metric(g.metrics(), "sluice_dns_watched_names") == 1
    assert g.get("/")[0] == 200 and up.counts()["127.0.0.3"] == 1


# ---- unix sockets ----------------------------------------------------------------------------

class UnixHttp:
    """An HTTP/1.1 server on a unix socket (Python's http.server): answers "uds:<Host>"."""

    def __init__(self, path):
        import http.server
        self.path = str(path)
        self.hosts = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.hosts.append(self.headers.get("Host"))
                body = f"uds:{self.headers.get('Host')}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def address_string(self):
                return "unix"

            def log_message(self, *a):
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(self.path, Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        os.unlink(self.path)


def test_unix_socket_upstream(procs, tmp_path):
    uds = UnixHttp(tmp_path / "up.sock")
    try:
        g = Gateway(procs, tmp_path, {
            "upstreams": {"u": {"backends": [f"unix:{uds.path}"]},
                          "h": {"backends": [f"unix:{uds.path}"], "host": "app.local"}},
            "routes": [{"match": {"path": "/h"}, "upstream": "h"},
                       {"match": {"path": "/"}, "upstream": "u"}]})
        status, _, body = g.get("/", host="shop.example")
        assert (status, body) == (200, b"uds:shop.example\n")
        assert g.get("/h", host="shop.example")[2] == b"uds:app.local\n"
        with socket.create_connection(("127.0.0.1", g.port)) as s:  # no Host: "localhost"
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        assert data.endswith(b"uds:localhost\n")
        assert uds.hosts == ["shop.example", "app.local", "localhost"]
        for _ in range(20):  # kept alive and reused
            assert g.get("/")[0] == 200
    finally:
        uds.close()


def curl_unix(path, url, *args):
    r = subprocess.run(["curl", "-sS", "-i", "--unix-socket", str(path), *args, url],
                       capture_output=True, text=True, timeout=20)
    return r


def test_unix_socket_listener(procs, tmp_path, ups):
    up = ups("127.0.0.2")
    sock = tmp_path / "gw.sock"
    sock_stale = socket.socket(socket.AF_UNIX)
    sock_stale.bind(str(sock))  # a stale socket file from an earlier run: replaced at start
    sock_stale.close()
    g = Gateway(procs, tmp_path, {
        "upstreams": {"u": {"backends": [f"127.0.0.2:{up.port}"]}},
        "routes": [{"match": {"path": "/"}, "upstream": "u"}]},
        threads=2, more_listeners=[{"name": "local", "listen": f"unix:{sock}"}])
    wait_until(lambda: sock.exists() and stat.S_ISSOCK(sock.stat().st_mode), what="the socket")
    assert stat.S_IMODE(sock.stat().st_mode) == 0o666
    for i in range(10):
        r = curl_unix(sock, f"http://app.example/path{i}")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("HTTP/1.1 200") and r.stdout.endswith("hello\n")
    mock = up.by_ip["127.0.0.2"]
    assert mock.last().target == "/path9" and mock.last().header("Host") == "app.example"
    # the client address of a unix socket client
    assert mock.last().header("X-Forwarded-For") == "unix"
    assert g.proc.stop() == 0
    assert not sock.exists()  # removed at a graceful exit


def test_unix_socket_listener_refuses_a_file_that_is_not_a_socket(tmp_path):
    path = tmp_path / "not-a-socket"
    path.write_text("precious")
    conf = tmp_path / "c.yaml"
    conf.write_text(f"pid_file: {tmp_path}/p.pid\nadmin: {{listen: \"127.0.0.1:{free_port()}\"}}\n"
                    f"listeners: [{{name: u, listen: \"unix:{path}\"}}]\n")
    r = subprocess.run([str(SLUICE), "-c", str(conf)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 3
    assert "exists and is not a socket" in r.stderr
    assert path.read_text() == "precious"


def test_unix_socket_listener_survives_a_hot_upgrade(procs, tmp_path, ups):
    up = ups("127.0.0.2")
    sock = tmp_path / "gw.sock"
    g = Gateway(procs, tmp_path, {
        "upstreams": {"u": {"backends": [f"127.0.0.2:{up.port}"]}},
        "routes": [{"match": {"path": "/"}, "upstream": "u"}]},
        more_listeners=[{"name": "local", "listen": f"unix:{sock}"}])
    wait_until(sock.exists, what="the socket")
    inode = sock.stat().st_ino
    new = procs.start([SLUICE, "-u", "-c", g.path], name="sluice-new")
    new.wait_log("waiting for the old process")
    g.proc.send(signal.SIGQUIT)
    new.wait_log(r"unix:.*took over 1 listening socket")
    assert g.proc.wait(15) == 0
    assert sock.exists() and sock.stat().st_ino == inode  # the old process left it alone
    r = curl_unix(sock, "http://x/")
    assert r.stdout.startswith("HTTP/1.1 200"), r.stdout + r.stderr
    assert new.alive()
