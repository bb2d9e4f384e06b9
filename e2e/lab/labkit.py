"""Helpers for tests that use the lab ("Pingora City", SPEC §9, lab/).

The lab is one network namespace per host (sl-dev, sl-blue, ...; see lab/up.sh).
Tests run commands inside a host, as the guide runs `docker exec pingora_<host>`:

    from labkit import lab_run, LabProcess, IP

    r = lab_run("client1", "curl", "-s", f"http://{IP['blue']}:8080/")
    assert r.stdout == "'Response from BLUE'\\n"

    with LabProcess("dev", "build/examples/06_simple_forward") as proxy:
        proxy.wait_port(6146)                   # listening on 172.28.0.10:6146
        r = lab_run("client1", "curl", "-s", "http://172.28.0.10:6146")
    assert "Forwarding" in proxy.output         # stopped with SIGTERM on exit

Everything here needs root (namespaces). In pytest, use the `lab` fixture of
e2e/lab/conftest.py, which brings the lab up once per session (or skips when not
root). Other test directories can import this module after
`sys.path.insert(0, "<repo>/e2e/lab")`.
"""
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "lab"
BUILD = REPO / "build" / "lab"
KEYS = BUILD / "keys"          # the same files appear as /keys inside every host
RUN = BUILD / "run"            # pid files and logs of the lab's services
DNS_HOSTS = RUN / "dns" / "hosts"  # rewrite it, then service("reload", "dns")
PROCS = RUN / "procs"          # default logs of LabProcess programs
PY = "/usr/bin/python3"        # Debian's interpreter, with grpcio

HOSTS = ("dns", "dev", "blue", "green", "advanced", "grpc", "client1", "client2")
IP = {"dns": "172.28.0.2", "dev": "172.28.0.10", "blue": "172.28.0.20",
      "green": "172.28.0.21", "advanced": "172.28.0.22", "grpc": "172.28.0.23",
      "client1": "172.28.0.30", "client2": "172.28.0.31"}
NAME = {h: f"{h}.pingora.local" for h in HOSTS}
SERVICES = ("dns", "blue", "green", "advanced", "grpc")


def is_root():
    return os.geteuid() == 0


def lab_is_up():
    """True when every namespace exists and every service runs."""
    if not all(Path(f"/run/netns/sl-{h}").exists() for h in HOSTS + ("net",)):
        return False
    return service("status").returncode == 0


def lab_up():
    """Run lab/up.sh (idempotent); raise with its output if it fails."""
    r = subprocess.run([str(LAB / "up.sh")], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"lab/up.sh failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def lab_down():
    r = subprocess.run([str(LAB / "down.sh")], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"lab/down.sh failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def leftovers():
    """What lab/down.sh should have removed but did not (empty when clean)."""
    left = [f"namespace sl-{h}" for h in HOSTS + ("net",) if Path(f"/run/netns/sl-{h}").exists()]
    left += [f"/etc/netns/sl-{h}" for h in HOSTS if Path(f"/etc/netns/sl-{h}").exists()]
    if Path("/keys").is_dir() and not any(Path("/keys").iterdir()):
        left.append("/keys (empty mount point)")
    left += [f"{p.name} (pid file)" for p in RUN.glob("*.pid")]
    return left


def service(action, *names):
    """lab/svc ACTION [NAME...]: start stop restart pause resume reload status pid."""
    return subprocess.run([str(LAB / "svc"), action, *names],
                          capture_output=True, text=True, timeout=60)


def lab_run(host, *cmd, check=False, timeout=30, input=None, text=True, **kw):
    """Run CMD inside HOST and wait; return the CompletedProcess (output captured).

    The exit code, stdin (input=...), stdout and stderr are CMD's own. Inside,
    /keys holds the lab certificates; on dev SSL_CERT_FILE=/keys/ca.crt. With
    text=True (default) output is decoded as UTF-8 but line endings are kept as
    sent ("\r\n" stays), so raw HTTP heads can be checked exactly.
    """
    argv = [str(LAB / "run"), host, *map(str, cmd)]
    kw.setdefault("capture_output", True)
    if text and isinstance(input, str):
        input = input.encode()
    r = subprocess.run(argv, check=check, timeout=timeout, input=input,
                       cwd=kw.pop("cwd", REPO), **kw)
    if text:
        for attr in ("stdout", "stderr"):
            if isinstance(getattr(r, attr), bytes):
                setattr(r, attr, getattr(r, attr).decode("utf-8", "replace"))
    return r


def curl(host, *args, timeout=10):
    """lab_run(host, "curl", "-sS", "--max-time", TIMEOUT, *args); TIMEOUT may be 0.5."""
    return lab_run(host, "curl", "-sS", "--max-time", str(timeout), *args, timeout=timeout + 10)


def parse_http(raw):
    """Split `curl -i` output into (status, {lower-name: [values]}, body).

    With several heads (100 Continue, redirects followed), the last one counts.
    """
    head, _, body = raw.partition("\r\n\r\n")
    while body.startswith("HTTP/") and "\r\n\r\n" in body:
        head, _, body = body.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    return status, headers, body


def wait_until(pred, timeout=5.0, interval=0.05, what="condition"):
    """Poll PRED until it returns a true value (returned); raise after TIMEOUT."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_open(from_host, ip, port):
    """True if a TCP connect from FROM_HOST to IP:PORT succeeds (nc -z)."""
    return lab_run(from_host, "nc", "-z", "-w", "1", ip, port, timeout=10).returncode == 0


class LabProcess:
    """A long-running program inside a lab host (a proxy under test, a mock).

    Started with Popen through lab/run, which execs all the way down, so
    self.proc.pid IS the program: stop() sends it SIGTERM (then SIGKILL) and
    returns its exit code. Output (stdout and stderr, merged) goes to a log file
    (never a pipe that could fill up); read it with .output. Use as a context
    manager, or call stop() yourself.
    """

    def __init__(self, host, *cmd, log=None, env=None, cwd=None):
        self.host, self.cmd = host, [str(c) for c in cmd]
        self.host_ip = IP[host]
        name = Path(self.cmd[0]).name
        self.log = Path(log) if log else PROCS / f"{host}-{name}-{os.getpid()}-{id(self):x}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        full_env = None
        if env:
            full_env = dict(os.environ)
            full_env.update(env)
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen([str(LAB / "run"), host, *self.cmd],
                                     stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, env=full_env,
                                     cwd=cwd or REPO)
        self.returncode = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"LabProcess({self.host}: {shlex.join(self.cmd)}, pid {self.proc.pid})"

    @property
    def pid(self):
        return self.proc.pid

    @property
    def output(self):
        """Everything the program printed so far."""
        return self.log.read_text(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def wait_port(self, port, ip=None, from_host="client1", timeout=10.0):
        """Wait until IP:PORT (default: this host's address) accepts connections."""
        ip = ip or self.host_ip

        def ready():
            if not self.alive():
                raise RuntimeError(f"{self!r} exited with {self.proc.returncode}:\n{self.output}")
            return port_open(from_host, ip, port)
        return wait_until(ready, timeout, 0.1, f"{ip}:{port} ({self!r})")

    def wait_output(self, text, timeout=10.0):
        """Wait until TEXT appears in the program's output."""
        return wait_until(lambda: text in self.output, timeout, 0.05, f"{text!r} from {self!r}")

    def send_signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Send SIG (default SIGTERM), wait up to TIMEOUT, then SIGKILL. Return the exit code."""
        if self.returncode is None:
            if self.alive():
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.returncode = self.proc.returncode
            self._logf.close()
        return self.returncode
