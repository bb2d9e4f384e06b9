#!/usr/bin/python3
"""The lab's gRPC upstream (grpc.pingora.local), in place of moul/grpcbin.

    grpc_server.py --plain 0.0.0.0:9000 --tls 0.0.0.0:9001 --cert grpc.crt --key grpc.key

Serves grpc.health.v1.Health (Check and Watch; "" and "hello.HelloService" are
SERVING) and grpcbin's hello.HelloService (SayHello, LotsOfReplies,
LotsOfGreetings, BidiHello, answering "hello <greeting>" as grpcbin does).
Either listener may be left out; port 0 picks a free port, and the bound
addresses are printed as "listening plain=HOST:PORT" / "listening tls=HOST:PORT".
--pidfile is written once both listen. SIGUSR1 marks every service NOT_SERVING,
SIGUSR2 marks them SERVING again (Watch streams see the change): health-check
lessons can flip an upstream without killing it.
"""
import argparse
import asyncio
import os
import signal
import sys

import grpc

import labproto

pb = labproto.load()
H = pb.health_pb2.HealthCheckResponse
SERVICES = ("", "hello.HelloService")


class Health(pb.health_pb2_grpc.HealthServicer):
    def __init__(self):
        self.status = {name: H.SERVING for name in SERVICES}
        self.changed = asyncio.Event()

    def set_all(self, status):
        for name in self.status:
            self.status[name] = status
        self.changed.set()
        self.changed = asyncio.Event()

    async def Check(self, request, context):
        status = self.status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return H(status=status)

    async def Watch(self, request, context):
        last = None
        while True:
            changed = self.changed  # taken first: a change during the yield is not lost
            status = self.status.get(request.service, H.SERVICE_UNKNOWN)
            if status != last:
                yield H(status=status)
                last = status
            await changed.wait()


def _reply(req):
    return pb.hello_pb2.HelloResponse(
        reply="hello " + (req.greeting if req.HasField("greeting") else "noname"))


class Hello(pb.hello_pb2_grpc.HelloServiceServicer):
    async def SayHello(self, request, context):
        return _reply(request)

    async def LotsOfReplies(self, request, context):
        for _ in range(10):
            yield _reply(request)

    async def LotsOfGreetings(self, request_iterator, context):
        names = [r.greeting if r.HasField("greeting") else "noname"
                 async for r in request_iterator]
        return pb.hello_pb2.HelloResponse(reply="hello " + ", ".join(names))

    async def BidiHello(self, request_iterator, context):
        async for r in request_iterator:
            yield _reply(r)


async def serve(args):
    server = grpc.aio.server()
    health = Health()
    pb.health_pb2_grpc.add_HealthServicer_to_server(health, server)
    pb.hello_pb2_grpc.add_HelloServiceServicer_to_server(Hello(), server)
    bound = []
    if args.plain:
        bound.append(("plain", args.plain, server.add_insecure_port(args.plain)))
    if args.tls:
        with open(args.key, "rb") as k, open(args.cert, "rb") as c:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        bound.append(("tls", args.tls, server.add_secure_port(args.tls, creds)))
    if not bound:
        sys.exit("grpc_server: give --plain and/or --tls")
    for kind, addr, port in bound:
        if not port:
            sys.exit(f"grpc_server: cannot listen on {addr}")
    await server.start()
    for kind, addr, port in bound:
        print(f"listening {kind}={addr.rpartition(':')[0]}:{port}", flush=True)
    if args.pidfile:
        with open(args.pidfile + ".tmp", "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(args.pidfile + ".tmp", args.pidfile)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, health.set_all, H.NOT_SERVING)
    loop.add_signal_handler(signal.SIGUSR2, health.set_all, H.SERVING)
    await stop.wait()
    await server.stop(grace=1)
    if args.pidfile:
        try:
            os.unlink(args.pidfile)
        except OSError:
            pass


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plain", help="HOST:PORT for insecure gRPC (the lab uses 0.0.0.0:9000)")
    p.add_argument("--tls", help="HOST:PORT for gRPC over TLS (the lab uses 0.0.0.0:9001)")
    p.add_argument("--cert", help="PEM certificate for --tls")
    p.add_argument("--key", help="PEM private key for --tls")
    p.add_argument("--pidfile", help="write our pid here once listening")
    args = p.parse_args()
    if args.tls and not (args.cert and args.key):
        p.error("--tls needs --cert and --key")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
