"""Lesson 22 (proxy connect) as the guide verifies it in the lab: the program runs its own mock
forward proxy on 127.0.0.1:3128 (in the dev host, as the lesson's runs in its process) and
reaches advanced.pingora.local:443 through it with CONNECT, then TLS through the tunnel."""
import os

import pytest

from labkit import LabProcess, curl

# SLUICE_BUILD: the programs of another build tree (e.g. a private `make B=/tmp/x SAN=1`).
EX = os.environ.get("SLUICE_BUILD", "build") + "/examples/"
DEV = "http://172.28.0.10"


@pytest.fixture(autouse=True)
def _lab(lab):
    return lab


def test_lesson22_proxy_connect():
    with LabProcess("dev", EX + "22_proxy_connect") as p:
        p.wait_port(6166)
        # docker exec -it pingora_client_1 curl -v http://172.28.0.10:6166/
        r = curl("client1", "-v", f"{DEV}:6166/")
        assert r.stdout == "Response from Advanced Upstream (HTTPS + HTTP/2)"
        assert "< HTTP/1.1 200 OK" in r.stderr
        p.wait_output("Connector: Tunnel established!")
        # The guide's log sequence: the connector dials the proxy, the mock proxy connects to
        # the upstream, the tunnel is handed over, TLS runs through it.
        out = p.output
        seq = ["Mock Proxy listening on 0.0.0.0:3128",
               "Pingora Tunnel Service running on 0.0.0.0:6166",
               "Connector: advanced.pingora.local:443 through the proxy at 127.0.0.1:3128",
               "Mock Proxy: Connecting to advanced.pingora.local:443...",
               "Mock Proxy: tunnel to advanced.pingora.local:443 open",
               "Connector: Tunnel established! TLS with advanced.pingora.local ran through it."]
        at = [out.find(s) for s in seq]
        assert -1 not in at and at == sorted(at), out
        # The tunnel is pooled: the next request goes through it, without another CONNECT.
        assert curl("client1", f"{DEV}:6166/").stdout == (
            "Response from Advanced Upstream (HTTPS + HTTP/2)")
        p.wait_output("Connector: reusing a pooled tunnel to advanced.pingora.local")
        assert p.output.count("Mock Proxy: Connecting to") == 1
