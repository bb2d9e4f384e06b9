"""HTTP/2 and gRPC in the gateway (SPEC §4 upstreams.*.protocol): h2 over TLS to nginx, h2c and
grpc upstreams reached by grpcio clients through a TLS listener, and the protocol keys checked
by `sluice -t`."""
import json
import re
import sys

import grpc
import pytest

from gw import Gateway, check_config
from helpers import ROOT, free_port, wait_port

sys.path.insert(0, str(ROOT / "lab" / "hosts"))
import labproto  # noqa: E402

pb = labproto.load()


@pytest.fixture
def grpc_server(procs, certs):
    p = procs.start(["/usr/bin/python3", ROOT / "lab" / "hosts" / "grpc_server.py",
                     "--plain", "127.0.0.1:0", "--tls", "127.0.0.1:0",
                     "--cert", certs / "grpc.crt", "--key", certs / "grpc.key"],
                    name="grpc_server")
    log = p.wait_log(r"listening tls=\S+", timeout=30)
    return {"plain": re.search(r"listening plain=(\S+)", log).group(1),
            "tls": re.search(r"listening tls=(\S+)", log).group(1)}


def tls_listener(port, certs):
    return {"name": "websecure", "listen": f"127.0.0.1:{port}",
            "tls": {"certificates": [{"cert": str(certs / "server.crt"),
                                      "key": str(certs / "server.key")}]}}


def test_grpc_upstreams_h2c_and_tls(procs, tmp_path, certs, grpc_server):
    port = free_port()
    g = Gateway(procs, tmp_path, {
        "upstreams": {
            "grpc_plain": {"backends": [grpc_server["plain"]], "protocol": "grpc"},
            "grpc_tls": {"backends": [grpc_server["tls"]], "protocol": "grpc",
                         "tls": {"sni": "grpc.pingora.local", "ca": str(certs / "ca.crt")}},
        },
        "routes": [
            {"match": {"path": "/hello.HelloService/", "path_type": "prefix"},
             "upstream": "grpc_plain"},
            {"match": {"path": "/grpc.health.v1.Health/", "path_type": "prefix"},
             "upstream": "grpc_tls"},
        ],
    }, more_listeners=[tls_listener(port, certs)])
    wait_port(port)
    creds = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.crt").read_bytes())
    with grpc.secure_channel(f"localhost:{port}", creds) as ch:
        stub = pb.hello_pb2_grpc.HelloServiceStub(ch)
        assert stub.SayHello(pb.hello_pb2.HelloRequest(greeting="gw"), timeout=10).reply == \
            "hello gw"
        out = [r.reply for r in stub.BidiHello(
            iter([pb.hello_pb2.HelloRequest(greeting=str(i)) for i in range(20)]), timeout=10)]
        assert out == [f"hello {i}" for i in range(20)]
        health = pb.health_pb2_grpc.HealthStub(ch)
        r = health.Check(pb.health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert r.status == pb.health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as e:
            health.Check(pb.health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    metrics = g.metrics()
    assert 'upstream="grpc_tls"' in metrics and 'upstream="grpc_plain"' in metrics


def test_h2_upstream_over_tls(procs, tmp_path, certs, nginx_tls):
    g = Gateway(procs, tmp_path, {
        "upstreams": {"adv": {"backends": [nginx_tls.addr("plain")], "protocol": "h2",
                              "tls": {"sni": "advanced.pingora.local",
                                      "ca": str(certs / "ca.crt")}}},
        "routes": [{"match": {"path": "/", "path_type": "prefix"}, "upstream": "adv"}],
    })
    seen = []
    for _ in range(3):
        status, _, body = g.get("/")
        assert status == 200
        seen.append(dict(kv.split("=", 1) for kv in body.decode().split()))
    assert seen[0]["alpn"] == "HTTP/2.0" and seen[0]["sni"] == "advanced.pingora.local"
    assert len({s["conn"] for s in seen}) == 1, "one multiplexed upstream connection"


@pytest.mark.parametrize("up,msg", [
    ({"backends": ["127.0.0.1:1"], "protocol": "h2"}, "upstreams.u.protocol: h2 needs tls"),
    ({"backends": ["127.0.0.1:1"], "protocol": "h2c", "tls": {}},
     "upstreams.u.protocol: h2c is cleartext"),
    ({"backends": ["127.0.0.1:1"], "protocol": "http3"}, "upstreams.u.protocol: unknown value"),
])
def test_t_rejects_bad_upstream_protocol(tmp_path, up, msg):
    r = check_config(tmp_path, json.dumps({"upstreams": {"u": up}}))
    assert r.returncode == 1 and msg in r.stderr, r.stderr


def test_upstream_debug_ssl_keylog(procs, tmp_path, certs, nginx_tls):
    keylog = tmp_path / "keys.log"
    g = Gateway(procs, tmp_path, {
        "upstreams": {"adv": {"backends": [nginx_tls.addr("plain")],
                              "tls": {"sni": "advanced.pingora.local",
                                      "ca": str(certs / "ca.crt")}}},
        "routes": [{"match": {"path": "/", "path_type": "prefix"}, "upstream": "adv"}],
    }, extra={"upstream_debug_ssl_keylog": True}, env={"SSLKEYLOGFILE": str(keylog)})
    assert g.get("/")[0] == 200
    text = keylog.read_text()
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in text and "SERVER_TRAFFIC_SECRET_0" in text
    assert g.wait_log("writing upstream TLS session keys")
