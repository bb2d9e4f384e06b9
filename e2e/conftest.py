"""Fixtures shared by every e2e suite."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import ProcSet  # noqa: E402


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
