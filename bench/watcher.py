#!/usr/bin/python3
"""sluice-watcher at scale (issue 6's performance goals), measured on this machine:

  * the Kubernetes API emulator (e2e/kube, its own process, TLS + token) holds N Ingresses,
    N Services and N EndpointSlices of 4 endpoints each (default N = 5,000: 20,000 endpoints);
  * time from starting sluice-watcher to sluice serving the last Ingress (goal <= 5 s);
  * the watcher's memory (VmRSS and peak VmHWM; goal <= 100 MB);
  * 100 EndpointSlice changes, one at a time: time from the API write to the change being live
    in sluice, seen by traffic (goal p99 <= 250 ms).

Every endpoint is a distinct loopback address (127.1.x.y) on one port where a single nginx
listens on 0.0.0.0 and answers with the address the request reached ($server_addr), so a request
through sluice tells which endpoint served it.

    /usr/bin/python3 bench/watcher.py [--ingresses 5000] [--changes 100] [--debounce 100ms]

Results go to stdout and build/bench/watcher.json. Needs `make` first (build/sluice,
build/sluice-watcher) and nginx (make deps).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))
from kube import fixtures as fx  # noqa: E402

BUILD = ROOT / "build"
TOKEN = "bench-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing on port {port}")


def addr(i, k):
    n = i * 4 + k
    return f"127.1.{n // 250}.{n % 250 + 1}"


def objects(n, port):
    out = [fx.ingress_class("sluice")]
    for i in range(n):
        out.append(fx.service(f"s{i}", ports=[fx.service_port(80, name="http",
                                                              target_port=port)]))
        out.append(fx.endpoint_slice(f"s{i}", name=f"s{i}-abcde",
                                     addresses=[addr(i, k) for k in range(4)],
                                     ports=[("http", port)]))
        out.append(fx.ingress(f"i{i}", host=f"h{i}.example", service=f"s{i}", port=80))
    return out


def rss_kb(pid):
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                vals[k] = int(v.split()[0])
    return vals


class Api:
    def __init__(self, url, ca):
        self.url = url
        self.ctx = ssl.create_default_context(cafile=ca)

    def call(self, method, path, body=None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
            return json.loads(r.read())


def through(port, host):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else 0
    return status, body.decode(errors="replace").strip()


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ingresses", type=int, default=5000)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--debounce", default="100ms")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args()
    for b in ("sluice", "sluice-watcher"):
        if not (BUILD / b).exists():
            sys.exit(f"build/{b} is missing: run make first")
    tmp = Path(tempfile.mkdtemp(prefix="sluice-watcher-bench-"))
    procs = []

    def start(argv, name, **kw):
        log = open(tmp / f"{name}.log", "w")
        p = subprocess.Popen([str(x) for x in argv], stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, **kw)
        procs.append(p)
        return p

    try:
        up_port = free_port()
        (tmp / "nginx").mkdir()
        user = "user root; " if os.geteuid() == 0 else ""
        (tmp / "nginx.conf").write_text(
            f"{user}worker_processes 1; daemon off; pid {tmp}/nginx.pid; "
            f"error_log {tmp}/nginx-error.log; events {{ worker_connections 4096; }} "
            f"http {{ access_log off; client_body_temp_path {tmp}/nginx; "
            f"proxy_temp_path {tmp}/nginx; server {{ listen 0.0.0.0:{up_port}; "
            f"keepalive_requests 1000000; location / {{ return 200 \"$server_addr\\n\"; }} }} }}")
        start(["nginx", "-c", tmp / "nginx.conf"], "nginx")
        wait_port(up_port)

        t = time.monotonic()
        load = tmp / "load"
        load.mkdir()
        (load / "objects.json").write_text(json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": objects(a.ingresses, up_port)}))
        (tmp / "token").write_text(TOKEN)
        api_port = free_port()
        api = start([sys.executable, ROOT / "e2e/kube/apiserver.py", "--listen",
                     f"127.0.0.1:{api_port}", "--tls", "--token-file", tmp / "token",
                     "--state-dir", tmp / "kube", "--load", load, "--bookmark-interval", "60"],
                    "apiserver")
        deadline = time.monotonic() + 300
        while "serving" not in (tmp / "apiserver.log").read_text():
            if api.poll() is not None or time.monotonic() > deadline:
                sys.exit("the emulator did not start:\n" + (tmp / "apiserver.log").read_text())
            time.sleep(0.1)
        print(f"emulator: {a.ingresses} Ingresses, {a.ingresses} Services, {a.ingresses} "
              f"EndpointSlices ({a.ingresses * 4} endpoints) loaded in "
              f"{time.monotonic() - t:.1f} s")

        gw_port, admin_port = free_port(), free_port()
        (tmp / "sluice.yaml").write_text(
            f"version: 1\nthreads: 1\npid_file: {tmp}/sluice.pid\nupgrade_sock: {tmp}/up.sock\n"
            f"admin: {{listen: '127.0.0.1:{admin_port}'}}\n"
            f"listeners: [{{name: web, listen: '127.0.0.1:{gw_port}'}}]\n")
        start([BUILD / "sluice", "-c", tmp / "sluice.yaml"], "sluice")
        wait_port(gw_port)
        wait_port(admin_port)

        last = f"h{a.ingresses - 1}.example"
        t0 = time.monotonic()
        w = start([BUILD / "sluice-watcher", "--api-server", f"https://127.0.0.1:{api_port}",
                   "--token-file", tmp / "token", "--ca-file", tmp / "kube/ca.crt",
                   "--push", f"http://127.0.0.1:{admin_port}/config", "--healthz-listen", "off",
                   "--debounce", a.debounce, "--update-status=false"], "watcher")
        while True:
            status, body = through(gw_port, last)
            if status == 200:
                break
            if w.poll() is not None or time.monotonic() - t0 > 120:
                sys.exit("the watcher did not get there:\n" + (tmp / "watcher.log").read_text())
            time.sleep(0.005)
        startup = time.monotonic() - t0
        mem_sync = rss_kb(w.pid)
        print(f"start to serving {last}: {startup * 1000:.0f} ms; watcher RSS "
              f"{mem_sync['VmRSS'] / 1024:.1f} MiB (peak {mem_sync['VmHWM'] / 1024:.1f} MiB)")

        apic = Api(f"https://127.0.0.1:{api_port}", str(tmp / "kube/ca.crt"))
        lat = []
        for c in range(a.changes):
            i = (c * 37) % a.ingresses
            path = f"/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/s{i}-abcde"
            s = apic.call("GET", path)
            fresh = [f"127.2.{(c * 4 + k) // 250}.{(c * 4 + k) % 250 + 1}" for k in range(4)]
            s["endpoints"] = [fx.endpoint(x) for x in fresh]
            t1 = time.monotonic()
            apic.call("PUT", path, s)
            while True:
                status, body = through(gw_port, f"h{i}.example")
                if status == 200 and body in fresh:
                    break
                if time.monotonic() - t1 > 10:
                    sys.exit(f"change {c} not live after 10 s (got {status} {body})")
                time.sleep(0.002)  # poll without starving the processes measured
            lat.append((time.monotonic() - t1) * 1000)
        mem_end = rss_kb(w.pid)
        res = {
            "ingresses": a.ingresses, "services": a.ingresses, "endpoints": a.ingresses * 4,
            "debounce": a.debounce,
            "startup_ms": round(startup * 1000),
            "rss_mib_after_sync": round(mem_sync["VmRSS"] / 1024, 1),
            "rss_mib_end": round(mem_end["VmRSS"] / 1024, 1),
            "rss_mib_peak": round(mem_end["VmHWM"] / 1024, 1),
            "change_ms": {"p50": round(pct(lat, 50), 1), "p90": round(pct(lat, 90), 1),
                          "p99": round(pct(lat, 99), 1), "max": round(max(lat), 1),
                          "mean": round(statistics.mean(lat), 1)},
        }
        print(f"{a.changes} EndpointSlice changes live in sluice: p50 {res['change_ms']['p50']} "
              f"ms, p90 {res['change_ms']['p90']} ms, p99 {res['change_ms']['p99']} ms, max "
              f"{res['change_ms']['max']} ms (debounce {a.debounce})")
        print(f"watcher RSS at the end {res['rss_mib_end']} MiB, peak {res['rss_mib_peak']} MiB")
        out = BUILD / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "watcher.json").write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps(res))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
