"""A small HTTP/2 client for tests, on the `h2` package (python3-h2): full control of frames,
windows, resets and timing, over plain TCP (h2c by prior knowledge) or TLS with ALPN h2."""
import socket
import ssl
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


class Response:
    def __init__(self, stream_id):
        self.stream_id = stream_id
        self.headers = []
        self.informational = []
        self.body = bytearray()
        self.trailers = []
        self.ended = False
        self.reset = None  # the RST_STREAM error code, if the server reset the stream

    @property
    def status(self):
        for k, v in self.headers:
            if k == b":status":
                return int(v)
        return None

    def header(self, name):
        name = name.encode() if isinstance(name, str) else name
        for k, v in self.headers:
            if k == name:
                return v.decode()
        return None


class H2Client:
    def __init__(self, port, host="127.0.0.1", tls_ca=None, server_hostname="localhost",
                 window=None, settings=None, timeout=10.0, preface=True):
        raw = socket.create_connection((host, port), timeout=timeout)
        if tls_ca is not None:
            ctx = ssl.create_default_context(cafile=str(tls_ca))
            ctx.set_alpn_protocols(["h2"])
            self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
            assert self.sock.selected_alpn_protocol() == "h2", self.sock.selected_alpn_protocol()
        else:
            self.sock = raw
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                        validate_outbound_headers=False,
                                        normalize_outbound_headers=False,
                                        validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.responses = {}
        self.goaway = None  # (error_code, last_stream_id)
        self.closed = False
        self.window_updates = True
        if preface:
            self.conn.initiate_connection()
            if settings:
                self.conn.update_settings(settings)
            if window is not None:
                self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
            self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", headers=(), body=None, end=True, authority="test.local",
                scheme="http"):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", scheme),
                (":authority", authority)] + list(headers)
        self.conn.send_headers(sid, hdrs, end_stream=end and body is None)
        self.responses[sid] = Response(sid)
        if body is not None:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid, body, end=True):
        """Sends body within the flow-control windows, reading while it waits."""
        view = memoryview(body)
        while len(view):
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.flush()
                self.pump(0.5)
                if self.closed or self.responses[sid].reset is not None:
                    return
                continue
            n = min(window, len(view))
            self.conn.send_data(sid, bytes(view[:n]))
            view = view[n:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def pump(self, timeout=1.0):
        """Reads what arrives within timeout and handles it; returns the events."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except (socket.timeout, ssl.SSLWantReadError):
            return []
        except (ConnectionResetError, ssl.SSLError, OSError):
            self.closed = True
            return []
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        for ev in events:
            self.handle(ev)
        self.flush()
        return events

    def handle(self, ev):
        if isinstance(ev, h2.events.ResponseReceived):
            self.responses[ev.stream_id].headers = ev.headers
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            self.responses[ev.stream_id].informational.append(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            r = self.responses.get(ev.stream_id)
            if r is not None:
                r.body += ev.data
            if self.window_updates:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            self.responses[ev.stream_id].trailers = ev.headers
        elif isinstance(ev, h2.events.StreamEnded):
            self.responses[ev.stream_id].ended = True
        elif isinstance(ev, h2.events.StreamReset):
            r = self.responses.get(ev.stream_id)
            if r is not None:
                r.reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = (ev.error_code, ev.last_stream_id)

    def wait(self, sids, timeout=30.0):
        """Until every stream in sids ended or was reset (or the connection closed)."""
        if isinstance(sids, int):
            sids = [sids]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.closed:
            if all(self.responses[s].ended or self.responses[s].reset is not None for s in sids):
                break
            self.pump(0.2)
        return [self.responses[s] for s in sids]

    def wait_closed(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.closed:
            self.pump(0.2)
        return self.closed

    def get(self, path, **kw):
        sid = self.request(path, **kw)
        return self.wait(sid)[0]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
