"""Pingora City itself: every host and service, by address and by name, from the
hosts the guide uses (dev, client1, client2), plus lab/run, lab/svc and up.sh's
idempotence. Needs root; brought up once per session by the `lab` fixture."""
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from labkit import (DNS_HOSTS, IP, LAB, NAME, PY, RUN, LabProcess, curl, lab_run,
                    parse_http, service, wait_until)

pytestmark = pytest.mark.usefixtures("lab")

CLIENTS = ("dev", "client1", "client2")
ECHO = {"blue": "'Response from BLUE'\n", "green": "'Response from GREEN'\n"}
ADV = {
    "http": "Response from Advanced Upstream (HTTP)",
    "cache": "This response is cacheable for 60 seconds.",
    "https": "Response from Advanced Upstream (HTTPS + HTTP/2)",
    "mtls": "Response from mTLS Protected Upstream. Hello, Authenticated Client!",
    "h2c": "Response from Advanced Upstream (H2C - Cleartext HTTP/2)",
}
MTLS_CERT = ("--cert", "/keys/client.crt", "--key", "/keys/client.key")


def both(host):
    """The two ways to address HOST: its IP and its DNS name."""
    return [IP[host], NAME[host]]


# ------------------------------------------------------------- blue and green

@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("upstream", ["blue", "green"])
def test_echo_upstreams(client, upstream):
    for addr in both(upstream):
        r = curl(client, "-i", f"http://{addr}:8080/")
        assert r.returncode == 0, r.stderr
        status, h, body = parse_http(r.stdout)
        assert (status, body) == (200, ECHO[upstream])
        assert h["x-app-name"] == ["http-echo"] and h["x-app-version"] == ["0.2.3"]
        assert h["content-type"] == ["text/plain; charset=utf-8"]
        assert h["content-length"] == ["21" if upstream == "blue" else "22"]
        assert "date" in h


def test_echo_health_from_dev():
    r = curl("dev", "-i", "http://blue.pingora.local:8080/health")
    status, h, body = parse_http(r.stdout)
    assert (status, body) == (200, '{"status":"ok"}\n')


# ------------------------------------------------------------ advanced (nginx)

@pytest.mark.parametrize("client", CLIENTS)
def test_advanced_http(client):
    for addr in both("advanced"):
        status, h, body = parse_http(curl(client, "-i", f"http://{addr}/").stdout)
        assert (status, body) == (200, ADV["http"])
        assert h["server"] == ["nginx"]  # server_tokens off: no version
        # The guide's config: default_type application/octet-stream, then
        # add_header Content-Type text/plain, so nginx sends both.
        assert h["content-type"] == ["application/octet-stream", "text/plain"]
    r = curl(client, "-i", "http://advanced.pingora.local/cache-control")
    status, h, body = parse_http(r.stdout)
    assert (status, body) == (200, ADV["cache"])
    assert h["cache-control"] == ["public, max-age=60"] and h["etag"] == ["v1.0.0"]


@pytest.mark.parametrize("client", CLIENTS)
def test_advanced_https_h2(client):
    for addr in both("advanced"):
        r = curl(client, "--cacert", "/keys/ca.crt", "-w", "|%{http_version}", f"https://{addr}/")
        assert r.returncode == 0, r.stderr  # verified against the lab CA, by IP and name
        assert r.stdout == ADV["https"] + "|2"
    # SNI names covered by the upstream certificate's *.api.pingora.local.
    for name in ("v1.api.pingora.local", "v2.api.pingora.local"):
        r = curl(client, "--cacert", "/keys/ca.crt", f"https://{name}/")
        assert (r.returncode, r.stdout) == (0, ADV["https"]), r.stderr


@pytest.mark.parametrize("client", CLIENTS)
def test_advanced_mtls(client):
    for addr in both("advanced"):
        r = curl(client, "--cacert", "/keys/ca.crt", *MTLS_CERT, f"https://{addr}:8443/")
        assert (r.returncode, r.stdout) == (0, ADV["mtls"]), r.stderr
    status, h, body = parse_http(curl(client, "-i", "--cacert", "/keys/ca.crt",
                                      "https://advanced.pingora.local:8443/").stdout)
    assert status == 400 and "No required SSL certificate was sent" in body


@pytest.mark.parametrize("client", CLIENTS)
def test_advanced_h2c(client):
    for addr in both("advanced"):
        r = curl(client, "--http2-prior-knowledge", "-w", "|%{http_version}",
                 f"http://{addr}:8081/")
        assert (r.returncode, r.stdout) == (0, ADV["h2c"] + "|2"), r.stderr


def test_advanced_h2_with_nghttp():
    r = lab_run("client1", "nghttp", "-v", "http://172.28.0.22:8081/", timeout=10)
    assert r.returncode == 0 and ADV["h2c"] in r.stdout


# --------------------------------------------------------------------- gRPC

GRPC_CHECKS = """
import sys
sys.path.insert(0, "lab/hosts")
import grpc_client as gc
print(gc.health("172.28.0.23:9000"), gc.health("grpc.pingora.local:9000"),
      gc.health("grpc.pingora.local:9001", "hello.HelloService", ca="/keys/ca.crt"),
      gc.health("172.28.0.23:9001", ca="/keys/ca.crt"),
      gc.hello("grpc.pingora.local:9000", "lab")[0])
"""


@pytest.mark.parametrize("client", ["dev", "client1"])
def test_grpc_health(client):
    """Plain and TLS (verified against the lab CA, by name and by IP SAN)."""
    r = lab_run(client, PY, "-c", GRPC_CHECKS)
    assert r.stdout == "SERVING SERVING SERVING SERVING hello lab\n", r.stderr


def test_grpc_client_cli_in_dev():
    r = lab_run("dev", PY, LAB / "hosts/grpc_client.py", "health", "grpc.pingora.local:9001",
                "--tls")  # dev trusts the lab CA through SSL_CERT_FILE, as in the guide
    assert (r.returncode, r.stdout) == (0, "SERVING\n"), r.stderr


def test_grpc_with_curl_like_the_guide():
    """Lesson 24's hand-made request: an empty Check over h2 with TE: trailers."""
    r = lab_run("client1", "sh", "-c",
                "printf '\\0\\0\\0\\0\\0' | curl -sS --http2 --cacert /keys/ca.crt "
                "-H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- "
                "-D - -o /dev/null https://grpc.pingora.local:9001/grpc.health.v1.Health/Check")
    assert r.returncode == 0, r.stderr
    assert "HTTP/2 200" in r.stdout and "grpc-status: 0" in r.stdout


# ---------------------------------------------------------------------- DNS

@pytest.mark.parametrize("client", CLIENTS)
def test_dns_names(client):
    names = [NAME[h] for h in IP] + ["v1.api.pingora.local", "v2.api.pingora.local"]
    r = lab_run(client, "getent", "ahostsv4", *names)
    got = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:  # "IP STREAM name": the canonical line of each lookup
            got[parts[2]] = parts[0]
    want = {NAME[h]: ip for h, ip in IP.items()}
    want.update({"v1.api.pingora.local": IP["advanced"], "v2.api.pingora.local": IP["advanced"]})
    assert got == want
    assert lab_run(client, "getent", "hosts", "nope.pingora.local").returncode == 2


DNS_QUERY = r"""
import socket, struct, sys
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in sys.argv[1].split(".")) + b"\0"
q += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.sendto(q, ("172.28.0.2", 53)); r = s.recv(512)
ttl, n = struct.unpack(">IH", r[len(q) + 6:len(q) + 12])
print(ttl, socket.inet_ntoa(r[len(q) + 12:len(q) + 16]))
"""


def test_dns_short_ttl_and_reload():
    """The answers have TTL 5; a rewritten hosts file is served after SIGHUP."""
    r = lab_run("client1", PY, "-c", DNS_QUERY, "blue.pingora.local")
    assert r.stdout.split() == ["5", IP["blue"]], r.stderr
    original = DNS_HOSTS.read_text()
    try:
        DNS_HOSTS.write_text(original + "172.28.0.21 canary.pingora.local\n")
        assert service("reload", "dns").returncode == 0
        wait_until(lambda: lab_run("dev", "getent", "hosts", "canary.pingora.local").stdout,
                   5, what="the new name")
    finally:
        DNS_HOSTS.write_text(original)
        service("reload", "dns")
    wait_until(lambda: lab_run("dev", "getent", "hosts", "canary.pingora.local").returncode == 2,
               5, what="the name to go")


# ------------------------------------------------------- isolation and blackhole

def test_blackhole_times_out_in_dev_only():
    start = time.monotonic()
    r = lab_run("dev", "curl", "-sS", "--connect-timeout", "0.5", "http://192.0.2.1/")
    assert r.returncode == 28, r.stderr  # a timeout, not a refusal
    assert 0.5 < time.monotonic() - start < 5
    # Elsewhere the address has no route at all: it fails at once, nothing is sent.
    r = lab_run("client1", "curl", "-sS", "--connect-timeout", "1", "http://192.0.2.1/")
    assert r.returncode == 7


def test_host_namespace_stays_isolated():
    # No lab address or bridge in the host's own namespace...
    host = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert "172.28.0." not in host
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not re.search(r"\b(v-\w+|br0)\b", links)
    # ...and no way out of the lab: only the subnet (and dev's blackhole) is routed.
    for h in ("dev", "client1", "blue"):
        routes = lab_run(h, "ip", "-4", "route").stdout
        assert "default" not in routes
        assert lab_run(h, "ip", "route", "get", "8.8.8.8").returncode != 0


def test_client_addresses_are_distinct():
    """Clients reach upstreams from their own addresses (IP filtering lessons)."""
    for c in ("client1", "client2"):
        r = lab_run(c, "ip", "-4", "-o", "addr", "show", "eth0")
        assert f"inet {IP[c]}/24" in r.stdout


# ------------------------------------------------------------------- lab/run

def test_lab_run_passes_exit_code_stdin_and_env():
    assert lab_run("dev", "sh", "-c", "exit 7").returncode == 7
    assert lab_run("client2", "cat", input="hello\n").stdout == "hello\n"
    r = lab_run("dev", "sh", "-c", 'echo "$SSL_CERT_FILE $SLUICE_KEYS $(pwd)"; ls /keys')
    first, *files = r.stdout.splitlines()
    assert first == f"/keys/ca.crt /keys {Path(__file__).resolve().parents[2]}"
    assert {"ca.crt", "server.crt", "server.key", "client.crt", "client.key",
            "upstream.crt", "grpc.crt"} <= set(files)
    r = lab_run("client1", "sh", "-c", 'echo "${SSL_CERT_FILE:-unset} ${http_proxy:-none}"',
                env={**os.environ, "http_proxy": "http://leak:1"})
    assert r.stdout == "unset none\n"
    assert lab_run("dev", "touch", "/keys/x").returncode != 0  # read-only, as in the guide
    assert not os.path.ismount("/keys")  # the mount exists inside the host only
    r = subprocess.run([LAB / "run", "nowhere", "true"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown host" in r.stderr


SERVER_05 = r"""
import signal, socket, sys, threading
n = 0
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 6145)); s.listen()
def bye(*_):
    print(f"Exporter: Current Total Connections: {n}", flush=True); sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("Server started", flush=True)
while True:
    c, _ = s.accept(); n += 1
    c.sendall(f"Hello! You are visitor #{n}\n".encode())
    # Drain what the client sent before closing: closing with unread input
    # makes the kernel send RST, which can destroy the reply in flight.
    c.shutdown(socket.SHUT_WR); c.settimeout(2)
    try:
        while c.recv(4096): pass
    except OSError: pass
    c.close()
"""


def test_long_running_program_gets_sigterm():
    """The guide's validate-others.sh flow: a server in dev, 4 connections from
    the two clients by IP and name, then SIGTERM straight to the program."""
    with LabProcess("dev", PY, "-u", "-c", SERVER_05) as srv:
        srv.wait_output("Server started")
        assert Path(f"/proc/{srv.pid}/comm").read_text().startswith("python3")
        for c in ("client1", "client2"):
            for addr in both("dev"):
                r = lab_run(c, "sh", "-c", f"echo HELLO | nc -w 1 {addr} 6145")
                assert r.stdout.startswith("Hello! You are visitor #"), r.stderr
        assert srv.stop() == 0
    assert "Exporter: Current Total Connections: 4" in srv.output


# ------------------------------------------------------------------- lab/svc

def test_svc_stop_start_pause():
    url = "http://172.28.0.20:8080/"
    assert service("stop", "blue").returncode == 0
    try:
        assert curl("client1", url).returncode == 7  # refused, like a stopped container
        assert service("status", "blue").returncode == 1
    finally:
        assert service("start", "blue").returncode == 0
    assert curl("client1", url).stdout == ECHO["blue"]
    assert service("pause", "blue").returncode == 0
    try:
        assert "paused" in service("status", "blue").stdout
        assert curl("client1", url, timeout=0.5).returncode == 28  # hangs, like docker pause
    finally:
        service("resume", "blue")
    assert curl("client1", url).stdout == ECHO["blue"]


# -------------------------------------------------------------- idempotent up

def test_up_is_idempotent():
    pids = {s: (RUN / f"{s}.pid").read_text() for s in ("dns", "blue", "green", "advanced", "grpc")}
    r = subprocess.run([LAB / "up.sh"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAILED" not in r.stdout and r.stdout.count("... OK") == 15
    # Nothing that was running was restarted.
    assert {s: (RUN / f"{s}.pid").read_text() for s in pids} == pids
