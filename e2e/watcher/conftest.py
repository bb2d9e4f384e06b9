"""Fixtures for sluice-watcher's end-to-end tests.

`kube` is the Kubernetes API emulator (e2e/kube) over TLS with a bearer token; `gateway` a real
build/sluice with no routes; `upstream` makes named HTTP upstreams on loopback (each answers its
name); `run_watcher` starts build/sluice-watcher against them and waits until its first config
is applied.
"""
import http.server
import json
import socketserver
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gw import Gateway
from helpers import WATCHER, free_port
from kube.apiserver import KubeAPIServer


class NamedUpstream:
    """An HTTP/1.1 keep-alive server answering "<name>\\n" to every request; it counts them."""

    def __init__(self, name, ip="127.0.0.1", port=0):
        self.name = name
        self.ip = ip
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.hits += 1
                body = (outer.name + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Host-Seen", self.headers.get("Host", ""))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((ip, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def kube_certs(tmp_path_factory):
    return tmp_path_factory.mktemp("watcher-kube-certs")


@pytest.fixture
def kube(tmp_path, kube_certs):
    srv = KubeAPIServer(tls=True, token="t", state_dir=tmp_path / "kube", bookmark_interval=0.5,
                        cert_dir=kube_certs)
    srv.start()
    yield srv
    srv.close()


@pytest.fixture
def upstreams():
    """upstreams(name): a NamedUpstream on its own loopback address (127.0.0.2, .3, ...), all on
    one port, so that one EndpointSlice port fits them all, as for the pods of a Deployment."""
    made = []
    port = free_port()

    def make(name):
        u = NamedUpstream(name, f"127.0.0.{len(made) + 2}", port)
        made.append(u)
        return u

    yield make
    for u in made:
        u.close()


@pytest.fixture
def gateway(procs, tmp_path):
    return Gateway(procs, tmp_path, {}, threads=1)


def http_get(url, host=None, timeout=5, headers=None):
    """(status, body text, headers) of a GET; status 0 when the connection failed."""
    h = dict(headers or {})
    if host:
        h["Host"] = host
    req = urllib.request.Request(url, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace"), dict(e.headers)
    except (urllib.error.URLError, ConnectionError, OSError):
        return 0, "", {}


def wait_for(pred, timeout=10.0, what="condition", interval=0.02):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Watcher:
    def __init__(self, proc, healthz_port):
        self.proc = proc
        self.healthz = f"http://127.0.0.1:{healthz_port}/healthz"

    def log(self):
        return self.proc.log()

    def wait_log(self, pattern, timeout=10, count=1):
        return self.proc.wait_log(pattern, timeout=timeout, count=count)


@pytest.fixture
def run_watcher(procs, tmp_path, kube):
    """run_watcher(gateway, *extra_args, env=None, name=..., wait=True) -> Watcher."""
    token_file = tmp_path / "kube-token"
    token_file.write_text(kube.token if hasattr(kube, "token") else "t")

    def start(gw, *extra, env=None, name="watcher", wait=True, kube_args=True, push=True):
        hp = free_port()
        argv = [WATCHER, "--source", "kubernetes", "--healthz-listen", f"127.0.0.1:{hp}",
                "--debounce", "20ms", "--sync-check-period", "300ms",
                "--election-namespace", "default"]
        if kube_args:
            argv += ["--api-server", kube.url, "--token-file", token_file,
                     "--ca-file", kube.ca_file]
        if push and gw is not None:
            argv += ["--push", f"http://127.0.0.1:{gw.admin_port}/config"]
        argv += list(extra)
        full_env = {"SLUICE_LOG": "debug"}
        full_env.update(env or {})
        p = procs.start(argv, name=name, env=full_env)
        w = Watcher(p, hp)
        if wait:
            p.wait_log(r"first config applied", timeout=15)
        return w

    start.token_file = token_file
    return start


def gw_config(gw):
    status, _, body = gw.admin_call("GET", "/config")
    return json.loads(body)


ROOT = Path(__file__).resolve().parent.parent.parent
