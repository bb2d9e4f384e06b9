"""sluice bench: open many keep-alive client connections, one request each, then keep them idle.

Used by bench.py for the memory scenario (resident growth of a proxy for N idle keep-alive
connections) and runnable on its own:

    python3 bench/lib/idleconns.py 127.0.0.1 8080 10000 --hold 30

Each connection connects, sends one `GET /` (HTTP/1.1, keep-alive), reads one complete response
(Content-Length or chunked), checks status 200 (and the body, if given), and then stays open
and silent. At most `concurrency` connections are in flight at once so that listen backlogs do
not overflow. Closing uses SO_LINGER 0 (RST) so that the client leaves no TIME_WAIT behind.
"""

import errno
import select
import selectors
import socket
import struct
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: sluice-bench-idle\r\n\r\n"


def _response_complete(buf):
    """(complete, status, body) for an HTTP/1.1 response in buf; complete=False if partial."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False, 0, b""
    head = buf[:head_end].decode("latin-1").split("\r\n")
    try:
        status = int(head[0].split()[1])
    except (IndexError, ValueError):
        return True, -1, b""
    length, chunked = None, False
    for line in head[1:]:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v.strip())
        elif k == "transfer-encoding" and "chunked" in v.lower():
            chunked = True
    rest = buf[head_end + 4:]
    if chunked:
        body, pos = b"", 0
        while True:
            eol = rest.find(b"\r\n", pos)
            if eol < 0:
                return False, status, b""
            size = int(rest[pos:eol].split(b";")[0], 16)
            if size == 0:
                return rest.find(b"\r\n", eol + 2) >= 0, status, body
            if len(rest) < eol + 2 + size + 2:
                return False, status, b""
            body += rest[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
    if length is None:
        length = 0
    if len(rest) < length:
        return False, status, b""
    return True, status, rest[:length]


class IdleSet:
    def __init__(self):
        self.socks = []        # idle connections (one good response each)
        self.failed = 0        # connections that failed (connect error, bad status, EOF, ...)
        self.errors = {}       # reason -> count
        self.elapsed_s = 0.0

    def _fail(self, reason):
        self.failed += 1
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def alive(self):
        """How many idle connections are still open: a socket that polls readable (EOF, RST or
        unexpected bytes) or errored is counted as closed by the server."""
        p = select.poll()
        for s in self.socks:
            p.register(s.fileno(), select.POLLIN | select.POLLRDHUP | select.POLLERR | select.POLLHUP)
        dead = len(p.poll(0))
        return len(self.socks) - dead

    def close(self):
        linger = struct.pack("ii", 1, 0)
        for s in self.socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                s.close()
            except OSError:
                pass
        self.socks = []


def open_idle(host, port, n, concurrency=256, expect_body=None, timeout=60.0, request=REQUEST):
    """Open n connections as described in the module docstring; returns an IdleSet."""
    res = IdleSet()
    sel = selectors.DefaultSelector()
    state = {}          # fd -> [sock, phase, buffer]
    started = 0
    t0 = time.monotonic()
    deadline = t0 + timeout

    def start_one():
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as e:                  # EMFILE: RLIMIT_NOFILE too low for n
            res._fail(f"socket: {errno.errorcode.get(e.errno, e.errno)}")
            return
        s.setblocking(False)
        rc = s.connect_ex((host, port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            res._fail(f"connect: {errno.errorcode.get(rc, rc)}")
            return
        state[s.fileno()] = [s, "connect", b""]
        sel.register(s, selectors.EVENT_WRITE)

    def drop(fd, reason):
        s = state.pop(fd)[0]
        sel.unregister(s)
        s.close()
        res._fail(reason)

    while (started < n or state) and time.monotonic() < deadline:
        while started < n and len(state) < concurrency:
            started += 1
            start_one()
        for key, _ in sel.select(timeout=1.0):
            fd = key.fd
            st = state.get(fd)
            if st is None:
                continue
            s = st[0]
            if st[1] == "connect":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    drop(fd, f"connect: {errno.errorcode.get(err, err)}")
                    continue
                try:
                    s.send(request)  # tiny: fits the empty send buffer in one call
                except OSError as e:
                    drop(fd, f"send: {errno.errorcode.get(e.errno, e.errno)}")
                    continue
                st[1] = "read"
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                drop(fd, f"recv: {errno.errorcode.get(e.errno, e.errno)}")
                continue
            if not data:
                drop(fd, "closed before response")
                continue
            st[2] += data
            done, status, body = _response_complete(st[2])
            if not done:
                continue
            if status != 200:
                drop(fd, f"status {status}")
            elif expect_body is not None and body != expect_body:
                drop(fd, "unexpected body")
            else:
                del state[fd]
                sel.unregister(s)
                res.socks.append(s)
    for fd in list(state):
        drop(fd, "timeout")
    res.failed += n - started
    if n > started:
        res.errors["not started (timeout)"] = n - started
    sel.close()
    res.elapsed_s = time.monotonic() - t0
    return res


def main(argv):
    import argparse
    import resource
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--hold", type=float, default=10.0, help="seconds to keep them idle")
    a = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    r = open_idle(a.host, a.port, a.n, a.concurrency)
    print(f"opened {len(r.socks)} idle connections in {r.elapsed_s:.2f}s, failed {r.failed} {r.errors}")
    time.sleep(a.hold)
    print(f"still open after {a.hold:.0f}s: {r.alive()}")
    r.close()
    return 0 if r.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
