"""The asynchronous DNS resolver (proxy/src/io/dns.c) end to end, through build/tools/sl-dnsq,
against real DNS servers on loopback: dnsmasq for ordinary answers and record changes, and a small
Python DNS server for faults (SERVFAIL, REFUSED, silence, truncation). No test ever sends a query
off the machine: every sl-dnsq run names its servers, or a resolv.conf of the test's own."""
import ipaddress
import os
import random
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import BUILD, SANITIZER_MARKS, free_port

# SL_DNSQ: another build of the tool (e.g. a private `make B=/tmp/x SAN=1` tree).
DNSQ = Path(os.environ.get("SL_DNSQ", BUILD / "tools" / "sl-dnsq"))
DNSMASQ = "/usr/sbin/dnsmasq"

pytestmark = pytest.mark.skipif(not DNSQ.exists(), reason="build/tools/sl-dnsq not built")


# ---- running sl-dnsq -----------------------------------------------------------------------

class Run:
    def __init__(self, p, elapsed):
        self.rc = p.returncode
        self.out = p.stdout
        self.err = p.stderr
        self.elapsed = elapsed
        self.answers = [parse_line(line) for line in p.stdout.splitlines()
                        if line.startswith("answer ")]
        self.changes = [parse_line(line) for line in p.stdout.splitlines()
                        if line.startswith("change ")]
        stats = [line for line in p.stdout.splitlines() if line.startswith("stats ")]
        self.stats = ({k: int(v) for k, v in (kv.split("=") for kv in stats[-1].split()[1:])}
                      if stats else {})


def parse_line(line):
    """'answer name=web.test status=OK ... addrs=a,b message="..."' -> dict."""
    head, _, message = line.partition(' message="')
    d = dict(kv.split("=", 1) for kv in head.split()[1:])
    d["message"] = message.rstrip('"')
    d["addrs"] = [a for a in d.get("addrs", "").split(",") if a]
    for k in ("ttl_ms", "elapsed_ms", "t_ms", "cached"):
        if k in d:
            d[k] = int(d[k])
    return d


def check_sanitizers(text):
    for mark in SANITIZER_MARKS:
        assert mark not in text, f"sanitizer report:\n{text[text.index(mark) - 200:][:4000]}"


def dnsq(*args, timeout=30, env=None):
    full_env = dict(os.environ, SLUICE_LOG="warn")
    full_env.update(env or {})
    t0 = time.monotonic()
    p = subprocess.run([str(DNSQ), *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env=full_env)
    r = Run(p, time.monotonic() - t0)
    check_sanitizers(p.stdout + p.stderr)
    return r


# ---- dnsmasq -------------------------------------------------------------------------------

def udp_query(addr, port, name, qtype=1, timeout=0.3):
    """One DNS query; returns the raw answer (None on timeout)."""
    q = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack(">HH", qtype, 1)
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, (addr, port))
        try:
            return s.recv(4096)
        except OSError:
            return None


class Dnsmasq:
    """dnsmasq answering *.test from a hosts file (NXDOMAIN for other .test names, REFUSED
    outside .test), logging every query it gets."""

    def __init__(self, tmp_path, hosts, ttl=7, address="127.0.0.1", port=None):
        self.dir = tmp_path
        self.hosts_file = tmp_path / "dns-hosts"
        self.log_file = tmp_path / "dnsmasq.log"
        self.address = address
        self.port = port or free_port()
        self.write_hosts(hosts)
        argv = [DNSMASQ, f"--port={self.port}", f"--listen-address={address}",
                "--bind-interfaces", "--no-resolv", "--no-hosts",
                f"--addn-hosts={self.hosts_file}", f"--local-ttl={ttl}",
                "--keep-in-foreground", f"--pid-file={tmp_path}/dnsmasq.pid",
                "--local=/test/", "--log-queries", f"--log-facility={self.log_file}"]
        if os.geteuid() == 0:
            argv.append("--user=root")  # the hosts file under tmp_path is private
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while udp_query(address, self.port, "ready.test") is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                raise TimeoutError("dnsmasq does not answer")
        self.server = f"[{address}]:{self.port}" if ":" in address else f"{address}:{self.port}"

    def write_hosts(self, hosts):
        lines = [f"{ip} {name}\n" for name, ips in hosts.items() for ip in ips]
        tmp = self.hosts_file.with_suffix(".new")
        tmp.write_text("".join(lines))
        tmp.rename(self.hosts_file)

    def set_hosts(self, hosts):
        """Changes the records; dnsmasq re-reads them on SIGHUP."""
        self.write_hosts(hosts)
        self.proc.send_signal(signal.SIGHUP)

    def queries(self, name, qtype="A"):
        text = self.log_file.read_text() if self.log_file.exists() else ""
        return len(re.findall(rf"query\[{qtype}\] {re.escape(name)} from", text))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def dnsmasq(tmp_path):
    started = []

    def start(hosts, **kw):
        d = Dnsmasq(tmp_path, hosts, **kw)
        started.append(d)
        return d
    yield start
    for d in started:
        d.stop()


WEB = {"web.test": ["10.0.0.1", "10.0.0.2", "fd00::1"], "v4.test": ["10.0.0.9"],
       "v6.test": ["fd00::9"]}


# ---- a DNS server with faults --------------------------------------------------------------

class FakeDNS:
    """UDP and TCP on one loopback port. Answers A/AAAA from `records`, NXDOMAIN otherwise;
    `fault` changes every answer: "servfail", "refused", "drop" (silence), "truncate" (UDP
    answers are truncated, TCP ones complete)."""

    RCODES = {"servfail": 2, "refused": 5}

    def __init__(self, records=None, fault=None, ttl=30):
        self.records = records or {}
        self.fault = fault
        self.ttl = ttl
        self.udp_queries = 0
        self.tcp_queries = 0
        self.stopping = False
        for _ in range(20):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket()
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        self.tcp.listen(16)
        self.udp.settimeout(0.1)
        self.tcp.settimeout(0.1)
        self.server = f"127.0.0.1:{self.port}"
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self.serve_udp, self.serve_tcp)]
        for t in self.threads:
            t.start()

    def answer(self, q, tcp):
        i = 12
        labels = []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode())
            i += 1 + q[i]
        name = ".".join(labels).lower()
        qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
        question = q[12:i + 5]
        if self.fault == "drop":
            return None
        rcode, flags, answers = self.RCODES.get(self.fault, 0), 0x8180, []
        if not rcode:
            ips = self.records.get(name)
            if ips is None:
                rcode = 3
            for ip in ips or []:
                a = ipaddress.ip_address(ip)
                if (a.version, qtype) in ((4, 1), (6, 28)):
                    answers.append(struct.pack(">HHHIH", 0xc00c, qtype, 1, self.ttl,
                                               len(a.packed)) + a.packed)
        if self.fault == "truncate" and not tcp:
            flags |= 0x0200
            answers = []
        return (q[:2] + struct.pack(">HHHHH", flags | rcode, 1, len(answers), 0, 0) + question
                + b"".join(answers))

    def serve_udp(self):
        while not self.stopping:
            try:
                q, peer = self.udp.recvfrom(4096)
            except OSError:
                continue
            self.udp_queries += 1
            a = self.answer(q, False)
            if a:
                self.udp.sendto(a, peer)

    def serve_tcp(self):
        while not self.stopping:
            try:
                c, _ = self.tcp.accept()
            except OSError:
                continue
            with c:
                c.settimeout(2)
                try:
                    while True:
                        n = c.recv(2)
                        if len(n) < 2:
                            break
                        q = c.recv(struct.unpack(">H", n)[0])
                        self.tcp_queries += 1
                        a = self.answer(q, True)
                        if a:
                            c.sendall(struct.pack(">H", len(a)) + a)
                except OSError:
                    pass

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join(2)
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def fake_dns():
    started = []

    def start(**kw):
        f = FakeDNS(**kw)
        started.append(f)
        return f
    yield start
    for f in started:
        f.stop()


def dead_server():
    """A loopback port where nothing listens (UDP or TCP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


# ---- answers -------------------------------------------------------------------------------

def test_a_and_aaaa_answers_with_the_port(dnsmasq):
    dm = dnsmasq(WEB)
    r = dnsq("--server", dm.server, "--port", 8080, "web.test", "v4.test", "v6.test")
    assert r.rc == 0, r.out + r.err
    by = {a["name"]: a for a in r.answers}
    assert sorted(by["web.test"]["addrs"]) == ["10.0.0.1:8080", "10.0.0.2:8080",
                                               "[fd00::1]:8080"]
    assert by["v4.test"]["addrs"] == ["10.0.0.9:8080"]
    assert by["v6.test"]["addrs"] == ["[fd00::9]:8080"]
    assert all(a["status"] == "OK" and a["ttl_ms"] == 7000 for a in r.answers)


def test_explicit_family(dnsmasq):
    dm = dnsmasq(WEB)
    r4 = dnsq("--server", dm.server, "--family", "4", "web.test")
    assert sorted(r4.answers[0]["addrs"]) == ["10.0.0.1:0", "10.0.0.2:0"]
    r6 = dnsq("--server", dm.server, "--family", "6", "web.test")
    assert r6.answers[0]["addrs"] == ["[fd00::1]:0"]
    assert dm.queries("web.test", "A") == 1 and dm.queries("web.test", "AAAA") == 1


def test_hosts_file_names_need_no_query(dnsmasq):
    dm = dnsmasq(WEB)
    names = ["localhost"]
    # another /etc/hosts name, when the machine has one, proves the file is read
    for line in open("/etc/hosts"):
        parts = line.split("#")[0].split()
        if len(parts) > 1 and parts[0].startswith("127.") and parts[1] != "localhost":
            names.append(parts[1])
            break
    r = dnsq("--server", dm.server, "--family", "4", *names)
    assert r.rc == 0, r.out + r.err
    for a in r.answers:
        assert a["status"] == "OK" and a["addrs"][0].startswith("127."), a
    text = dm.log_file.read_text() if dm.log_file.exists() else ""
    sent = [line for line in text.splitlines() if "query[" in line and "ready.test" not in line]
    assert not sent, f"hosts names went to DNS: {sent}"


def test_nxdomain_is_not_found_and_cached_briefly(dnsmasq):
    dm = dnsmasq(WEB)
    r = dnsq("--server", dm.server, "--repeat", 2, "--interval", 200, "--negative-ttl", 5,
             "missing.test")
    assert r.rc == 1
    first, second = r.answers
    assert first["status"] == "NOT_FOUND" and "NXDOMAIN" in first["message"]
    assert first["addrs"] == [] and first["ttl_ms"] == 5000
    assert second["status"] == "NOT_FOUND" and second["cached"] == 1
    assert dm.queries("missing.test") == 1


def test_nodata_is_not_found(dnsmasq):
    dm = dnsmasq(WEB)
    r = dnsq("--server", dm.server, "--family", "6", "v4.test")
    assert r.answers[0]["status"] == "NOT_FOUND"
    assert "NODATA" in r.answers[0]["message"]


@pytest.mark.parametrize("fault,word", [("servfail", "SERVFAIL"), ("refused", "refused")])
def test_server_failures(fake_dns, fault, word):
    f = fake_dns(fault=fault)
    r = dnsq("--server", f.server, "--timeout", 500, "web.test")
    assert r.rc == 1
    a = r.answers[0]
    assert a["status"] == "SERVER_FAILURE", a
    assert a["message"].startswith("DNS server failure") and word in a["message"], a
    assert r.elapsed < 2


def test_refused_by_dnsmasq_outside_its_zone(dnsmasq):
    dm = dnsmasq(WEB)
    r = dnsq("--server", dm.server, "--timeout", 500, "example.com")
    assert r.answers[0]["status"] == "SERVER_FAILURE", r.answers[0]
    assert "refused" in r.answers[0]["message"]


def test_dead_server_fails_fast():
    r = dnsq("--server", dead_server(), "web.test")
    a = r.answers[0]
    assert a["status"] == "TIMEOUT" and a["message"].startswith("DNS timeout"), a
    assert r.elapsed < 4.5


def test_silent_server_times_out_within_timeout_times_tries(fake_dns):
    f = fake_dns(fault="drop")
    r = dnsq("--server", f.server, "--timeout", 400, "--tries", 2, "web.test")
    a = r.answers[0]
    assert a["status"] == "TIMEOUT", a
    assert "no answer" in a["message"]
    assert 700 <= a["elapsed_ms"] <= 1000, a
    assert f.udp_queries >= 2


def test_silent_server_with_defaults_fails_within_the_connect_timeout(fake_dns):
    """Defaults: 2 s x 2 tries, under the upstream connect timeout (10 s)."""
    f = fake_dns(fault="drop")
    r = dnsq("--server", f.server, "web.test")
    a = r.answers[0]
    assert a["status"] == "TIMEOUT", a
    assert 3500 <= a["elapsed_ms"] <= 4300, a


def test_ipv6_server(dnsmasq):
    try:
        dm = dnsmasq(WEB, address="::1")
    except (RuntimeError, TimeoutError) as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    r = dnsq("--server", dm.server, "--family", "6", "web.test")
    assert r.answers[0]["addrs"] == ["[fd00::1]:0"], r.out + r.err


def test_second_server_answers_when_the_first_is_dead(dnsmasq):
    dm = dnsmasq(WEB)
    r = dnsq("--server", dead_server(), "--server", dm.server, "--timeout", 500,
             "--family", "4", "web.test")
    assert r.answers[0]["status"] == "OK", r.answers[0]


def test_truncated_answer_is_retried_over_tcp(fake_dns):
    f = fake_dns(records={"big.test": ["10.1.0.1", "10.1.0.2"]}, fault="truncate")
    r = dnsq("--server", f.server, "--family", "4", "big.test")
    assert r.answers[0]["status"] == "OK", r.answers[0]
    assert sorted(r.answers[0]["addrs"]) == ["10.1.0.1:0", "10.1.0.2:0"]
    assert f.tcp_queries >= 1


def test_large_answers_are_capped(dnsmasq):
    dm = dnsmasq({"many.test": [f"10.2.{i // 250}.{i % 250 + 1}" for i in range(100)]})
    r = dnsq("--server", dm.server, "--family", "4", "many.test")
    assert r.answers[0]["status"] == "OK", r.answers[0]
    assert len(r.answers[0]["addrs"]) == 64


def test_resolv_conf_servers_and_search_domains(dnsmasq, tmp_path):
    # resolv.conf has no port syntax: dnsmasq listens on port 53 of a random loopback address
    addr = f"127.{random.randrange(1, 255)}.{random.randrange(0, 255)}.{random.randrange(2, 254)}"
    try:
        dm = dnsmasq(WEB, address=addr, port=53)
    except (RuntimeError, TimeoutError) as e:
        pytest.skip(f"cannot run dnsmasq on {addr}:53: {e}")
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {addr}\nsearch test\noptions ndots:1\n")
    r = dnsq("--resolv-conf", conf, "--family", "4", "web", "v4")
    assert r.rc == 0, r.out + r.err
    assert sorted(r.answers[0]["addrs"] + r.answers[1]["addrs"]) == \
        ["10.0.0.1:0", "10.0.0.2:0", "10.0.0.9:0"]
    assert dm.queries("web.test") == 1


def test_bad_server_strings_are_refused():
    r = dnsq("--server", "dns.example:53", "web.test")
    assert r.rc == 2
    assert "dns.servers[0]" in r.err and "dns.example:53" in r.err


# ---- cache ---------------------------------------------------------------------------------

def test_concurrent_lookups_are_coalesced(dnsmasq):
    dm = dnsmasq(WEB)
    r = dnsq("--server", dm.server, "--parallel", 50, "--stats", "web.test")
    assert r.rc == 0
    assert len(r.answers) == 50
    assert all(len(a["addrs"]) == 3 for a in r.answers)
    assert r.stats["lookups"] == 1 and r.stats["coalesced"] == 49
    assert dm.queries("web.test", "A") == 1 and dm.queries("web.test", "AAAA") == 1


def test_cache_honours_min_ttl(dnsmasq):
    dm = dnsmasq(WEB, ttl=0)
    r = dnsq("--server", dm.server, "--family", "4", "--min-ttl", 2, "--repeat", 3,
             "--interval", 500, "--stats", "web.test")
    assert [a["cached"] for a in r.answers] == [0, 1, 1]
    assert r.answers[0]["ttl_ms"] == 2000
    assert dm.queries("web.test") == 1
    r = dnsq("--server", dm.server, "--family", "4", "--min-ttl", 0, "--repeat", 3,
             "--interval", 100, "web.test")
    assert [a["cached"] for a in r.answers] == [0, 0, 0], "TTL 0 and min_ttl 0: no caching"
    assert dm.queries("web.test") == 4


def test_cache_honours_max_ttl(dnsmasq):
    dm = dnsmasq(WEB, ttl=3600)
    r = dnsq("--server", dm.server, "--family", "4", "--max-ttl", 1, "--repeat", 3,
             "--interval", 600, "web.test")
    assert r.answers[0]["ttl_ms"] == 1000
    assert [a["cached"] for a in r.answers] == [0, 1, 0]
    assert dm.queries("web.test") == 2


def test_cache_size_evicts(dnsmasq):
    dm = dnsmasq(WEB)
    r = dnsq("--server", dm.server, "--family", "4", "--cache-size", 1, "--repeat", 2,
             "--interval", 100, "--stats", "web.test", "v4.test")
    assert r.stats["evictions"] >= 1 and r.stats["entries"] == 1
    assert dm.queries("web.test") == 2


# ---- following a name ----------------------------------------------------------------------

def test_changed_record_is_followed_after_its_ttl(dnsmasq):
    dm = dnsmasq({"svc.test": ["10.0.0.1"]}, ttl=1)
    p = subprocess.Popen([str(DNSQ), "--server", dm.server, "--min-ttl", "0", "--family", "4",
                          "--port", "80", "--watch", "--for", "4s", "svc.test"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    t_change = 1500
    dm.set_hosts({"svc.test": ["10.0.0.3", "10.0.0.2"]})
    out, err = p.communicate(timeout=20)
    check_sanitizers(out + err)
    changes = [parse_line(line) for line in out.splitlines() if line.startswith("change ")]
    assert len(changes) == 2, out + err
    assert changes[0]["addrs"] == ["10.0.0.1:80"]
    assert changes[1]["addrs"] == ["10.0.0.2:80", "10.0.0.3:80"], "sorted set"
    assert t_change <= changes[1]["t_ms"] <= t_change + 1500, changes[1]
    assert dm.queries("svc.test") >= 3, "re-resolved every TTL"


def test_watch_reports_a_name_that_disappears(dnsmasq):
    dm = dnsmasq({"svc.test": ["10.0.0.1"]}, ttl=1)
    p = subprocess.Popen([str(DNSQ), "--server", dm.server, "--min-ttl", "0", "--family", "4",
                          "--watch", "--for", "3s", "svc.test"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.2)
    dm.set_hosts({"other.test": ["10.0.0.5"]})
    out, err = p.communicate(timeout=20)
    check_sanitizers(out + err)
    changes = [parse_line(line) for line in out.splitlines() if line.startswith("change ")]
    assert [c["status"] for c in changes] == ["OK", "NOT_FOUND"], out


def test_watch_keeps_the_last_answer_through_an_outage(dnsmasq):
    dm = dnsmasq({"svc.test": ["10.0.0.1"]}, ttl=1)
    p = subprocess.Popen([str(DNSQ), "--server", dm.server, "--min-ttl", "0", "--family", "4",
                          "--timeout", "200", "--tries", "1", "--watch", "--for", "3s",
                          "svc.test"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.8)
    dm.stop()
    out, err = p.communicate(timeout=20)
    check_sanitizers(out + err)
    changes = [parse_line(line) for line in out.splitlines() if line.startswith("change ")]
    assert [c["status"] for c in changes] == ["OK"], out
