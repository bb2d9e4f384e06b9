"""Lessons 7, 14, 15, 20, 21, 24 (TLS, HTTP/2, h2c, SNI, mTLS, gRPC) as the guide verifies them.

Each test runs the lesson's program on dev, sends the guide's request from client1 (with
`lab/run client1` in place of `docker exec pingora_client_1`) and checks what the client got:
status, body, headers, the protocol and TLS details curl reports. Where the upstream can be
observed it is checked too:

- blue's log (build/lab/run/blue.log) has one line per request: Host, peer, request line, UA;
- nginx's access log (build/lab/run/advanced/access.log, "combined" format) has the request
  line with the protocol nginx spoke (HTTP/2.0 or HTTP/1.1), the status and the UA;
- what a TLS server was offered (SNI, ALPN) is read from the ClientHellos that reach its host:
  a small packet capture runs in the upstream's namespace (`sniff`). The ClientHello is sent in
  clear in TLS 1.2 and 1.3 alike.

Every request carries a unique User-Agent, so log lines are found even while other tests use
the same upstreams. The lab's nginx does not report which client certificate it verified (no
$ssl_client_s_dn in its responses or log), and TLS 1.3 encrypts the certificate on the wire:
for lesson 21 the certificate's subject is read from the file the program presents.

Every program must exit 0 on SIGTERM, without a sanitizer report. SLUICE_BUILD selects another
build tree (e.g. a private `make B=/tmp/x SAN=1`). Two sluice bugs found here are tested: a TLS
upstream's complete response followed by close_notify is complete (the client connection goes
on), and an HTTP/1.1 client that leaves before its response is noticed at once.
"""
import contextlib
import json
import os
import re
import uuid

import pytest

from labkit import IP, PY, RUN, LabProcess, curl, lab_run, parse_http, wait_until

EX = os.environ.get("SLUICE_BUILD", "build") + "/examples/"
DEV = IP["dev"]
BLUE_LOG = RUN / "blue.log"
NGINX_LOG = RUN / "advanced" / "access.log"
GRPC_CLIENT = "lab/hosts/grpc_client.py"


@pytest.fixture(autouse=True)
def _lab(lab):
    return lab


@contextlib.contextmanager
def proxy(name, port, prefix=()):
    """Run lesson program NAME on dev until the block ends; it must then exit cleanly."""
    p = LabProcess("dev", *prefix, EX + name)
    try:
        p.wait_port(port)
        yield p
    finally:
        code = p.stop()
    assert code == 0, f"{name} exited with {code}:\n{p.output}"
    assert not re.search(r"Sanitizer|runtime error:", p.output), p.output


def agent(lesson):
    """A User-Agent no other request carries, to find this request in upstream logs."""
    return f"sluice-lab-{lesson}-{uuid.uuid4().hex[:10]}"


def log_lines(path, token, n=1, timeout=5.0):
    """The lines of PATH that contain TOKEN, once there are at least N of them."""
    def lines():
        found = [l for l in path.read_text(errors="replace").splitlines() if token in l]
        return found if len(found) >= n else None
    return wait_until(lines, timeout, 0.05, f"{n} line(s) with {token!r} in {path}")


# What a TLS server is offered: run in the server's namespace, print the SNI and ALPN of each
# ClientHello that arrives for PORT, one JSON object a line. A raw packet socket sees every
# interface of the namespace; frames the host sends itself are skipped.
SNIFFER = r"""
import json, socket, struct, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
print("ready", flush=True)

def hello(p):
    if len(p) < 44 or p[0] != 0x16 or p[5] != 1:  # handshake record, ClientHello
        return None
    i = 5 + 4 + 2 + 32                              # headers, version, random
    i += 1 + p[i]                                   # session id
    i += 2 + int.from_bytes(p[i:i + 2], "big")      # cipher suites
    i += 1 + p[i]                                   # compression methods
    end = min(len(p), i + 2 + int.from_bytes(p[i:i + 2], "big"))
    i += 2
    sni, alpn = None, []
    while i + 4 <= end:
        t, n = struct.unpack("!HH", p[i:i + 4])
        d = p[i + 4:i + 4 + n]
        i += 4 + n
        if t == 0:                                  # server_name
            sni = d[5:5 + int.from_bytes(d[3:5], "big")].decode()
        elif t == 16:                               # application_layer_protocol_negotiation
            j = 2
            while j < len(d):
                alpn.append(d[j + 1:j + 1 + d[j]].decode())
                j += 1 + d[j]
    return sni, alpn

while True:
    frame, addr = s.recvfrom(65535)
    if addr[2] == socket.PACKET_OUTGOING or frame[12:14] != b"\x08\x00":
        continue
    ip = frame[14:]
    ihl, total = (ip[0] & 15) * 4, struct.unpack("!H", ip[2:4])[0]
    if ip[9] != 6:
        continue
    tcp = ip[ihl:total] if total else ip[ihl:]
    sport, dport = struct.unpack("!HH", tcp[:4])
    if dport != port:
        continue
    try:
        h = hello(tcp[(tcp[12] >> 4) * 4:])
    except (IndexError, UnicodeDecodeError):
        h = None
    if h:
        src = socket.inet_ntoa(ip[12:16])
        print(json.dumps({"src": f"{src}:{sport}", "sni": h[0], "alpn": h[1]}), flush=True)
"""


class Sniffer:
    def __init__(self, proc):
        self.proc = proc

    def hellos(self):
        """The ClientHellos seen so far, from the dev host only."""
        return [h for h in (json.loads(l) for l in self.proc.output.splitlines()
                            if l.startswith("{"))
                if h["src"].startswith(DEV + ":")]

    def wait_for(self, sni, timeout=5.0):
        """The ClientHellos from dev that named SNI (waits for at least one)."""
        return wait_until(lambda: [h for h in self.hellos() if h["sni"] == sni], timeout, 0.05,
                          f"a ClientHello for {sni!r}")


@contextlib.contextmanager
def sniff(host, port):
    p = LabProcess(host, PY, "-c", SNIFFER, port)
    try:
        p.wait_output("ready")
        yield Sniffer(p)
    finally:
        p.stop()


def verbose(r):
    """curl -v's notes on the connection (TLS, ALPN, protocol)."""
    return [l[2:] for l in r.stderr.splitlines() if l.startswith("* ")]


# ---- lesson 7: TLS termination ---------------------------------------------------------------

def test_lesson07_tls_termination():
    with proxy("07_tls_termination", 6147) as p:
        ua = agent("07")
        # The guide's command, verbatim (curl offers h2 by default over TLS).
        r = curl("client1", "-v", "-i", "-A", ua, "--cacert", "/keys/ca.crt",
                 "--resolve", f"dev.pingora.local:6147:{DEV}", "https://dev.pingora.local:6147")
        notes = verbose(r)
        status, headers, body = parse_http(r.stdout)
        assert r.stdout.startswith("HTTP/2 200")
        assert status == 200 and body == "'Response from BLUE'\n"
        assert headers["x-app-name"] == ["http-echo"]
        assert any(n.startswith("SSL connection using TLSv1.3") for n in notes), notes
        assert "ALPN: offers h2,http/1.1" in notes
        assert "ALPN: server accepted h2" in notes
        assert " SSL certificate verify ok." in notes
        assert any("CN=*.pingora.local" in n for n in notes)
        # Blue got plain HTTP/1.1 from dev, with the client's :authority as Host.
        line, = log_lines(BLUE_LOG, f'"{ua}"')
        assert f' dev.pingora.local:6147 {DEV}:' in line
        assert '"GET / HTTP/1.1" 200 21' in line
        p.wait_output("Forwarding HTTPS request to Upstream Blue")
        assert 'Forwarding HTTPS request to Upstream Blue ("172.28.0.20", 8080)' in p.output
        assert "HTTPS Proxy running on 0.0.0.0:6147" in p.output

        # An HTTP/1.1 client gets http/1.1 by ALPN on the same listener.
        r = curl("client1", "-v", "-i", "--http1.1", "--cacert", "/keys/ca.crt",
                 "https://dev.pingora.local:6147/")
        assert r.stdout.startswith("HTTP/1.1 200 OK\r\n")
        assert parse_http(r.stdout)[2] == "'Response from BLUE'\n"
        assert "ALPN: server accepted http/1.1" in verbose(r)

        # "Intermediate": TLS 1.2 with a forward-secret AEAD suite is accepted; a static-RSA
        # CBC suite and TLS 1.1 are refused by the server (its alert comes back).
        r = curl("client1", "-v", "--tlsv1.2", "--tls-max", "1.2", "--cacert", "/keys/ca.crt",
                 "https://dev.pingora.local:6147/")
        assert r.stdout == "'Response from BLUE'\n"
        assert any(re.match(r"SSL connection using TLSv1\.2 / ECDHE-(RSA|ECDSA)-"
                            r"(AES128-GCM|AES256-GCM|CHACHA20-POLY1305)", n)
                   for n in verbose(r)), verbose(r)
        r = curl("client1", "-v", "--tlsv1.2", "--tls-max", "1.2", "--ciphers", "AES128-SHA",
                 "--cacert", "/keys/ca.crt", "https://dev.pingora.local:6147/")
        assert r.returncode == 35 and "(IN), TLS alert, handshake failure" in r.stderr
        r = lab_run("client1", "openssl", "s_client", "-connect", f"{DEV}:6147", "-tls1_1",
                    "-cipher", "DEFAULT@SECLEVEL=0", input="")
        assert "alert protocol version" in r.stdout + r.stderr


# ---- lesson 14: HTTP/2 on both sides ---------------------------------------------------------

def test_lesson14_http2_support():
    with proxy("14_http2_support", 6154) as p, sniff("advanced", 443) as hellos:
        ua = agent("14")
        r = curl("client1", "-v", "-i", "--http2", "-A", ua, "--cacert", "/keys/ca.crt",
                 "https://dev.pingora.local:6154")
        notes = verbose(r)
        status, headers, body = parse_http(r.stdout)
        assert r.stdout.startswith("HTTP/2 200")
        assert status == 200 and body == "Response from Advanced Upstream (HTTPS + HTTP/2)"
        assert headers["server"] == ["nginx"]
        # nginx sends two Content-Type headers (default_type + add_header, as in the guide).
        assert headers["content-type"] == ["application/octet-stream", "text/plain"]
        assert "ALPN: server accepted h2" in notes
        assert "using HTTP/2" in notes
        assert " SSL certificate verify ok." in notes
        # The upstream side: nginx was offered h2 then http/1.1 for advanced.pingora.local,
        # and served the request over HTTP/2, to dev.
        hello, = hellos.wait_for("advanced.pingora.local")
        assert hello["alpn"] == ["h2", "http/1.1"]
        line, = log_lines(NGINX_LOG, f'"{ua}"')
        assert line.startswith(f"{DEV} - - ")
        assert '"GET / HTTP/2.0" 200 48 ' in line
        p.wait_output("Forwarding to Upstream Advanced via HTTPS (ALPN: H2/H1)")
        assert "HTTP/2 Proxy running on 0.0.0.0:6154" in p.output

        # An HTTP/1.1 client: still HTTP/2 upstream (on the pooled connection).
        ua = agent("14-h1")
        r = curl("client1", "-i", "--http1.1", "-A", ua, "--cacert", "/keys/ca.crt",
                 "https://dev.pingora.local:6154/")
        assert r.stdout.startswith("HTTP/1.1 200 OK\r\n")
        assert parse_http(r.stdout)[2] == "Response from Advanced Upstream (HTTPS + HTTP/2)"
        assert '"GET / HTTP/2.0" 200 48 ' in log_lines(NGINX_LOG, f'"{ua}"')[0]
        assert len(hellos.wait_for("advanced.pingora.local")) == 1


def test_lesson14_upstream_trust_comes_from_ssl_cert_file():
    """The guide: SSL_CERT_FILE makes the proxy trust the lab CA. Without it (and without a
    ca_file in the config) the system store is used, which does not know the lab CA: the
    upstream's certificate is refused and the client gets 502."""
    with proxy("14_http2_support", 6154, prefix=("env", "-u", "SSL_CERT_FILE")) as p:
        r = curl("client1", "-i", "--cacert", "/keys/ca.crt", "https://dev.pingora.local:6154")
        status, _, body = parse_http(r.stdout)
        assert status == 502
        assert json.loads(body)["message"] == "upstream TLS handshake failed"
        p.wait_output("(advanced.pingora.local) failed: unable to get local issuer certificate")


# ---- lesson 15: h2c upstream -----------------------------------------------------------------

def test_lesson15_h2c_support():
    with proxy("15_h2c_support", 6155) as p:
        ua = agent("15")
        r = curl("client1", "-v", "-i", "-A", ua, f"http://{DEV}:6155")
        status, headers, body = parse_http(r.stdout)
        assert r.stdout.startswith("HTTP/1.1 200 OK\r\n")
        assert status == 200
        assert body == "Response from Advanced Upstream (H2C - Cleartext HTTP/2)"
        assert headers["server"] == ["nginx"]
        # nginx 1.22's :8081 speaks only HTTP/2: its log shows the request came over h2c.
        line, = log_lines(NGINX_LOG, f'"{ua}"')
        assert line.startswith(f"{DEV} - - ")
        assert '"GET / HTTP/2.0" 200 56 ' in line
        p.wait_output("Forwarding to Upstream Advanced via H2C (Port 8081)")
        assert ("Proxy running on 0.0.0.0:6155 (HTTP/1.1) -> Forwarding to Upstream (H2C)"
                in p.output)


# ---- lesson 20: SNI routing ------------------------------------------------------------------

def test_lesson20_sni_routing():
    with proxy("20_sni_routing", 6164) as p, sniff("advanced", 443) as hellos:
        for path, sni in (("/v1/test", "v1.api.pingora.local"),
                          ("/v2/test", "v2.api.pingora.local")):
            ua = agent("20")
            r = curl("client1", "-v", "-i", "-A", ua, f"http://{DEV}:6164{path}")
            status, headers, body = parse_http(r.stdout)
            assert status == 200
            assert body == "Response from Advanced Upstream (HTTPS + HTTP/2)"
            p.wait_output(f"SNI: {sni}")
            assert f'Connecting to IP: ("172.28.0.22", 443) with SNI: {sni}' in p.output
            # nginx was asked for that name (ALPN H1 is the peer's default) and served the
            # path over HTTP/1.1.
            hello, = hellos.wait_for(sni)
            assert hello["alpn"] == ["http/1.1"]
            line, = log_lines(NGINX_LOG, f'"{ua}"')
            assert f'"GET {path} HTTP/1.1" 200 48 ' in line
        # Other paths go to v2; a second v1 request reuses the v1 connection (pooled by SNI).
        assert curl("client1", f"http://{DEV}:6164/other").stdout.startswith("Response from")
        assert curl("client1", f"http://{DEV}:6164/v1/again").stdout.startswith("Response from")
        assert p.output.count("with SNI: v2.api.pingora.local") == 2
        assert p.output.count("with SNI: v1.api.pingora.local") == 2
        assert len(hellos.wait_for("v1.api.pingora.local")) == 1
        assert len(hellos.wait_for("v2.api.pingora.local")) == 1
        assert "SNI Routing Proxy running on 0.0.0.0:6164" in p.output


# ---- lesson 21: mutual TLS -------------------------------------------------------------------

def test_lesson21_mutual_tls():
    # The certificate /auth presents: the lab's client certificate.
    r = lab_run("dev", "openssl", "x509", "-noout", "-subject", "-in", "/keys/client.crt")
    assert re.search(r"CN ?= ?PingoraClient", r.stdout), r.stdout
    with proxy("21_mutual_tls", 6165) as p, sniff("advanced", 8443) as hellos:
        ua = agent("21-anon")
        r = curl("client1", "-v", "-i", "-A", ua, f"http://{DEV}:6165/anon")
        status, headers, body = parse_http(r.stdout)
        assert status == 400
        assert "<center>No required SSL certificate was sent</center>" in body
        assert headers["content-type"] == ["text/html"]
        assert '"GET /anon HTTP/1.1" 400 230 ' in log_lines(NGINX_LOG, f'"{ua}"')[0]
        p.wait_output("Connecting anonymously (no cert) for /anon...")

        ua = agent("21-auth")
        r = curl("client1", "-v", "-i", "-A", ua, f"http://{DEV}:6165/auth")
        status, headers, body = parse_http(r.stdout)
        assert status == 200
        assert body == "Response from mTLS Protected Upstream. Hello, Authenticated Client!"
        # nginx (ssl_verify_client on, the lab CA) verified the certificate and answered 200.
        assert '"GET /auth HTTP/1.1" 200 67 ' in log_lines(NGINX_LOG, f'"{ua}"')[0]
        p.wait_output("Attaching Client Certificate for /auth request...")
        assert "mTLS Proxy running on 0.0.0.0:6165" in p.output
        # Two connections for advanced.pingora.local: with and without the certificate are
        # different pool keys.
        assert len(hellos.wait_for("advanced.pingora.local")) == 2
        assert curl("client1", f"http://{DEV}:6165/auth").stdout.startswith("Response from mTLS")
        assert len(hellos.hellos()) == 2  # the authenticated connection was reused


def test_lesson21_anon_400_keeps_the_client_connection():
    with proxy("21_mutual_tls", 6165) as p:
        # Two requests on one client connection. curl silently retries a request whose reused
        # connection dies, on a new connection: the reset shows only in its verbose notes.
        r = curl("client1", "-v", "-o", "/dev/null", "-o", "/dev/null",
                 f"http://{DEV}:6165/anon", f"http://{DEV}:6165/anon")
        assert r.returncode == 0
        assert "upstream failed mid-response" not in p.output
        assert "Re-using existing connection #0" in r.stderr
        assert "Connection died" not in r.stderr and "Connection #1" not in r.stderr


# ---- lesson 24: gRPC -------------------------------------------------------------------------

# The guide's request has no body: the lab's gRPC server (grpcio) then waits for a request
# message that never comes (so does the same request sent to it directly), and curl times out.
# Here it carries one empty gRPC message instead: 5 bytes, uncompressed flag 0, length 0
# (an empty HealthCheckRequest, i.e. service "").
EMPTY_GRPC_MESSAGE = b"\x00\x00\x00\x00\x00"
# HealthCheckResponse{status: SERVING} in a gRPC frame.
SERVING = b"\x00\x00\x00\x00\x02\x08\x01"


def grpc_curl(*args):
    return lab_run("client1", "curl", "-sS", "--max-time", "10", "-v", "-i",
                   "--cacert", "/keys/ca.crt",
                   "-H", "Content-Type: application/grpc", "-H", "TE: trailers",
                   "-X", "POST", "--data-binary", "@-", *args,
                   "https://172.28.0.10:6168/grpc.health.v1.Health/Check",
                   input=EMPTY_GRPC_MESSAGE, text=False, timeout=20)


def test_lesson24_grpc_proxy_curl():
    with proxy("24_grpc_proxy", 6168) as p, sniff("grpc", 9001) as hellos:
        # HTTP/2 to sluice: the response header, the message, then the trailers.
        r = grpc_curl("--http2")
        notes = r.stderr.decode()
        assert r.returncode == 0, notes
        head, _, rest = r.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/2 200")
        assert b"\r\ncontent-type: application/grpc" in head
        assert rest == SERVING + b"grpc-status: 0\r\n"  # curl -i prints trailers after the body
        assert "< grpc-status: 0" in notes
        assert "ALPN: server accepted h2" in notes
        # Upstream: TLS to grpc.pingora.local offering only h2.
        hello, = hellos.wait_for("grpc.pingora.local")
        assert hello["alpn"] == ["h2"]
        p.wait_output("Proxying gRPC request...")

        # HTTP/1.1 to sluice (the guide's note): the same answer, trailers as chunked trailers.
        r = grpc_curl("--http1.1", "--raw")
        assert r.returncode == 0, r.stderr.decode()
        head, _, rest = r.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\ncontent-type: application/grpc" in head
        assert b"\r\nTransfer-Encoding: chunked" in head
        assert rest == b"7\r\n" + SERVING + b"\r\n0\r\ngrpc-status: 0\r\n\r\n"
        assert p.output.count("Proxying gRPC request...") == 2
        assert "gRPC Proxy running on 0.0.0.0:6168" in p.output


def guide_request(version):
    """The guide's exact command, without a body (see EMPTY_GRPC_MESSAGE): curl gives up."""
    r = lab_run("client1", "curl", "-sS", "--max-time", "1.5", "-i", "--cacert", "/keys/ca.crt",
                "-H", "Content-Type: application/grpc", "-H", "TE: trailers", "-X", "POST",
                version, "https://172.28.0.10:6168/grpc.health.v1.Health/Check", timeout=20)
    assert r.returncode == 28 and r.stdout == "", r.stderr  # timed out, nothing received


def test_lesson24_guide_request_without_message():
    """An HTTP/2 client that gives up (RST_STREAM) while the upstream has not answered: sluice
    cancels the upstream stream, keeps serving and exits at once on SIGTERM (the proxy helper
    would see a SIGKILL after 10 s otherwise)."""
    with proxy("24_grpc_proxy", 6168) as p:
        guide_request("--http2")
        r = grpc_curl("--http2")
        assert r.returncode == 0 and r.stdout.endswith(SERVING + b"grpc-status: 0\r\n")
        assert p.output.count("Proxying gRPC request...") == 2


def test_lesson24_http1_client_that_gives_up_is_noticed():
    p = LabProcess("dev", EX + "24_grpc_proxy")
    try:
        p.wait_port(6168)
        guide_request("--http1.1")
    finally:
        code = p.stop(timeout=5)
    assert code == 0, p.output


def grpc_client(*args):
    return lab_run("client1", PY, GRPC_CLIENT, *args, f"{DEV}:6168", "--ca", "/keys/ca.crt",
                   timeout=30)


def test_lesson24_grpc_proxy_grpcio():
    """A real gRPC client (grpcio, HTTP/2 with ALPN h2) through sluice: unary and streaming
    calls, and an error status that travels in trailers only."""
    with proxy("24_grpc_proxy", 6168) as p:
        r = grpc_client("health")
        assert (r.returncode, r.stdout) == (0, "SERVING\n"), r.stderr
        for mode, replies in (("unary", 1), ("server", 10), ("bidi", 2)):
            r = grpc_client("hello", "--greeting", "sluice", "--mode", mode)
            assert r.returncode == 0, r.stderr
            assert r.stdout == "hello sluice\n" * replies, mode
        r = grpc_client("hello", "--greeting", "sluice", "--mode", "client")
        assert r.stdout == "hello sluice, sluice\n"
        r = grpc_client("health", "--service", "no.such.Service")
        assert r.returncode == 2 and r.stderr.strip() == "NOT_FOUND: unknown service"
        assert p.output.count("Proxying gRPC request...") == 6
