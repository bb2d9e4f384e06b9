"""TLS in the gateway (SPEC §4): listeners' certificates chosen by SNI, inline PEM certificates
pushed with PUT /config (as the watcher sends them) and swapped live without dropping
connections, client certificates, upstream TLS with verification and mTLS, and every bad
input refused with its key path."""
import json
import socket
import ssl
import subprocess
import time

import pytest

from gw import Gateway, check_config
from mockup import MockUpstream


@pytest.fixture
def up1():
    u = MockUpstream()
    yield u
    u.close()


def make_cert(tmp_path, certs, cn, sans, name=None):
    """A leaf signed by the lab CA for the given SANs; returns (crt path, key path)."""
    name = name or cn.replace("*", "star")
    key, csr, crt, ext = (tmp_path / f"{name}.key", tmp_path / f"{name}.csr",
                          tmp_path / f"{name}.crt", tmp_path / f"{name}.ext")
    ext.write_text("subjectAltName=" + ",".join(f"DNS:{s}" for s in sans) +
                   "\nextendedKeyUsage=serverAuth\n")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr, "-subj",
                    f"/CN={cn}"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", certs / "ca.crt", "-CAkey",
                    certs / "ca.key", "-CAcreateserial", "-out", crt, "-days", "2", "-extfile",
                    ext], check=True, capture_output=True)
    return crt, key


def peer_cert(port, sni, certs):
    """The certificate the listener presents for an SNI (None: no SNI): its subject CN and
    SANs, verified against the lab CA."""
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    ctx.check_hostname = False
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname=sni) as s:
        c = s.getpeercert()
    cn = dict(x[0] for x in c["subject"])["commonName"]
    return cn, sorted(v for k, v in c.get("subjectAltName", ()) if k == "DNS")


def https(port, path, host, certs, extra=()):
    return subprocess.run(["curl", "-sS", "--cacert", certs / "ca.crt", "--resolve",
                           f"{host}:{port}:127.0.0.1", *extra, f"https://{host}:{port}{path}"],
                          capture_output=True, timeout=30)


def tls_gateway(procs, tmp_path, certs, upstream, tls, extra=None, conf=None):
    port = __import__("helpers").free_port()
    doc = {
        "upstreams": {"u": {"backends": [upstream.addr]}},
        "routes": [{"match": {"path": "/", "path_type": "prefix"}, "upstream": "u"}],
    }
    doc.update(conf or {})
    g = Gateway(procs, tmp_path, doc, extra=extra, more_listeners=[
        {"name": "websecure", "listen": f"127.0.0.1:{port}", "tls": tls}])
    __import__("helpers").wait_port(port)
    g.tls_port = port
    return g


def test_listener_sni_selection_and_default(procs, tmp_path, certs, up1):
    a_crt, a_key = make_cert(tmp_path, certs, "a.example.test", ["a.example.test"])
    w_crt, w_key = make_cert(tmp_path, certs, "*.wild.test", ["*.wild.test"])
    g = tls_gateway(procs, tmp_path, certs, up1, {"certificates": [
        {"cert": str(certs / "server.crt"), "key": str(certs / "server.key")},
        {"cert": str(a_crt), "key": str(a_key)},
        {"cert_pem": w_crt.read_text(), "key_pem": w_key.read_text()},
    ]})
    assert peer_cert(g.tls_port, "a.example.test", certs)[0] == "a.example.test"
    assert peer_cert(g.tls_port, "x.wild.test", certs)[0] == "*.wild.test"
    assert peer_cert(g.tls_port, "A.EXAMPLE.TEST", certs)[0] == "a.example.test"
    # one label only for a wildcard; unknown names and no SNI get the first certificate
    assert peer_cert(g.tls_port, "x.y.wild.test", certs)[0] == "*.pingora.local"
    assert peer_cert(g.tls_port, "unknown.test", certs)[0] == "*.pingora.local"
    assert peer_cert(g.tls_port, None, certs)[0] == "*.pingora.local"
    r = https(g.tls_port, "/x", "a.example.test", certs)
    assert r.returncode == 0 and r.stdout == b"hello\n", r.stderr
    req = up1.last()
    assert req.header("x-forwarded-proto") == "https" and req.target == "/x"
    # the config shows no private key
    _, _, body = g.admin_call("GET", "/config")
    shown = json.loads(body)["listeners"][1]["tls"]["certificates"][2]
    assert shown["key_pem"] == "<redacted>" and "BEGIN CERTIFICATE" in shown["cert_pem"]


def test_put_config_certificates_live_swap(procs, tmp_path, certs, up1):
    """A listener with no certificate of its own refuses handshakes until PUT /config brings
    some; hosts map names; a swap keeps established connections."""
    g = tls_gateway(procs, tmp_path, certs, up1, {"certificates": []})
    assert g.wait_log("no certificate yet")
    r = https(g.tls_port, "/", "shop.test", certs)
    assert r.returncode != 0, "no certificate: handshakes refused"
    s_crt, s_key = make_cert(tmp_path, certs, "shop", ["shop.test", "www.shop.test"])
    d_crt, d_key = make_cert(tmp_path, certs, "fallback", ["fallback.test"])
    dyn = {"upstreams": {"u": {"backends": [up1.addr]}},
           "routes": [{"match": {"path": "/", "path_type": "prefix"}, "upstream": "u"}],
           "certificates": [
               # hosts narrow a certificate to the Ingress' names
               {"hosts": ["shop.test"], "cert_pem": s_crt.read_text(),
                "key_pem": s_key.read_text()},
               # no hosts: the default certificate (--default-ssl-certificate)
               {"hosts": [], "cert_pem": d_crt.read_text(), "key_pem": d_key.read_text()},
           ]}
    status, body = g.put_config(dyn)
    assert status == 200 and body["applied"], body
    assert peer_cert(g.tls_port, "shop.test", certs)[0] == "shop"
    # www.shop.test is in the SANs but not in hosts: the default serves it
    assert peer_cert(g.tls_port, "www.shop.test", certs)[0] == "fallback"
    assert peer_cert(g.tls_port, None, certs)[0] == "fallback"
    r = https(g.tls_port, "/", "shop.test", certs)
    assert r.returncode == 0 and r.stdout == b"hello\n", r.stderr

    # an established TLS connection survives a certificate swap and keeps serving
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    raw = socket.create_connection(("127.0.0.1", g.tls_port), timeout=10)
    conn = ctx.wrap_socket(raw, server_hostname="shop.test")
    conn.sendall(b"GET /a HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert conn.recv(4096).startswith(b"HTTP/1.1 200")
    n_crt, n_key = make_cert(tmp_path, certs, "shop-renewed", ["shop.test"])
    dyn["certificates"][0].update(cert_pem=n_crt.read_text(), key_pem=n_key.read_text())
    status, body = g.put_config(dyn)
    assert status == 200
    assert peer_cert(g.tls_port, "shop.test", certs)[0] == "shop-renewed"
    conn.sendall(b"GET /b HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello\n")
    conn.close()
    # removing the certificates empties the set again
    dyn.pop("certificates")
    assert g.put_config(dyn)[0] == 200
    assert https(g.tls_port, "/", "shop.test", certs).returncode != 0


def test_put_config_bad_certificates_refused(procs, tmp_path, certs, up1):
    g = tls_gateway(procs, tmp_path, certs, up1, {"certificates": [
        {"cert": str(certs / "server.crt"), "key": str(certs / "server.key")}]})
    s_crt, s_key = make_cert(tmp_path, certs, "shop", ["shop.test"])
    base = {"upstreams": {"u": {"backends": [up1.addr]}},
            "routes": [{"match": {"path": "/", "path_type": "prefix"}, "upstream": "u"}]}
    cases = [
        ([{"cert_pem": "garbage", "key_pem": s_key.read_text()}],
         "certificates[0]: cert_pem: no PEM certificate"),
        ([{"cert_pem": s_crt.read_text(), "key_pem": (certs / "server.key").read_text()}],
         "certificates[0]: key_pem does not match"),
        ([{"cert_pem": s_crt.read_text()}], "certificates[0]: cert_pem needs key_pem"),
        ([{"hosts": ["bad host"], "cert_pem": s_crt.read_text(), "key_pem": s_key.read_text()}],
         "certificates[0].hosts[0]"),
        ([{"cert_pem": s_crt.read_text(), "key_pem": s_key.read_text(), "extra": 1}],
         "certificates[0].extra"),
        ("nope", "certificates: expected a list"),
    ]
    for certs_value, msg in cases:
        status, body = g.put_config(dict(base, certificates=certs_value))
        assert status == 400 and msg in body["message"], (msg, body)
    # the running certificate still serves
    assert peer_cert(g.tls_port, "localhost", certs)[0] == "*.pingora.local"


def test_client_ca_on_listener(procs, tmp_path, certs, up1):
    g = tls_gateway(procs, tmp_path, certs, up1, {
        "certificates": [{"cert": str(certs / "server.crt"), "key": str(certs / "server.key")}],
        "client_ca": str(certs / "ca.crt")})
    assert https(g.tls_port, "/", "localhost", certs).returncode != 0
    r = https(g.tls_port, "/", "localhost", certs,
              ["--cert", certs / "client.crt", "--key", certs / "client.key"])
    assert r.returncode == 0 and r.stdout == b"hello\n", r.stderr
    assert len(up1.requests) == 1


def test_sighup_picks_up_a_renewed_certificate_file(procs, tmp_path, certs, up1):
    crt, key = make_cert(tmp_path, certs, "first", ["renew.test"], name="live")
    g = tls_gateway(procs, tmp_path, certs, up1,
                    {"certificates": [{"cert": str(crt), "key": str(key)}]})
    assert peer_cert(g.tls_port, "renew.test", certs)[0] == "first"
    time.sleep(0.02)
    make_cert(tmp_path, certs, "second", ["renew.test"], name="live")
    g.proc.send(__import__("signal").SIGHUP)
    g.wait_log("applied from SIGHUP")
    assert peer_cert(g.tls_port, "renew.test", certs)[0] == "second"


@pytest.mark.parametrize("tls,msg", [
    ({"certificates": [{"cert": "/nonexistent.crt", "key": "/nonexistent.key"}]},
     "listeners[0].tls.certificates[0]: certificate /nonexistent.crt"),
    ({"certificates": [{"hosts": ["a"], "cert": "x", "key": "y"}]},
     "listeners[0].tls.certificates[0].hosts"),
    ({"alpn": ["spdy/3"]}, "listeners[0].tls.alpn[0]: unknown protocol"),
    ({"alpn": []}, "listeners[0].tls.alpn: http/1.1 is required"),
    ({"client_ca": "/nonexistent-ca.crt"}, "listeners[0].tls.client_ca"),
    ({"handshake_timeout": "0s"}, "listeners[0].tls.handshake_timeout"),
    ({"ciphers": "x"}, "listeners[0].tls.ciphers"),
])
def test_t_rejects_bad_listener_tls(tmp_path, tls, msg):
    r = check_config(tmp_path, json.dumps({"listeners": [{"listen": "127.0.0.1:1", "tls": tls}]}))
    assert r.returncode == 1 and msg in r.stderr, r.stderr


@pytest.mark.parametrize("tls,msg", [
    ({"sni": "bad name"}, "upstreams.u.tls.sni"),
    ({"cert": "/x.crt"}, "upstreams.u.tls: a client certificate needs both cert and key"),
    ({"ca": "/nonexistent-ca.crt"}, "upstreams.u.tls: trust store /nonexistent-ca.crt"),
    ({"verify": "yes"}, "upstreams.u.tls.verify"),
    ({"sni": "a", "bogus": 1}, "upstreams.u.tls.bogus"),
])
def test_t_rejects_bad_upstream_tls(tmp_path, tls, msg):
    r = check_config(tmp_path, json.dumps({"upstreams": {"u": {"backends": ["127.0.0.1:1"],
                                                                "tls": tls}}}))
    assert r.returncode == 1 and msg in r.stderr, r.stderr


# ---- upstream TLS ---------------------------------------------------------------------------

def test_upstream_tls_sni_verify_and_mtls(procs, tmp_path, certs, nginx_tls):
    ca = str(certs / "ca.crt")
    g = Gateway(procs, tmp_path, {
        "upstreams": {
            "adv": {"backends": [nginx_tls.addr("plain")],
                    "tls": {"sni": "advanced.pingora.local", "ca": ca}},
            "host": {"backends": [nginx_tls.addr("plain")], "host": "v2.api.pingora.local",
                     "tls": {"ca": ca}},
            "mtls": {"backends": [nginx_tls.addr("mtls")],
                     "tls": {"sni": "advanced.pingora.local", "ca": ca,
                             "cert": str(certs / "client.crt"),
                             "key": str(certs / "client.key")}},
            "wrong": {"backends": [nginx_tls.addr("plain")],
                      "tls": {"sni": "evil.example", "ca": ca}},
            "noverify": {"backends": [nginx_tls.addr("plain")],
                         "tls": {"sni": "evil.example", "verify": False}},
            # no ca: the top-level ca_file is the trust store
            "global": {"backends": [nginx_tls.addr("ipcert")], "tls": {}},
        },
        "routes": [{"match": {"path": f"/{n}", "path_type": "prefix"}, "upstream": n}
                   for n in ("adv", "host", "mtls", "wrong", "noverify", "global")],
    }, extra={"ca_file": ca})

    def says(path):
        status, _, body = g.get(path)
        return status, dict(kv.split("=", 1) for kv in body.decode().split()) \
            if status == 200 else body
    st, v = says("/adv")
    assert st == 200 and v["sni"] == "advanced.pingora.local" and v["proto"] == "TLSv1.3"
    st, v = says("/host")  # the upstream's host is the SNI and the name verified
    assert st == 200 and v["sni"] == "v2.api.pingora.local"
    st, v = says("/mtls")
    assert st == 200 and "CN=PingoraClient" in v["client"]
    st, body = says("/wrong")
    assert st == 502 and b"upstream" in body
    assert g.wait_log("hostname mismatch")
    st, v = says("/noverify")
    assert st == 200 and v["sni"] == "evil.example"
    st, v = says("/global")  # no name: the address 127.0.0.1 is in server.crt
    assert st == 200
    # pooled TLS connections: the same upstream connection serves the next request
    _, a = says("/adv")
    _, b = says("/adv")
    assert a["conn"] == b["conn"]


def test_h2_by_alpn_on_tls_listeners_and_h2c_on_plain(procs, tmp_path, certs, up1):
    cert = [{"cert": str(certs / "server.crt"), "key": str(certs / "server.key")}]
    g = tls_gateway(procs, tmp_path, certs, up1, {"certificates": cert})
    r = https(g.tls_port, "/h2", "localhost", certs, ["-i", "--http2"])
    assert r.stdout.startswith(b"HTTP/2 200"), r.stdout[:100]
    assert up1.last().target == "/h2" and up1.last().header("x-forwarded-proto") == "https"
    r = subprocess.run(["curl", "-sS", "-i", "--http2-prior-knowledge", f"{g.url}/h2c"],
                       capture_output=True, timeout=30)
    assert r.stdout.startswith(b"HTTP/2 200") and up1.last().target == "/h2c"
    # alpn without h2: HTTP/1.1 only
    g2 = tls_gateway(procs, tmp_path / "g2" if (tmp_path / "g2").mkdir() is None else tmp_path,
                     certs, up1, {"certificates": cert, "alpn": ["http/1.1"]})
    r = https(g2.tls_port, "/", "localhost", certs, ["-i", "--http2"])
    assert r.stdout.startswith(b"HTTP/1.1 200"), r.stdout[:100]
