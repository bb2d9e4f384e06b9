"""The lab's building blocks on loopback (no namespaces, no root needed):
http_echo.py, grpc_server.py / grpc_client.py, certs.sh and compose.yaml."""
import json
import re
import signal
import socket
import subprocess
import sys

import pytest
import yaml

from labkit import LAB, PY, REPO, wait_until

sys.path.insert(0, str(LAB / "hosts"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- http_echo.py

@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    """http_echo.py on 127.0.0.1 and a unix socket, started with Go-style flags."""
    d = tmp_path_factory.mktemp("echo")
    port, sock, pidfile, record = free_port(), d / "echo.sock", d / "echo.pid", d / "rec.jsonl"
    proc = subprocess.Popen(
        [PY, LAB / "hosts/http_echo.py", f"-listen=127.0.0.1:{port}", f"--listen=unix:{sock}",
         "-text='Response from BLUE'", "--pidfile", pidfile, "--record", record],
        stdout=open(d / "out.log", "w"), stderr=subprocess.STDOUT)
    wait_until(pidfile.exists, 10, what="http_echo.py pid file")
    yield {"port": port, "sock": sock, "record": record, "log": d / "out.log", "proc": proc}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0
    assert not sock.exists() and not pidfile.exists()  # cleaned up after itself


def connect(echo):
    return socket.create_connection(("127.0.0.1", echo["port"]), timeout=5)


def read_response(f):
    """Read one response from a socket file: (status line, [(name, value)], body)."""
    status = f.readline().decode().rstrip("\r\n")
    headers = []
    while (line := f.readline().decode()) not in ("\r\n", ""):
        k, _, v = line.rstrip("\r\n").partition(": ")
        headers.append((k, v))
    n = int(dict(headers).get("Content-Length", 0))
    return status, headers, f.read(n) if n else b""


def exchange(echo, raw, responses=1):
    with connect(echo) as s:
        s.sendall(raw)
        f = s.makefile("rb")
        return [read_response(f) for _ in range(responses)]


BLUE = b"'Response from BLUE'\n"


def test_echo_answers_like_go_http_echo(echo):
    [(status, headers, body)] = exchange(echo, b"GET /any/path?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    assert [k for k, _ in headers] == ["X-App-Name", "X-App-Version", "Date",
                                        "Content-Length", "Content-Type"]
    h = dict(headers)
    assert h["X-App-Name"] == "http-echo" and h["X-App-Version"] == "0.2.3"
    assert h["Content-Type"] == "text/plain; charset=utf-8"
    assert h["Content-Length"] == "21" and body == BLUE
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", h["Date"])


def test_echo_health(echo):
    [(status, headers, body)] = exchange(echo, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.1 200 OK" and body == b'{"status":"ok"}\n'
    assert dict(headers)["Content-Type"] == "application/json"


def test_echo_keepalive_pipelining_and_head(echo):
    reqs = (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    with connect(echo) as s:
        s.sendall(reqs)
        f = s.makefile("rb")
        assert read_response(f)[2] == BLUE
        status, headers, _ = read_response(f)  # HEAD: headers only, no body follows
        assert dict(headers)["Content-Length"] == "21"
        # Reading the HEAD response consumed no body, so the next one parses cleanly.
        status, headers, body = read_response(f)
        assert body == b'{"status":"ok"}\n'
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # still open afterwards
        assert read_response(f)[2] == BLUE


def test_echo_discards_bodies(echo):
    chunked = (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    sized = b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd"
    after = b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"
    res = exchange(echo, chunked + sized + after, responses=3)
    assert [r[2] for r in res] == [BLUE] * 3
    recs = [json.loads(line) for line in echo["record"].read_text().splitlines()]
    by_target = {r["target"]: r for r in recs}
    assert by_target["/upload"]["body"] == "hello world"
    assert by_target["/upload"]["method"] == "POST"
    assert ["Transfer-Encoding", "chunked"] in by_target["/upload"]["headers"]


def test_echo_expect_100_continue(echo):
    with connect(echo) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        f = s.makefile("rb")
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n" and f.readline() == b"\r\n"
        s.sendall(b"abc")
        assert read_response(f)[2] == BLUE


def test_echo_connection_close_and_http10(echo):
    with connect(echo) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = s.makefile("rb").read()  # read() returns at EOF: the server closed
        assert b"\r\nConnection: close\r\n" in data and data.endswith(BLUE)
    with connect(echo) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = s.makefile("rb").read()
        assert data.startswith(b"HTTP/1.1 200 OK") and b"Connection" not in data
    with connect(echo) as s:
        s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        f = s.makefile("rb")
        assert dict(read_response(f)[1])["Connection"] == "keep-alive"
        s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert read_response(f)[2] == BLUE


@pytest.mark.parametrize("raw, status, detail", [
    (b"NONSENSE\r\n\r\n", "400 Bad Request", b""),
    (b"GET / HTTP/1.1\r\n\r\n", "400 Bad Request", b": missing required Host header"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
     "400 Bad Request", b""),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", "400 Bad Request", b""),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n", "400 Bad Request", b""),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n",
     "400 Bad Request", b""),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", "505 HTTP Version Not Supported", b""),
    (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "501 Not Implemented", b""),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
     "431 Request Header Fields Too Large", b""),
])
def test_echo_rejects_bad_requests(echo, raw, status, detail):
    with connect(echo) as s:
        s.sendall(raw)
        data = s.makefile("rb").read()
    assert data.startswith(f"HTTP/1.1 {status}\r\n".encode())
    assert b"Connection: close\r\n" in data
    assert data.endswith(f"\r\n\r\n{status}".encode() + detail)


def test_echo_unix_socket(echo):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(echo["sock"]))
        s.sendall(b"GET / HTTP/1.1\r\nHost: uds\r\n\r\n")
        assert read_response(s.makefile("rb"))[2] == BLUE


def test_echo_access_log(echo):
    exchange(echo, b"GET /logged HTTP/1.1\r\nHost: h\r\nUser-Agent: ua/1\r\n\r\n")
    wait_until(lambda: '"GET /logged HTTP/1.1" 200 21 "ua/1"' in echo["log"].read_text(),
               5, what="access log line")


def test_echo_survives_a_burst(echo):
    """Many connections at once, some dropped mid-request: it keeps serving."""
    socks = [connect(echo) for _ in range(100)]
    for i, s in enumerate(socks):
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"\r\n" if i % 2 else b""))
    for i, s in enumerate(socks):
        if i % 2:
            assert read_response(s.makefile("rb"))[2] == BLUE
        s.close()
    assert exchange(echo, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[0][2] == BLUE


# ------------------------------------------------------ grpc_server / grpc_client

@pytest.fixture(scope="module")
def keys():
    subprocess.run([LAB / "certs.sh"], check=True)
    return REPO / "build/lab/keys"


@pytest.fixture(scope="module")
def grpc_srv(keys, tmp_path_factory):
    d = tmp_path_factory.mktemp("grpc")
    log = d / "out.log"
    proc = subprocess.Popen(
        [PY, LAB / "hosts/grpc_server.py", "--plain", "127.0.0.1:0", "--tls", "127.0.0.1:0",
         "--cert", keys / "grpc.crt", "--key", keys / "grpc.key", "--pidfile", d / "pid"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT)
    wait_until(lambda: (d / "pid").exists() or proc.poll() is not None, 20, what="grpc server")
    out = log.read_text()
    assert proc.poll() is None, out
    addrs = dict(re.findall(r"listening (\w+)=(\S+)", out))
    yield {"plain": addrs["plain"], "tls": addrs["tls"], "proc": proc, "keys": keys}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_grpc_health_check(grpc_srv):
    import grpc
    import grpc_client as gc
    assert gc.health(grpc_srv["plain"]) == "SERVING"
    assert gc.health(grpc_srv["plain"], "hello.HelloService") == "SERVING"
    with pytest.raises(grpc.RpcError) as e:
        gc.health(grpc_srv["plain"], "no.Such")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_health_watch_follows_signals(grpc_srv):
    import grpc_client as gc
    with gc.channel(grpc_srv["plain"]) as ch:
        stub = gc.pb.health_pb2_grpc.HealthStub(ch)
        stream = stub.Watch(gc.pb.health_pb2.HealthCheckRequest(service=""), timeout=10)
        names = gc.pb.health_pb2.HealthCheckResponse.ServingStatus.Name
        assert names(next(stream).status) == "SERVING"
        grpc_srv["proc"].send_signal(signal.SIGUSR1)
        assert names(next(stream).status) == "NOT_SERVING"
        grpc_srv["proc"].send_signal(signal.SIGUSR2)
        assert names(next(stream).status) == "SERVING"
        stream.cancel()


def test_grpc_hello_all_four_shapes(grpc_srv):
    import grpc_client as gc
    t = grpc_srv["plain"]
    assert gc.hello(t, "pingora") == ["hello pingora"]
    assert gc.hello(t, "pingora", "server") == ["hello pingora"] * 10
    assert gc.hello(t, "pingora", "client") == ["hello pingora, pingora"]
    assert gc.hello(t, "pingora", "bidi") == ["hello pingora"] * 2
    with gc.channel(t) as ch:  # an absent greeting is "noname", as in grpcbin
        stub = gc.pb.hello_pb2_grpc.HelloServiceStub(ch)
        assert stub.SayHello(gc.pb.hello_pb2.HelloRequest(), timeout=3).reply == "hello noname"


def test_grpc_tls(grpc_srv):
    import grpc
    import grpc_client as gc
    ca = str(grpc_srv["keys"] / "ca.crt")
    assert gc.health(grpc_srv["tls"], ca=ca, server_name="grpc.pingora.local") == "SERVING"
    with pytest.raises(grpc.RpcError):  # 127.0.0.1 is not in the grpc certificate
        gc.health(grpc_srv["tls"], ca=ca, timeout=2)


def test_grpc_client_cli(grpc_srv):
    cli = [PY, LAB / "hosts/grpc_client.py"]
    r = subprocess.run(cli + ["health", grpc_srv["plain"]], capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, "SERVING\n")
    r = subprocess.run(cli + ["hello", grpc_srv["plain"], "--greeting", "x", "--mode", "bidi"],
                       capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, "hello x\nhello x\n")
    r = subprocess.run(cli + ["health", grpc_srv["plain"], "--service", "nope"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "NOT_FOUND" in r.stderr


# -------------------------------------------------------------------- certs.sh

def openssl(*args):
    return subprocess.run(["openssl", *map(str, args)], check=True,
                          capture_output=True, text=True).stdout


def test_certs(tmp_path):
    out = tmp_path / "keys"
    r = subprocess.run([LAB / "certs.sh", out], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
    names = ["ca", "server", "server-ec", "upstream", "client", "grpc"]
    for n in names:
        assert (out / f"{n}.crt").is_file() and (out / f"{n}.key").is_file()
    verify = openssl("verify", "-CAfile", out / "ca.crt", *[out / f"{n}.crt" for n in names[1:]])
    assert verify.count(": OK") == 5

    def text(n):
        return openssl("x509", "-in", out / f"{n}.crt", "-noout", "-text")

    ca = text("ca")
    assert "Subject: C = US, ST = PingoraCity, O = CityGov, CN = Pingora Root CA" in ca
    assert "CA:TRUE" in ca and "Public-Key: (2048 bit)" in ca and "sha256With" in ca
    san = {
        "server": "DNS:*.pingora.local, DNS:dev.pingora.local, DNS:localhost, "
                  "IP Address:127.0.0.1, IP Address:172.28.0.10",
        "server-ec": "DNS:*.pingora.local, DNS:dev.pingora.local, DNS:localhost, "
                     "IP Address:127.0.0.1, IP Address:172.28.0.10",
        "upstream": "DNS:advanced.pingora.local, DNS:*.api.pingora.local, IP Address:172.28.0.22",
        "grpc": "DNS:grpc.pingora.local, IP Address:172.28.0.23",
    }
    for n, want in san.items():
        t = text(n)
        assert want in t and "TLS Web Server Authentication" in t, n
    assert "NIST CURVE: P-256" in text("server-ec")
    client = text("client")
    assert "Subject: C = US, ST = PingoraCity, O = Pingora Proxy, CN = PingoraClient" in client
    assert "TLS Web Client Authentication" in client and "Alternative Name" not in client

    # Idempotent: a second run changes nothing and says nothing.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    r = subprocess.run([LAB / "certs.sh", out], capture_output=True, text=True)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    # A new CA re-signs every leaf, so the set stays consistent.
    (out / "ca.crt").unlink()
    subprocess.run([LAB / "certs.sh", out], check=True)
    verify = openssl("verify", "-CAfile", out / "ca.crt", *[out / f"{n}.crt" for n in names[1:]])
    assert verify.count(": OK") == 5


# ---------------------------------------------------------------- compose.yaml

def test_compose_matches_the_lab():
    doc = yaml.safe_load((LAB / "compose.yaml").read_text())
    assert doc["name"] == "pingora-guide"
    net = doc["networks"]["pingora_net"]
    assert net["driver"] == "bridge"
    assert net["ipam"]["config"][0]["subnet"] == "172.28.0.0/24"
    want = {  # service: (container_name, hostname, ip)
        "dev": ("pingora_dev", "dev.pingora.local", "172.28.0.10"),
        "client_1": ("pingora_client_1", "client1.pingora.local", "172.28.0.30"),
        "client_2": ("pingora_client_2", "client2.pingora.local", "172.28.0.31"),
        "upstream_blue": (None, "blue.pingora.local", "172.28.0.20"),
        "upstream_green": (None, "green.pingora.local", "172.28.0.21"),
        "upstream_advanced": ("upstream_advanced", "advanced.pingora.local", "172.28.0.22"),
        "upstream_grpc": ("upstream_grpc", "grpc.pingora.local", "172.28.0.23"),
        "dns": ("pingora_dns", "dns.pingora.local", "172.28.0.2"),
    }
    assert set(doc["services"]) == set(want)
    for name, (cname, hostname, ip) in want.items():
        svc = doc["services"][name]
        assert svc.get("container_name") == cname, name
        assert svc["hostname"] == hostname, name
        assert svc["networks"]["pingora_net"]["ipv4_address"] == ip, name
        assert "build" in svc or "image" in svc, name
        if name != "dns":
            assert svc["dns"] == ["172.28.0.2"], name
    blue = doc["services"]["upstream_blue"]["command"]
    assert "-text='Response from BLUE'" in blue and "-listen=:8080" in blue
    assert "-text='Response from GREEN'" in doc["services"]["upstream_green"]["command"]
    assert "../build/lab/keys:/keys:ro" in doc["services"]["dev"]["volumes"]
    assert "SSL_CERT_FILE=/keys/ca.crt" in doc["services"]["dev"]["environment"]
    # Every file the compose file mounts or builds from exists in the repository.
    for svc in doc["services"].values():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if not src.startswith("../build"):
                assert (LAB / src).exists(), v
        if "build" in svc:
            assert (LAB / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    # dnsmasq serves the same hosts file in both variants of the lab.
    hosts = (LAB / "dns/pingora.hosts").read_text()
    for name, (_, hostname, ip) in want.items():
        assert re.search(rf"^{re.escape(ip)}\s+{re.escape(hostname)}$", hosts, re.M), hostname
