"""Lesson 23's program (build/examples/23_websocket_upgrade) on loopback, without the lab.

The program is a proxy on 0.0.0.0:6167 in front of its own WebSocket echo server on
127.0.0.1:9091, plus a test client that goes through the proxy. Checked here:

- the guide's verification: the log shows the handshake (the proxy saw "Upgrade: websocket"),
  three pings a second apart, each echoed with a timestamp, and the close handshake; the
  process then exits 0 on SIGTERM;
- real peers: Python `websockets` through the proxy (sizes on every frame-length encoding,
  non-ASCII text, a fragmented message, pings, a quiet gap, the close status echoed) and
  straight to the echo server, which must compute RFC 6455's own Sec-WebSocket-Accept example;
- bad input to the echo server on raw sockets: refused handshakes (426, 400) and protocol
  violations, each answered with the right Close status (1002, 1007, 1009) and a closed
  connection, while the server goes on serving;
- shutdown: SIGTERM with a WebSocket open sends it a Close 1001 and the process exits 0 at once
  (not after the grace period); a busy echo port makes startup fail with exit 3.

The ports are the guide's: the tests are skipped when something else holds them.
"""
import asyncio
import base64
import hashlib
import os
import re
import signal
import socket
import struct
import threading
import time
from datetime import datetime

import pytest
import websockets
import websockets.exceptions

from helpers import example, port_closed, wait_port

PROG = example("23_websocket_upgrade")
PROXY_PORT, ECHO_PORT = 6167, 9091
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TAG = "INFO  [23_websocket_upgrade] "


def ports_free():
    for host, port in (("0.0.0.0", PROXY_PORT), ("127.0.0.1", ECHO_PORT)):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


pytestmark = [
    pytest.mark.skipif(not PROG.exists(), reason=f"{PROG} is not built"),
    pytest.mark.skipif(not ports_free(), reason="ports 6167 or 9091 are in use"),
]


@pytest.fixture
def ex23(procs):
    p = procs.start([PROG])
    p.wait_log("Echo Server listening on 127.0.0.1:9091")
    wait_port(PROXY_PORT)
    return p


def run(coro):
    return asyncio.run(coro)


def messages(log):
    """The program's own INFO lines, without the timestamp and tag: [(time, text)]."""
    out = []
    for line in log.splitlines():
        if TAG in line:
            stamp, _, text = line.partition(" ")
            out.append((datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ"), text.split(TAG, 1)[1]))
    return out


def check_guide_sequence(log):
    """The guide's sample output, in order, with the pings a second apart."""
    msgs = messages(log)
    texts = [t for _, t in msgs]
    expected = [
        "Echo Server listening on 127.0.0.1:9091",
        "Client: Connection to Proxy at ws://127.0.0.1:6167",
        'Proxy: Detected Upgrade Header: "websocket"',
        "Client: Connected! Starting message loop...",
    ]
    for i in (1, 2, 3):
        expected += [f"Client: Sending 'Ping #{i}'", f"Server: Received 'Ping #{i}', Replying...",
                     rf"Client: Received 'Echo \[\d\d:\d\d:\d\d\]: Ping #{i}'"]
    expected += ["Client: Test Complete. Closing connection.",
                 "Client: Connection closed (status 1000)."]
    at = {}
    pos = 0
    for want in expected:
        rx = re.compile(want if want.startswith("Client: Received") else re.escape(want))
        while pos < len(texts) and not rx.fullmatch(texts[pos]):
            pos += 1
        assert pos < len(texts), f"missing or out of order: {want!r}\n" + "\n".join(texts)
        at[want] = msgs[pos][0]
        pos += 1
    assert "WebSocket Proxy running on 0.0.0.0:6167" in texts
    assert texts.count('Proxy: Detected Upgrade Header: "websocket"') == 1
    # the client waits ~2 s for the proxy, like the guide, then pings once a second
    started = next(t for t, m in msgs if m == "WebSocket Proxy running on 0.0.0.0:6167")
    connected = at["Client: Connection to Proxy at ws://127.0.0.1:6167"]
    assert 1.8 < (connected - started).total_seconds() < 5
    sends = [at[f"Client: Sending 'Ping #{i}'"] for i in (1, 2, 3)]
    sends.append(at["Client: Test Complete. Closing connection."])
    for a, b in zip(sends, sends[1:]):
        assert 0.9 < (b - a).total_seconds() < 2.5
    return texts


def test_the_guides_verification(ex23):
    log = ex23.wait_log(r"Client: Connection closed", timeout=15)
    check_guide_sequence(log)
    assert not re.search(r" (WARN|ERROR) ", log), log
    t0 = time.monotonic()
    assert ex23.stop() == 0
    assert time.monotonic() - t0 < 5
    assert port_closed(PROXY_PORT) and port_closed(ECHO_PORT)


def echo_of(text, reply):
    m = re.fullmatch(r"Echo \[(\d\d):(\d\d):(\d\d)\]: (.*)", reply, re.S)
    assert m, reply[:200]
    assert m.group(4) == text
    return m


def test_python_client_through_the_proxy(ex23):
    # one per frame-length encoding: 7-bit, 16-bit (126..65535), 64-bit; replies are 17 longer
    texts = ["", "hello", "x" * 108, "y" * 109, "z" * 65518, "w" * 65519, "ünïcödé ✓ 🚀",
             "big " * 300_000]

    async def client():
        async with websockets.connect(f"ws://127.0.0.1:{PROXY_PORT}/chat?room=1",
                                      max_size=None, ping_interval=None) as ws:
            assert ws.response_headers["Upgrade"].lower() == "websocket"
            for t in texts:
                await ws.send(t)
                echo_of(t, await asyncio.wait_for(ws.recv(), 10))
            await ws.send(["frag", "men", "ted ", "message"])  # one message, four frames
            echo_of("fragmented message", await asyncio.wait_for(ws.recv(), 10))
            await ws.send(b"\x00binary")  # ignored, as the guide's server ignores it
            await ws.send("after binary")
            echo_of("after binary", await asyncio.wait_for(ws.recv(), 10))
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 5)
            await asyncio.sleep(3)  # a quiet gap: the pipe stays
            await ws.send("after a quiet gap")
            echo_of("after a quiet gap", await asyncio.wait_for(ws.recv(), 10))
            await ws.close(code=4001, reason="bye")
            return ws.close_code, ws.close_reason
    code, _ = run(client())
    assert code == 4001  # the server answers a Close with the same status
    log = ex23.wait_log(r"Server: Received 'after a quiet gap'")
    assert "Server: Received 'big big big" in log and "...(1200000 bytes)', Replying..." in log
    assert "Server: Received 'fragmented message', Replying..." in log
    assert "Server: Received 'after binary'" in log and "\\x00binary" not in log


def test_accept_key_of_rfc6455_and_python_straight_to_the_echo_server(ex23):
    with socket.create_connection(("127.0.0.1", ECHO_PORT), timeout=5) as s:
        head = handshake(s, b"dGhlIHNhbXBsZSBub25jZQ==")
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head

    async def client():  # websockets checks the handshake answer itself
        async with websockets.connect(f"ws://127.0.0.1:{ECHO_PORT}/", ping_interval=None) as ws:
            await ws.send("direct")
            return await ws.recv()
    echo_of("direct", run(client()))


# ---- raw sockets ---------------------------------------------------------------------------

def handshake(s, key=None, extra=b"", method=b"GET", version=b"13"):
    key = key or base64.b64encode(os.urandom(16))
    s.sendall(method + b" / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
              b"\r\nSec-WebSocket-Version: " + version + b"\r\n" + extra + b"\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    if head.startswith(b"HTTP/1.1 101"):
        want = base64.b64encode(hashlib.sha1(key + GUID).digest())
        assert b"\r\nSec-WebSocket-Accept: " + want + b"\r\n" in head
    return head


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
    n = len(payload) if length is None else length
    out = bytes([(0x80 if fin else 0) | rsv | opcode])
    m = 0x80 if mask else 0
    if n < 126 and length is None:
        out += bytes([m | n])
    elif n <= 0xFFFF:
        out += bytes([m | 126]) + struct.pack("!H", n)
    else:
        out += bytes([m | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        pad = (key * (len(payload) // 4 + 1))[:len(payload)]
        masked = int.from_bytes(payload, "big") ^ int.from_bytes(pad, "big")
        out += key + masked.to_bytes(len(payload), "big")
    else:
        out += payload
    return out


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_frame(s):
    b0, b1 = recv_exact(s, 2)
    assert not b1 & 0x80, "server frames are never masked"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", recv_exact(s, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", recv_exact(s, 8))[0]
    return bool(b0 & 0x80), b0 & 0x0F, recv_exact(s, n)


def read_eof(s, timeout=5):
    """True when the server ends the connection (FIN or reset) within timeout."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def close_status(s):
    """Reads frames up to the server's Close; returns its status code."""
    while True:
        _, op, payload = read_frame(s)
        if op == 0x8:
            return struct.unpack("!H", payload[:2])[0]


def opened():
    s = socket.create_connection(("127.0.0.1", ECHO_PORT), timeout=5)
    assert handshake(s).startswith(b"HTTP/1.1 101 ")
    return s


def test_frames_split_coalesced_and_interleaved_with_control_frames(ex23):
    with opened() as s:
        for b in frame(0x1, b"one byte at a time"):  # a frame split into 1-byte writes
            s.sendall(bytes([b]))
            time.sleep(0.001)
        _, op, payload = read_frame(s)
        assert op == 0x1 and payload.decode().endswith("]: one byte at a time")
        s.sendall(frame(0x1, b"first") + frame(0x1, b"second"))  # two frames in one write
        assert read_frame(s)[2].endswith(b"]: first") and read_frame(s)[2].endswith(b"]: second")
        # a ping in the middle of a fragmented message is answered at once
        s.sendall(frame(0x1, b"Hel", fin=False) + frame(0x9, b"ping!") +
                  frame(0x0, b"lo", fin=False) + frame(0x0, b"!", fin=True))
        assert read_frame(s) == (True, 0xA, b"ping!")
        fin, op, payload = read_frame(s)
        assert fin and op == 0x1 and re.fullmatch(rb"Echo \[\d\d:\d\d:\d\d\]: Hello!", payload)
        s.sendall(frame(0x8, struct.pack("!H", 1000) + b"done"))
        assert read_frame(s) == (True, 0x8, struct.pack("!H", 1000))
        assert read_eof(s)


def test_a_client_that_does_not_read_is_throttled(procs):
    """30 MB of messages while not reading: the server stops reading once its replies back up
    (instead of queueing them all), and resumes when the client reads."""
    p = procs.start([PROG], env={"SLUICE_LOG": "debug"})
    p.wait_log("Echo Server listening on 127.0.0.1:9091")
    n, body = 300, b"q" * 100_000
    with opened() as s:
        s.settimeout(30)
        sender = threading.Thread(
            target=lambda: [s.sendall(frame(0x1, b"%d " % i + body)) for i in range(n)])
        sender.start()
        time.sleep(1)
        for i in range(n):
            fin, op, payload = read_frame(s)
            assert fin and op == 0x1 and payload.endswith(b"]: %d " % i + body)
        sender.join(10)
        assert not sender.is_alive()
    log = p.log()
    assert "Server: the peer does not read what is sent, reading pauses" in log
    assert "Server: the peer reads again, reading resumes" in log


def test_frames_right_behind_the_handshake(ex23):
    with socket.create_connection(("127.0.0.1", ECHO_PORT), timeout=5) as s:
        key = base64.b64encode(os.urandom(16))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n" +
                  frame(0x1, b"early"))
        data = b""
        while b"]: early" not in data:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 101 ")


@pytest.mark.parametrize("name, data, status", [
    ("unmasked client frame", frame(0x1, b"hi", mask=False), 1002),
    ("invalid UTF-8 text", frame(0x1, b"caf\xc3"), 1007),
    ("overlong UTF-8", frame(0x1, b"\xc0\xaf"), 1007),
    ("UTF-16 surrogate", frame(0x1, b"\xed\xa0\x80"), 1007),
    ("invalid UTF-8 across fragments", frame(0x1, b"ok\xe2\x82", fin=False) +
     frame(0x0, b"x"), 1007),
    ("a frame of 1 TiB", frame(0x2, length=1 << 40)[:10], 1009),
    ("a message of 17 MiB", frame(0x1, length=17 << 20)[:10], 1009),
    ("RSV1 without an extension", frame(0x1, b"hi", rsv=0x40), 1002),
    ("reserved opcode", frame(0x3, b"hi"), 1002),
    ("stray continuation", frame(0x0, b"hi"), 1002),
    ("new message inside a fragmented one", frame(0x1, b"a", fin=False) +
     frame(0x1, b"b"), 1002),
    ("fragmented ping", frame(0x9, b"p", fin=False), 1002),
    ("ping of 126 bytes", frame(0x9, b"p" * 126), 1002),
    ("length not in its shortest form", frame(0x1, b"abc", length=3), 1002),
    ("64-bit length with its top bit set", bytes([0x81, 0xFF]) + b"\x80" + b"\x00" * 7, 1002),
    ("Close with a 1-byte body", frame(0x8, b"\x03"), 1002),
    ("Close with status 1005", frame(0x8, struct.pack("!H", 1005)), 1002),
    ("Close with a non-UTF-8 reason", frame(0x8, struct.pack("!H", 1000) + b"\xff"), 1007),
])
def test_protocol_violations_get_the_right_close_status(ex23, name, data, status):
    with opened() as s:
        s.sendall(data)
        assert close_status(s) == status, name
        assert read_eof(s)
    ex23.wait_log(rf"Server: closing the WebSocket connection with {status}: ")
    with opened() as s:  # still serving
        s.sendall(frame(0x1, b"next"))
        assert read_frame(s)[2].endswith(b"]: next")


@pytest.mark.parametrize("name, kw, status, header", [
    ("POST", {"method": b"POST"}, 400, None),
    ("version 8", {"version": b"8"}, 426, b"Sec-WebSocket-Version: 13"),
    ("short key", {"key": b"c2hvcnQ="}, 400, None),
    ("key not base64", {"key": b"!!!!!!!!!!!!!!!!!!!!!!=="}, 400, None),
    ("two keys", {"extra": b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"}, 400, None),
    ("obs-fold", {"extra": b"X-A: 1\r\n folded\r\n"}, 400, None),
])
def test_refused_handshakes(ex23, name, kw, status, header):
    with socket.create_connection(("127.0.0.1", ECHO_PORT), timeout=5) as s:
        head = handshake(s, **kw)
        assert head.startswith(b"HTTP/1.1 %d " % status), (name, head)
        if header:
            assert b"\r\n" + header + b"\r\n" in head
        assert read_eof(s)


def test_plain_http_through_the_proxy_gets_the_servers_426(ex23):
    with socket.create_connection(("127.0.0.1", PROXY_PORT), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:6167\r\n\r\n")
        data = b""
        while b"this is a WebSocket server\n" not in data:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 426 ")


def test_oversized_handshake_head_is_dropped(ex23):
    with socket.create_connection(("127.0.0.1", ECHO_PORT), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 9000 + b"\r\n")
        assert read_eof(s)
    ex23.wait_log("handshake head larger than 8192 bytes")


def test_sigterm_sends_going_away_to_open_websockets(ex23):
    async def client():
        async with websockets.connect(f"ws://127.0.0.1:{PROXY_PORT}/", ping_interval=None) as ws:
            await ws.send("before")
            echo_of("before", await ws.recv())
            ex23.send(signal.SIGTERM)
            t0 = time.monotonic()
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return ws.close_code, time.monotonic() - t0
    code, waited = run(client())
    assert code == 1001 and waited < 3
    assert ex23.wait(timeout=10) == 0


def test_a_busy_echo_port_fails_the_startup(procs):
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", ECHO_PORT))
        busy.listen()
        p = procs.start([PROG])
        assert p.wait(timeout=10) == 3
    log = p.log()
    assert "Failed to bind Echo Server on 127.0.0.1:9091: address already in use" in log
    assert "Client: Connection to Proxy" not in log
    assert port_closed(PROXY_PORT)
