#!/usr/bin/python3
"""A small gRPC client for the lab (the guide has no grpcurl; neither does Debian 12).

    grpc_client.py health TARGET [--service NAME]             prints e.g. SERVING
    grpc_client.py hello TARGET [--greeting X] [--mode unary|server|client|bidi]

TARGET is HOST:PORT. With --tls (or --ca) the channel uses TLS, trusting --ca
(default: $SSL_CERT_FILE, else the system store); --server-name overrides the name
checked in the certificate (and sent as SNI). `health` exits 0 only for SERVING;
any RPC error prints the status code and exits 2.

As a module: channel(target, ...), health(target, ...), hello(target, ...).
"""
import argparse
import os
import sys

import grpc

import labproto

pb = labproto.load()


def channel(target, tls=False, ca=None, server_name=None, cert=None, key=None):
    """An insecure or TLS channel to TARGET (cert/key: a client certificate)."""
    if not (tls or ca):
        return grpc.insecure_channel(target)
    ca = ca or os.environ.get("SSL_CERT_FILE")
    read = lambda p: open(p, "rb").read() if p else None  # noqa: E731
    creds = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
    opts = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(target, creds, options=opts)


def health(target, service="", timeout=3.0, **kw):
    """Return the ServingStatus name (e.g. "SERVING") of SERVICE at TARGET."""
    with channel(target, **kw) as ch:
        stub = pb.health_pb2_grpc.HealthStub(ch)
        res = stub.Check(pb.health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return pb.health_pb2.HealthCheckResponse.ServingStatus.Name(res.status)


def hello(target, greeting="world", mode="unary", timeout=3.0, **kw):
    """Call one of the hello RPCs; return the list of replies."""
    req = pb.hello_pb2.HelloRequest(greeting=greeting)
    with channel(target, **kw) as ch:
        stub = pb.hello_pb2_grpc.HelloServiceStub(ch)
        if mode == "unary":
            return [stub.SayHello(req, timeout=timeout).reply]
        if mode == "server":
            return [r.reply for r in stub.LotsOfReplies(req, timeout=timeout)]
        if mode == "client":
            return [stub.LotsOfGreetings(iter([req, req]), timeout=timeout).reply]
        if mode == "bidi":
            return [r.reply for r in stub.BidiHello(iter([req, req]), timeout=timeout)]
    raise ValueError(f"unknown mode {mode}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("call", choices=("health", "hello"))
    p.add_argument("target", help="HOST:PORT")
    p.add_argument("--service", default="", help="health: the service to check")
    p.add_argument("--greeting", default="world", help="hello: the greeting")
    p.add_argument("--mode", default="unary", choices=("unary", "server", "client", "bidi"))
    p.add_argument("--tls", action="store_true", help="use TLS")
    p.add_argument("--ca", help="CA bundle to trust (implies --tls)")
    p.add_argument("--server-name", help="the name to verify in the server certificate")
    p.add_argument("--cert", help="client certificate (PEM)")
    p.add_argument("--key", help="client key (PEM)")
    p.add_argument("--timeout", type=float, default=3.0)
    a = p.parse_args()
    kw = dict(tls=a.tls, ca=a.ca, server_name=a.server_name, cert=a.cert, key=a.key,
              timeout=a.timeout)
    try:
        if a.call == "health":
            status = health(a.target, a.service, **kw)
            print(status)
            return 0 if status == "SERVING" else 1
        for reply in hello(a.target, a.greeting, a.mode, **kw):
            print(reply)
        return 0
    except grpc.RpcError as e:
        print(f"{e.code().name}: {e.details()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
