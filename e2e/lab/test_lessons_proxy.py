"""Lessons 6-25 (HTTP/1.1 engine) as the guide verifies them in the lab."""
import os
import re
import time

import pytest

from labkit import DNS_HOSTS, LabProcess, curl, lab_run, parse_http, service, wait_until

# SLUICE_BUILD: the programs of another build tree (e.g. a private `make B=/tmp/x SAN=1`).
EX = os.environ.get("SLUICE_BUILD", "build") + "/examples/"
DEV = "http://172.28.0.10"


@pytest.fixture(autouse=True)
def _lab(lab):
    return lab


def proxy(name, port):
    p = LabProcess("dev", EX + name)
    p.wait_port(port)
    return p


def test_lesson06_simple_forward():
    with proxy("06_simple_forward", 6146) as p:
        r = curl("client1", "-i", f"{DEV}:6146")
        status, headers, body = parse_http(r.stdout)
        assert status == 200
        assert body == "'Response from BLUE'\n"
        assert headers["x-app-name"] == ["http-echo"]
        p.wait_output("Forwarding request to Upstream Blue")


def test_lesson08_header_manipulation():
    with proxy("08_header_manipulation", 6148) as p:
        r = curl("client1", "-i", f"{DEV}:6148")
        status, headers, body = parse_http(r.stdout)
        assert status == 200 and body == "'Response from GREEN'\n"
        assert headers["x-edited-by"] == ["Pingora"]
        p.wait_output("Response headers modified: Added X-Edited-By")
        assert "Request headers modified: Added X-Pingora-Proxy, Removed User-Agent." in p.output


def test_lesson09_path_routing():
    with proxy("09_path_routing", 6149):
        assert curl("client1", f"{DEV}:6149/blue").stdout == "'Response from BLUE'\n"
        assert curl("client1", f"{DEV}:6149/green").stdout == "'Response from GREEN'\n"
        r = curl("client1", "-i", f"{DEV}:6149/invalid")
        status, _, _ = parse_http(r.stdout)
        assert status == 404


def test_lesson10_query_params():
    with proxy("10_query_params", 6150) as p:
        r = curl("client1", f"{DEV}:6150/search?q=rust&debug=true&sort=asc")
        assert r.stdout == "'Response from BLUE'\n"
        p.wait_output("Rewritten URI")
        assert "Original Query: 'q=rust&debug=true&sort=asc'" in p.output
        assert "Rewritten URI: /search?q=rust&sort=asc&ref=pingora" in p.output


def test_lesson11_response_modification():
    with proxy("11_response_modification", 6151):
        status, h, body = parse_http(curl("client1", "-i", f"{DEV}:6151").stdout)
        assert status == 200
        assert "x-app-version" not in h and h["x-app-name"] == ["http-echo"]
        assert h["x-content-type-options"] == ["nosniff"]
        assert h["x-legacy-date"] == h["date"]


def test_lesson12_body_inspection():
    with proxy("12_body_inspection", 6152) as p:
        r = curl("client1", "-X", "POST", "-d", "Hello World", f"{DEV}:6152")
        assert r.stdout == "'Response from BLUE'\n"
        status, _, _ = parse_http(curl("client1", "-i", "-X", "POST", "-d", "I am a rogue agent",
                                       f"{DEV}:6152").stdout)
        assert status == 500
        p.wait_output("Fail to proxy: SecurityPolicyViolation")
        assert "Security Alert: Forbidden content 'rogue' detected in body!" in p.output


def test_lesson13_custom_errors():
    with proxy("13_custom_errors", 6153):
        assert curl("client1", f"{DEV}:6153").stdout == "'Response from BLUE'\n"
        status, h, body = parse_http(curl("client1", "-i", f"{DEV}:6153/oops").stdout)
        assert status == 400
        assert body == '{"status": "error", "code": 400, "message": "We caught a custom error!"}'


def test_lesson16_static_peer():
    with proxy("16_static_peer", 6160) as p:
        assert curl("client1", f"{DEV}:6160").stdout == "'Response from BLUE'\n"
        assert 'Connecting to static peer: ("172.28.0.20", 8080)' in p.output


def test_lesson17_dns_peer():
    with proxy("17_dns_peer", 6161) as p:
        status, headers, body = parse_http(curl("client1", "-i", f"{DEV}:6161").stdout)
        assert status == 200 and body == "'Response from BLUE'\n"
        assert headers["x-app-name"] == ["http-echo"]
        p.wait_output("Resolved blue.pingora.local -> 172.28.0.20:8080")
        lines = [line for line in p.output.splitlines() if "Resolv" in line]
        assert lines[0].endswith("INFO  [17_dns_peer] Resolving host: blue.pingora.local:8080")
        assert lines[1].endswith("INFO  [17_dns_peer] Resolved blue.pingora.local -> "
                                 "172.28.0.20:8080")
        # The name is resolved at request time through the lab's dns host: pointing it at Green
        # there is followed once the cached answer's TTL (5 s) has run out.
        original = DNS_HOSTS.read_text()
        try:
            DNS_HOSTS.write_text(re.sub(r"(?m)^172\.28\.0\.20(\s+blue\.pingora\.local)$",
                                        r"172.28.0.21\1", original))
            assert service("reload", "dns").returncode == 0
            wait_until(lambda: curl("client1", f"{DEV}:6161").stdout == "'Response from GREEN'\n",
                       timeout=12, interval=0.5, what="the new answer of the lab's DNS")
            assert "Resolved blue.pingora.local -> 172.28.0.21:8080" in p.output
        finally:
            DNS_HOSTS.write_text(original)
            service("reload", "dns")


def test_lesson17_dns_peer_with_the_dns_host_down():
    with proxy("17_dns_peer", 6161) as p:
        assert service("pause", "dns").returncode == 0
        try:
            r = curl("client1", "-i", f"{DEV}:6161", timeout=12)
        finally:
            service("resume", "dns")
        status, _, body = parse_http(r.stdout)
        assert status == 502
        assert "upstream name blue.pingora.local: DNS timeout" in body
        p.wait_output("DNS lookup failed for blue.pingora.local: DNS timeout")
        # and once the dns host answers again, so does the proxy
        assert curl("client1", f"{DEV}:6161").stdout == "'Response from BLUE'\n"


def test_lesson18_uds_peer():
    with proxy("18_uds_peer", 6162) as p:
        status, _, body = parse_http(curl("client1", "-i", f"{DEV}:6162").stdout)
        assert status == 200 and body == "Hello via UDS"
        p.wait_output("Forwarding to UDS: /tmp/upstream.sock")
        assert "Mock Upstream running at /tmp/upstream.sock" in p.output
        assert "UDS Proxy running on 0.0.0.0:6162" in p.output
        for _ in range(3):  # the mock closes each connection: a fresh one every time
            assert curl("client1", f"{DEV}:6162").stdout == "Hello via UDS"


def test_lesson19_peer_options():
    with proxy("19_peer_options", 6163) as p:
        assert curl("client1", f"{DEV}:6163/normal").stdout == "'Response from BLUE'\n"
        t0 = time.monotonic()
        status, _, body = parse_http(curl("client1", "-i", f"{DEV}:6163/timeout").stdout)
        elapsed = time.monotonic() - t0
        assert status == 504
        assert elapsed < 1.5  # 100 ms connect timeout (plus lab/run overhead)
        p.wait_output("Custom Error Handler: Connection Timed Out!")
        assert "Routing to Blackhole IP (192.0.2.1) to force timeout..." in p.output


def test_lesson25_connection_reuse():
    with proxy("25_connection_reuse", 6169) as p:
        r = curl("client1", f"{DEV}:6169/", f"{DEV}:6169/")
        assert r.stdout == "'Response from BLUE'\n" * 2
        p.wait_output("Reused Connection: true")
        lines = [l for l in p.output.splitlines() if "Reused Connection" in l]
        assert lines[0].endswith("Reused Connection: false")
        assert lines[1].endswith("Reused Connection: true")
