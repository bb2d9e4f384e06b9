"""A scriptable HTTP/1.1 upstream for proxy tests, running in threads inside pytest.

It records every request exactly as it arrived (method, target, headers in order, body,
trailers, which connection) so tests can assert what the upstream saw, and it answers
according to the path:

  / (and any other path)  200 "hello\\n"
  /echo                 200 with the request body (Content-Length)
  /echo-chunked         200 with the request body, chunked, trailer X-Body-Length
  /headers              200, the request headers as JSON
  /status/N             status N (no body for 1xx/204/304)
  /bytes/N              N bytes of a repeating pattern (Content-Length)
  /stream/N             N bytes, chunked in 64 KiB pieces
  /close-delimited/N    N bytes, no length: the end of the connection ends the body
  /continue             "100 Continue" first, then 200
  /garbage              a non-HTTP answer
  /abort-body           announces 1000 bytes, sends 100, closes
  /abort-chunked        two chunks, then closes without the last chunk
  /huge-header          a 100 KiB header
  /never                reads the request, never answers
  /slow-read            reads the request body 16 KiB at a time with pauses
  /close-once           on a connection that already served a request: close without answer
  /conn-close           answers with Connection: close and closes
"""
import json
import socketserver
import threading
import time

PATTERN = bytes(range(256)) * 256  # 64 KiB


def pattern(n):
    out = bytearray()
    while len(out) < n:
        out += PATTERN[: n - len(out)]
    return bytes(out)


class Request:
    def __init__(self, method, target, version, headers, body, trailers, conn_id, index):
        self.method, self.target, self.version = method, target, version
        self.headers, self.body, self.trailers = headers, body, trailers
        self.conn_id, self.index = conn_id, index  # index: nth request on its connection

    def header(self, name):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return vals[0] if vals else None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def __repr__(self):
        return f"<{self.method} {self.target} conn={self.conn_id} #{self.index}>"


class _Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def read_until(self, sep, limit=1 << 20):
        while sep not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("too long")
            self.fill()
        i = self.buf.index(sep) + len(sep)
        out = bytes(self.buf[:i])
        del self.buf[:i]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


class MockUpstream:
    SCRIPTED = {"echo", "slow-read", "echo-chunked", "headers", "status", "bytes", "stream",
                "close-delimited", "continue", "garbage", "abort-body", "abort-chunked",
                "huge-header", "never", "close-once", "conn-close"}

    def __init__(self, host="127.0.0.1", port=0):
        self.requests = []
        self.connections = 0
        self.lock = threading.Lock()
        self.slow_read_delay = 0.02
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                outer._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            request_queue_size = 512  # many concurrent upstream connections (HTTP/2 tests)

        self.server = Server((host, port), Handler)
        self.port = self.server.server_address[1]
        self.addr = f"{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def last(self):
        with self.lock:
            return self.requests[-1]

    def wait_requests(self, n, timeout=5):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.01)
        raise TimeoutError(f"upstream saw {len(self.requests)} requests, wanted {n}")

    # ---- serving -------------------------------------------------------------------------

    def _serve(self, sock):
        with self.lock:
            self.connections += 1
            conn_id = self.connections
        c = _Conn(sock)
        index = 0
        try:
            while True:
                req = self._read_request(c, conn_id, index)
                if req is None:
                    return
                with self.lock:
                    self.requests.append(req)
                index += 1
                if not self._answer(c, req):
                    return
        except (EOFError, ConnectionError, ValueError, OSError):
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _read_request(self, c, conn_id, index):
        try:
            head = c.read_until(b"\r\n\r\n")
        except EOFError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            if not line:
                continue
            k, _, v = line.partition(":")
            headers.append((k, v.strip()))
        names = {k.lower(): v for k, v in headers}
        body, trailers = bytearray(), []
        path = target.split("?")[0]
        if path == "/slow-read":
            n = int(names.get("content-length", "0"))
            got = bytearray()
            while len(got) < n:
                take = min(16384, n - len(got))
                got += c.read_exact(take)
                time.sleep(self.slow_read_delay)
            body = got
        elif "chunked" in names.get("transfer-encoding", "").lower():
            while True:
                size_line = c.read_until(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while True:
                        t = c.read_until(b"\r\n")
                        if t == b"\r\n":
                            break
                        k, _, v = t.decode("latin-1").strip().partition(":")
                        trailers.append((k, v.strip()))
                    break
                body += c.read_exact(size)
                c.read_exact(2)
        elif "content-length" in names:
            body = c.read_exact(int(names["content-length"]))
        return Request(method, target, version, headers, bytes(body), trailers, conn_id, index)

    @staticmethod
    def _send(c, status, body=b"", headers=(), reason="OK", head_only=False):
        head = f"HTTP/1.1 {status} {reason}\r\n"
        for k, v in headers:
            head += f"{k}: {v}\r\n"
        if status >= 200 and status not in (204, 304):
            head += f"Content-Length: {len(body)}\r\n"
        c.sock.sendall(head.encode() + b"\r\n" + (b"" if head_only else body))

    def _answer(self, c, req):
        """Answers req; returns False to close the connection."""
        path = req.target.split("?")[0]
        parts = path.strip("/").split("/")
        head_only = req.method == "HEAD"
        s = c.sock
        if path == "/" or parts[0] not in self.SCRIPTED:
            self._send(c, 200, b"hello\n", [("Content-Type", "text/plain")], head_only=head_only)
        elif path in ("/echo", "/slow-read"):
            self._send(c, 200, req.body, [("Content-Type", "application/octet-stream")])
        elif path == "/echo-chunked":
            out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Body-Length\r\n\r\n"
            for i in range(0, len(req.body), 50000):
                piece = req.body[i:i + 50000]
                out += b"%x\r\n" % len(piece) + piece + b"\r\n"
            out += b"0\r\nX-Body-Length: %d\r\n\r\n" % len(req.body)
            s.sendall(out)
        elif path == "/headers":
            body = json.dumps(req.headers).encode()
            self._send(c, 200, body, [("Content-Type", "application/json")])
        elif parts[0] == "status":
            code = int(parts[1])
            self._send(c, code, b"" if code in (204, 304) else b"status\n", reason="X")
        elif parts[0] == "bytes":
            self._send(c, 200, pattern(int(parts[1])), head_only=head_only)
        elif parts[0] == "stream":
            n = int(parts[1])
            s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            # pattern() repeats every 64 KiB, so each full piece is PATTERN itself.
            for i in range(0, n, 65536):
                piece = PATTERN[: min(65536, n - i)]
                s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        elif parts[0] == "close-delimited":
            n = int(parts[1])
            s.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + pattern(n))
            return False
        elif path == "/continue":
            s.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._send(c, 200, b"after continue\n")
        elif path == "/garbage":
            s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
            return False
        elif path == "/abort-body":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
            time.sleep(0.05)
            return False
        elif path == "/abort-chunked":
            s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n")
            time.sleep(0.05)
            return False
        elif path == "/huge-header":
            s.sendall(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100000 + b"\r\nContent-Length: 2\r\n\r\nok")
        elif path == "/never":
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
            return False
        elif path == "/close-once":
            if req.index > 0:
                return False
            self._send(c, 200, b"first\n")
        elif path == "/conn-close":
            self._send(c, 200, b"bye\n", [("Connection", "close")])
            return False
        return True
