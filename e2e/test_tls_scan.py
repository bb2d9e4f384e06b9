"""A TLS scanner against the gateway's TLS listeners (issue: "sslscan or testssl.sh finding no
protocol below TLS 1.2 and no weak cipher").

sslscan (Debian package `sslscan`, installed by `make deps`) scans each listener for one SNI and
writes XML, which is parsed here (never its screen text). Every listener must show:
  - SSLv2, SSLv3, TLS 1.0 and TLS 1.1 refused; TLS 1.2 and TLS 1.3 accepted;
  - only ciphers of Mozilla's "intermediate" profile without DHE: TLS 1.3 suites, and TLS 1.2
    suites that are ECDHE with an AEAD (GCM or ChaCha20-Poly1305) - so no RC4, 3DES, CBC with
    SHA-1, export, NULL or anonymous suites;
  - key exchange groups of at least 112-bit strength, no Heartbleed;
  - no insecure renegotiation (renegotiation either refused or RFC 5746-secure);
  - the certificate for the SNI (subject, names, key type and size).
This sslscan is built against OpenSSL 3 without zlib, so it cannot test TLS compression: a TLS
1.2 ClientHello offering DEFLATE before null is sent by hand and the ServerHello must pick null.

A control scan of a deliberately weak `openssl s_server` checks that these checks do find
problems when there are some (TLS 1.0/1.1, anonymous and CBC suites).
"""
import os
import re
import shutil
import socket
import struct
import subprocess
import xml.etree.ElementTree as ET

import pytest

from gw import Gateway
from helpers import free_port, wait_port

pytestmark = pytest.mark.skipif(not shutil.which("sslscan"),
                                reason="sslscan is not installed (make deps)")

TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                "TLS_CHACHA20_POLY1305_SHA256"}
# Mozilla "intermediate" (v5.7) TLS 1.2 suites, less the DHE ones (ECDHE only, as required).
INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
}
OK_ROUTE = {"routes": [{"match": {"path": "/", "path_type": "prefix"},
                        "respond": {"status": 200, "body": "scanned\n"}}]}


def sslscan(port, sni):
    """sslscan's <ssltest> element for 127.0.0.1:port with that SNI."""
    r = subprocess.run(["sslscan", "--no-colour", "--show-sigs", f"--sni-name={sni}",
                        "--xml=-", f"127.0.0.1:{port}"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    text = r.stdout[r.stdout.index("<?xml"):]
    test = ET.fromstring(text).find("ssltest")
    assert test is not None and test.get("port") == str(port), text[:2000]
    assert test.get("sniname") == sni
    return test


def protocols(test):
    """{"SSLv2": False, ..., "TLSv1.3": True} as scanned."""
    return {f"{'SSLv' if p.get('type') == 'ssl' else 'TLSv'}{p.get('version')}":
            p.get("enabled") == "1" for p in test.findall("protocol")}


def ciphers(test):
    """[(version, cipher, bits, strength)] of every accepted cipher."""
    return [(c.get("sslversion"), c.get("cipher"), int(c.get("bits")), c.get("strength"))
            for c in test.findall("cipher")]


def findings(test):
    """Everything that breaks the policy of this file's docstring, as text (empty: clean)."""
    out = []
    protos = protocols(test)
    for p in ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"):
        if protos.get(p, True):                 # missing from the scan counts as accepted
            out.append(f"{p} accepted")
    for p in ("TLSv1.2", "TLSv1.3"):
        if not protos.get(p):
            out.append(f"{p} refused")
    for version, name, bits, strength in ciphers(test):
        if version == "TLSv1.3":
            ok = name in TLS13_SUITES
        elif version == "TLSv1.2":
            ok = name in INTERMEDIATE_TLS12
        else:
            ok = False
        if not ok or bits < 128 or strength not in ("strong", "acceptable"):
            out.append(f"cipher {version} {name} ({bits} bits, {strength})")
    for g in test.findall("group"):
        if int(g.get("bits")) < 112:
            out.append(f"group {g.get('sslversion')} {g.get('name')} ({g.get('bits')} bits)")
    for h in test.findall("heartbleed"):
        if h.get("vulnerable") != "0":
            out.append(f"heartbleed {h.get('sslversion')}")
    reneg = test.find("renegotiation")
    if reneg is None:
        out.append("renegotiation not scanned")
    elif reneg.get("supported") == "1" and reneg.get("secure") != "1":
        out.append("insecure renegotiation")
    return out


def certificate(test):
    """(subject, altnames, key type, key bits or curve, signature algorithm) of the scanned
    certificate."""
    certs = test.findall("certificates/certificate")
    assert len(certs) == 1, ET.tostring(test)[:2000]
    c = certs[0]
    pk = c.find("pk")
    size = pk.get("curve_name") if pk.get("type") == "EC" else int(pk.get("bits"))
    assert c.findtext("expired") == "false"
    return (c.findtext("subject"), c.findtext("altnames"), pk.get("type"), size,
            c.findtext("signature-algorithm"))


def _ext(kind, body):
    return struct.pack("!HH", kind, len(body)) + body


def tls12_compression(port, sni):
    """Sends a TLS 1.2 ClientHello offering DEFLATE (1) before null (0) compression; returns
    (version, cipher suite, compression method) of the ServerHello, or ("alert", level,
    description) when the server refuses."""
    suites = [0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8]
    name = sni.encode()
    groups = [0x001D, 0x0017, 0x0018]
    sigalgs = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]
    exts = (_ext(0, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name) +
            _ext(10, struct.pack("!H", 2 * len(groups)) + struct.pack(f"!{len(groups)}H", *groups))
            + _ext(11, b"\x01\x00") +
            _ext(13, struct.pack("!H", 2 * len(sigalgs)) +
                 struct.pack(f"!{len(sigalgs)}H", *sigalgs)) +
            _ext(0xFF01, b"\x00"))
    body = (struct.pack("!H", 0x0303) + os.urandom(32) + b"\x00" +
            struct.pack("!H", 2 * len(suites)) + struct.pack(f"!{len(suites)}H", *suites) +
            b"\x02\x01\x00" + struct.pack("!H", len(exts)) + exts)
    hello = b"\x01" + len(body).to_bytes(3, "big") + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01" + struct.pack("!H", len(hello)) + hello)

        def read(n):
            data = b""
            while len(data) < n:
                chunk = s.recv(n - len(data))
                assert chunk, "the server closed the connection"
                data += chunk
            return data

        rtype, _, rlen = struct.unpack("!BHH", read(5))
        rec = read(rlen)
    if rtype == 0x15:
        return ("alert", rec[0], rec[1])
    assert rtype == 0x16 and rec[0] == 2, f"no ServerHello: record {rtype}, {rec[:8].hex()}"
    version = struct.unpack("!H", rec[4:6])[0]
    sid_len = rec[38]
    cipher, = struct.unpack("!H", rec[39 + sid_len:41 + sid_len])
    return version, cipher, rec[41 + sid_len]


def make_leaf(tmp_path, certs, name, keytype):
    """A server certificate for `name` signed by the lab CA, with an RSA-2048 or ECDSA P-256
    key; returns (crt, key) paths."""
    key, csr, crt, ext = (tmp_path / f"{name}.key", tmp_path / f"{name}.csr",
                          tmp_path / f"{name}.crt", tmp_path / f"{name}.ext")
    newkey = (["-newkey", "rsa:2048"] if keytype == "rsa" else
              ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
    ext.write_text(f"subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth\n")
    subprocess.run(["openssl", "req", "-new", *newkey, "-nodes", "-keyout", key, "-out", csr,
                    "-subj", f"/CN={name}"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", certs / "ca.crt", "-CAkey",
                    certs / "ca.key", "-CAcreateserial", "-out", crt, "-days", "2", "-sha256",
                    "-extfile", ext], check=True, capture_output=True)
    return crt, key


def tls_listener(procs, tmp_path, certificates):
    port = free_port()
    g = Gateway(procs, tmp_path, OK_ROUTE, more_listeners=[
        {"name": "websecure", "listen": f"127.0.0.1:{port}",
         "tls": {"certificates": [{"cert": str(c), "key": str(k)} for c, k in certificates]}}])
    wait_port(port)
    return g, port


def https_body(port, sni, certs, extra=()):
    r = subprocess.run(["curl", "-sS", "--cacert", certs / "ca.crt", "--resolve",
                        f"{sni}:{port}:127.0.0.1", *extra, f"https://{sni}:{port}/"],
                       capture_output=True, timeout=30)
    return r.returncode, r.stdout


def test_scan_rsa_listener(procs, tmp_path, certs):
    g, port = tls_listener(procs, tmp_path, [(certs / "server.crt", certs / "server.key")])
    test = sslscan(port, "localhost")
    assert findings(test) == []
    assert {n for v, n, _, _ in ciphers(test) if v == "TLSv1.2"} <= {
        n for n in INTERMEDIATE_TLS12 if n.startswith("ECDHE-RSA-")}
    assert {n for v, n, _, _ in ciphers(test) if v == "TLSv1.3"} == TLS13_SUITES
    subject, names, ktype, size, sig = certificate(test)
    assert (subject, ktype, size, sig) == ("*.pingora.local", "RSA", 2048,
                                           "sha256WithRSAEncryption")
    assert "DNS:localhost" in names
    # TLS compression (CRIME): offered DEFLATE first, the server must choose null.
    version, cipher, compression = tls12_compression(port, "localhost")
    assert (version, compression) == (0x0303, 0) and cipher in (0xC02F, 0xC030, 0xCCA8)
    # and the listener still serves after the scan's hundreds of probes
    assert https_body(port, "localhost", certs) == (0, b"scanned\n")
    assert g.proc.alive()


def test_scan_listener_with_rsa_and_ecdsa_certificates(procs, tmp_path, certs):
    """One listener, an RSA-2048 certificate for one name and an ECDSA P-256 one for another:
    each SNI gets its own certificate and only the suites of its key type, all in policy."""
    rsa = make_leaf(tmp_path, certs, "rsa.scan.test", "rsa")
    ec = make_leaf(tmp_path, certs, "ecdsa.scan.test", "ec")
    g, port = tls_listener(procs, tmp_path, [rsa, ec])
    expect = {"rsa.scan.test": ("RSA", 2048, "ECDHE-RSA-", 0xC02F),
              "ecdsa.scan.test": ("EC", "prime256v1", "ECDHE-ECDSA-", 0xC02B)}
    for sni, (ktype, size, prefix, suite) in expect.items():
        test = sslscan(port, sni)
        assert findings(test) == [], sni
        tls12 = {n for v, n, _, _ in ciphers(test) if v == "TLSv1.2"}
        assert tls12 and all(n.startswith(prefix) for n in tls12), (sni, tls12)
        subject, names, kt, sz, sig = certificate(test)
        assert (subject, names, kt, sz) == (sni, f"DNS:{sni}", ktype, size)
        assert sig == "sha256WithRSAEncryption"      # signed by the (RSA) lab CA
        assert tls12_compression(port, sni)[2] == 0
        assert https_body(port, sni, certs) == (0, b"scanned\n")
    # No SNI, or an unknown one: the first certificate.
    cn, _, kt, _, _ = certificate(sslscan(port, "unknown.scan.test"))
    assert (cn, kt) == ("rsa.scan.test", "RSA")
    assert g.proc.alive()


def test_same_names_rsa_and_ecdsa_each_client_gets_one_it_can_use(procs, tmp_path, certs):
    """Two certificates for the same names, ECDSA and RSA: each client gets one it can use."""
    g, port = tls_listener(procs, tmp_path, [(certs / "server-ec.crt", certs / "server-ec.key"),
                                             (certs / "server.crt", certs / "server.key")])
    test = sslscan(port, "localhost")
    assert findings(test) == []
    tls12 = {n for v, n, _, _ in ciphers(test) if v == "TLSv1.2"}
    # A dual-certificate server accepts the suites of both key types.
    assert any(n.startswith("ECDHE-ECDSA-") for n in tls12)
    assert any(n.startswith("ECDHE-RSA-") for n in tls12), tls12
    # An RSA-only TLS 1.2 client and an RSA-PSS-only TLS 1.3 client both get through.
    assert https_body(port, "localhost", certs,
                      ["--tls-max", "1.2", "--ciphers", "ECDHE-RSA-AES128-GCM-SHA256"]) == (
        0, b"scanned\n")
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                        "localhost", "-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256"],
                       input=b"", capture_output=True, timeout=30)
    assert b"Peer signature type: RSA-PSS" in r.stdout, r.stdout[-500:] + r.stderr[-500:]


def test_the_checks_find_a_weak_server(tmp_path, certs):
    """Control: a deliberately weak OpenSSL server (TLS 1.0 and up, every cipher at security
    level 0) must fail the same checks - otherwise a clean scan above would prove nothing."""
    port = free_port()
    p = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert",
                          certs / "server.crt", "-key", certs / "server.key", "-cipher",
                          "ALL:@SECLEVEL=0", "-min_protocol", "TLSv1", "-quiet", "-www"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        found = findings(sslscan(port, "localhost"))
    finally:
        p.terminate()
        p.wait(10)
    assert "TLSv1.0 accepted" in found and "TLSv1.1 accepted" in found, found
    weak = [f for f in found if f.startswith("cipher ")]
    assert any(f.startswith("cipher TLSv1.0 ") for f in weak), weak
    assert any(" ADH-" in f for f in weak), weak                        # anonymous
    assert any(re.search(r" \S+-SHA \(", f) for f in weak), weak        # CBC with SHA-1
    assert any("-SHA256 (" in f and "GCM" not in f for f in weak), weak  # CBC in TLS 1.2
