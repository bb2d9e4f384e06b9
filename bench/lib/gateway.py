#!/usr/bin/python3
"""sluice bench, gateway part: what the declarative gateway costs on top of the engine, how the
router scales, and how long a big reconfiguration takes.

    bench/lib/gateway.py        (bench/run.sh runs it after bench.py unless BENCH_GATEWAY=0)

Rows, all pinned like bench.py (proxy alone on core 0, wrk and the upstream on core 1):
  engine        build/tools/sl-forward, the minimal forwarder on the engine
  gateway-1     build/sluice with one route
  gateway-10    10 routes (the request matches the last prefix)
  gateway-10k   10,000 routes and 2,000 upstreams (same request)
Then a host name backend against an ip:port one (one route each, measured in turns, the lowest
CPU/req of each kept): `upstream.bench:PORT` answered by a dnsmasq on loopback with a long TTL, so
every request finds a warm cache in its worker's resolver (the lookup cost left is the cache
probe). Then a reconfiguration: PUT /config of 10,000 routes and 2,000 upstreams into a running gateway
under load, reporting the control thread's apply time, the gateway's RSS before and after, and
the load's latency while it happens. Results go to build/bench/gateway.json.
"""
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import procstat  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "build", "bench")
RUN = os.path.join(OUT, "run", "gateway")
DURATION = int(os.environ.get("BENCH_DURATION", "10"))
PROXY_CPU = os.environ.get("BENCH_PROXY_CPU", "0")
CLIENT_CPU = os.environ.get("BENCH_CLIENT_CPU", "1")
BASE = int(os.environ.get("BENCH_PORT_BASE", "28100")) + 60
# SLUICE_BUILD: the binaries of another build tree (results still go to build/bench).
BIN = os.environ.get("SLUICE_BUILD", os.path.join(ROOT, "build"))
DNS_ROUNDS = int(os.environ.get("BENCH_DNS_ROUNDS", "3"))

procs = []


def start(argv, cpu, log):
    os.makedirs(os.path.dirname(log), exist_ok=True)
    f = open(log, "wb")
    p = subprocess.Popen(["taskset", "-c", cpu] + argv, stdout=f, stderr=subprocess.STDOUT)
    procs.append(p)
    return p


def wait_port(port, timeout=15):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing on port {port}")


def upstream(port):
    d = os.path.join(RUN, "upstream")
    os.makedirs(d, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"{user} worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/e.log;"
                f" events {{ worker_connections 4096; }} http {{ access_log off;"
                f" client_body_temp_path {d}; proxy_temp_path {d};"
                f" server {{ listen 127.0.0.1:{port} backlog=4096; keepalive_requests 100000000;"
                f" location / {{ return 200 'Hello, world!'; }} }} }}")
    p = start(["nginx", "-c", conf], CLIENT_CPU, os.path.join(d, "out.log"))
    wait_port(port)
    return p


def dnsmasq(port, names):
    """dnsmasq on 127.0.0.1:port answering names ({name: ip}) with a TTL above the run's."""
    d = os.path.join(RUN, "dns")
    os.makedirs(d, exist_ok=True)
    hosts = os.path.join(d, "hosts")
    with open(hosts, "w") as f:
        f.writelines(f"{ip} {name}\n" for name, ip in names.items())
    argv = ["/usr/sbin/dnsmasq", "--conf-file=/dev/null", "--keep-in-foreground", "--no-resolv",
            "--no-hosts", f"--addn-hosts={hosts}", "--local=/bench/", "--local-ttl=3600",
            f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
            f"--pid-file={d}/dnsmasq.pid"]
    if os.geteuid() == 0:
        argv.append("--user=root")
    return start(argv, CLIENT_CPU, os.path.join(d, "out.log"))


def gateway_doc(port, admin, uport, n_routes, n_upstreams):
    ups = {f"u{i}": {"backends": [f"127.0.0.1:{uport}"]} for i in range(max(1, n_upstreams))}
    routes = []
    for i in range(n_routes - 1):
        routes.append({"name": f"r{i}",
                       "match": {"host": f"h{i % 500}.bench", "path": f"/svc{i}/api"},
                       "upstream": f"u{i % max(1, n_upstreams)}"})
    routes.append({"name": "main", "match": {"path": "/"}, "upstream": "u0"})
    return {"version": 1, "threads": 1, "pid_file": os.path.join(RUN, f"gw{port}.pid"),
            "upgrade_sock": os.path.join(RUN, f"gw{port}.sock"), "grace_period_seconds": 1,
            "admin": {"listen": f"127.0.0.1:{admin}"},
            "listeners": [{"name": "web", "listen": f"127.0.0.1:{port}"}],
            "upstreams": ups, "routes": routes}


def wrk(url, secs):
    lua = os.path.join(HERE, "wrk_report.lua")
    r = subprocess.run(["taskset", "-c", CLIENT_CPU, "wrk", "-t1", "-c50", f"-d{secs}s",
                        "-s", lua, url], capture_output=True, text=True, timeout=secs + 30)
    m = re.search(r"(\d+) requests in", r.stdout)
    js = re.search(r"^WRKJSON (.*)$", r.stdout, re.M)
    data = json.loads(js.group(1))["latency_us"] if js else {}
    bad = "Non-2xx" in r.stdout or "Socket errors" in r.stdout
    return int(m.group(1)) if m else 0, data, bad, r.stdout


def measure(name, argv, port):
    log = os.path.join(RUN, f"{name}.log")
    p = start(argv, PROXY_CPU, log)
    try:
        wait_port(port)
        wrk(f"http://127.0.0.1:{port}/", 2)  # warm-up
        c0 = procstat.cpu_seconds(p.pid)
        n, data, bad, text = wrk(f"http://127.0.0.1:{port}/", DURATION)
        c1 = procstat.cpu_seconds(p.pid)
        mem = procstat.memory(p.pid)
        row = {"name": name, "requests": n, "rps": n / DURATION,
               "cpu_us_per_req": (c1 - c0) * 1e6 / max(n, 1), "errors": bad,
               "p99_us": data.get("p99"), "rss_kb": mem.get("rss_kb")}
        if bad:
            row["wrk"] = text
        return row
    finally:
        p.terminate()
        p.wait(10)


def put(admin, doc):
    body = json.dumps({k: doc[k] for k in ("upstreams", "routes")}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/config", data=body, method="PUT")
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=120) as r:
        reply = json.loads(r.read())
    return reply, (time.monotonic() - t0) * 1000, len(body)


def name_vs_ip(uport):
    """backend-ip and backend-name rows: the same one-route gateway, the backend written as
    127.0.0.1:PORT or as upstream.bench:PORT (warm DNS cache). Measured in turns, DNS_ROUNDS
    each; each row keeps its lowest CPU/req (the least disturbed run)."""
    dport = BASE + 20
    dns = dnsmasq(dport, {"upstream.bench": "127.0.0.1"})
    wait_dns(dport)
    docs = {}
    for name, backend, port in (("backend-ip", f"127.0.0.1:{uport}", BASE + 12),
                                ("backend-name", f"upstream.bench:{uport}", BASE + 14)):
        doc = gateway_doc(port, port + 1, uport, 1, 1)
        doc["upstreams"]["u0"]["backends"] = [backend]
        doc["dns"] = {"servers": [f"127.0.0.1:{dport}"]}
        path = os.path.join(RUN, f"{name}.json")
        with open(path, "w") as f:
            json.dump(doc, f)
        docs[name] = (path, port)
    best = {}
    try:
        for _ in range(max(1, DNS_ROUNDS)):
            for name, (path, port) in docs.items():
                row = measure(name, [os.path.join(BIN, "sluice"), "-c", path], port)
                if name not in best or row["cpu_us_per_req"] < best[name]["cpu_us_per_req"]:
                    best[name] = row
    finally:
        dns.terminate()
        dns.wait(10)
    return [best["backend-ip"], best["backend-name"]]


def wait_dns(port, timeout=10):
    """Until the bench's dnsmasq answers a query on port."""
    import socket
    import struct
    q = struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x08upstream\x05bench\x00" + \
        struct.pack(">HH", 1, 1)
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            try:
                s.sendto(q, ("127.0.0.1", port))
                s.recv(512)
                return
            except OSError:
                time.sleep(0.05)
    raise RuntimeError(f"no DNS answer on port {port}")


def reconfig(uport):
    port, admin = BASE + 10, BASE + 11
    small = gateway_doc(port, admin, uport, 1, 1)
    path = os.path.join(RUN, "reconf.json")
    with open(path, "w") as f:
        json.dump(small, f)
    p = start([os.path.join(BIN, "sluice"), "-c", path], PROXY_CPU,
              os.path.join(RUN, "reconf.log"))
    try:
        wait_port(port)
        wait_port(admin)
        base_n, base, _, _ = wrk(f"http://127.0.0.1:{port}/", 3)
        before = procstat.memory(p.pid)
        big = gateway_doc(port, admin, uport, 10000, 2000)
        load = subprocess.Popen(["taskset", "-c", CLIENT_CPU, "wrk", "-t1", "-c50", "-d6s", "-s",
                                 os.path.join(HERE, "wrk_report.lua"),
                                 f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        reply, wall_ms, size = put(admin, big)
        out, _ = load.communicate(timeout=60)
        js = re.search(r"^WRKJSON (.*)$", out, re.M)
        during = json.loads(js.group(1))["latency_us"] if js else {}
        time.sleep(0.5)
        after = procstat.memory(p.pid)
        return {"apply_ms": reply.get("apply_ms"), "put_wall_ms": wall_ms, "body_bytes": size,
                "rss_before_kb": before.get("rss_kb"), "rss_after_kb": after.get("rss_kb"),
                "p99_us_before": base.get("p99"), "p99_us_during": during.get("p99"),
                "max_us_during": during.get("max"),
                "errors_during": "Non-2xx" in out or "Socket errors" in out}
    finally:
        p.terminate()
        p.wait(10)


def main():
    os.makedirs(RUN, exist_ok=True)
    uport = BASE
    up = upstream(uport)
    rows = []
    try:
        fwd = os.path.join(BIN, "tools", "sl-forward")
        rows.append(measure("engine", [fwd, "--listen", f"127.0.0.1:{BASE + 1}", "--upstream",
                                       f"127.0.0.1:{uport}"], BASE + 1))
        for name, nr, nu, port in (("gateway-1", 1, 1, BASE + 2), ("gateway-10", 10, 10, BASE + 4),
                                   ("gateway-10k", 10000, 2000, BASE + 6)):
            path = os.path.join(RUN, f"{name}.json")
            with open(path, "w") as f:
                json.dump(gateway_doc(port, port + 1, uport, nr, nu), f)
            rows.append(measure(name, [os.path.join(BIN, "sluice"), "-c", path], port))
        rows += name_vs_ip(uport)
        rc = reconfig(uport)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        up.wait(10)
    by = {r["name"]: r for r in rows}
    print("\n== Gateway: cost over the engine, router scaling (wrk -t1 -c50, "
          f"{DURATION}s, proxy pinned alone) ==")
    print(f"  {'row':<12} {'req/s':>9} {'CPU/req':>9} {'p99':>9} {'RSS':>9}")
    for r in rows:
        p99 = f"{r['p99_us'] / 1000:.2f} ms" if r.get("p99_us") else "-"
        flag = "  ERRORS" if r["errors"] else ""
        print(f"  {r['name']:<12} {r['rps']:>9,.0f} {r['cpu_us_per_req']:>6.1f} µs {p99:>9} "
              f"{(r['rss_kb'] or 0) / 1024:>6.1f} MiB{flag}")
    g1, eng = by["gateway-1"]["cpu_us_per_req"], by["engine"]["cpu_us_per_req"]
    g10, g10k = by["gateway-10"]["cpu_us_per_req"], by["gateway-10k"]["cpu_us_per_req"]
    print(f"  gateway (1 route) CPU/req = {g1 / eng:.2f}× engine   [goal ≤ 1.10]")
    print(f"  10,000 routes CPU/req = {g10k / g10:.2f}× 10 routes   [goal ≤ 1.10]")
    ip, nm = by["backend-ip"]["cpu_us_per_req"], by["backend-name"]["cpu_us_per_req"]
    print(f"  host name backend (warm DNS cache) CPU/req = {nm / ip:.3f}× ip:port backend"
          f"   [goal ≤ 1.05]   (lowest of {max(1, DNS_ROUNDS)} runs each)")
    print("\n== Reconfiguration: PUT /config of 10,000 routes + 2,000 upstreams under load ==")
    print(f"  apply on the control thread: {rc['apply_ms']:.1f} ms   [goal ≤ 200 ms]"
          f"   (PUT round trip {rc['put_wall_ms']:.0f} ms, body {rc['body_bytes'] / 1e6:.1f} MB)")
    print(f"  RSS: {rc['rss_before_kb'] / 1024:.1f} MiB before, {rc['rss_after_kb'] / 1024:.1f} "
          f"MiB after")
    if rc.get("p99_us_before") and rc.get("p99_us_during"):
        print(f"  load p99: {rc['p99_us_before'] / 1000:.2f} ms before, "
              f"{rc['p99_us_during'] / 1000:.2f} ms during (max {rc['max_us_during'] / 1000:.1f} "
              f"ms); errors during: {'yes' if rc['errors_during'] else 'none'}")
    with open(os.path.join(OUT, "gateway.json"), "w") as f:
        json.dump({"rows": rows, "reconfig": rc}, f, indent=2)


if __name__ == "__main__":
    main()
