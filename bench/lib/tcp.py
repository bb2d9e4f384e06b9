#!/usr/bin/python3
"""sluice bench, `tcp` scenario: layer-4 proxying of large transfers, sluice `protocol: tcp`
against HAProxy `mode tcp` and nginx `stream {}` (when the stream module is installed: Debian's
libnginx-mod-stream), in the same run, pinned like bench.py.

    bench/lib/tcp.py        (bench/run.sh runs it after bench.py; BENCH_SCENARIOS=tcp runs only
                             it, BENCH_TCP=0 skips it)

Upstream: `sl-tcpbench serve`, an endless 256 KiB pattern on every connection. Client:
`sl-tcpbench get` with BENCH_TCP_CONNS (4) connections reading as fast as they can for
BENCH_DURATION seconds, after BENCH_WARMUP seconds of warm-up (a separate run). Both share the
client core; the proxy runs alone on the proxy core. Each proxy must first deliver 8 MiB per
connection of the exact pattern (checked byte by byte). Reported per proxy: MB/s through it and
CPU seconds of its process tree per GiB moved, with ratios to the best peer. When the client
core is the one saturated (busy c1 near 100%), MB/s is bounded by the client side and CPU/GiB is
the number to compare. Results: build/bench/tcp.json; configs and logs: build/bench/run/tcp-*/.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import procstat  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
CONF = os.path.join(ROOT, "bench", "conf")
OUT = os.path.join(ROOT, "build", "bench")
RUN = os.path.join(OUT, "run")
RESULTS = os.path.join(OUT, "tcp.json")
BIN = os.environ.get("SLUICE_BUILD", os.path.join(ROOT, "build"))
TOOL = os.path.join(BIN, "tools", "sl-tcpbench")
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
PEERS = ("haproxy", "nginx")
TARGETS = ("sluice", "haproxy", "nginx", "direct")
GIB = 1 << 30


def env_int(name, default):
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


DURATION = env_int("BENCH_DURATION", 10)
WARMUP = env_int("BENCH_WARMUP", 2)
ROUNDS = env_int("BENCH_ROUNDS", 1)
CONNS = env_int("BENCH_TCP_CONNS", 4)
PROXY_CPU = env_int("BENCH_PROXY_CPU", 0)
CLIENT_CPU = env_int("BENCH_CLIENT_CPU", 1)
PORT_BASE = env_int("BENCH_PORT_BASE", 28100) + 120
ONLY = [t for t in TARGETS if t in (os.environ.get("BENCH_ONLY", "").split(",")
                                    if os.environ.get("BENCH_ONLY", "").strip() else TARGETS)]
VERIFY = 8 << 20


class BenchError(Exception):
    pass


def log(msg=""):
    print(msg, flush=True)


class Ports:
    def __init__(self, base):
        self.next = base

    def get(self):
        while self.next < 65000:
            port, self.next = self.next, self.next + 1
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue
        raise BenchError("no free port")


def render(template, dest, values):
    with open(os.path.join(CONF, template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    with open(dest, "w") as f:
        f.write(text)
    return dest


def start(argv, cpu, wd):
    with open(os.path.join(wd, "stdout.log"), "ab") as logf:
        return subprocess.Popen(["taskset", "-c", str(cpu)] + argv, cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def wait_port(p, port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise BenchError(f"exited with status {p.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"not listening on 127.0.0.1:{port}")


def get(port, seconds, warmup=0, conns=CONNS, verify=0):
    argv = ["taskset", "-c", str(CLIENT_CPU), TOOL, "get", f"127.0.0.1:{port}",
            "--conns", str(conns), "--seconds", str(seconds), "--warmup", str(warmup)]
    if verify:
        argv += ["--verify", str(verify)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + warmup + 60)
    if r.returncode != 0:
        raise BenchError(f"sl-tcpbench get: {r.stderr.strip() or r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


class TcpBench:
    def __init__(self):
        self.ports = Ports(PORT_BASE)
        self.upstream = None
        self.uport = None
        self.results = {}

    def command(self, name, port, wd):
        """argv for a proxy, or (None, status, note) when it cannot run."""
        root = os.geteuid() == 0
        vals = {"port": port, "upstream_port": self.uport, "dir": wd,
                "user": "user root;" if root else "# not root: no user directive",
                "admin_port": self.ports.get(), "stream_module": STREAM_MODULE}
        if name == "sluice":
            exe = os.path.join(BIN, "sluice")
            if not os.access(exe, os.X_OK):
                return None, "not built", f"{exe} missing"
            conf = render("sluice-tcp.yaml", os.path.join(wd, "sluice.yaml"), vals)
            return [exe, "-c", conf], None, None
        if name == "haproxy":
            if not shutil.which("haproxy"):
                return None, "not installed", "apt-get install haproxy"
            conf = render("haproxy-tcp.cfg", os.path.join(wd, "haproxy.cfg"), vals)
            return ["haproxy", "-db", "-f", conf], None, None
        if not shutil.which("nginx"):
            return None, "not installed", "apt-get install nginx-light"
        if not os.path.exists(STREAM_MODULE):
            return None, "skipped", ("nginx has no stream module (apt-get install "
                                     "libnginx-mod-stream)")
        os.makedirs(os.path.join(wd, "tmp"), exist_ok=True)
        conf = render("nginx-tcp.conf", os.path.join(wd, "nginx.conf"), vals)
        return ["nginx", "-e", os.path.join(wd, "error.log"), "-p", wd + "/", "-c", conf], \
            None, None

    def measure(self, port, pid, r):
        if WARMUP:
            get(port, WARMUP)
        up0 = procstat.cpu_seconds(self.upstream.pid)
        k0 = procstat.cpu_core_ticks()
        c0 = procstat.cpu_seconds(pid) if pid else 0.0
        t0 = time.monotonic()
        m = get(port, DURATION)
        wall = time.monotonic() - t0
        c1 = procstat.cpu_seconds(pid) if pid else 0.0
        k1 = procstat.cpu_core_ticks()
        up1 = procstat.cpu_seconds(self.upstream.pid)
        if m["bytes"] <= 0:
            raise BenchError("no bytes moved")
        r["bytes"] = m["bytes"]
        r["seconds"] = m["seconds"]
        r["mb_s"] = round(m["bytes"] / m["seconds"] / 1e6, 1)
        if pid:
            r["cpu_s"] = round(c1 - c0, 3)
            r["cpu_s_per_gib"] = round((c1 - c0) / (m["bytes"] / GIB), 4)
            r["proxy_cpu_pct"] = round(100.0 * (c1 - c0) / wall, 1)
        r["upstream_cpu_s_per_gib"] = round((up1 - up0) / (m["bytes"] / GIB), 4)
        r["core_proxy"] = procstat.core_usage(k0, k1, PROXY_CPU, (c1 - c0) if pid else 0.0,
                                              wall)
        r["core_client"] = procstat.core_usage(k0, k1, CLIENT_CPU, 0.0, wall)

    def run_target(self, name):
        if name == "direct":
            r = {"status": "ok"}
            get(self.uport, 1, verify=VERIFY, conns=1)
            self.measure(self.uport, None, r)
            return r
        wd = os.path.join(RUN, f"tcp-{name}")
        os.makedirs(wd, exist_ok=True)
        port = self.ports.get()
        argv, status, note = self.command(name, port, wd)
        if argv is None:
            return {"status": status, "note": note}
        r = {"status": "ok", "command": argv}
        p = start(argv, PROXY_CPU, wd)
        try:
            wait_port(p, port)
            get(port, 1, verify=VERIFY)          # the exact bytes, on every connection
            self.measure(port, p.pid, r)
            if p.poll() is not None:
                raise BenchError(f"exited with status {p.returncode} during the measurement")
            r["peak_kb"] = procstat.memory(p.pid)["hwm_kb"]
        except BenchError as e:
            r = {"status": "failed", "note": f"{e} (logs: {os.path.relpath(wd, ROOT)}/)",
                 "command": argv}
        finally:
            stop(p)
        return r

    def run(self):
        for tool in ("taskset",):
            if not shutil.which(tool):
                raise BenchError(f"missing {tool}")
        if not os.access(TOOL, os.X_OK):
            raise BenchError(f"{TOOL} missing: run make")
        os.makedirs(RUN, exist_ok=True)
        self.uport = self.ports.get()
        wd = os.path.join(RUN, "tcp-upstream")
        os.makedirs(wd, exist_ok=True)
        self.upstream = start([TOOL, "serve", f"127.0.0.1:{self.uport}"], CLIENT_CPU, wd)
        try:
            wait_port(self.upstream, self.uport)
            tries = {n: [] for n in ONLY}
            for i in range(ROUNDS):
                for name in ONLY:
                    if i and tries[name][0]["status"] != "ok":
                        continue
                    r = self.run_target(name)
                    tries[name].append(r)
                    log("   " + (f"[{i + 1}/{ROUNDS}] " if ROUNDS > 1 else "") + progress(name, r))
            for name, t in tries.items():
                ok = [r for r in t if r["status"] == "ok"]
                key = (lambda r: r.get("cpu_s_per_gib", 0)) if name != "direct" \
                    else (lambda r: -r["mb_s"])
                self.results[name] = min(ok, key=key) if len(ok) == len(t) else t[0]
        finally:
            stop(self.upstream)


def progress(name, r):
    if r["status"] != "ok":
        return f"{name}: {r['status']} ({r.get('note', '')})"
    cpu = f", {r['cpu_s_per_gib']:.3f} CPU s/GiB" if "cpu_s_per_gib" in r else ""
    return f"{name}: {r['mb_s']:,.0f} MB/s{cpu}"


def best_peer(results, key, higher):
    cands = [(n, results[n][key]) for n in PEERS
             if n in results and results[n]["status"] == "ok" and results[n].get(key)]
    if not cands:
        return None, None
    return (max if higher else min)(cands, key=lambda c: c[1])


def report(results):
    lines = [f"TCP proxying (layer 4): {CONNS} connections each reading an endless stream for "
             f"{DURATION}s (warm-up {WARMUP}s); proxy alone on core {PROXY_CPU}, client + "
             f"upstream on core {CLIENT_CPU}"]
    head = ["proxy", "MB/s", "CPU s/GiB", "proxy CPU", "busy c0/c1", "peak RSS"]
    rows = []
    for name in TARGETS:
        r = results.get(name)
        if r is None:
            continue
        if r["status"] != "ok":
            rows.append([name, f"{r['status']}: {r.get('note', '')}"])
            continue
        cp, cc = r.get("core_proxy") or {}, r.get("core_client") or {}
        rows.append([name, f"{r['mb_s']:,.0f}",
                     f"{r['cpu_s_per_gib']:.3f}" if "cpu_s_per_gib" in r else "-",
                     f"{r['proxy_cpu_pct']:.0f}%" if "proxy_cpu_pct" in r else "-",
                     f"{cp.get('busy_pct', 0):.0f}%/{cc.get('busy_pct', 0):.0f}%",
                     f"{r['peak_kb'] / 1024:.1f} MiB" if "peak_kb" in r else "-"])
    widths = [max([len(head[i])] + [len(x[i]) for x in rows if len(x) > 2])
              for i in range(len(head))]
    fmt = lambda cells: "  " + "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                                         for i, c in enumerate(cells))
    lines.append(fmt(head))
    for x in rows:
        lines.append(fmt(x) if len(x) > 2 else f"  {x[0].ljust(widths[0])}  {x[1]}")
    ratios = {}
    for key, label, higher in (("mb_s", "MB/s", True), ("cpu_s_per_gib", "CPU s/GiB", False)):
        bname, bval = best_peer(results, key, higher)
        if not bname:
            continue
        for name, r in results.items():
            if name in PEERS or name == "direct" or r["status"] != "ok" or not r.get(key):
                continue
            ratio = r[key] / bval
            ratios.setdefault(name, {})[key] = {"ratio": round(ratio, 3), "best": bname,
                                                "best_value": bval}
            lines.append(f"  {name} {label} = {ratio:.2f}x best ({bname} {bval:,}) "
                         f"[{'higher' if higher else 'lower'} is better]")
    return "\n".join(lines), ratios


def main():
    if os.environ.get("BENCH_TCP", "1") == "0":
        return 0
    log("-- running tcp: " + ", ".join(ONLY))
    b = TcpBench()
    rc = 0
    try:
        b.run()
    except BenchError as e:
        log(f"bench tcp: error: {e}")
        rc = 1
    except KeyboardInterrupt:
        return 130
    text, ratios = report(b.results)
    log()
    log(text)
    log()
    os.makedirs(OUT, exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump({"config": {"duration": DURATION, "warmup": WARMUP, "conns": CONNS,
                              "rounds": ROUNDS, "proxy_cpu": PROXY_CPU, "client_cpu": CLIENT_CPU},
                   "results": b.results, "ratios_to_best_peer": ratios}, f, indent=2)
        f.write("\n")
    log(f"raw results: {os.path.relpath(RESULTS, os.getcwd())}")
    if any(r["status"] == "failed" for r in b.results.values()):
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
