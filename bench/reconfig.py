#!/usr/bin/python3
"""Configuration apply cost, without load: PUT /config into an idle sluice and read back what
the control thread spent (`apply_ms` of the answer) and the CPU time of every sluice thread
(/proc/PID/task/TID/schedstat, nanoseconds), so noise from other processes shows as wall time
but not as CPU time, and the minor page faults (fresh memory; ~15 µs each on some VMs).

Cases (each PUT repeated --rounds times, medians reported):
  10k-first     10,000 routes + 2,000 upstreams (bench/lib/gateway.py's document) replacing a
                one-route config
  10k-same      the same 10k document again (nothing changed)
  10k-changed   a 10k document where every upstream and route differs from the running one
  watch-1       5,000 routes + 5,000 upstreams of 4 backends each (the watcher's shape, one
                Ingress per Service), one upstream's backends changed (one EndpointSlice)

    /usr/bin/python3 bench/reconfig.py [--rounds 9] [--threads 2]    (SLUICE_BUILD=other/build)

Results to stdout and build/bench/reconfig.json.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SLUICE_BUILD", os.path.join(ROOT, "build"))
sys.path.insert(0, os.path.join(ROOT, "bench", "lib"))
from gateway import wait_port  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def thread_cpu_ns(pid):
    """{tid: on-CPU nanoseconds} of every thread of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except OSError:
            pass
    return out


def minflt(pid):
    """Minor page faults of pid so far (fresh memory touched: costly on some VMs)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def doc_10k(variant):
    """bench/lib/gateway.py's 10k document; variant changes every upstream and route."""
    ups = {f"u{i}": {"backends": [f"127.0.0.1:{18000 + variant}"]} for i in range(2000)}
    routes = [{"name": f"r{i}", "match": {"host": f"h{i % 500}.bench",
                                          "path": f"/svc{i}/api{variant or ''}"},
               "upstream": f"u{i % 2000}"} for i in range(9999)]
    routes.append({"name": "main", "match": {"path": "/"}, "upstream": "u0"})
    return {"upstreams": ups, "routes": routes}


def ep(i, k, gen):
    n = i * 4 + k + gen
    return f"127.1.{n // 250 % 250}.{n % 250 + 1}:8080"


def doc_watch(n, changed=None, gen=0):
    """The watcher's rendering of n Ingresses, each with its Service of 4 endpoints; upstream
    `changed` gets other endpoints (generation gen). Canonical, as the watcher sends it (keys
    sorted: json.dumps(sort_keys=True))."""
    ups = {}
    routes = []
    for i in range(n):
        name = f"default.s{i}.80"
        g = gen if i == changed else 0
        ups[name] = {"backends": [ep(i, k, g) for k in range(4)]}
        routes.append({"match": {"host": f"h{i}.example", "path": "/", "path_type": "prefix"},
                       "name": f"default/i{i}/h{i}.example/", "upstream": name})
    return {"upstreams": ups, "routes": routes}


def put(admin, body):
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/config", data=body, method="PUT")
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=120) as r:
        reply = json.loads(r.read())
    return reply, (time.monotonic() - t0) * 1000


class Sluice:
    def __init__(self, threads):
        self.dir = tempfile.mkdtemp(prefix="sl-reconf-")
        self.port, self.admin = free_port(), free_port()
        conf = {"threads": threads, "pid_file": f"{self.dir}/pid",
                "upgrade_sock": f"{self.dir}/up.sock", "grace_period_seconds": 1,
                "admin": {"listen": f"127.0.0.1:{self.admin}"},
                "listeners": [{"name": "web", "listen": f"127.0.0.1:{self.port}"}],
                "upstreams": {"u0": {"backends": ["127.0.0.1:9"]}},
                "routes": [{"name": "main", "match": {"path": "/"}, "upstream": "u0"}]}
        with open(f"{self.dir}/c.json", "w") as f:
            json.dump(conf, f)
        self.log = open(f"{self.dir}/log", "wb")
        self.p = subprocess.Popen([os.path.join(BIN, "sluice"), "-c", f"{self.dir}/c.json"],
                                  stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.admin)

    def put(self, body):
        """PUT body; returns (apply_ms, wall_ms, control CPU ms, worker CPU ms)."""
        before = thread_cpu_ns(self.p.pid)
        f0 = minflt(self.p.pid)
        reply, wall = put(self.admin, body)
        if not reply.get("applied"):
            raise RuntimeError(reply)
        time.sleep(0.15)  # the workers switch and free the old snapshot
        after = thread_cpu_ns(self.p.pid)
        faults = minflt(self.p.pid) - f0
        ctl = (after.get(self.p.pid, 0) - before.get(self.p.pid, 0)) / 1e6
        work = sum(after[t] - before.get(t, 0) for t in after if t != self.p.pid) / 1e6
        return reply["apply_ms"], wall, ctl, work, faults, reply["hash"]

    def stop(self):
        self.p.terminate()
        self.p.wait(10)
        self.log.close()


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--watch-ingresses", type=int, default=5000)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else None
    small = json.dumps({"upstreams": {"u0": {"backends": ["127.0.0.1:9"]}},
                        "routes": [{"name": "main", "match": {"path": "/"},
                                    "upstream": "u0"}]}).encode()
    big = [json.dumps(doc_10k(v)).encode() for v in (0, 1)]
    res = {}

    def record(case, row):
        res.setdefault(case, []).append(row)

    s = Sluice(a.threads)
    try:
        for r in range(a.rounds):
            if not only or "10k-first" in only:
                s.put(small)
                record("10k-first", s.put(big[0]))
            if not only or "10k-same" in only:
                s.put(big[0])
                record("10k-same", s.put(big[0]))
            if not only or "10k-changed" in only:
                s.put(big[r % 2])
                record("10k-changed", s.put(big[(r + 1) % 2]))
        if not only or "watch-1" in only:
            n = a.watch_ingresses
            s.put(json.dumps(doc_watch(n), sort_keys=True).encode())
            for r in range(a.rounds * 2):
                body = json.dumps(doc_watch(n, changed=(r * 97) % n, gen=r + 1),
                              sort_keys=True).encode()
                record("watch-1", s.put(body))
    finally:
        s.stop()
    print(f"== PUT /config on an idle sluice ({a.threads} workers), median of each case ==")
    print(f"  {'case':<12} {'n':>3} {'apply_ms':>9} {'PUT wall':>9} {'ctl CPU':>9} "
          f"{'workers CPU':>12} {'faults':>7}")
    out = {}
    for case, rows in res.items():
        m = [med([row[i] for row in rows]) for i in range(5)]
        out[case] = {"n": len(rows), "apply_ms": m[0], "put_wall_ms": m[1], "control_cpu_ms": m[2],
                     "workers_cpu_ms": m[3], "minor_faults": m[4],
                     "apply_ms_all": [row[0] for row in rows], "hash": rows[-1][5]}
        print(f"  {case:<12} {len(rows):>3} {m[0]:>8.1f}  {m[1]:>8.1f}  {m[2]:>8.1f}  "
              f"{m[3]:>11.1f} {m[4]:>7.0f}")
    os.makedirs(os.path.join(ROOT, "build", "bench"), exist_ok=True)
    with open(os.path.join(ROOT, "build", "bench", "reconfig.json"), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
