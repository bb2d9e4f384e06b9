"""gRPC end to end (lesson 24): grpcio client -> sluice (TLS + h2) -> grpcio server over h2c and
over TLS with ALPN h2: unary, server-streaming, client-streaming and bidi calls, a deadline that
expires, an error status with details; an HTTP/1.1 client gets the trailers as chunked
trailers; HTTP/2 upstreams multiplex many calls on one connection; an upstream that does not
speak h2 gets a clear 502."""
import re
import subprocess
import sys
import time

import grpc
import pytest

from helpers import FORWARD, ROOT, free_port, wait_port

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
    plain = re.search(r"listening plain=(\S+)", log).group(1)
    tls = re.search(r"listening tls=(\S+)", log).group(1)
    return {"plain": plain, "tls": tls, "proc": p}


@pytest.fixture
def start_fwd(start_fwd, certs):
    """conftest's start_fwd with a TLS listener speaking HTTP/2 (ALPN h2) and h2c."""
    def start(upstream_addr, *extra):
        return start_fwd(upstream_addr, "--tls-cert", certs / "server.crt", "--tls-key",
                         certs / "server.key", "--h2", *extra)
    return start


@pytest.fixture(params=["h2c", "tls"])
def proxied(request, grpc_server, start_fwd, certs):
    """sluice in front of the gRPC server, reaching it by h2c or by TLS with ALPN h2."""
    if request.param == "h2c":
        f = start_fwd(grpc_server["plain"], "--upstream-alpn", "h2")
    else:
        f = start_fwd(grpc_server["tls"], "--upstream-alpn", "h2", "--upstream-tls",
                      "--sni", "grpc.pingora.local", "--ca", certs / "ca.crt")
    creds = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.crt").read_bytes())
    ch = grpc.secure_channel(f"localhost:{f.port}", creds)
    yield f, ch
    ch.close()


def hello(text):
    return pb.hello_pb2.HelloRequest(greeting=text)


def test_unary_and_streaming_calls(proxied):
    f, ch = proxied
    stub = pb.hello_pb2_grpc.HelloServiceStub(ch)
    assert stub.SayHello(hello("sluice"), timeout=10).reply == "hello sluice"
    replies = [r.reply for r in stub.LotsOfReplies(hello("x"), timeout=10)]
    assert replies == ["hello x"] * 10
    r = stub.LotsOfGreetings(iter([hello("a"), hello("b"), hello("c")]), timeout=10)
    assert r.reply == "hello a, b, c"
    out = [r.reply for r in stub.BidiHello(iter([hello(str(i)) for i in range(50)]), timeout=10)]
    assert out == [f"hello {i}" for i in range(50)]
    health = pb.health_pb2_grpc.HealthStub(ch)
    assert health.Check(pb.health_pb2.HealthCheckRequest(service=""), timeout=10).status == \
        pb.health_pb2.HealthCheckResponse.SERVING
    assert f.wait_log(r"POST /hello.HelloService/SayHello -> 200")


def test_error_status_with_details(proxied):
    f, ch = proxied
    health = pb.health_pb2_grpc.HealthStub(ch)
    with pytest.raises(grpc.RpcError) as e:
        health.Check(pb.health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "unknown service"


def test_deadline_expires_and_is_cancelled_upstream(proxied):
    f, ch = proxied
    health = pb.health_pb2_grpc.HealthStub(ch)
    t0 = time.monotonic()
    stream = health.Watch(pb.health_pb2.HealthCheckRequest(service=""), timeout=1.0)
    with pytest.raises(grpc.RpcError) as e:
        for _ in stream:
            pass
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 5
    # the call ended at sluice too (cancelled by the client or ended by the server's deadline)
    assert f.wait_log(r"POST /grpc.health.v1.Health/Watch -> ", timeout=5)


def test_many_calls_share_one_upstream_connection(proxied, grpc_server):
    f, ch = proxied
    stub = pb.hello_pb2_grpc.HelloServiceStub(ch)
    futures = [stub.SayHello.future(hello(str(i)), timeout=20) for i in range(200)]
    assert [x.result().reply for x in futures] == [f"hello {i}" for i in range(200)]
    port = (grpc_server["plain"] if "--upstream-tls" not in f.argv else
            grpc_server["tls"]).rpartition(":")[2]
    ss = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
                        capture_output=True, text=True).stdout
    assert 1 <= len(ss.splitlines()) <= 2, f"calls multiplexed on few upstream connections:\n{ss}"


def test_http11_client_gets_trailers(grpc_server, start_fwd, certs, tmp_path):
    f = start_fwd(grpc_server["plain"], "--upstream-alpn", "h2")
    # lesson 24's verification over HTTP/1.1, with one empty Check message (5-byte frame)
    msg = tmp_path / "check.grpc"
    msg.write_bytes(b"\x00\x00\x00\x00\x00")
    r = subprocess.run(["curl", "-sS", "-v", "--http1.1", "--raw", "--cacert", certs / "ca.crt",
                        "-H", "Content-Type: application/grpc", "-H", "TE: trailers",
                        "--data-binary", f"@{msg}",
                        f"https://localhost:{f.port}/grpc.health.v1.Health/Check"],
                       capture_output=True, timeout=30)
    err = r.stderr.decode(errors="replace")
    assert "< HTTP/1.1 200" in err and "< content-type: application/grpc" in err.lower()
    assert "< transfer-encoding: chunked" in err.lower()
    # the body is chunked and ends with the trailers
    assert b"grpc-status: 0" in r.stdout.lower(), r.stdout[-200:]


def test_upstream_without_h2_is_a_clear_502(procs, start_fwd, certs, tmp_path):
    # an HTTP/1.1-only TLS server (sl-forward without --h2 in front of nothing useful)
    inner_port = free_port()
    procs.start([FORWARD, "--listen", f"127.0.0.1:{inner_port}", "--upstream", "127.0.0.1:1",
                 "--tls-cert", certs / "server.crt", "--tls-key", certs / "server.key"],
                name="h1only")
    wait_port(inner_port)
    f = start_fwd(f"127.0.0.1:{inner_port}", "--upstream-alpn", "h2", "--upstream-tls",
                  "--ca", certs / "ca.crt")
    r = subprocess.run(["curl", "-sS", "-i", "--cacert", certs / "ca.crt",
                        f"https://localhost:{f.port}/"], capture_output=True, timeout=30)
    assert r.stdout.startswith(b"HTTP/2 502"), r.stdout[:200]
    assert b"upstream does not speak HTTP/2" in r.stdout
    assert f.wait_log("did not agree to HTTP/2")
    # with h2h1 it falls back to HTTP/1.1
    f2 = start_fwd(f"127.0.0.1:{inner_port}", "--upstream-alpn", "h2h1", "--upstream-tls",
                   "--ca", certs / "ca.crt")
    r = subprocess.run(["curl", "-sS", "-i", "--cacert", certs / "ca.crt",
                        f"https://localhost:{f2.port}/"], capture_output=True, timeout=30)
    assert r.stdout.startswith(b"HTTP/2 502")  # the inner one cannot reach 127.0.0.1:1
    assert b"upstream connect failed" in r.stdout
    assert f2.wait_log("using HTTP/1.1")
