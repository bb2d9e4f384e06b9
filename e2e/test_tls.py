"""TLS in the engine (issue: TLS and HTTP/2): listeners with certificates, versions, ALPN,
session resumption and client certificates; upstream TLS with verification of the chain, the
name and the address, SNI, client certificates (mTLS to the upstream), pooling and failures.
Peers are real: curl, openssl s_client, Python's ssl module and nginx."""
import hashlib
import os
import socket
import ssl
import subprocess
import time

import pytest

from helpers import BUILD, FORWARD, free_port
from mockup import pattern


@pytest.fixture
def tls_fwd(start_fwd, upstream, certs):
    """A TLS listener (server.crt: localhost, 127.0.0.1, *.pingora.local) to the mock upstream."""
    return start_fwd(upstream.addr, "--tls-cert", certs / "server.crt",
                     "--tls-key", certs / "server.key")


def curl(*args, timeout=30):
    return subprocess.run(["curl", "-sS", *map(str, args)], capture_output=True, timeout=timeout)


def client_ctx(certs, **kw):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def https_get(ctx, port, path="/", server_hostname="localhost", session=None):
    """One request over a fresh TLS connection; returns (response bytes, the SSL socket's
    version, whether the session was resumed, the session for the next time)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname=server_hostname, session=session) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {server_hostname}\r\n"
                  f"Connection: close\r\n\r\n".encode())
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out, s.version(), s.session_reused, s.session


# ---- listeners -----------------------------------------------------------------------------

def test_https_request_both_sides(tls_fwd, upstream, certs):
    r = curl("-i", "--cacert", certs / "ca.crt", "-H", "X-Client-Cert-Subject: CN=admin",
             f"https://localhost:{tls_fwd.port}/?a=1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"HTTP/1.1 200 OK") and r.stdout.endswith(b"hello\n")
    req = upstream.last()
    assert req.target == "/?a=1"
    assert req.header("x-forwarded-proto") == "https"
    assert req.header("host") == f"localhost:{tls_fwd.port}"
    assert req.header("x-client-cert-subject") is None, "a client cannot claim an identity"
    assert tls_fwd.wait_log(r"GET /\?a=1 -> 200 .* tls=TLSv1.3 sni=localhost alpn=http/1.1")


def test_sni_by_ip_address_and_names(tls_fwd, upstream, certs):
    # the certificate names 127.0.0.1 (no SNI is sent for an address) and *.pingora.local
    r = curl("--cacert", certs / "ca.crt", f"https://127.0.0.1:{tls_fwd.port}/")
    assert r.returncode == 0 and r.stdout == b"hello\n", r.stderr
    r = curl("--cacert", certs / "ca.crt", "--resolve", f"api.pingora.local:{tls_fwd.port}:127.0.0.1",
             f"https://api.pingora.local:{tls_fwd.port}/")
    assert r.returncode == 0 and r.stdout == b"hello\n", r.stderr
    assert tls_fwd.wait_log(r"tls=TLSv1.3 sni=api.pingora.local")


def test_versions_tls12_ok_tls11_refused(tls_fwd, certs):
    r = curl("--cacert", certs / "ca.crt", "--tlsv1.2", "--tls-max", "1.2",
             f"https://localhost:{tls_fwd.port}/")
    assert r.returncode == 0 and r.stdout == b"hello\n", r.stderr
    assert tls_fwd.wait_log(r"tls=TLSv1.2 ")
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{tls_fwd.port}",
                        "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], input=b"",
                       capture_output=True, timeout=10)
    assert r.returncode != 0, "TLS 1.1 must be refused"
    # and the listener still serves
    r = curl("--cacert", certs / "ca.crt", f"https://localhost:{tls_fwd.port}/")
    assert r.returncode == 0


def test_alpn_offers_http11_only_without_h2(tls_fwd, certs):
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{tls_fwd.port}",
                        "-servername", "localhost", "-alpn", "h2,http/1.1"], input=b"",
                       capture_output=True, timeout=10)
    assert b"ALPN protocol: http/1.1" in r.stdout, r.stdout[-800:]


def test_session_resumption_with_tickets(tls_fwd, certs):
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = client_ctx(certs, maximum_version=version)
        out, ver, reused, sess = https_get(ctx, tls_fwd.port)
        assert out.startswith(b"HTTP/1.1 200") and not reused
        out, ver2, reused, _ = https_get(ctx, tls_fwd.port, session=sess)
        assert out.startswith(b"HTTP/1.1 200") and reused, f"{ver}: session not resumed"
    assert tls_fwd.wait_log(r"resumed=true")


def test_10mib_both_ways_over_tls(tls_fwd, upstream, certs, tmp_path):
    blob = os.urandom(10 * 1024 * 1024)
    f = tmp_path / "blob"
    f.write_bytes(blob)
    r = curl("--cacert", certs / "ca.crt", "--data-binary", f"@{f}",
             f"https://localhost:{tls_fwd.port}/echo", timeout=60)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(blob).digest()
    assert upstream.last().body == blob
    r = curl("--cacert", certs / "ca.crt", f"https://localhost:{tls_fwd.port}/stream/{10 << 20}",
             timeout=60)
    assert r.stdout == pattern(10 << 20)


def test_keepalive_and_pipelining_over_tls(tls_fwd, upstream, certs):
    ctx = client_ctx(certs)
    raw = socket.create_connection(("127.0.0.1", tls_fwd.port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /bytes/70000 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert pattern(70000) in out and out.endswith(b"hello\n")
    assert [r.target for r in upstream.wait_requests(3)] == ["/bytes/10", "/bytes/70000", "/"]


def test_plain_http_and_garbage_on_tls_port(tls_fwd, certs):
    with socket.create_connection(("127.0.0.1", tls_fwd.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(1000)
        assert not data.startswith(b"HTTP/1.1 200"), data
    with socket.create_connection(("127.0.0.1", tls_fwd.port), timeout=5) as s:
        s.sendall(os.urandom(3000))
        try:
            while s.recv(1000):
                pass
        except ConnectionResetError:
            pass
    r = curl("--cacert", certs / "ca.crt", f"https://localhost:{tls_fwd.port}/")
    assert r.returncode == 0 and r.stdout == b"hello\n"


def test_handshake_timeout_closes_silent_clients(start_fwd, upstream, certs):
    fwd = start_fwd(upstream.addr, "--tls-cert", certs / "server.crt", "--tls-key",
                    certs / "server.key", "--handshake-timeout", 300)
    with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as s:
        t0 = time.monotonic()
        assert s.recv(100) == b""
        assert 0.2 < time.monotonic() - t0 < 3
    # a half-sent ClientHello gets the same treatment
    with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        t0 = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - t0 < 3


def test_client_certificates_required(start_fwd, upstream, certs):
    fwd = start_fwd(upstream.addr, "--tls-cert", certs / "server.crt", "--tls-key",
                    certs / "server.key", "--client-ca", certs / "ca.crt")
    url = f"https://localhost:{fwd.port}/"
    r = curl("--cacert", certs / "ca.crt", url)
    assert r.returncode != 0 and r.stdout == b"", "no client certificate: refused"
    # a certificate of the right CA but made for servers (extendedKeyUsage serverAuth only)
    r = curl("--cacert", certs / "ca.crt", "--cert", certs / "server.crt", "--key",
             certs / "server.key", url)
    assert r.returncode != 0 and r.stdout == b"", "a server certificate is no client identity"
    r = curl("--cacert", certs / "ca.crt", "--cert", certs / "client.crt", "--key",
             certs / "client.key", "-H", "X-Client-Cert-Subject: CN=admin", url)
    assert r.returncode == 0 and r.stdout == b"hello\n", r.stderr
    subject = "CN=PingoraClient,O=Pingora Proxy,ST=PingoraCity,C=US"
    assert fwd.wait_log(f'client="{subject}"')
    assert len(upstream.requests) == 1
    # the verified subject goes upstream; what the client claimed does not
    assert upstream.last().header("x-client-cert-subject") == subject
    # resuming a session that carried a client certificate works (session id context)
    ctx = client_ctx(certs)
    ctx.load_cert_chain(str(certs / "client.crt"), str(certs / "client.key"))
    _, _, reused, sess = https_get(ctx, fwd.port)
    _, _, reused, _ = https_get(ctx, fwd.port, session=sess)
    assert reused


def test_client_certificate_from_another_ca_refused(start_fwd, upstream, certs, tmp_path):
    key, crt = tmp_path / "o.key", tmp_path / "o.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=intruder"], check=True,
                   capture_output=True)
    fwd = start_fwd(upstream.addr, "--tls-cert", certs / "server.crt", "--tls-key",
                    certs / "server.key", "--client-ca", certs / "ca.crt")
    r = curl("--cacert", certs / "ca.crt", "--cert", crt, "--key", key,
             f"https://localhost:{fwd.port}/")
    assert r.returncode != 0 and r.stdout == b""
    assert not upstream.requests


def test_bad_certificate_files_refused_at_start(certs, tmp_path):
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate\n")
    for cert, key, why in ((bad, certs / "server.key", "no PEM certificate"),
                           (certs / "server.crt", certs / "client.key", "does not match"),
                           (tmp_path / "missing.crt", certs / "server.key", "No such file")):
        r = subprocess.run([FORWARD, "--listen", f"127.0.0.1:{free_port()}", "--upstream",
                            "127.0.0.1:1", "--tls-cert", cert, "--tls-key", key],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and why in r.stderr, r.stderr


# ---- upstream TLS ---------------------------------------------------------------------------

def upstream_says(body):
    return dict(kv.split("=", 1) for kv in body.decode().split())


def test_upstream_tls_verified_with_sni(start_fwd, nginx_tls, certs):
    fwd = start_fwd(nginx_tls.addr("plain"), "--upstream-tls", "--sni", "advanced.pingora.local",
                    "--ca", certs / "ca.crt")
    seen = []
    for _ in range(3):
        r = curl(f"http://127.0.0.1:{fwd.port}/")
        assert r.returncode == 0, r.stderr
        seen.append(upstream_says(r.stdout))
    assert seen[0]["proto"] == "TLSv1.3" and seen[0]["sni"] == "advanced.pingora.local"
    assert seen[0]["client"] == "" and seen[0]["alpn"] == "HTTP/1.1"
    # pooled: one TLS connection carried all three requests
    assert len({s["conn"] for s in seen}) == 1 and seen[2]["reqs"] == "3"


def test_upstream_wildcard_name(start_fwd, nginx_tls, certs):
    fwd = start_fwd(nginx_tls.addr("plain"), "--upstream-tls", "--sni", "v1.api.pingora.local",
                    "--ca", certs / "ca.crt")
    r = curl(f"http://127.0.0.1:{fwd.port}/")
    assert upstream_says(r.stdout)["sni"] == "v1.api.pingora.local"


@pytest.mark.parametrize("args,why", [
    (["--sni", "wrong.example"], "hostname mismatch"),
    (["--sni", "advanced.pingora.local", "--ca", "/etc/ssl/certs/ca-certificates.crt"],
     "unable to get local issuer certificate"),
    ([], "IP address mismatch"),  # no SNI: the address must be in the certificate
])
def test_upstream_verification_failures_are_502(start_fwd, nginx_tls, certs, args, why):
    if "--ca" not in args:
        args = args + ["--ca", str(certs / "ca.crt")]
    fwd = start_fwd(nginx_tls.addr("plain"), "--upstream-tls", *args)
    r = curl("-i", f"http://127.0.0.1:{fwd.port}/")
    assert r.stdout.startswith(b"HTTP/1.1 502"), r.stdout[:200]
    assert fwd.wait_log(why)


def test_upstream_ip_in_certificate_verifies(start_fwd, nginx_tls, certs):
    fwd = start_fwd(nginx_tls.addr("ipcert"), "--upstream-tls", "--ca", certs / "ca.crt")
    r = curl(f"http://127.0.0.1:{fwd.port}/")
    assert r.returncode == 0 and upstream_says(r.stdout)["proto"] == "TLSv1.3", r.stdout


def test_upstream_no_verify(start_fwd, nginx_tls):
    fwd = start_fwd(nginx_tls.addr("plain"), "--upstream-tls", "--sni", "wrong.example",
                    "--no-verify")
    r = curl(f"http://127.0.0.1:{fwd.port}/")
    assert r.returncode == 0 and upstream_says(r.stdout)["sni"] == "wrong.example"


def test_upstream_mtls(start_fwd, nginx_tls, certs):
    base = ["--upstream-tls", "--sni", "advanced.pingora.local", "--ca", certs / "ca.crt"]
    fwd = start_fwd(nginx_tls.addr("mtls"), *base, "--client-cert", certs / "client.crt",
                    "--client-key", certs / "client.key")
    r = curl(f"http://127.0.0.1:{fwd.port}/")
    assert r.returncode == 0
    assert "CN=PingoraClient" in upstream_says(r.stdout)["client"], r.stdout
    # without a client certificate, nginx answers 400 itself
    fwd2 = start_fwd(nginx_tls.addr("mtls"), *base)
    r = curl("-i", f"http://127.0.0.1:{fwd2.port}/")
    assert r.stdout.startswith(b"HTTP/1.1 400") and b"No required SSL certificate" in r.stdout


def test_upstream_plaintext_server_is_502(start_fwd):
    """A plain HTTP server answers the ClientHello with a 400 and closes: that is a failed
    handshake (502), not a response."""
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def serve():
        try:
            while True:
                c, _ = srv.accept()
                c.recv(4096)
                c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                          b"Connection: close\r\n\r\n")
                c.close()
        except OSError:
            pass
    threading.Thread(target=serve, daemon=True).start()
    try:
        fwd = start_fwd(f"127.0.0.1:{srv.getsockname()[1]}", "--upstream-tls", "--no-verify")
        r = curl("-i", f"http://127.0.0.1:{fwd.port}/")
        assert r.stdout.startswith(b"HTTP/1.1 502"), r.stdout[:200]
        assert fwd.wait_log("TLS handshake")
    finally:
        srv.close()


def test_upstream_silent_handshake_is_504(start_fwd):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    try:
        fwd = start_fwd(f"127.0.0.1:{srv.getsockname()[1]}", "--upstream-tls", "--no-verify",
                        "--connect-timeout", 400)
        t0 = time.monotonic()
        r = curl("-i", f"http://127.0.0.1:{fwd.port}/")
        assert r.stdout.startswith(b"HTTP/1.1 504"), r.stdout[:200]
        assert 0.3 < time.monotonic() - t0 < 5
    finally:
        srv.close()


def test_upstream_client_cert_renewal_picked_up(start_fwd, nginx_tls, certs, tmp_path):
    """The client certificate file is replaced (a renewal): new connections present the new
    one without a restart."""
    crt, key = tmp_path / "c.crt", tmp_path / "c.key"
    crt.write_bytes((certs / "client.crt").read_bytes())
    key.write_bytes((certs / "client.key").read_bytes())
    fwd = start_fwd(nginx_tls.addr("mtls"), "--upstream-tls", "--sni", "advanced.pingora.local",
                    "--ca", certs / "ca.crt", "--client-cert", crt, "--client-key", key,
                    "--idle-timeout", 0)
    r = curl(f"http://127.0.0.1:{fwd.port}/")
    assert "CN=PingoraClient" in upstream_says(r.stdout)["client"]
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    tmp_path / "n.key", "-out", tmp_path / "n.csr", "-subj", "/CN=Renewed"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", tmp_path / "n.csr", "-CA", certs / "ca.crt",
                    "-CAkey", certs / "ca.key", "-CAcreateserial", "-out", tmp_path / "n.crt",
                    "-days", "2"], check=True, capture_output=True)
    time.sleep(0.01)
    os.replace(tmp_path / "n.key", key)
    os.replace(tmp_path / "n.crt", crt)
    r = curl(f"http://127.0.0.1:{fwd.port}/")
    assert "CN=Renewed" in upstream_says(r.stdout)["client"], r.stdout


def test_encrypted_key_refused_without_prompting(certs, tmp_path):
    enc = tmp_path / "enc.key"
    subprocess.run(["openssl", "pkey", "-in", certs / "server.key", "-aes256", "-passout",
                    "pass:secret", "-out", enc], check=True, capture_output=True)
    r = subprocess.run(["setsid", FORWARD, "--listen", f"127.0.0.1:{free_port()}", "--upstream",
                        "127.0.0.1:1", "--tls-cert", certs / "server.crt", "--tls-key", enc],
                       capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "no PEM private key" in r.stderr, r.stderr


def test_every_tls13_resumption_gets_a_fresh_ticket(tls_fwd, certs):
    """TLS 1.3 clients use each ticket once: every resumed handshake must bring a new one, or
    every other connection would be a full handshake (sl-tlsload uses tickets once)."""
    import json
    r = subprocess.run([BUILD / "tools" / "sl-tlsload", "-c", "1", "-d", "1", "--resume",
                        "--ca", certs / "ca.crt", "--sni", "localhost",
                        f"127.0.0.1:{tls_fwd.port}"], capture_output=True, text=True, timeout=30)
    out = json.loads(r.stdout[r.stdout.index("{"):r.stdout.rindex("}") + 1])
    assert out["failures_total"] == 0 and out["resumed"] >= 20, out
    assert out["resumption_rate"] == 1.0 and out["tickets_per_conn"] >= 1.0, out


def test_complete_response_then_clean_tls_close(start_fwd, certs):
    """An upstream that sends a whole response with Connection: close and then closes TLS
    cleanly (close_notify in the same read): the response is complete, not an error, and the
    client's keep-alive connection goes on."""
    import threading
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(certs / "server.crt"), str(certs / "server.key"))
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def serve():
        while True:
            try:
                raw, _ = srv.accept()
            except OSError:
                return
            try:
                c = ctx.wrap_socket(raw, server_side=True)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += c.recv(4096)
                c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n"
                          b"Connection: close\r\n\r\nhello")
                c.unwrap().close()  # close_notify, then TCP close
            except (OSError, ssl.SSLError):
                pass
    threading.Thread(target=serve, daemon=True).start()
    try:
        fwd = start_fwd(f"127.0.0.1:{srv.getsockname()[1]}", "--upstream-tls", "--no-verify")
        r = curl("-sv", f"http://127.0.0.1:{fwd.port}/a", f"http://127.0.0.1:{fwd.port}/b")
        assert r.stdout == b"hellohello", r.stdout
        err = r.stderr.decode(errors="replace")
        assert "Connection reset" not in err and "Re-using existing connection" in err, err
        assert fwd.wait_log(r"GET /b -> 400 err=- bytes=5")
        assert "mid-response" not in fwd.log()
    finally:
        srv.close()
