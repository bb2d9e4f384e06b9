"""The sluice gateway (SPEC §3-§5): config validation with key paths, routing precedence,
weighted balancing, admin API, metrics, live reconfiguration from every source, and bad input
through each of them. Both sides are asserted: what clients got and what upstreams received."""
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request

import pytest

from gw import Gateway, check_config, wait_until
from helpers import SLUICE
from mockup import MockUpstream


@pytest.fixture
def up1():
    u = MockUpstream()
    yield u
    u.close()


@pytest.fixture
def up2():
    u = MockUpstream()
    yield u
    u.close()


def respond(body, status=200):
    return {"respond": {"status": status, "body": body, "headers": {"Content-Type": "text/plain"}}}


# ---- sluice -t ------------------------------------------------------------------------------

GOOD = """
version: 1
listeners: [{name: web, listen: "127.0.0.1:18080"}]
upstreams:
  blue: {backends: ["127.0.0.1:1", {address: "127.0.0.1:2", weight: 3}], host: blue.local,
         timeouts: {connect: 2s, read: 500ms}}
routes:
  - {name: r1, match: {host: "*.example.com", path: /blue, path_type: prefix, methods: [GET, POST],
                       headers: {x-canary: "1"}}, upstream: blue, timeouts: {read: 5s}}
  - {match: {path: "^/re/[0-9]+$", path_type: regex}, upstream: blue}
  - {match: {path: /, path_type: prefix}, respond: {status: 404, body: "not here\\n"}}
errors: {format: html}
"""


def test_t_accepts_the_spec_schema(tmp_path):
    r = check_config(tmp_path, GOOD)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "configuration OK"


BAD = [
    ("routes:\n  - {match: {path: /, path_type: prefixx}, respond: {status: 200}}\n"
     "  - {respond: {status: 200}}\n",
     'routes[0].match.path_type: unknown value "prefixx" (prefix, exact, regex)'),
    ("routes:\n  - {upstream: nope}\n", 'routes[0].upstream: unknown upstream "nope"'),
    ("upstreams: {a: {backends: []}}\n",
     "upstreams.a.backends: an upstream needs at least one backend"),
    ("upstreams: {a: {backends: [\"1.2.3.4\"]}}\n", "upstreams.a.backends[0]"),
    ("upstreams: {a: {backends: [\"blue local:80\"]}}\n",
     'upstreams.a.backends[0]: "blue local:80": expected ip:port, name:port or unix:/path'),
    ("upstreams: {a: {backends: [{address: \"1.2.3.4:80\", weight: 0}]}}\n",
     "upstreams.a.backends[0].weight: 0 is out of range [1, 1000]"),
    ("upstreams: {a: {backends: [\"1.2.3.4:80\"], timeouts: {read: fast}}}\n",
     "upstreams.a.timeouts.read: expected a duration"),
    ("upstreams: {a: {backends: [\"1.2.3.4:80\"], lb: ketama2}}\n", 'upstreams.a.lb: unknown value'),
    ("upstreams: {a: {backend: [\"1.2.3.4:80\"]}}\n",
     'upstreams.a.backend: unknown key (did you mean "backends"?)'),
    ("routes:\n  - {match: {path: \"([\", path_type: regex}, respond: {status: 200}}\n",
     "routes[0].match.path: invalid regex"),
    ("routes:\n  - {match: {methods: [GIT]}, respond: {status: 200}}\n",
     'routes[0].match.methods[0]: unknown method "GIT"'),
    ("routes:\n  - {match: {host: \"a.*.com\"}, respond: {status: 200}}\n",
     "routes[0].match.host"),
    ("routes:\n  - {respond: {status: 200}, upstream: x}\n",
     "routes[0]: a route has an upstream or respond, not both"),
    ("routes:\n  - {filters: [{nope: {}}], respond: {status: 200}}\n",
     "routes[0].filters[0].nope: unknown filter"),
    ("routes:\n  - {name: a, respond: {status: 200}}\n  - {name: a, respond: {status: 200}}\n",
     'routes[1].name: duplicate route name "a"'),
    ("listeners:\n  - {name: a, listen: \"127.0.0.1:1\"}\n  - {name: a, listen: \"127.0.0.1:2\"}\n",
     'listeners[1].name: duplicate listener name "a"'),
    ("listeners:\n  - {name: a, listen: \"localhost:1\"}\n", "listeners[0].listen"),
    ("upstreams: {a: {discovery: {file: /nonexistent/up.txt}}}\n",
     "upstreams.a.discovery.file: cannot read discovery file /nonexistent/up.txt"),
    ("errors: {format: xml}\n", 'errors.format: unknown value "xml"'),
    ("threads: 2\nroutez: []\n", 'routez: unknown key (did you mean "routes"?)'),
]


@pytest.mark.parametrize("text,msg", BAD, ids=[m[:40] for _, m in BAD])
def test_t_rejects_with_the_key_path(tmp_path, text, msg):
    base = "listeners: [{name: web, listen: \"127.0.0.1:18080\"}]\n" if "listeners" not in text \
        else ""
    r = check_config(tmp_path, base + text)
    assert r.returncode == 1, r.stdout
    assert msg in r.stderr, r.stderr


# ---- routing --------------------------------------------------------------------------------

def test_routing_precedence(procs, tmp_path, up1):
    conf = {
        "upstreams": {"u": {"backends": [up1.addr]}},
        "routes": [
            {"name": "regex", "match": {"path": "^/a/[0-9]+$", "path_type": "regex"},
             **respond("regex")},
            {"name": "short", "match": {"path": "/a"}, **respond("prefix /a")},
            {"name": "long", "match": {"path": "/a/b/"}, **respond("prefix /a/b")},
            {"name": "exact", "match": {"path": "/a/b", "path_type": "exact"}, **respond("exact")},
            {"name": "post-only", "match": {"path": "/m", "methods": ["POST"]}, **respond("post")},
            {"name": "canary", "match": {"path": "/h", "headers": {"x-canary": "1"}},
             **respond("canary")},
            {"name": "h-any", "match": {"path": "/h"}, **respond("h any")},
            {"name": "host-exact", "match": {"host": "a.example.com", "path": "/x"},
             **respond("host exact")},
            {"name": "host-wild", "match": {"host": "*.example.com", "path": "/x"},
             **respond("host wildcard")},
            {"name": "fallback", "match": {"path": "/x"}, **respond("any host")},
            {"name": "proxied", "match": {"path": "/up"}, "upstream": "u"},
        ],
    }
    g = Gateway(procs, tmp_path, conf)
    body = lambda p, **kw: g.get(p, **kw)[2].decode()
    assert body("/a/b") == "exact"                 # exact beats every prefix
    assert body("/a/b/c") == "prefix /a/b"          # longest prefix
    assert body("/a/bc") == "prefix /a"             # prefixes end at path elements
    assert body("/a/7") == "prefix /a"              # prefix beats regex
    assert body("/a") == "prefix /a"
    assert g.get("/ab")[0] == 404                   # "/a" does not cover "/ab"
    assert body("/m", method="POST") == "post"
    assert g.get("/m")[0] == 404
    assert body("/h", headers={"X-Canary": "1"}) == "canary"
    assert body("/h") == "h any"
    assert body("/x", host="a.example.com") == "host exact"
    assert body("/x", host="b.example.com:8080") == "host wildcard"
    assert body("/x", host="b.c.example.com") == "any host"   # a wildcard is one label
    assert body("/x", host="example.com") == "any host"
    status, headers, raw = g.get("/nothing")
    assert status == 404 and json.loads(raw) == {"status": "error", "code": 404,
                                                 "message": "no route"}
    assert g.get("/up/p?q=1")[2] == b"hello\n"
    assert up1.last().target == "/up/p?q=1"


def test_regex_routes_in_file_order(procs, tmp_path):
    conf = {"routes": [
        {"match": {"path": "^/v[0-9]+/", "path_type": "regex"}, **respond("first")},
        {"match": {"path": "^/v1/", "path_type": "regex"}, **respond("second")},
        {"match": {"path": "^/w", "path_type": "regex"}, **respond("w")},
    ]}
    g = Gateway(procs, tmp_path, conf)
    assert g.get("/v1/x")[2] == b"first"
    assert g.get("/wow")[2] == b"w"


def test_weighted_three_to_one_and_host_override(procs, tmp_path, up1, up2):
    conf = {
        "upstreams": {"w": {"backends": [{"address": up1.addr, "weight": 3},
                                         {"address": up2.addr, "weight": 1}],
                            "host": "backend.internal"}},
        "routes": [{"match": {"path": "/"}, "upstream": "w"}],
    }
    g = Gateway(procs, tmp_path, conf)
    for _ in range(40):
        assert g.get("/")[0] == 200
    assert len(up1.requests) == 30 and len(up2.requests) == 10
    assert up1.last().header("host") == "backend.internal"


def test_route_timeout_overrides_upstream(procs, tmp_path, up1):
    conf = {
        "upstreams": {"u": {"backends": [up1.addr], "timeouts": {"read": "10s"}}},
        "routes": [{"match": {"path": "/never"}, "upstream": "u", "timeouts": {"read": "300ms"}},
                   {"match": {"path": "/"}, "upstream": "u"}],
    }
    g = Gateway(procs, tmp_path, conf)
    t0 = time.monotonic()
    status, _, body = g.get("/never")
    assert status == 504 and time.monotonic() - t0 < 3
    assert json.loads(body)["code"] == 504


def test_connect_failure_retries_another_backend(procs, tmp_path, up1):
    dead = "127.0.0.1:1"
    conf = {"upstreams": {"u": {"backends": [dead, up1.addr]}},
            "routes": [{"match": {"path": "/"}, "upstream": "u"}]}
    g = Gateway(procs, tmp_path, conf)
    for _ in range(6):
        assert g.get("/")[0] == 200


def test_error_format_html(procs, tmp_path):
    g = Gateway(procs, tmp_path, {"routes": [], "errors": {"format": "html"}})
    status, headers, body = g.get("/")
    assert status == 404 and headers["Content-Type"].startswith("text/html")
    assert b"<h1>404 Not Found</h1>" in body


# ---- admin API ------------------------------------------------------------------------------

def test_admin_endpoints(procs, tmp_path, up1):
    conf = {"upstreams": {"u": {"backends": [up1.addr]}},
            "routes": [{"name": "main", "match": {"path": "/"}, "upstream": "u"}]}
    g = Gateway(procs, tmp_path, conf, token="s3cret", threads=2)
    assert g.admin_call("GET", "/healthz")[2] == b"ok\n"
    assert g.admin_call("GET", "/readyz")[0] == 200
    for _ in range(5):
        g.get("/")
    status, headers, body = g.admin_call("GET", "/config")
    cfg = json.loads(body)
    assert cfg["admin"]["token"] == "<redacted>"
    assert cfg["upstreams"]["u"]["backends"] == [up1.addr]
    assert headers["ETag"].strip('"') and len(headers["ETag"].strip('"')) == 64
    ups = json.loads(g.admin_call("GET", "/upstreams")[2])
    assert ups[0]["name"] == "u" and ups[0]["backends"][0]["address"] == up1.addr
    assert g.admin_call("GET", "/nope")[0] == 404
    assert g.admin_call("POST", "/config", {})[0] == 405
    text = g.metrics()
    assert 'sluice_requests_total{route="main",upstream="u",code="200",method="GET"} 5' in text
    for name in ("sluice_request_duration_seconds_bucket", "sluice_upstream_connect_duration_seconds",
                 "sluice_upstream_connections_reused_total", 'sluice_connections{state="idle"}',
                 'sluice_config_reloads_total{result="success"}', "sluice_config_hash"):
        assert name in text, name
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_metrics_of_removed_routes_and_upstreams_go(procs, tmp_path, up1):
    """Series of routes and upstreams that a change removed leave /metrics once no request
    uses them (a cluster's Ingresses come and go; the series must not pile up), also when a
    request to a removed route was still running during the change; the others keep counting."""
    conf = {"upstreams": {"keep": {"backends": [up1.addr]}, "gone": {"backends": [up1.addr]}},
            "routes": [{"name": "stay", "match": {"path": "/stay"}, "upstream": "keep"},
                       {"name": "old", "match": {"path": "/old"}, "upstream": "gone"},
                       {"name": "slow", "match": {"path": "/slow-read"}, "upstream": "gone"}]}
    g = Gateway(procs, tmp_path, conf, threads=2)
    for _ in range(4):
        assert g.get("/stay")[0] == 200
        assert g.get("/old")[0] == 200
    text = g.metrics()
    assert 'route="old",upstream="gone"' in text and 'upstream="gone"' in text
    # A request to a route about to go, still running (the upstream reads its body slowly).
    done = {}

    def slow():
        req = urllib.request.Request(g.url + "/slow-read", data=b"x" * (256 * 1024),
                                     method="POST")
        with urllib.request.urlopen(req, timeout=20) as r:
            done["status"] = r.status

    up1.slow_read_delay = 0.2  # 16 reads of 16 KiB: about 3.2 s
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(1.0)  # well into it, with room on a loaded machine
    new = {"upstreams": {"keep": {"backends": [up1.addr]}},
           "routes": [{"name": "stay", "match": {"path": "/stay"}, "upstream": "keep"}]}
    assert g.put_config(new)[0] == 200
    assert "status" not in done, "the slow request was still running during the change"
    t.join(20)
    assert done.get("status") == 200, "the running request finished on its old route"
    for _ in range(4):
        assert g.get("/stay")[0] == 200
    assert g.get("/old")[0] == 404

    def clean():
        text = g.metrics()
        return ('route="old"' not in text and 'route="slow"' not in text
                and 'upstream="gone"' not in text)
    wait_until(clean, timeout=5)
    text = g.metrics()
    # Both workers' counts for the route that stayed are all there (8 over two workers).
    assert 'sluice_requests_total{route="stay",upstream="keep",code="200",method="GET"} 8' in text
    assert 'sluice_requests_total{route="",upstream="",code="404",method="GET"} 1' in text
    assert 'sluice_upstream_connections_reused_total{upstream="keep"}' in text
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_put_config_needs_the_token(procs, tmp_path):
    g = Gateway(procs, tmp_path, {"routes": [{"match": {"path": "/"}, **respond("old")}]},
                token="s3cret")
    new = {"routes": [{"match": {"path": "/"}, **respond("new")}]}
    status, headers, body = g.admin_call("PUT", "/config", new, token="")
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
    assert g.admin_call("PUT", "/config", new, token="wrong")[0] == 403
    assert g.get("/")[2] == b"old"
    status, reply = g.put_config(new)
    assert status == 200 and reply["applied"] is True and len(reply["hash"]) == 64
    assert g.get("/")[2] == b"new"
    assert g.admin_call("GET", "/config")[1]["ETag"] == f'"{reply["hash"]}"'


BAD_PUTS = [
    ({"routes": [{"upstream": "ghost"}]}, 'routes[0].upstream: unknown upstream "ghost"'),
    ({"upstreams": {"a": {"backends": "1.2.3.4:80"}}}, "upstreams.a.backends: expected a list"),
    ({"upstreams": {"a": {"backends": []}}}, "at least one backend"),
    ({"routes": [{"name": "x", **respond("a")}, {"name": "x", **respond("b")}]},
     'duplicate route name "x"'),
    ({"routes": [{"match": {"path": "/"}, "respond": {"status": "200"}}]},
     "routes[0].respond.status: expected an integer"),
    ({"routes": [{"match": {"path": "/", "headers": {"bad name": "x"}}, **respond("a")}]},
     "routes[0].match.headers.bad name: not a valid header name"),
    ({"routes": [{"match": {"path": "/", "headers": "x"}, **respond("a")}]},
     "routes[0].match.headers: expected a mapping of header to value, got string"),
    ({"routes": [{"match": {"path": "/"}, "respond": {"headers": {"X-A": 1}}}]},
     "routes[0].respond.headers.X-A: expected a header value string"),
    ({"routes": [{"match": {"path": "/"}, "respond": {"headers": {"X-A": "a\nb"}}}]},
     "routes[0].respond.headers.X-A: expected a header value string"),
    ({"threads": 4}, "threads: unknown key"),
    ({"listeners": []}, "listeners: cannot be changed at run time"),
    ({"upstreams": {"a": {"backends": ["1.2.3.4:80"], "discovery": {"file": "/nonexistent"}}}},
     "cannot read discovery file"),
]


@pytest.mark.parametrize("doc,msg", BAD_PUTS, ids=[m[:30] for _, m in BAD_PUTS])
def test_bad_put_config_is_refused_and_old_config_serves(procs, tmp_path, doc, msg):
    g = Gateway(procs, tmp_path, {"routes": [{"match": {"path": "/"}, **respond("old")}]})
    before = g.admin_call("GET", "/config")[1]["ETag"]
    status, reply = g.put_config(doc)
    assert status == 400 and msg in reply["message"], reply
    assert g.get("/")[2] == b"old"
    assert g.admin_call("GET", "/config")[1]["ETag"] == before
    assert 'sluice_config_reloads_total{result="failure"} 1' in g.metrics()


def test_put_config_malformed_and_huge_bodies(procs, tmp_path):
    g = Gateway(procs, tmp_path, {"routes": [{"match": {"path": "/"}, **respond("old")}]})
    status, _, body = g.admin_call("PUT", "/config", raw=b'{"routes": [')
    assert status == 400 and b"invalid JSON" in body
    status, _, body = g.admin_call("PUT", "/config", raw=b"x" * (50 * 1024 * 1024))
    assert status == 413
    assert g.get("/")[2] == b"old"
    assert g.admin_call("GET", "/healthz")[0] == 200


def test_put_backends(procs, tmp_path, up1, up2):
    conf = {"upstreams": {"u": {"backends": [up1.addr]}},
            "routes": [{"match": {"path": "/"}, "upstream": "u"}]}
    g = Gateway(procs, tmp_path, conf)
    etag = g.admin_call("GET", "/config")[1]["ETag"]
    g.get("/")
    assert len(up1.requests) == 1
    status, _, body = g.admin_call("PUT", "/upstreams/u/backends", [up2.addr])
    assert status == 200, body
    g.get("/")
    assert len(up2.requests) == 1 and len(up1.requests) == 1
    # the desired-state hash stays: a watcher would not think sluice restarted
    assert g.admin_call("GET", "/config")[1]["ETag"] == etag
    assert g.admin_call("PUT", "/upstreams/ghost/backends", [up2.addr])[0] == 404
    assert g.admin_call("PUT", "/upstreams/u/backends", [])[0] == 400
    assert g.admin_call("PUT", "/upstreams/u/backends", ["nope"])[0] == 400
    g.get("/")
    assert len(up2.requests) == 2


def test_sighup_reload_and_bad_file(procs, tmp_path):
    g = Gateway(procs, tmp_path, {"routes": [{"match": {"path": "/"}, **respond("v1")}]})
    doc = dict(g.doc)
    doc["routes"] = [{"match": {"path": "/"}, **respond("v2")}]
    g.write(doc)
    g.proc.send(signal.SIGHUP)
    wait_until(lambda: g.get("/")[2] == b"v2", what="the reload")
    g.path.write_text("routes: [{upstream: missing}]\n" + g.path.read_text())
    g.proc.send(signal.SIGHUP)
    g.wait_log("reload refused")
    assert g.get("/")[2] == b"v2"
    doc["admin"] = {"listen": "127.0.0.1:1"}
    g.write(doc)
    g.proc.send(signal.SIGHUP)
    g.wait_log('"admin" changed')


def test_discovery_file(procs, tmp_path, up1, up2):
    f = tmp_path / "upstreams.txt"
    f.write_text(f"# start with one\n{up1.addr}\n")
    conf = {"upstreams": {"u": {"discovery": {"file": str(f), "interval": "200ms"}}},
            "routes": [{"match": {"path": "/"}, "upstream": "u"}]}
    g = Gateway(procs, tmp_path, conf)
    g.get("/")
    assert len(up1.requests) == 1
    f.write_text(f"{up2.addr}   # switched\n")
    wait_until(lambda: g.get("/")[0] == 200 and len(up2.requests) > 0, timeout=3,
               what="discovery to switch")
    os.chmod(f, 0)
    f.rename(tmp_path / "gone.txt")
    g.wait_log("keeping the current backends of u", timeout=3)
    n = len(up2.requests)
    g.get("/")
    assert len(up2.requests) == n + 1
    (tmp_path / "upstreams.txt").write_text("not-an-address\n")
    time.sleep(0.5)
    g.get("/")
    assert len(up2.requests) == n + 2


def test_draining_readyz_and_inflight(procs, tmp_path, up1):
    conf = {"upstreams": {"u": {"backends": [up1.addr]}},
            "routes": [{"match": {"path": "/"}, "upstream": "u"}]}
    g = Gateway(procs, tmp_path, conf)
    result = {}

    size = 48 * 1024 * 1024

    def slow():
        result["r"] = subprocess.run(["curl", "-sS", "--limit-rate", "16M",
                                      f"{g.url}/stream/{size}"], capture_output=True)

    t = threading.Thread(target=slow)
    t.start()
    up1.wait_requests(1)
    time.sleep(0.2)
    g.proc.send(signal.SIGTERM)
    time.sleep(0.2)
    assert g.admin_call("GET", "/readyz")[0] == 503  # still serving, no longer ready
    t.join(30)
    assert result["r"].returncode == 0 and len(result["r"].stdout) == size
    assert g.proc.wait(10) == 0


def test_default_config_serves_404(procs, tmp_path):
    p = procs.start([SLUICE])
    p.wait_log("admin API on 127.0.0.1:10254")
    r = subprocess.run(["curl", "-s", "-i", "http://127.0.0.1:8080/anything"], capture_output=True)
    assert r.stdout.startswith(b"HTTP/1.1 404")
    assert p.stop() == 0


def test_routing_sees_normalized_paths(procs, tmp_path):
    conf = {"routes": [{"match": {"path": "/admin"}, **respond("denied", 403)},
                       {"match": {"host": "example.com.", "path": "/"}, **respond("dot")},
                       {"match": {"path": "/"}, **respond("open")}]}
    g = Gateway(procs, tmp_path, conf)
    for p in ("/admin", "/%61dmin", "//admin", "/x/../admin", "/./admin/"):
        assert g.get(p)[0] == 403, p
    assert g.get("/administrator")[2] == b"open"
    assert g.get("/", host="example.com")[2] == b"dot"


def test_put_backends_refused_for_a_discovery_upstream(procs, tmp_path, up1):
    f = tmp_path / "ups.txt"
    f.write_text(up1.addr + "\n")
    g = Gateway(procs, tmp_path, {"upstreams": {"u": {"discovery": {"file": str(f)}}},
                                  "routes": [{"match": {"path": "/"}, "upstream": "u"}]})
    status, _, body = g.admin_call("PUT", "/upstreams/u/backends", ["127.0.0.1:9"])
    assert status == 409 and b"discovery file" in body


def test_admin_head_and_long_tokens(procs, tmp_path):
    g = Gateway(procs, tmp_path, {"routes": []}, token="t" * 3000)
    import socket as so
    with so.create_connection(("127.0.0.1", g.admin_port)) as s:
        s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        data = b""
        while (d := s.recv(4096)):
            data += d
    assert data.count(b"HTTP/1.1 200") == 2 and data.endswith(b"\r\n\r\nok\n")
    assert data.split(b"\r\n\r\n")[1].startswith(b"HTTP/1.1 200"), "HEAD had no body"
    new = {"routes": [{"match": {"path": "/"}, **respond("new")}]}
    assert g.put_config(new)[0] == 200
    status, headers, body = g.admin_call("GET", "/config")
    assert headers["ETag"].startswith('"') and "X-Sluice-Config-Generation" in headers
    assert json.loads(body)["routes"][0]["respond"]["body"] == "new"


def test_sighup_refuses_typos_and_reports_static_changes(procs, tmp_path):
    g = Gateway(procs, tmp_path, {"routes": [{"match": {"path": "/"}, **respond("v1")}]})
    doc = dict(g.doc)
    doc["rutes"] = []
    g.write(doc)
    g.proc.send(signal.SIGHUP)
    g.wait_log(r'reload refused.*rutes: unknown key \(did you mean "routes"\?\)')
    del doc["rutes"]
    doc["threads"] = 2
    doc["routes"] = [{"match": {"path": "/"}, **respond("v2")}]
    g.write(doc)
    g.proc.send(signal.SIGHUP)
    g.wait_log(r'"threads" changed')
    wait_until(lambda: g.get("/")[2] == b"v2", what="the reload")


def test_hot_upgrade_of_the_gateway_keeps_admin(procs, tmp_path, up1):
    conf = {"upstreams": {"u": {"backends": [up1.addr]}},
            "routes": [{"match": {"path": "/"}, "upstream": "u"}]}
    g = Gateway(procs, tmp_path, conf, threads=2)
    new = procs.start([SLUICE, "-u", "-c", g.path], name="sluice-new")
    new.wait_log("waiting for the old process")
    g.proc.send(signal.SIGQUIT)
    new.wait_log(r"received \d+ listening socket")
    new.wait_log(r"admin API on")
    assert g.proc.wait(15) == 0
    assert g.get("/")[0] == 200
    assert g.admin_call("GET", "/readyz")[0] == 200
    assert new.alive()


def test_admin_port_busy_exits_3(procs, tmp_path):
    import socket as so
    blocker = so.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    path = tmp_path / "c.yaml"
    path.write_text(f"admin: {{listen: \"127.0.0.1:{port}\"}}\n"
                    f"listeners: [{{name: w, listen: \"127.0.0.1:0\"}}]\n")
    r = subprocess.run([str(SLUICE), "-c", str(path)], capture_output=True, text=True, timeout=20)
    blocker.close()
    assert r.returncode == 3, r.stderr
    assert "admin API" in r.stderr and "address already in use" in r.stderr


def test_admin_answers_expect_100_continue(procs, tmp_path):
    """A client that asks (curl does for bodies over 1 MiB) hears 100 Continue before sending."""
    import socket
    g = Gateway(procs, tmp_path, {"routes": [{"match": {"path": "/"}, **respond("old")}]})
    body = json.dumps({"routes": [{"match": {"path": "/"}, **respond("new")}]}).encode()
    with socket.create_connection(("127.0.0.1", g.admin_port), timeout=5) as s:
        s.sendall(b"PUT /config HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    assert g.get("/")[2] == b"new"
