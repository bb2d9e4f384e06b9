#!/usr/bin/python3
"""sluice bench: runs sluice, nginx, HAProxy and h2o as reverse proxies to one shared upstream
and compares them (SPEC §10). Called by bench/run.sh; see bench/README.md for the method.

    bench/lib/bench.py            run the benchmark (environment variables: see README)
    bench/lib/bench.py --cleanup  kill what a previous run left behind (bench/run.sh's trap)

Everything it writes goes under build/bench/. Debian's /usr/bin/python3, stdlib only.
"""

import http.client
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import idleconns  # noqa: E402
import procstat  # noqa: E402
import report  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
CONF = os.path.join(ROOT, "bench", "conf")
OUT = os.path.join(ROOT, "build", "bench")
RUN = os.path.join(OUT, "run")
TLS = os.path.join(OUT, "tls")
PIDFILE = os.path.join(OUT, "pids")
RESULTS = os.path.join(OUT, "results.json")
WRK_LUA = os.path.join(HERE, "wrk_report.lua")

BODY = "Hello, world!"          # the upstream's fixed 13-byte response body
PEERS = ("nginx", "haproxy", "h2o")
TARGETS = ("nginx", "haproxy", "h2o", "sluice", "direct")   # table order
SCENARIOS = ("h1", "h2", "idle", "tls")
BINARIES = {"nginx": "nginx", "haproxy": "haproxy", "h2o": "h2o"}
APT = {"nginx": "nginx-light", "haproxy": "haproxy", "h2o": "h2o", "wrk": "wrk",
       "h2load": "nghttp2-client", "taskset": "util-linux", "curl": "curl", "openssl": "openssl"}
DEFAULT_SLUICE_BIN = "build/tools/sl-forward"
DEFAULT_SLUICE_ARGS = "--listen 127.0.0.1:{port} --upstream 127.0.0.1:{upstream_port}"
# HTTP/2 over TLS (ALPN h2) in front of the same HTTP/1.1 upstream.
# The idle pool covers the 320 concurrent streams, like nginx's keepalive 1024.
DEFAULT_SLUICE_H2_ARGS = DEFAULT_SLUICE_ARGS + " --tls-cert {cert} --tls-key {key} --h2 --pool-size 1024"
TLSLOAD = "build/tools/sl-tlsload"
# One TLS 1.3 suite (and its TLS 1.2 twin) for every server, so all do the same crypto work.
TLS13_CIPHERS = "TLS_AES_128_GCM_SHA256"
TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256"
# The `tls` scenario's three handshake kinds: the listener (certificate) each one uses, the one
# signature algorithm the client offers, and what the server's certificate must be.
TLS_GROUP = "X25519"
TLS_KINDS = {
    "ecdsa": {"title": "full handshake, ECDSA P-256 certificate", "listener": "ecdsa",
              "sigalgs": "ecdsa_secp256r1_sha256", "key": "EC-256", "resume": False},
    "rsa": {"title": "full handshake, RSA-2048 certificate", "listener": "rsa",
            "sigalgs": "rsa_pss_rsae_sha256", "key": "RSA-2048", "resume": False},
    "resume": {"title": "resumed handshake (session ticket), ECDSA P-256 listener",
               "listener": "ecdsa", "sigalgs": "ecdsa_secp256r1_sha256", "key": "EC-256",
               "resume": True},
}
# A resumed row where the server resumed fewer of the offered sessions than this gets a note
# (its handshakes are partly full ones); below NO_RESUMPTION the row fails: tickets do not work.
MIN_RESUMPTION = 0.99
NO_RESUMPTION = 0.05


class BenchError(Exception):
    pass


def log(msg=""):
    print(msg, flush=True)


def env_int(name, default, minimum=0):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BenchError(f"{name}={raw!r}: not an integer")
    if v < minimum:
        raise BenchError(f"{name}={v}: must be >= {minimum}")
    return v


def env_list(name, allowed, default):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return list(default)
    items = [x.strip() for x in raw.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad:
        raise BenchError(f"{name}: unknown {', '.join(bad)} (known: {', '.join(allowed)})")
    return [x for x in allowed if x in items]       # canonical order


class Config:
    def __init__(self):
        self.duration = env_int("BENCH_DURATION", 10, 1)
        self.warmup = env_int("BENCH_WARMUP", 2, 0)
        self.conns = env_int("BENCH_CONNS", 50, 1)
        self.h2_clients = env_int("BENCH_H2_CLIENTS", 32, 1)
        self.h2_streams = env_int("BENCH_H2_STREAMS", 10, 1)
        self.idle_conns = env_int("BENCH_IDLE_CONNS", 10000, 1)
        self.rounds = env_int("BENCH_ROUNDS", 1, 1)
        self.proxy_cpu = env_int("BENCH_PROXY_CPU", 0)
        self.client_cpu = env_int("BENCH_CLIENT_CPU", 1)
        self.port_base = env_int("BENCH_PORT_BASE", 28100, 1024)
        self.only = env_list("BENCH_ONLY", TARGETS, TARGETS)
        self.scenarios = env_list("BENCH_SCENARIOS", SCENARIOS, SCENARIOS)
        self.sluice_bin = os.environ.get("SLUICE_BENCH_BIN", "").strip() or DEFAULT_SLUICE_BIN
        self.sluice_cmd = os.environ.get("SLUICE_BENCH_CMD", "").strip()
        self.sluice_h2_cmd = os.environ.get("SLUICE_BENCH_H2_CMD", "").strip()
        self.sluice_tls_cmd = os.environ.get("SLUICE_BENCH_TLS_CMD", "").strip()
        self.tls_conns = env_int("BENCH_TLS_CONNS", 50, 1)
        self.tls_request = env_int("BENCH_TLS_REQUEST", 0) != 0
        self.tls_reuse_tickets = env_int("BENCH_TLS_REUSE_TICKETS", 0) != 0

    def as_dict(self):
        return dict(self.__dict__)


# ---- processes ----------------------------------------------------------------------------

def _starttime(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        return data[data.rindex(")") + 2:].split()[19]
    except (OSError, IndexError, ValueError):
        return None


class Procs:
    """Every long-running process the bench starts (proxies, upstream). Each gets its own
    session, so a whole tree (nginx master + worker) is stopped with one killpg. The live set
    is mirrored to build/bench/pids (pid + start time) for run.sh's trap."""

    def __init__(self):
        self.live = {}

    def _save(self):
        tmp = PIDFILE + ".tmp"
        with open(tmp, "w") as f:
            for pid in self.live:
                f.write(f"{pid} {_starttime(pid)}\n")
        os.replace(tmp, PIDFILE)

    def start(self, argv, cpu, log_path):
        with open(log_path, "ab") as logf:
            p = subprocess.Popen(["taskset", "-c", str(cpu)] + argv, cwd=ROOT,
                                 stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        self.live[p.pid] = p
        self._save()
        return p

    def stop(self, p, grace=3.0):
        if p.pid not in self.live:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        try:                                   # leftovers of the group (workers, helpers)
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        del self.live[p.pid]
        self._save()

    def run_tool(self, argv, timeout):
        """Run a load generator to completion in its own session, listed in the pid file so
        that it is killed too if this script dies; returns (returncode, stdout, stderr)."""
        p = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        self.live[p.pid] = p
        self._save()
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{argv[3] if len(argv) > 3 else argv[0]} did not finish "
                             f"within {timeout} s")
        finally:
            self.stop(p, grace=0.5)
        return p.returncode, out, err

    def stop_all(self):
        for p in list(self.live.values()):
            self.stop(p, grace=1.0)


def cleanup_from_pidfile():
    """Kill process groups listed in build/bench/pids whose start time still matches."""
    try:
        with open(PIDFILE) as f:
            entries = [line.split() for line in f if line.strip()]
    except OSError:
        return
    victims = []
    for e in entries:
        if len(e) == 2 and e[0].isdigit() and _starttime(int(e[0])) == e[1]:
            victims.append(int(e[0]))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in victims:
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if victims and sig == signal.SIGTERM:
            time.sleep(0.5)
    try:
        os.unlink(PIDFILE)
    except OSError:
        pass


# ---- helpers ------------------------------------------------------------------------------

class Ports:
    def __init__(self, base):
        self.next = base

    def get(self):
        while self.next < 65000:
            port = self.next
            self.next += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
            finally:
                s.close()
        raise BenchError("no free port")


def render(template, dest, values):
    with open(os.path.join(CONF, template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    left = sorted(set(re.findall(r"@[a-z_]+@", text)))
    if left:
        raise BenchError(f"{template}: unfilled placeholders {left}")
    with open(dest, "w") as f:
        f.write(text)
    return dest


def wait_ready(p, port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            return f"exited with status {p.returncode} before listening"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return None
        except OSError:
            time.sleep(0.05)
    return f"not listening on 127.0.0.1:{port} after {timeout:.0f} s"


def verify(port, tls):
    """One curl through the proxy; None if it returned the upstream's body (over h2 for TLS)."""
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
    argv = ["curl", "-sS", "--max-time", "5", "-w", "\n@@CURL %{http_code} %{http_version}"]
    if tls:
        argv += ["-k", "--http2"]
    try:
        r = subprocess.run(argv + [url], capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "curl timed out"
    out = r.stdout.decode("utf-8", "replace")
    body, _, tail = out.rpartition("\n@@CURL ")
    if r.returncode != 0 or not tail:
        return f"curl failed: {r.stderr.decode(errors='replace').strip() or r.returncode}"
    code, version = (tail.split() + ["", ""])[:2]
    if code != "200":
        return f"curl got HTTP {code}"
    if body != BODY:
        return f"curl got body {body[:60]!r}, expected {BODY!r}"
    if tls and version != "2":
        return f"curl negotiated HTTP/{version}, expected HTTP/2"
    return None


def verify_tls(port, cert):
    """One curl over HTTP/1.1 + TLS to a `tls` scenario listener, verifying its certificate
    (self-signed, names localhost and 127.0.0.1) and the upstream's body; None if all is well."""
    argv = ["curl", "-sS", "--max-time", "5", "--http1.1", "--cacert", cert, "-w",
            "\n@@CURL %{http_code}", f"https://localhost:{port}/",
            "--resolve", f"localhost:{port}:127.0.0.1"]
    try:
        r = subprocess.run(argv, capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "curl timed out"
    body, _, code = r.stdout.decode("utf-8", "replace").rpartition("\n@@CURL ")
    if r.returncode != 0 or not code:
        return f"curl failed: {r.stderr.decode(errors='replace').strip() or r.returncode}"
    if code.strip() != "200" or body != BODY:
        return f"curl got HTTP {code.strip()} {body[:60]!r}, expected 200 {BODY!r}"
    return None


def upstream_counters(port):
    """(accepts, requests) of the upstream nginx (stub_status), minus this query itself."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", "/__upstream_status")
        text = c.getresponse().read().decode()
    finally:
        c.close()
    m = re.search(r"\n\s*(\d+)\s+(\d+)\s+(\d+)\s*\n", text)
    if not m:
        raise BenchError(f"upstream stub_status unreadable: {text!r}")
    return int(m.group(1)), int(m.group(3))


def log_tail(wd, lines=4):
    out = []
    for name in ("error.log", "stdout.log"):
        try:
            with open(os.path.join(wd, name), errors="replace") as f:
                out += [x.strip() for x in f.readlines()[-lines:] if x.strip()]
        except OSError:
            pass
    return " | ".join(out[-lines:])


def percentile(sorted_vals, q):
    if not sorted_vals:
        return None
    k = max(0, math.ceil(q / 100.0 * len(sorted_vals)) - 1)
    return float(sorted_vals[min(k, len(sorted_vals) - 1)])


def first_line(argv):
    try:
        r = subprocess.run(argv, capture_output=True, timeout=5)
        text = (r.stdout + r.stderr).decode(errors="replace").strip()
        return text.splitlines()[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"


# ---- the bench ----------------------------------------------------------------------------

class Bench:
    def __init__(self, cfg):
        self.cfg = cfg
        self.procs = Procs()
        self.ports = Ports(cfg.port_base)
        self.upstream = None
        self.uport = None
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.maxconn = cfg.idle_conns + 1000
        self.cert = os.path.join(TLS, "cert.pem")
        self.key = os.path.join(TLS, "key.pem")
        self.pem = os.path.join(TLS, "combined.pem")
        self.rsa_cert = os.path.join(TLS, "rsa-cert.pem")
        self.rsa_key = os.path.join(TLS, "rsa-key.pem")
        self.rsa_pem = os.path.join(TLS, "rsa-combined.pem")
        self.data = {"meta": {}, "config": cfg.as_dict(), "scenarios": {}}
        self.failures = []

    # -- setup --
    def setup(self):
        cfg = self.cfg
        allowed = os.sched_getaffinity(0)
        if cfg.proxy_cpu not in allowed or cfg.client_cpu not in allowed \
                or cfg.proxy_cpu == cfg.client_cpu:
            first = min(allowed)
            log(f"WARNING: cores {cfg.proxy_cpu}/{cfg.client_cpu} not both usable "
                f"(allowed: {sorted(allowed)}); everything runs on core {first}: numbers are "
                "not comparable with a 2-core run")
            cfg.proxy_cpu = cfg.client_cpu = first
        os.sched_setaffinity(0, {cfg.client_cpu})      # this script, curl, wrk, h2load, idle client
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.nofile = hard

        need = ["taskset", "curl", "nginx"]
        if "h1" in cfg.scenarios:
            need.append("wrk")
        if "h2" in cfg.scenarios or "tls" in cfg.scenarios:
            need += ["openssl"]
        if "h2" in cfg.scenarios:
            need += ["h2load"]
        missing = [t for t in need if not shutil.which(t)]
        if missing:
            raise BenchError("missing tools: " + ", ".join(missing) + " (apt-get install "
                             + " ".join(sorted({APT[t] for t in missing})) + ", or: make deps)")

        shutil.rmtree(RUN, ignore_errors=True)
        os.makedirs(RUN)
        os.makedirs(TLS, exist_ok=True)
        if "tls" in cfg.scenarios and not os.access(os.path.join(ROOT, TLSLOAD), os.X_OK):
            raise BenchError(f"{TLSLOAD} is not built (make)")
        if "h2" in cfg.scenarios or "tls" in cfg.scenarios:
            self.make_cert()
        if "tls" in cfg.scenarios:
            self.make_cert(rsa=True)
        self.meta()

    def make_cert(self, rsa=False):
        """The self-signed certificate (localhost, 127.0.0.1) of the TLS listeners: ECDSA P-256,
        or RSA-2048 for the `tls` scenario; made once, kept in build/bench/tls/."""
        cert, key, pem = ((self.rsa_cert, self.rsa_key, self.rsa_pem) if rsa
                          else (self.cert, self.key, self.pem))
        if all(os.path.exists(p) for p in (cert, key, pem)):
            return
        newkey = ["-newkey", "rsa:2048"] if rsa else \
            ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        r = subprocess.run(
            ["openssl", "req", "-x509"] + newkey + [
             "-nodes", "-keyout", key, "-out", cert, "-days", "3650",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            capture_output=True)
        if r.returncode != 0:
            raise BenchError("openssl: " + r.stderr.decode(errors="replace").strip())
        with open(pem, "w") as out:
            for p in (cert, key):
                with open(p) as f:
                    out.write(f.read())

    def meta(self):
        cfg = self.cfg
        try:
            rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain"],
                                   capture_output=True, text=True).stdout.strip()
            rev = (rev or "?") + ("-dirty" if dirty else "")
        except OSError:
            rev = "?"
        model = "?"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        self.data["meta"] = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "git": rev, "kernel": platform.release(), "cpu_model": model,
            "cpus": os.cpu_count(), "loadavg_start": load,
            "proxy_cpu": cfg.proxy_cpu, "client_cpu": cfg.client_cpu, "nofile": self.nofile,
            "versions": {
                "nginx": first_line(["nginx", "-v"]), "haproxy": first_line(["haproxy", "-v"]),
                "h2o": first_line(["h2o", "--version"]), "wrk": first_line(["wrk", "-v"]),
                "h2load": first_line(["h2load", "--version"]),
            },
        }
        m = self.data["meta"]
        log(f"sluice bench  {m['date']}  git {rev}  Linux {m['kernel']}  {model} x{m['cpus']}")
        log(f"  proxy under test alone on core {cfg.proxy_cpu}; load generator + upstream "
            f"(nginx, 1 worker, {len(BODY)}-byte body) on core {cfg.client_cpu}")
        ver = lambda k: (re.search(r"\d+\.\d+[\w.+~-]*", m["versions"][k]) or [None])[0]
        log(f"  peers: nginx {ver('nginx')}, HAProxy {ver('haproxy')}, h2o {ver('h2o')}; "
            f"load: wrk {ver('wrk')}, h2load {ver('h2load')}")
        if float(load[0]) > 0.5:
            log(f"  NOTE: load average {' '.join(load)} at start: other work on this machine "
                "makes the numbers noisy (see 'other' in results.json core usage)")
        log()

    def start_upstream(self):
        self.uport = self.ports.get()
        wd = os.path.join(RUN, "upstream")
        os.makedirs(os.path.join(wd, "tmp"))
        conf = render("upstream-nginx.conf", os.path.join(wd, "nginx.conf"),
                      self.values(wd, self.uport, worker_connections=4096))
        self.upstream = self.procs.start(["nginx", "-e", os.path.join(wd, "error.log"),
                                          "-p", wd + "/", "-c", conf],
                                         self.cfg.client_cpu, os.path.join(wd, "stdout.log"))
        why = wait_ready(self.upstream, self.uport) or verify(self.uport, tls=False)
        if why:
            raise BenchError(f"upstream nginx: {why} ({log_tail(wd)})")

    def values(self, wd, port, **extra):
        root = os.geteuid() == 0
        v = {"port": port, "upstream_port": self.uport, "dir": wd, "cert": self.cert,
             "key": self.key, "pem": self.pem, "rsa_cert": self.rsa_cert, "rsa_key": self.rsa_key,
             "rsa_pem": self.rsa_pem, "body": BODY, "nofile": self.nofile,
             "maxconn": self.maxconn, "worker_connections": self.maxconn,
             "nginx_user": "user root;" if root else "# not root: no user directive",
             "h2o_user": "user: root" if root else "# not root: no user directive"}
        v.update(extra)
        return v

    # -- one proxy instance --
    def command(self, name, mode, port, wd, extra=None):
        """(argv, None, None) to start `name`, or (None, status, note) when it cannot run.
        `extra`: more template values (the `tls` mode's rsa_port and admin_port)."""
        extra = extra or {}
        if name in BINARIES:
            if not shutil.which(BINARIES[name]):
                return None, "not installed", f"apt-get install {APT[name]}"
            os.makedirs(os.path.join(wd, "tmp"), exist_ok=True)
            vals = self.values(wd, port, **extra)
            if name == "nginx":
                conf = render(f"nginx-{mode}.conf", os.path.join(wd, "nginx.conf"), vals)
                return ["nginx", "-e", os.path.join(wd, "error.log"), "-p", wd + "/",
                        "-c", conf], None, None
            if name == "haproxy":
                conf = render(f"haproxy-{mode}.cfg", os.path.join(wd, "haproxy.cfg"), vals)
                return ["haproxy", "-db", "-f", conf], None, None
            conf = render(f"h2o-{mode}.conf", os.path.join(wd, "h2o.conf"), vals)
            return ["h2o", "-c", conf], None, None

        # sluice: a command template; {port} {upstream_port} {cert} {key} are filled in.
        cfg = self.cfg
        if mode == "tls":
            return self.sluice_tls_command(port, wd, extra)
        if mode == "h2":
            tmpl = cfg.sluice_h2_cmd
            if not tmpl:
                binary = os.path.join(ROOT, cfg.sluice_bin)
                if not os.access(binary, os.X_OK):
                    return None, "not built", f"{cfg.sluice_bin} missing"
                tmpl = shlex.quote(binary) + " " + DEFAULT_SLUICE_H2_ARGS
        else:
            tmpl = cfg.sluice_cmd
            if not tmpl:
                binary = os.path.join(ROOT, cfg.sluice_bin)
                if not os.access(binary, os.X_OK):
                    return None, "not built", f"{cfg.sluice_bin} missing"
                tmpl = shlex.quote(binary) + " " + DEFAULT_SLUICE_ARGS
        text = (tmpl.replace("{port}", str(port)).replace("{upstream_port}", str(self.uport))
                .replace("{cert}", self.cert).replace("{key}", self.key))
        argv = shlex.split(text)
        exe = argv[0] if "/" in argv[0] else shutil.which(argv[0])
        if not exe or not os.access(os.path.join(ROOT, exe), os.X_OK):
            return None, "failed", f"{argv[0]}: not found or not executable"
        return argv, None, None

    def sluice_tls_command(self, port, wd, extra):
        """The gateway with bench/conf/sluice-tls.yaml, or SLUICE_BENCH_TLS_CMD (placeholders
        {conf} (that config, rendered), {port} {rsa_port} {admin_port} {upstream_port} {cert}
        {key} {rsa_cert} {rsa_key})."""
        conf = render("sluice-tls.yaml", os.path.join(wd, "sluice.yaml"),
                      self.values(wd, port, **extra))
        tmpl = self.cfg.sluice_tls_cmd
        if not tmpl:
            binary = os.path.join(ROOT, "build", "sluice")
            if not os.access(binary, os.X_OK):
                return None, "not built", "build/sluice missing"
            return [binary, "-c", conf], None, None
        vals = {"conf": conf, "port": port, "upstream_port": self.uport, "cert": self.cert,
                "key": self.key, "rsa_cert": self.rsa_cert, "rsa_key": self.rsa_key, **extra}
        for k, v in vals.items():
            tmpl = tmpl.replace("{" + k + "}", str(v))
        argv = shlex.split(tmpl)
        exe = argv[0] if "/" in argv[0] else shutil.which(argv[0])
        if not exe or not os.access(os.path.join(ROOT, exe), os.X_OK):
            return None, "failed", f"{argv[0]}: not found or not executable"
        return argv, None, None

    def run_target(self, scen, name):
        cfg = self.cfg
        if name == "direct":
            r = {"status": "ok", "warnings": [], "command": None}
            self.measure(scen, r, None, self.uport)
            return r
        mode = "h2" if scen == "h2" else "h1"
        wd = os.path.join(RUN, f"{scen}-{name}")
        os.makedirs(wd, exist_ok=True)
        port = self.ports.get()
        argv, status, note = self.command(name, mode, port, wd)
        if argv is None:
            return {"status": status, "note": note}
        r = {"status": "ok", "warnings": [], "command": argv, "port": port}
        p = self.procs.start(argv, cfg.proxy_cpu, os.path.join(wd, "stdout.log"))
        try:
            why = wait_ready(p, port) or verify(port, tls=(mode == "h2"))
            if why:
                raise BenchError(why)
            r["memory_start"] = procstat.memory(p.pid)
            self.measure(scen, r, p, port)
            if p.poll() is not None:
                raise BenchError(f"exited with status {p.returncode} during the measurement")
            r["memory_end"] = procstat.memory(p.pid)
            r["peak_kb"] = r["memory_end"]["hwm_kb"]
        except BenchError as e:
            tail = log_tail(wd)
            r = {"status": "failed", "note": f"{e}" + (f" [{tail}]" if tail else "")
                 + f" (logs: {os.path.relpath(wd, ROOT)}/)", "command": argv}
        finally:
            self.procs.stop(p)
        return r

    def run_tls_target(self, name):
        """One proxy in the `tls` scenario: started once with its ECDSA and RSA listeners,
        checked with curl on both, then measured for each handshake kind. Returns
        {kind: row}; a proxy that cannot run gets the same failed row for every kind."""
        wd = os.path.join(RUN, f"tls-{name}")
        os.makedirs(wd, exist_ok=True)
        ports = {"ecdsa": self.ports.get(), "rsa": self.ports.get()}
        extra = {"rsa_port": ports["rsa"], "admin_port": self.ports.get()}
        argv, status, note = self.command(name, "tls", ports["ecdsa"], wd, extra)
        if argv is None:
            return {k: {"status": status, "note": note} for k in TLS_KINDS}
        rows = {}
        p = self.procs.start(argv, self.cfg.proxy_cpu, os.path.join(wd, "stdout.log"))
        try:
            why = (wait_ready(p, ports["ecdsa"]) or wait_ready(p, ports["rsa"])
                   or verify_tls(ports["ecdsa"], self.cert)
                   or verify_tls(ports["rsa"], self.rsa_cert))
            if why:
                raise BenchError(why)
            mem0 = procstat.memory(p.pid)
            for kind, spec in TLS_KINDS.items():
                r = {"status": "ok", "warnings": [], "command": argv,
                     "port": ports[spec["listener"]], "memory_start": mem0}
                try:
                    if p.poll() is not None:
                        raise BenchError(f"exited with status {p.returncode}")
                    self.measure_tls(r, p, ports[spec["listener"]], kind)
                    if p.poll() is not None:
                        raise BenchError(f"exited with status {p.returncode} during the "
                                         "measurement")
                    r["memory_end"] = procstat.memory(p.pid)
                    r["peak_kb"] = r["memory_end"]["hwm_kb"]
                except BenchError as e:
                    r = self.failed_row(e, wd, argv)
                rows[kind] = r
        except BenchError as e:
            failed = self.failed_row(e, wd, argv)
            rows = {k: failed for k in TLS_KINDS}
        finally:
            self.procs.stop(p)
        return rows

    @staticmethod
    def failed_row(e, wd, argv):
        tail = log_tail(wd)
        return {"status": "failed", "note": f"{e}" + (f" [{tail}]" if tail else "")
                + f" (logs: {os.path.relpath(wd, ROOT)}/)", "command": argv}

    def measure_tls(self, r, p, port, kind):
        """sl-tlsload against one listener: a new connection per handshake, BENCH_WARMUP s of
        warm-up inside the same run, then BENCH_DURATION s measured. The proxy's CPU time is
        sampled when the tool says the measured window starts and when it exits."""
        cfg, spec = self.cfg, TLS_KINDS[kind]
        argv = ["taskset", "-c", str(cfg.client_cpu), os.path.join(ROOT, TLSLOAD),
                "-c", str(cfg.tls_conns), "-d", str(cfg.duration), "-w", str(cfg.warmup),
                "--tls", "1.3", "--groups", TLS_GROUP, "--ciphersuites", TLS13_CIPHERS,
                "--sigalgs", spec["sigalgs"], "--sni", "localhost", "--timeout", "10000"]
        if spec["resume"]:
            argv.append("--resume")
            if cfg.tls_reuse_tickets:
                argv.append("--reuse-tickets")
        if cfg.tls_request:
            argv.append("--request")
        argv.append(f"127.0.0.1:{port}")
        tool = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        self.procs.live[tool.pid] = tool
        self.procs._save()
        try:
            err_lines = []
            deadline = time.monotonic() + cfg.warmup + 30
            while True:                      # until "measuring" (the end of the warm-up)
                line = tool.stderr.readline().decode(errors="replace")
                if not line or time.monotonic() > deadline:
                    raise BenchError(f"sl-tlsload never started measuring: {''.join(err_lines)}")
                if "measuring" in line:
                    break
                err_lines.append(line)
            k0 = procstat.cpu_core_ticks()
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            c0 = procstat.cpu_seconds(p.pid)
            up0 = procstat.cpu_seconds(self.upstream.pid)
            t0 = time.monotonic()
            try:
                out, err = tool.communicate(timeout=cfg.duration + 60)
            except subprocess.TimeoutExpired:
                raise BenchError("sl-tlsload did not finish")
            t1 = time.monotonic()
            c1 = procstat.cpu_seconds(p.pid)
            up1 = procstat.cpu_seconds(self.upstream.pid)
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            k1 = procstat.cpu_core_ticks()
        finally:
            self.procs.stop(tool, grace=0.5)
        text = out.decode(errors="replace")
        with open(os.path.join(RUN, "tlsload.log"), "a") as f:
            f.write(f"$ {' '.join(argv)}\n{text}{''.join(err_lines)}{err.decode(errors='replace')}\n")
        try:
            m = json.loads(text.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError(f"sl-tlsload failed (status {tool.returncode}): "
                             f"{err.decode(errors='replace').strip()[:200]}")
        hs = m["handshakes"]
        if hs <= 0:
            raise BenchError(f"no handshake completed: {m.get('first_errors')}")
        wall = t1 - t0
        cpu = c1 - c0
        # The load generator's own CPU time is in its JSON (it is not reaped by the time the
        # client core is read, so RUSAGE_CHILDREN would miss it).
        client_s = m["client_cpu_s"] + (up1 - up0) + (ru1.ru_utime + ru1.ru_stime
                                                      - ru0.ru_utime - ru0.ru_stime)
        r.update({
            "tool": "sl-tlsload", "kind": kind, "handshakes": hs, "requests": hs,
            "rps": m["handshakes_per_s"], "duration_s": m["duration_s"], "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3), "cpu_us_per_hs": round(cpu * 1e6 / hs, 1),
            "hs_per_core_s": round(hs / cpu, 0) if cpu > 0 else None,
            "proxy_cpu_pct": round(100.0 * cpu / wall, 1),
            "loadgen_cpu_pct": m["client_cpu_pct"],
            "client_cpu_us_per_hs": m["client_cpu_us_per_handshake"],
            "p50_us": m["latency_us"]["p50"], "p90_us": m["latency_us"]["p90"],
            "p99_us": m["latency_us"]["p99"], "max_us": m["latency_us"]["max"],
            "full": m["full"], "resumed": m["resumed"], "sessions_offered": m["sessions_offered"],
            "resumption_rate": m["resumption_rate"], "tickets_per_conn": m["tickets_per_conn"],
            "errors_total": m["failures_total"], "failures": m["failures"],
            "first_errors": m["first_errors"], "non_2xx": m["failures"]["status"],
            "unclean_closes": m["unclean_closes"], "close_errors": m["close_errors"],
            "responses_ok": m["responses_ok"], "negotiated": m["tls"],
        })
        cp = procstat.core_usage(k0, k1, cfg.proxy_cpu, cpu, wall)
        cc = procstat.core_usage(k0, k1, cfg.client_cpu, client_s, wall)
        r["core_proxy"], r["core_client"] = cp, cc
        neg = m["tls"] or {}
        want = {"version": "TLSv1.3", "cipher": TLS13_CIPHERS, "group": TLS_GROUP.lower(),
                "peer_key": spec["key"]}
        wrong = {k: neg.get(k) for k, v in want.items() if neg.get(k) != v}
        if wrong:
            raise BenchError(f"negotiated {wrong}, expected {want}: not the same crypto")
        rate = m["resumption_rate"] or 0
        if spec["resume"] and rate < NO_RESUMPTION:
            raise BenchError(f"resumed {m['resumed']:,} of {m['sessions_offered']:,} sessions "
                             f"offered ({rate * 100:.1f}%): session tickets do not work")
        if spec["resume"] and rate < MIN_RESUMPTION:
            r["warnings"].append(
                f"resume: only {rate * 100:.1f}% of the offered sessions were resumed, the rest "
                f"were full handshakes ({m['tickets_per_conn']:.2f} tickets per connection; "
                "sl-tlsload uses a TLS 1.3 ticket once, as OpenSSL, browsers and curl do, so a "
                "server that issues no new ticket on a resumed connection gets a full handshake "
                "every other time): hs/s and CPU/hs are not those of resumptions alone")
        for core, use, what in ((cfg.proxy_cpu, cp, "proxy"), (cfg.client_cpu, cc,
                                                                "load-generator")):
            if use and use["other_pct"] > 10:
                r["warnings"].append(f"{what} core {core} was {use['other_pct']:.0f}% busy with "
                                     "other processes during the measurement (noisy)")
        if cc and cc["busy_pct"] >= 95 and r["proxy_cpu_pct"] < 90:
            r["warnings"].append(
                f"{kind}: the load-generator core was saturated ({cc['busy_pct']:.0f}% busy, "
                f"sl-tlsload {m['client_cpu_us_per_handshake']:.0f} µs/handshake) while the "
                f"proxy used {r['proxy_cpu_pct']:.0f}%: handshakes/s is the client's limit; "
                "compare CPU/handshake and hs/s per core")
        if m["failures_total"]:
            r["warnings"].append(f"{kind}: {m['failures_total']:,} failed connections "
                                 f"{m['first_errors']}")

    # -- measurements --
    def measure(self, scen, r, p, port):
        if scen == "idle":
            return self.measure_idle(r, p, port)
        url = f"{'https' if scen == 'h2' else 'http'}://127.0.0.1:{port}/"
        load = self.wrk if scen == "h1" else self.h2load
        if self.cfg.warmup:
            w = load(url, self.cfg.warmup)
            if w["errors_total"] or w["non_2xx"]:
                r["warnings"].append(f"warm-up had {w['errors_total']} errors, "
                                     f"{w['non_2xx']} non-2xx")
        pid = p.pid if p else None
        u0 = upstream_counters(self.uport)
        up0 = procstat.cpu_seconds(self.upstream.pid)
        k0 = procstat.cpu_core_ticks()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        c0 = procstat.cpu_seconds(pid) if pid else None
        t0 = time.monotonic()
        m = load(url, self.cfg.duration)
        t1 = time.monotonic()
        c1 = procstat.cpu_seconds(pid) if pid else None
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        k1 = procstat.cpu_core_ticks()
        up1 = procstat.cpu_seconds(self.upstream.pid)
        u1 = upstream_counters(self.uport)
        r.update(m)
        ok = m["ok_requests"]
        if ok <= 0:
            raise BenchError(f"no successful responses ({m['errors_total']} errors, "
                             f"{m['non_2xx']} non-2xx)")
        wall = t1 - t0
        r["wall_s"] = round(wall, 3)
        r["rps"] = round(ok / m["duration_s"], 1)
        if pid:
            r["cpu_s"] = round(c1 - c0, 3)
            r["cpu_us_per_req"] = round((c1 - c0) * 1e6 / ok, 2)
            r["proxy_cpu_pct"] = round(100.0 * (c1 - c0) / wall, 1)
        r["upstream_new_conns"] = max(0, u1[0] - u0[0] - 1)
        r["upstream_requests"] = max(0, u1[1] - u0[1] - 1)
        r["upstream_cpu_us_per_req"] = round((up1 - up0) * 1e6 / ok, 2)
        # Who used the two cores: the proxy on its core; load generator (reaped child, so in
        # RUSAGE_CHILDREN), upstream and this script on the client core; the rest is noise.
        rus = lambda a, b: (b.ru_utime + b.ru_stime) - (a.ru_utime + a.ru_stime)
        loadgen_s = rus(ru0[0], ru1[0])
        client_s = loadgen_s + (up1 - up0) + rus(ru0[1], ru1[1])
        r["loadgen_cpu_pct"] = round(100.0 * loadgen_s / wall, 1)
        cp = procstat.core_usage(k0, k1, self.cfg.proxy_cpu, (c1 - c0) if pid else 0.0, wall)
        cc = procstat.core_usage(k0, k1, self.cfg.client_cpu, client_s, wall)
        r["core_proxy"], r["core_client"] = cp, cc
        for core, use, what in ((self.cfg.proxy_cpu, cp if pid else None, "proxy"),
                                (self.cfg.client_cpu, cc, "load-generator")):
            if use and use["other_pct"] > 10:
                r["warnings"].append(f"{what} core {core} was {use['other_pct']:.0f}% busy with "
                                     "other processes during the measurement (noisy)")
        if pid and cp and cc and r["proxy_cpu_pct"] < 90 and cc["busy_pct"] < 95 \
                and cp["other_pct"] <= 10 and cc["other_pct"] <= 10:
            r["warnings"].append(
                f"neither the proxy ({r['proxy_cpu_pct']:.0f}% CPU) nor the load-generator core "
                f"({cc['busy_pct']:.0f}% busy) was saturated and no other process was seen: "
                "either the proxy waits (Nagle/delayed ACK, timers, blocking calls) or the "
                "host took the time; rerun to tell")
        if m["errors_total"] or m["non_2xx"]:
            r["warnings"].append(f"{m['errors_total']:,} socket errors and {m['non_2xx']:,} "
                                 "non-2xx responses: req/s counts successful responses only")

    def wrk(self, url, secs):
        c = self.cfg
        argv = ["taskset", "-c", str(c.client_cpu), "wrk", "-t1", f"-c{c.conns}", f"-d{secs}s",
                "--latency", "-s", WRK_LUA, url]
        rc, out, err = self.procs.run_tool(argv, secs + 60)
        text, err = out.decode(errors="replace"), err.decode(errors="replace")
        with open(os.path.join(RUN, "wrk.log"), "a") as f:
            f.write(f"$ {' '.join(argv)}\n{text}{err}\n")
        m = re.search(r"^WRKJSON (.*)$", text, re.M)
        if rc != 0 or not m:
            raise BenchError(f"wrk failed (status {rc}): {err.strip()[:200]}")
        j = json.loads(m.group(1))
        e = j["errors"]
        return {
            "tool": "wrk", "requests": j["requests"], "non_2xx": e["status"],
            "errors_total": e["connect"] + e["read"] + e["write"] + e["timeout"],
            "errors": e, "ok_requests": j["requests"] - e["status"],
            "duration_s": j["duration_us"] / 1e6,
            "bytes_per_response": round(j["bytes"] / max(1, j["requests"]), 1),
            "p50_us": j["latency_us"]["p50"], "p90_us": j["latency_us"]["p90"],
            "p99_us": j["latency_us"]["p99"], "p999_us": j["latency_us"]["p999"],
            "max_us": j["latency_us"]["max"], "mean_us": j["latency_us"]["mean"],
        }

    def h2load(self, url, secs):
        c = self.cfg
        logf = os.path.join(RUN, "h2load-requests.log")
        argv = ["taskset", "-c", str(c.client_cpu), "h2load", "-t1", f"-c{c.h2_clients}",
                f"-m{c.h2_streams}", "-D", str(secs), f"--log-file={logf}",
                f"--tls13-ciphers={TLS13_CIPHERS}", f"--ciphers={TLS12_CIPHERS}", url]
        rc, out, err = self.procs.run_tool(argv, secs + 60)
        text, err = out.decode(errors="replace"), err.decode(errors="replace")
        with open(os.path.join(RUN, "h2load.log"), "a") as f:
            f.write(f"$ {' '.join(argv)}\n{text}{err}\n")
        fin = re.search(r"finished in ([\d.]+)(m?s),", text)
        req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                        r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
        if not (fin and req and codes):
            raise BenchError(f"h2load failed (status {rc}): {(text + err).strip()[-300:]}")
        if not re.search(r"Application protocol: h2\b", text):
            raise BenchError("h2load did not negotiate h2 over TLS")
        dur = float(fin.group(1)) / (1000.0 if fin.group(2) == "ms" else 1.0)
        total, started, done, succ, failed, errored, tmo = map(int, req.groups())
        c2, c3, c4, c5 = map(int, codes.groups())
        lat = []
        try:
            with open(logf) as f:
                for line in f:
                    parts = line.split("\t")
                    if len(parts) >= 3:
                        lat.append(int(parts[2]))
            os.unlink(logf)
        except OSError:
            pass
        lat.sort()
        tls = re.search(r"Protocol: (\S+)\s+Cipher: (\S+)", text)
        return {
            "tool": "h2load", "requests": done, "non_2xx": c3 + c4 + c5,
            "errors_total": errored + tmo,
            "errors": {"failed": failed, "errored": errored, "timeout": tmo,
                       "started": started, "total": total, "succeeded": succ},
            "ok_requests": c2, "duration_s": dur,
            "tls": {"protocol": tls.group(1), "cipher": tls.group(2)} if tls else None,
            "p50_us": percentile(lat, 50), "p90_us": percentile(lat, 90),
            "p99_us": percentile(lat, 99), "p999_us": percentile(lat, 99.9),
            "max_us": float(lat[-1]) if lat else None,
            "mean_us": round(sum(lat) / len(lat), 1) if lat else None,
        }

    def measure_idle(self, r, p, port):
        n = min(self.cfg.idle_conns, self.nofile - 500)
        if n < self.cfg.idle_conns:
            r["warnings"].append(f"RLIMIT_NOFILE {self.nofile}: measured {n:,} connections "
                                 f"instead of {self.cfg.idle_conns:,}")
        body = BODY.encode()
        warm = idleconns.open_idle("127.0.0.1", port, 200, expect_body=body)
        warm.close()
        time.sleep(0.5)
        before = procstat.memory(p.pid)
        c0 = procstat.cpu_seconds(p.pid)
        idle = idleconns.open_idle("127.0.0.1", port, n, expect_body=body)
        try:
            c1 = procstat.cpu_seconds(p.pid)
            time.sleep(1.0)
            after = procstat.memory(p.pid)
            alive = idle.alive()
            opened = len(idle.socks)
        finally:
            idle.close()
        time.sleep(1.0)
        closed = procstat.memory(p.pid)
        r.update({
            "requested": n, "opened": opened, "alive": alive, "failed": idle.failed,
            "failures": idle.errors, "open_s": round(idle.elapsed_s, 2),
            "before": before, "after": after, "after_close": closed,
            "growth_rss_kb": after["rss_kb"] - before["rss_kb"],
            "growth_pss_kb": after["pss_kb"] - before["pss_kb"],
            "cpu_us_per_conn": round((c1 - c0) * 1e6 / max(1, opened), 1),
            "requests": n, "errors_total": idle.failed, "non_2xx": 0,
        })
        if alive:
            r["bytes_per_conn"] = round((after["pss_kb"] - before["pss_kb"]) * 1024 / alive)
        if idle.failed:
            r["warnings"].append(f"{idle.failed:,} of {n:,} connections failed: {idle.errors}")
        if alive < opened:
            r["warnings"].append(f"{opened - alive:,} idle connections were closed by the proxy "
                                 "before the measurement")
        if alive == 0:
            raise BenchError("no idle connection survived")

    # -- main loop --
    def run(self):
        cfg = self.cfg
        titles = {
            "h1": f"HTTP/1.1 keep-alive: wrk -t1 -c{cfg.conns} -d{cfg.duration}s "
                  f"(warm-up {cfg.warmup}s), {len(BODY)}-byte body",
            "h2": f"HTTP/2 over TLS: h2load -t1 -c{cfg.h2_clients} -m{cfg.h2_streams} "
                  f"-D {cfg.duration} (warm-up {cfg.warmup}s), {TLS13_CIPHERS}, ECDSA P-256",
            "idle": f"Memory: {cfg.idle_conns:,} idle keep-alive connections "
                    "(one request each, then idle)",
            "tls": f"TLS handshakes: sl-tlsload -c{cfg.tls_conns} -d{cfg.duration} (warm-up "
                   f"{cfg.warmup}s), a new connection per handshake"
                   + (", one request each" if cfg.tls_request else ", no request")
                   + f"; TLS 1.3, {TLS_GROUP}, {TLS13_CIPHERS}, session tickets"
                   + (" (reused)" if cfg.tls_reuse_tickets else " (each used once)"),
        }
        self.start_upstream()
        for scen in cfg.scenarios:
            if scen == "tls":
                self.run_tls(titles[scen])
                continue
            targets = [t for t in cfg.only if scen == "h1" or t != "direct"]
            log(f"-- running {scen}: {', '.join(targets)}")
            # Rounds go round-robin over the proxies, so that a burst of outside noise hits
            # one round of each rather than all rounds of one; the best round is kept.
            rounds = cfg.rounds if scen in ("h1", "h2") else 1
            tries = {name: [] for name in targets}
            for i in range(rounds):
                for name in targets:
                    if i and tries[name][0]["status"] != "ok":
                        continue
                    r = self.run_target(scen, name)
                    tries[name].append(r)
                    log("   " + (f"[{i + 1}/{rounds}] " if rounds > 1 else "")
                        + self.progress(scen, name, r))
            rows = {name: self.pick(t) for name, t in tries.items()}
            for name, r in rows.items():
                if r["status"] in ("failed", "not installed"):
                    self.failures.append(f"{scen}/{name}: {r['status']}: {r.get('note', '')}")
            text, rat = report.render(scen, titles[scen], rows, cfg)
            log()
            log(text)
            log()
            self.data["scenarios"][scen] = {"title": titles[scen], "results": rows,
                                            "ratios_to_best_peer": rat}
            self.save()

    def run_tls(self, title):
        """The `tls` scenario: every proxy, each measured for every handshake kind, in
        BENCH_ROUNDS round-robin rounds (each proxy's best round per kind is kept)."""
        cfg = self.cfg
        targets = [t for t in cfg.only if t != "direct"]
        log(f"-- running tls: {', '.join(targets)} (each: {', '.join(TLS_KINDS)})")
        tries = {name: {k: [] for k in TLS_KINDS} for name in targets}
        for i in range(cfg.rounds):
            for name in targets:
                if i and all(t[0]["status"] != "ok" for t in tries[name].values()):
                    continue
                rows = self.run_tls_target(name)
                for kind, r in rows.items():
                    tries[name][kind].append(r)
                log("   " + (f"[{i + 1}/{cfg.rounds}] " if cfg.rounds > 1 else "")
                    + f"{name}: " + "; ".join(
                        f"{kind} " + (f"{r['rps']:,.0f} hs/s, {r['cpu_us_per_hs']:.0f} µs CPU/hs"
                                      if r["status"] == "ok" else r["status"])
                        for kind, r in rows.items()))
        results = {kind: {name: self.pick(tries[name][kind], "cpu_us_per_hs")
                          for name in targets} for kind in TLS_KINDS}
        for name in targets:
            bad = {k: results[k][name] for k in TLS_KINDS
                   if results[k][name]["status"] in ("failed", "not installed")}
            if bad:
                k, r = next(iter(bad.items()))
                self.failures.append(f"tls/{name} ({', '.join(bad)}): {r['status']}: "
                                     f"{r.get('note', '')}")
        text, rat = report.render_tls(title, results, {k: v["title"] + f" ({v['sigalgs']})"
                                                       for k, v in TLS_KINDS.items()})
        log()
        log(text)
        log()
        self.data["scenarios"]["tls"] = {
            "title": title, "kinds": {k: dict(v) for k, v in TLS_KINDS.items()},
            "results": results, "ratios": rat}
        self.save()

    @staticmethod
    def pick(tries, key_name=None):
        """The best of several rounds: lowest CPU/req (highest req/s without a proxy process);
        a failed round makes the whole row failed. All rounds stay in the JSON."""
        bad = [r for r in tries if r["status"] != "ok"]
        if bad or len(tries) == 1:
            return bad[0] if bad else tries[0]
        key_name = key_name or ("cpu_us_per_req" if "cpu_us_per_req" in tries[0] else None)
        key = (lambda r: r[key_name]) if key_name else (lambda r: -r["rps"])
        best = dict(min(tries, key=key))
        best["rounds"] = [{k: r.get(k) for k in ("rps", key_name or "cpu_us_per_req",
                                                 "proxy_cpu_pct", "p50_us", "p99_us", "non_2xx",
                                                 "errors_total")}
                          for r in tries]
        return best

    @staticmethod
    def progress(scen, name, r):
        if r["status"] != "ok":
            return f"{name}: {r['status']}" + (f" ({r['note']})" if r.get("note") else "")
        if scen == "idle":
            return (f"{name}: {r['alive']:,} idle conns, PSS +{r['growth_pss_kb'] / 1024:.1f} MiB"
                    f" ({r.get('bytes_per_conn', 0):,} B/conn)")
        cpu = f", {r['cpu_us_per_req']:.1f} µs CPU/req" if r.get("cpu_us_per_req") else ""
        return f"{name}: {r['rps']:,.0f} req/s{cpu}"

    def save(self):
        with open(RESULTS + ".tmp", "w") as f:
            json.dump(self.data, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(RESULTS + ".tmp", RESULTS)


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv):
    if argv[1:] == ["--cleanup"]:
        cleanup_from_pidfile()
        return 0
    if len(argv) > 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    # run.sh starts this in the background (so that it can forward signals), where SIGINT
    # would be inherited as ignored: install the handlers explicitly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    os.makedirs(OUT, exist_ok=True)
    cleanup_from_pidfile()                       # leftovers of a killed earlier run
    bench = None
    rc = 0
    try:
        bench = Bench(Config())
        bench.setup()
        bench.run()
    except KeyboardInterrupt:
        log("\ninterrupted: stopping everything")
        rc = 130
    except BenchError as e:
        log(f"bench: error: {e}")
        rc = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):   # a second ^C must not
            signal.signal(sig, signal.SIG_IGN)                       # cut the cleanup short
        if bench is not None:
            bench.procs.stop_all()
            if bench.data["scenarios"]:
                bench.data["meta"]["interrupted"] = rc == 130
                bench.data["failures"] = bench.failures
                bench.save()
    if bench is None:
        return rc or 1
    if bench.data["scenarios"]:
        log(f"raw results: {os.path.relpath(RESULTS, os.getcwd())}; "
            f"configs and logs: {os.path.relpath(RUN, os.getcwd())}/")
    if rc == 0 and bench.failures:
        log("FAILED: " + "; ".join(bench.failures))
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
