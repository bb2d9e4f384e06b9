"""Fixtures shared by every e2e suite."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import FORWARD, ProcSet, free_port, wait_port  # noqa: E402
from mockup import MockUpstream  # noqa: E402


@pytest.fixture
def procs(tmp_path):
    """Start processes with procs.start(argv); they are stopped after the test, and the test
    fails if any of them printed a sanitizer report."""
    ps = ProcSet(tmp_path)
    yield ps
    reports = ps.cleanup()
    if reports:
        pytest.fail("sanitizer reports:\n" + "\n".join(reports))


class NginxUpstream:
    """A real nginx on loopback as a fast upstream: `/` answers "ok\\n", /big is a 10 MiB file."""

    def __init__(self, tmp_path, ports):
        import os
        import subprocess
        self.dir = tmp_path / "nginx-up"
        self.dir.mkdir()
        self.ports = ports
        self.big = self.dir / "big"
        self.big.write_bytes(os.urandom(10 * 1024 * 1024))
        servers = "".join(
            f"server {{ listen 127.0.0.1:{p}; keepalive_requests 1000000;"
            f" location = / {{ return 200 'ok\\n'; }}"
            f" location = /big {{ alias {self.big}; }} }}\n" for p in ports)
        user = "user root; " if os.geteuid() == 0 else ""
        conf = (f"{user}worker_processes 1; daemon off; pid {self.dir}/nginx.pid;"
                f" error_log {self.dir}/error.log; events {{ worker_connections 4096; }}"
                f" http {{ access_log off; client_body_temp_path {self.dir};"
                f" proxy_temp_path {self.dir}; {servers} }}")
        (self.dir / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(["nginx", "-c", str(self.dir / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from helpers import wait_port
        for p in ports:
            wait_port(p)
        self.addrs = [f"127.0.0.1:{p}" for p in ports]

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def nginx_up(tmp_path):
    from helpers import free_port
    n = NginxUpstream(tmp_path, [free_port(), free_port()])
    yield n
    n.close()


@pytest.fixture(scope="session")
def certs():
    """The lab's certificates (lab/certs.sh, idempotent): a Path holding ca.crt, server.crt
    (*.pingora.local, localhost, 127.0.0.1), upstream.crt (advanced.pingora.local), client.crt,
    grpc.crt and their keys."""
    import subprocess
    from helpers import ROOT, BUILD
    out = BUILD / "lab" / "keys"
    subprocess.run([str(ROOT / "lab" / "certs.sh"), str(out)], check=True, timeout=120)
    return out


class NginxTls:
    """nginx on loopback as a TLS upstream. Each server answers its TLS view as text:
    "proto=TLSv1.3 sni=... client=<subject DN or empty> conn=<n> reqs=<n>"."""

    def __init__(self, tmp_path, certs, servers):
        import os
        import subprocess
        from helpers import free_port, wait_port
        self.dir = tmp_path / "nginx-tls"
        self.dir.mkdir()
        self.ports = {}
        blocks = []
        body = ("'proto=$ssl_protocol sni=$ssl_server_name client=$ssl_client_s_dn "
                "conn=$connection reqs=$connection_requests alpn=$server_protocol\\n'")
        for name, (cert, extra) in servers.items():
            p = free_port()
            self.ports[name] = p
            blocks.append(
                f"server {{ listen 127.0.0.1:{p} ssl http2; keepalive_requests 100000;"
                f" ssl_certificate {certs}/{cert}.crt; ssl_certificate_key {certs}/{cert}.key;"
                f" ssl_protocols TLSv1.2 TLSv1.3; {extra} location / {{ return 200 {body}; }} }}\n")
        user = "user root; " if os.geteuid() == 0 else ""
        conf = (f"{user}worker_processes 1; daemon off; pid {self.dir}/nginx.pid;"
                f" error_log {self.dir}/error.log info; events {{ worker_connections 1024; }}"
                f" http {{ access_log off; client_body_temp_path {self.dir};"
                f" default_type text/plain; {''.join(blocks)} }}")
        (self.dir / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(["nginx", "-c", str(self.dir / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for p in self.ports.values():
            wait_port(p)

    def addr(self, name):
        return f"127.0.0.1:{self.ports[name]}"

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def nginx_tls(tmp_path, certs):
    """servers: plain (upstream.crt), ipcert (server.crt, names 127.0.0.1), mtls (requires a
    client certificate from the lab CA)."""
    n = NginxTls(tmp_path, certs, {
        "plain": ("upstream", ""),
        "ipcert": ("server", ""),
        "mtls": ("upstream", f"ssl_verify_client on; ssl_client_certificate {certs}/ca.crt;"),
    })
    yield n
    n.close()


class Fwd:
    """An sl-forward under test: its port and URL; everything else is its process's (log,
    wait_log, stop, p...)."""

    def __init__(self, proc, port):
        self.proc, self.port = proc, port
        self.url = f"http://127.0.0.1:{port}"

    def __getattr__(self, name):
        return getattr(self.proc, name)

    def rss_kb(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


@pytest.fixture
def upstream():
    """The scriptable mock HTTP/1.1 upstream (mockup.py)."""
    u = MockUpstream()
    yield u
    u.close()


@pytest.fixture
def start_fwd(procs):
    """start(upstream_addr, *flags): an sl-forward (requests logged) to upstream_addr."""
    def start(upstream_addr, *extra):
        port = free_port()
        p = procs.start([FORWARD, "--listen", f"127.0.0.1:{port}", "--upstream", upstream_addr,
                         "--log-requests", *map(str, extra)], name="sl-forward")
        wait_port(port)
        return Fwd(p, port)
    return start
