"""Lesson 23 (WebSocket upgrade) as the guide verifies it, in the lab.

The lesson's program runs on dev: a proxy on :6167 that forwards to a WebSocket echo server the
program runs itself on dev's 127.0.0.1:9091, and a test client (also inside the program) that
connects through the proxy to ws://127.0.0.1:6167. The guide's verification is its log:

    Echo Server listening on 127.0.0.1:9091
    WebSocket Proxy running on 0.0.0.0:6167
    Client: Connection to Proxy at ws://127.0.0.1:6167
    Proxy: Detected Upgrade Header: "websocket"
    Client: Connected! Starting message loop...
    Client: Sending 'Ping #1'
    Server: Received 'Ping #1', Replying...
    Client: Received 'Echo [11:00:19]: Ping #1'
    ... (#2, #3, a second apart)
    Client: Test Complete. Closing connection.

checked here in that order, with the timing the guide's code has (the client starts ~2 s after
the proxy, pings 1 s apart). Then a real client from another host: Python `websockets` on
client1 connects to ws://172.28.0.10:6167, through sluice to the echo server, sends messages of
every frame-length encoding, non-ASCII text and a fragmented message, stays quiet for a few
seconds (the pipe has no HTTP read timeout any more), and closes. The echo server's log shows
what it received. A plain HTTP request gets the echo server's 426 through the proxy. The
program must exit 0 on SIGTERM without a sanitizer report. SLUICE_BUILD selects another build
tree (e.g. a private `make B=/tmp/x SAN=1`).
"""
import json
import os
import re
import time
from datetime import datetime

import pytest

from labkit import IP, PY, LabProcess, curl, lab_run, parse_http

EX = os.environ.get("SLUICE_BUILD", "build") + "/examples/"
DEV = IP["dev"]
TAG = "INFO  [23_websocket_upgrade] "
QUIET_S = 5

# Runs on client1: one WebSocket session through the proxy; prints what it saw as JSON. Long
# echoes are summarised (length, and whether they end with what was sent).
CLIENT = r"""
import asyncio, json, re, sys, time, websockets

TEXTS = ["hello from client1", "x" * 200, "y" * 70000, "ünïcödé ✓ 🚀"]

def summary(sent, echo):
    m = re.fullmatch(r"(Echo \[\d\d:\d\d:\d\d\]: )(.*)", echo, re.S)
    return {"prefix": m and m.group(1), "echo_of_sent": bool(m) and m.group(2) == sent,
            "len": len(echo)}

async def main(url, quiet):
    out = {"echoes": []}
    async with websockets.connect(url, ping_interval=None, max_size=None) as ws:
        out["upgrade"] = ws.response_headers.get("Upgrade")
        for text in TEXTS:
            await ws.send(text)
            out["echoes"].append(summary(text, await asyncio.wait_for(ws.recv(), 10)))
        await ws.send(["frag", "mented"])
        out["echoes"].append(summary("fragmented", await asyncio.wait_for(ws.recv(), 10)))
        t0 = time.monotonic()
        await asyncio.sleep(quiet)
        await ws.send("after the quiet gap")
        out["echoes"].append(summary("after the quiet gap", await asyncio.wait_for(ws.recv(), 10)))
        out["gap"] = time.monotonic() - t0
        await ws.close()
    out["close_code"] = ws.close_code
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


@pytest.fixture(autouse=True)
def _lab(lab):
    return lab


def messages(output):
    """The program's INFO lines: [(time, text)] without timestamp and tag."""
    out = []
    for line in output.splitlines():
        if TAG in line:
            stamp = line.split(" ", 1)[0]
            out.append((datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ"),
                        line.split(TAG, 1)[1]))
    return out


def check_guide_sequence(output):
    """The guide's sample output in order; returns {expected line: its time}."""
    msgs = messages(output)
    expected = ["Echo Server listening on 127.0.0.1:9091",
                "Client: Connection to Proxy at ws://127.0.0.1:6167",
                'Proxy: Detected Upgrade Header: "websocket"',
                "Client: Connected! Starting message loop..."]
    for i in (1, 2, 3):
        expected += [f"Client: Sending 'Ping #{i}'",
                     f"Server: Received 'Ping #{i}', Replying...",
                     rf"Client: Received 'Echo \[\d\d:\d\d:\d\d\]: Ping #{i}'"]
    expected += ["Client: Test Complete. Closing connection.",
                 "Client: Connection closed (status 1000)."]
    at, pos = {}, 0
    for want in expected:
        rx = re.compile(want if "Echo" in want else re.escape(want))
        while pos < len(msgs) and not rx.fullmatch(msgs[pos][1]):
            pos += 1
        assert pos < len(msgs), f"missing or out of order: {want!r}\n{output}"
        at[want] = msgs[pos][0]
        pos += 1
    at["start"] = next(t for t, m in msgs if m == "WebSocket Proxy running on 0.0.0.0:6167")
    return at


def test_lesson23_websocket_upgrade():
    p = LabProcess("dev", EX + "23_websocket_upgrade")
    try:
        p.wait_port(6167)
        p.wait_output("Client: Test Complete. Closing connection.", timeout=20)
        p.wait_output("Client: Connection closed (status 1000).")
        at = check_guide_sequence(p.output)
        assert 1.8 < (at["Client: Connection to Proxy at ws://127.0.0.1:6167"] -
                      at["start"]).total_seconds() < 5
        sends = [at[f"Client: Sending 'Ping #{i}'"] for i in (1, 2, 3)]
        sends.append(at["Client: Test Complete. Closing connection."])
        for a, b in zip(sends, sends[1:]):
            assert 0.9 < (b - a).total_seconds() < 2.5  # a second apart
        assert not re.search(r" (WARN|ERROR) ", p.output), p.output

        # a client on another host, through the proxy to the echo server on dev's loopback
        r = lab_run("client1", PY, "-c", CLIENT, f"ws://{DEV}:6167/", QUIET_S, timeout=60)
        assert r.returncode == 0, r.stderr
        seen = json.loads(r.stdout)
        assert seen["upgrade"].lower() == "websocket"
        assert seen["close_code"] == 1000
        assert seen["gap"] >= QUIET_S
        lengths = [18, 200, 70000, 11, 10, 19]
        assert [e["echo_of_sent"] for e in seen["echoes"]] == [True] * 6, seen
        assert [e["len"] for e in seen["echoes"]] == [n + 17 for n in lengths]
        assert all(re.fullmatch(r"Echo \[\d\d:\d\d:\d\d\]: ", e["prefix"]) for e in seen["echoes"])
        p.wait_output("Server: Received 'after the quiet gap', Replying...")
        out = p.output
        for line in ("Server: Received 'hello from client1', Replying...",
                     "Server: Received 'ünïcödé ✓ 🚀', Replying...",
                     "Server: Received 'fragmented', Replying...",
                     "Server: Received '" + "y" * 200 + "...(70000 bytes)', Replying..."):
            assert line in out
        assert out.count('Proxy: Detected Upgrade Header: "websocket"') == 2

        # not a WebSocket handshake: the echo server's refusal is an ordinary response
        status, headers, body = parse_http(curl("client1", "-i", f"http://{DEV}:6167/").stdout)
        assert status == 426 and body == "this is a WebSocket server\n"
        assert not re.search(r" ERROR ", p.output), p.output
    finally:
        t0 = time.monotonic()
        code = p.stop()
    assert code == 0, f"exited with {code}:\n{p.output}"
    assert time.monotonic() - t0 < 5
    assert not re.search(r"Sanitizer|runtime error:", p.output), p.output
