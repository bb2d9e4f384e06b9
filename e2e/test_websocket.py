"""WebSocket and other upgrades (lesson 23): the Upgrade request goes upstream, a 101 turns both
connections into one byte pipe with its own idle timeout (not the HTTP read timeout), close and
half-close pass through, a refused upgrade is an ordinary response. Peers: Python `websockets`
on both ends, and raw sockets for half-close."""
import asyncio
from http import HTTPStatus
import os
import socket
import threading
import time

import pytest
import websockets
import websockets.exceptions

from gw import Gateway
from helpers import free_port


class WsServer:
    """An echo WebSocket server in a thread; records each handshake's path and headers and the
    close code it received."""

    def __init__(self):
        self.port = free_port()
        self.handshakes = []
        self.closes = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)

        async def process_request(path, headers):
            self.handshakes.append((path, headers))
            if path == "/deny":
                return HTTPStatus.FORBIDDEN, [("Content-Type", "text/plain")], b"no\n"
            return None

        async def echo(ws, path=None):
            try:
                async for msg in ws:
                    await ws.send(msg)
            except websockets.exceptions.ConnectionClosed:
                pass
            self.closes.append((ws.close_code, ws.close_reason))

        async def main():
            self.server = await websockets.serve(echo, "127.0.0.1", self.port,
                                                 process_request=process_request,
                                                 max_size=None, ping_interval=None)
            ready.set()
            await asyncio.Future()
        try:
            self.loop.run_until_complete(main())
        except RuntimeError:
            pass

    def close(self):
        async def stop():
            self.server.close()
            await self.server.wait_closed()
        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def ws_server():
    s = WsServer()
    yield s
    s.close()


def run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)


def test_messages_big_frames_and_close_codes(start_fwd, ws_server):
    f = start_fwd(f"127.0.0.1:{ws_server.port}")

    async def client():
        async with websockets.connect(f"ws://127.0.0.1:{f.port}/chat?room=1", max_size=None,
                                      ping_interval=None) as ws:
            for i in range(1000):
                await ws.send(f"message {i}")
                assert await ws.recv() == f"message {i}"
            blob = os.urandom(10 * 1024 * 1024)
            await ws.send(blob)
            assert await ws.recv() == blob
            await ws.close(code=4001, reason="bye")
            return ws.close_code
    assert run(client()) == 4001
    deadline = time.time() + 5
    while not ws_server.closes and time.time() < deadline:
        time.sleep(0.05)
    assert ws_server.closes == [(4001, "bye")]
    path, headers = ws_server.handshakes[0]
    assert path == "/chat?room=1"
    assert headers["Upgrade"].lower() == "websocket"
    assert "upgrade" in headers["Connection"].lower()
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert f.wait_log(r"GET /chat\?room=1 -> 101 err=- bytes=\d+")


def test_quiet_connection_outlives_the_http_read_timeout(start_fwd, ws_server):
    f = start_fwd(f"127.0.0.1:{ws_server.port}", "--read-timeout", 300)

    async def client():
        async with websockets.connect(f"ws://127.0.0.1:{f.port}/", ping_interval=None) as ws:
            await asyncio.sleep(1.2)  # four read timeouts of silence
            await ws.send("still here")
            return await ws.recv()
    assert run(client()) == "still here"


def test_tunnel_idle_timeout_closes(start_fwd, ws_server):
    f = start_fwd(f"127.0.0.1:{ws_server.port}", "--tunnel-timeout", 400)

    async def client():
        async with websockets.connect(f"ws://127.0.0.1:{f.port}/", ping_interval=None) as ws:
            await ws.send("a")
            assert await ws.recv() == "a"
            t0 = time.monotonic()
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            return time.monotonic() - t0
    waited = run(client())
    assert 0.3 < waited < 3
    assert f.wait_log(r"GET / -> 101 err=SL_ETIMEDOUT_READ")


def test_refused_upgrade_is_an_ordinary_response(start_fwd, ws_server):
    f = start_fwd(f"127.0.0.1:{ws_server.port}")

    async def client():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            async with websockets.connect(f"ws://127.0.0.1:{f.port}/deny", ping_interval=None):
                pass
        return e.value.status_code
    assert run(client()) == 403

    async def ok():
        async with websockets.connect(f"ws://127.0.0.1:{f.port}/", ping_interval=None) as ws:
            await ws.send("x")
            return await ws.recv()
    assert run(ok()) == "x"


@pytest.fixture
def raw_upgrade_server():
    """Answers any request with 101 (Upgrade: test), then echoes bytes until EOF, then sends
    "bye" and closes: half-close seen from the upstream."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    seen = []

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            head = b""
            while b"\r\n\r\n" not in head:
                head += c.recv(4096)
            req, _, rest = head.partition(b"\r\n\r\n")
            seen.append(req)
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\n"
                      b"Connection: Upgrade\r\n\r\n" + b"early")
            data = rest
            while True:
                d = c.recv(65536)
                if not d:
                    break
                data += d
            c.sendall(b"echo:" + data + b"|bye")
            c.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], seen
    srv.close()


def test_half_close_and_early_bytes(start_fwd, raw_upgrade_server):
    port, seen = raw_upgrade_server
    f = start_fwd(f"127.0.0.1:{port}")
    with socket.create_connection(("127.0.0.1", f.port), timeout=5) as s:
        # bytes sent right behind the request belong to the new protocol
        s.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n"
                  b"first")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        assert b"Upgrade: test" in head and b"Connection: Upgrade" in head
        s.sendall(b" second")
        s.shutdown(socket.SHUT_WR)  # half-close: the upstream sees EOF, answers, closes
        while True:
            d = s.recv(4096)
            if not d:
                break
            rest += d
    assert rest == b"earlyecho:first second|bye", rest
    assert b"Upgrade: test" in seen[0]


def test_gateway_websocket_with_tunnel_timeout(procs, tmp_path, ws_server):
    g = Gateway(procs, tmp_path, {
        "upstreams": {"ws": {"backends": [f"127.0.0.1:{ws_server.port}"],
                             "timeouts": {"read": "300ms", "tunnel": "1s"}}},
        "routes": [{"match": {"path": "/ws", "path_type": "prefix"}, "upstream": "ws"}],
    })

    async def client():
        async with websockets.connect(f"ws://127.0.0.1:{g.port}/ws", ping_interval=None) as ws:
            await asyncio.sleep(0.6)  # beyond the read timeout, within the tunnel timeout
            await ws.send("hi")
            assert await ws.recv() == "hi"
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)  # the tunnel timeout ends it
    run(client())
    m = g.metrics()
    assert 'code="101"' in m


def test_426_keeps_its_upgrade_header(start_fwd, raw_upgrade_server):
    """426 Upgrade Required must name the protocol (RFC 9110 15.5.22): the upstream's Upgrade
    reaches the client, with Connection listing it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def serve():
        c, _ = srv.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += c.recv(4096)
        c.sendall(b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nContent-Length: 3\r\n\r\nws\n")
        c.close()
    threading.Thread(target=serve, daemon=True).start()
    f = start_fwd(f"127.0.0.1:{srv.getsockname()[1]}")
    with socket.create_connection(("127.0.0.1", f.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            data += d
    srv.close()
    head = data.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 426") and b"\r\nUpgrade: websocket" in head
    assert b"\r\nConnection: Upgrade, close" in head
