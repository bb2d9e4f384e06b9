#!/usr/bin/python3
"""An HTTP/1.1 server that answers like hashicorp/http-echo, as the guide runs it.

    http_echo.py -listen=:8080 -text="'Response from BLUE'"

Every path answers 200 with TEXT + "\\n" (http-echo writes with fmt.Fprintln); /health
answers {"status":"ok"} + "\\n". Responses carry the headers Go's net/http writes,
in its order: X-App-Name, X-App-Version, Date, Content-Length, Content-Type.

It keeps connections alive, answers pipelined requests in order, and reads and
discards request bodies (Content-Length or chunked), so proxies under test can
hammer it. Standard library only (asyncio).

Options beyond http-echo's: --listen may be repeated and may be unix:/path;
--pidfile is written once every listener is bound (a readiness signal);
--record FILE appends one JSON line per request (method, target, headers, body),
so tests can check what a proxy really sent upstream; --quiet drops the access log.
"""
import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
from email.utils import formatdate

APP_NAME = "http-echo"
APP_VERSION = "0.2.3"
MAX_LINE = 64 * 1024
MAX_HEAD = 1024 * 1024  # Go's DefaultMaxHeaderBytes
RECORD_BODY_MAX = 1024 * 1024
DIGITS = re.compile(r"[0-9]{1,18}")
HEXDIGITS = re.compile(rb"[0-9a-fA-F]{1,15}")


class HttpError(Exception):
    """A request we cannot serve: answer STATUS (if any) and close."""

    def __init__(self, status=400, reason="Bad Request", detail=""):
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.detail = status, reason, detail


_date_cache = [0, b""]


def http_date():
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0], _date_cache[1] = now, formatdate(now, usegmt=True).encode()
    return _date_cache[1]


async def read_head(reader):
    """Read a request line and headers. None on a clean EOF between requests."""
    lines, size = [], 0
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # one line longer than the stream limit
            raise HttpError(431, "Request Header Fields Too Large")
        if not line.endswith(b"\n"):
            if not lines and not line:
                return None
            raise HttpError()  # truncated mid-head
        size += len(line)
        if size > MAX_HEAD:
            raise HttpError(431, "Request Header Fields Too Large")
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if not line:
            if lines:
                return lines
            continue  # RFC 9112 §2.2: ignore empty lines before a request line
        lines.append(line)


def parse_head(lines):
    try:
        method, target, version = lines[0].decode("latin-1").split(" ")
    except ValueError:
        raise HttpError()
    if not method or not target or not version.startswith("HTTP/"):
        raise HttpError()
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505, "HTTP Version Not Supported")
    headers = []
    for raw in lines[1:]:
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip() or " " in name or "\t" in name:
            raise HttpError()  # also rejects obsolete line folding
        headers.append((name, value.strip(" \t")))
    hosts = header_values(headers, "host")
    if len(hosts) > 1 or (version == "HTTP/1.1" and not hosts):
        raise HttpError(detail="missing required Host header" if not hosts
                        else "too many Host headers")  # as Go's net/http
    return method, target, version, headers


def header_values(headers, name):
    name = name.lower()
    return [v for k, v in headers if k.lower() == name]


def has_token(headers, name, token):
    return any(token in (t.strip().lower() for t in v.split(","))
               for v in header_values(headers, name))


async def read_body(reader, writer, headers, version):
    """Read the request body (to discard or record it)."""
    te = header_values(headers, "transfer-encoding")
    cl = header_values(headers, "content-length")
    if te and cl:
        raise HttpError()  # ambiguous framing: the smuggling classic, refuse it
    chunked = False
    if te:
        codings = [c.strip().lower() for v in te for c in v.split(",") if c.strip()]
        if version == "HTTP/1.0" or not codings or codings[-1] != "chunked":
            raise HttpError(501, "Not Implemented")
        chunked = True
    length = 0
    if cl:
        values = {c.strip() for v in cl for c in v.split(",")}
        if len(values) != 1 or not DIGITS.fullmatch(next(iter(values))):
            raise HttpError()
        length = int(values.pop())
    if (chunked or length) and version == "HTTP/1.1" \
            and has_token(headers, "expect", "100-continue"):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = bytearray()
    try:
        if chunked:
            while True:
                line = await reader.readline()
                if not line.endswith(b"\n"):
                    raise HttpError()
                size_s = line.split(b";", 1)[0].strip()
                if not HEXDIGITS.fullmatch(size_s):
                    raise HttpError()
                size = int(size_s, 16)
                if size == 0:
                    break
                data = await reader.readexactly(size + 2)
                if data[-2:] != b"\r\n":
                    raise HttpError()
                if len(body) < RECORD_BODY_MAX:
                    body += data[:-2]
            while True:  # trailer section
                line = await reader.readline()
                if not line.endswith(b"\n"):
                    raise HttpError()
                if line in (b"\r\n", b"\n"):
                    break
        else:
            while length:
                data = await reader.read(min(length, 65536))
                if not data:
                    raise HttpError()
                length -= len(data)
                if len(body) < RECORD_BODY_MAX:
                    body += data
    except asyncio.IncompleteReadError:
        raise HttpError()
    except ValueError:
        raise HttpError()
    return bytes(body)


class EchoServer:
    def __init__(self, text, app_version=APP_VERSION, quiet=False, record=None):
        self.body = (text + "\n").encode()
        self.health = b'{"status":"ok"}\n'
        self.app = (f"X-App-Name: {APP_NAME}\r\nX-App-Version: {app_version}\r\n").encode()
        self.quiet = quiet
        self.record = open(record, "a", buffering=1) if record else None

    def response(self, method, path, version, headers):
        """Build the response head and body; also say whether to close after it."""
        if path == "/health":
            body, ctype = self.health, b"application/json"
        else:
            body, ctype = self.body, b"text/plain; charset=utf-8"
        conn = b""
        if version == "HTTP/1.0":
            keep = has_token(headers, "connection", "keep-alive")
            if keep:
                conn = b"Connection: keep-alive\r\n"
        else:
            keep = not has_token(headers, "connection", "close")
            if not keep:
                conn = b"Connection: close\r\n"
        head = b"".join((
            b"HTTP/1.1 200 OK\r\n", self.app,
            b"Date: ", http_date(), b"\r\n",
            b"Content-Length: ", str(len(body)).encode(), b"\r\n",
            b"Content-Type: ", ctype, b"\r\n", conn, b"\r\n"))
        return head + (b"" if method == "HEAD" else body), keep, len(body)

    def log(self, peer, method, target, version, headers, status, length, dur):
        host = (header_values(headers, "host") or [""])[0]
        ua = (header_values(headers, "user-agent") or [""])[0]
        sys.stdout.write(f"{time.strftime('%Y/%m/%d %H:%M:%S')} {host} {peer} "
                         f'"{method} {target} {version}" {status} {length} "{ua}" '
                         f"{dur * 1e6:.1f}µs\n")

    async def handle(self, reader, writer):
        peer = writer.get_extra_info("peername")
        peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "@"
        try:
            while True:
                try:
                    lines = await read_head(reader)
                    if lines is None:
                        break
                    start = time.monotonic()
                    method, target, version, headers = parse_head(lines)
                    body = await read_body(reader, writer, headers, version)
                except HttpError as e:
                    status = f"{e.status} {e.reason}"
                    body = status + (f": {e.detail}" if e.detail else "")
                    writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                 f"Connection: close\r\n\r\n{body}".encode())
                    break
                # The path, also from an absolute-form target (http://host/path?q).
                path = target
                if "://" in path:
                    path = "/" + path.split("://", 1)[1].partition("/")[2]
                path = path.split("?", 1)[0]
                data, keep, length = self.response(method, path, version, headers)
                writer.write(data)
                if self.record:
                    self.record.write(json.dumps({
                        "peer": peer, "method": method, "target": target, "version": version,
                        "headers": headers, "body": body.decode("utf-8", "replace")}) + "\n")
                if not self.quiet and path != "/health":
                    self.log(peer, method, target, version, headers, 200, length,
                             time.monotonic() - start)
                await writer.drain()
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                writer.close()
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass


async def serve(args):
    echo = EchoServer(args.text, args.app_version, args.quiet, args.record)
    servers = []
    for spec in args.listen:
        if spec.startswith("unix:"):
            path = spec[5:]
            if os.path.exists(path):
                os.unlink(path)  # a stale socket from a previous run
            servers.append(await asyncio.start_unix_server(
                echo.handle, path, limit=MAX_LINE, backlog=1024))
            os.chmod(path, 0o666)
        else:
            host, _, port = spec.rpartition(":")
            host = host.strip("[]") or None  # ":8080" listens everywhere, like Go
            servers.append(await asyncio.start_server(
                echo.handle, host, int(port), limit=MAX_LINE, backlog=1024))
    for s in servers:
        for sock in s.sockets:
            print(f"[INFO] server is listening on {sock.getsockname()}", flush=True)
    if args.pidfile:
        tmp = args.pidfile + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, args.pidfile)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()
    for spec in args.listen:
        if spec.startswith("unix:"):
            try:
                os.unlink(spec[5:])
            except OSError:
                pass
    if args.pidfile:
        try:
            os.unlink(args.pidfile)
        except OSError:
            pass


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # Accept Go's flag syntax too: -listen=:8080, -text=... (one dash).
    argv = ["-" + a if a.startswith("-") and not a.startswith("--") and len(a) > 2 else a
            for a in argv]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", action="append",
                   help="HOST:PORT, :PORT or unix:/path (repeatable; default :5678)")
    p.add_argument("--text", required=True, help="the body of every answer (plus a newline)")
    p.add_argument("--app-version", default=APP_VERSION, help="the X-App-Version value")
    p.add_argument("--pidfile", help="write our pid here once listening")
    p.add_argument("--record", help="append one JSON line per request to this file")
    p.add_argument("--quiet", action="store_true", help="no access log on stdout")
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # the access log is read live by tests
    args.listen = args.listen or [":5678"]
    try:
        asyncio.run(serve(args))
    except OSError as e:
        print(f"[ERR] server exited with: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
