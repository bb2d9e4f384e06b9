"""Tests of the Kubernetes API server emulator, mostly through the official python client
(python3-kubernetes) over TLS with a bearer token, plus raw HTTP for the wire format."""
import base64
import json
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kube import apiserver
from kube import fixtures as fx
from kube.apiserver import KubeAPIServer

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client, watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

HERE = Path(__file__).resolve().parent


# --- helpers ---

def net(api):
    return client.NetworkingV1Api(api)


def ingresses(kube, spec):
    """Creates ingresses from [(namespace, name)]."""
    for ns, name in spec:
        kube.create(fx.ingress(name, namespace=ns, host=f"{name}.example", service="web"))


def raw_request(kube, method, path, body=None, token="t", headers=None, timeout=5):
    """(status, headers dict, raw body bytes as received, chunk framing included) over TLS."""
    ctx = ssl.create_default_context(cafile=kube.ca_file)
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", kube.port), timeout=timeout),
                           server_hostname="127.0.0.1")
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{kube.port}", "Connection: close",
             "Accept: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    data = b""
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        if not any(k.lower() == "content-type" for k in (headers or {})):
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(data)}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    buf = b""
    while True:
        try:
            got = sock.recv(65536)
        except (ssl.SSLError, ConnectionError):
            break
        if not got:
            break
        buf += got
    sock.close()
    head, _, rest = buf.partition(b"\r\n\r\n")
    status_line, *hdr_lines = head.decode().split("\r\n")
    hdrs = {}
    for h in hdr_lines:
        k, _, v = h.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(status_line.split()[1]), hdrs, rest


def dechunk(raw):
    """The chunks of a chunked body: [bytes], and whether the terminating chunk came."""
    chunks, i = [], 0
    while True:
        j = raw.index(b"\r\n", i)
        size = int(raw[i:j], 16)
        if size == 0:
            return chunks, True
        chunks.append(raw[j + 2:j + 2 + size])
        assert raw[j + 2 + size:j + 4 + size] == b"\r\n"
        i = j + 4 + size
        if i >= len(raw):
            return chunks, False


def raw_watch(kube, path, duration=0.3, resource="ingresses", action=None):
    """Opens a raw watch, runs `action()` once the server has it, lets it run `duration`
    seconds, ends it cleanly with close_watches() and returns (status, headers, chunks,
    whether the terminating chunk came)."""
    result = {}
    t = threading.Thread(target=lambda: result.update(r=raw_request(kube, "GET", path)))
    t.start()
    kube.wait_for_watch(resource)
    if action:
        action()
    time.sleep(duration)
    kube.close_watches(resource)
    t.join(5)
    code, hdrs, raw = result["r"]
    chunks, ended = dechunk(raw)
    return code, hdrs, chunks, ended


def wait_until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def collect_watch(func, *args, **kwargs):
    """Runs a watch in a thread; returns (queue of events, Watch)."""
    q = queue.Queue()
    w = watch.Watch()

    def run():
        try:
            for ev in w.stream(func, *args, **kwargs):
                q.put(ev)
        except Exception as e:  # surfaced to the test through the queue
            q.put(e)
        q.put(None)

    threading.Thread(target=run, daemon=True).start()
    return q, w


def take(q, n, timeout=5.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        item = q.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(item, Exception):
            raise item
        if item is None:
            break
        if item["type"] != "BOOKMARK":
            out.append(item)
    return out


# --- discovery and auth ---

def test_discovery_documents(kclient):
    assert client.VersionApi(kclient).get_code().git_version.startswith("v1.")
    groups = {g.name for g in client.ApisApi(kclient).get_api_versions().groups}
    assert {"networking.k8s.io", "discovery.k8s.io", "coordination.k8s.io"} <= groups
    res = {r.name: r for r in net(kclient).get_api_resources().resources}
    assert res["ingresses"].namespaced and res["ingresses"].kind == "Ingress"
    assert "watch" in res["ingresses"].verbs and "ingresses/status" in res
    assert not res["ingressclasses"].namespaced
    core = {r.name for r in client.CoreV1Api(kclient).get_api_resources().resources}
    assert {"services", "secrets", "namespaces", "endpoints"} <= core
    assert "v1" in client.CoreApi(kclient).get_api_versions().versions


def test_unauthorized_without_or_with_wrong_token(kube):
    for token in (None, "wrong"):
        cfg = client.Configuration(host=kube.url)
        cfg.ssl_ca_cert = kube.ca_file
        if token:
            cfg.api_key = {"authorization": f"Bearer {token}"}
        with client.ApiClient(cfg) as api:
            with pytest.raises(ApiException) as e:
                net(api).list_ingress_for_all_namespaces()
            assert e.value.status == 401
            body = json.loads(e.value.body)
            assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": "Unauthorized",
                            "reason": "Unauthorized", "code": 401}


def test_token_rotation_at_runtime(kube, tmp_path):
    assert raw_request(kube, "GET", "/api/v1/namespaces")[0] == 200
    kube.set_token("t2")
    assert raw_request(kube, "GET", "/api/v1/namespaces")[0] == 401
    assert raw_request(kube, "GET", "/api/v1/namespaces", token="t2")[0] == 200
    # a token file is re-read when it changes
    tf = tmp_path / "token"
    tf.write_text("one\n")
    srv = KubeAPIServer(tls=False, token_file=tf, state_dir=tmp_path / "s2").start()
    try:
        import urllib.request

        def status(tok):
            req = urllib.request.Request(srv.url + "/api/v1/namespaces",
                                         headers={"Authorization": f"Bearer {tok}"})
            try:
                return urllib.request.urlopen(req, timeout=5).status
            except urllib.error.HTTPError as e:
                return e.code
        assert status("one") == 200
        tf.write_text("two\n")
        os.utime(tf, ns=(time.time_ns(), time.time_ns() + 1_000_000))
        assert status("one") == 401 and status("two") == 200
        assert json.loads(Path(srv.kubeconfig).read_text())["users"][0]["user"]["tokenFile"]
    finally:
        srv.close()


def test_forbidden_by_rule(kube, kclient):
    kube.forbid("create", "leases")
    with pytest.raises(ApiException) as e:
        client.CoordinationV1Api(kclient).create_namespaced_lease("default", fx.lease("l"))
    assert e.value.status == 403 and json.loads(e.value.body)["reason"] == "Forbidden"
    kube.allow()
    client.CoordinationV1Api(kclient).create_namespaced_lease("default", fx.lease("l"))


# --- list ---

def test_list_all_namespaces_and_one_namespace_with_pagination(kube, kclient):
    spec = [(ns, f"ing{i:02d}") for ns in ("alpha", "beta", "gamma") for i in range(4)]
    ingresses(kube, spec)
    api = net(kclient)
    full = api.list_ingress_for_all_namespaces()
    assert [(i.metadata.namespace, i.metadata.name) for i in full.items] == sorted(spec)
    assert full.metadata._continue is None and full.metadata.remaining_item_count is None

    got, token, pages = [], None, []
    while True:
        page = api.list_ingress_for_all_namespaces(limit=5, _continue=token)
        pages.append(page)
        got += [(i.metadata.namespace, i.metadata.name) for i in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert got == sorted(spec)
    assert [len(p.items) for p in pages] == [5, 5, 2]
    assert [p.metadata.remaining_item_count for p in pages] == [7, 2, None]
    assert len({p.metadata.resource_version for p in pages}) == 1

    page1 = api.list_namespaced_ingress("beta", limit=3)
    assert [i.metadata.name for i in page1.items] == ["ing00", "ing01", "ing02"]
    assert page1.metadata.remaining_item_count == 1
    page2 = api.list_namespaced_ingress("beta", limit=3, _continue=page1.metadata._continue)
    assert [i.metadata.name for i in page2.items] == ["ing03"]
    assert page2.metadata._continue is None


def test_pagination_is_a_consistent_snapshot(kube, kclient):
    ingresses(kube, [("default", f"i{n}") for n in range(6)])
    api = net(kclient)
    p1 = api.list_namespaced_ingress("default", limit=3)
    # changes after the first page are not seen by the next pages
    kube.delete("Ingress", "default", "i4")
    kube.create(fx.ingress("i9", host="x.example", service="web"))
    obj = kube.get("Ingress", "default", "i5")
    obj["metadata"]["labels"] = {"changed": "yes"}
    kube.update(obj)
    p2 = api.list_namespaced_ingress("default", limit=3, _continue=p1.metadata._continue)
    assert [i.metadata.name for i in p2.items] == ["i3", "i4", "i5"]
    assert p2.items[2].metadata.labels is None
    assert p2.metadata.resource_version == p1.metadata.resource_version
    now = api.list_namespaced_ingress("default")
    assert [i.metadata.name for i in now.items] == ["i0", "i1", "i2", "i3", "i5", "i9"]
    assert int(now.metadata.resource_version) > int(p1.metadata.resource_version)


def test_expired_continue_token_is_410(kube, kclient):
    ingresses(kube, [("default", f"i{n}") for n in range(4)])
    api = net(kclient)
    p1 = api.list_namespaced_ingress("default", limit=2)
    kube.create(fx.ingress("late", host="x.example", service="web"))
    kube.compact()
    with pytest.raises(ApiException) as e:
        api.list_namespaced_ingress("default", limit=2, _continue=p1.metadata._continue)
    st = json.loads(e.value.body)
    assert e.value.status == 410 and st["reason"] == "Expired" and st["kind"] == "Status"
    # the Status carries an inconsistent continue token that reads the rest at the latest
    rest = api.list_namespaced_ingress("default", _continue=st["metadata"]["continue"])
    assert [i.metadata.name for i in rest.items] == ["i2", "i3", "late"]


def test_list_wire_format(kube):
    ingresses(kube, [("default", "a"), ("default", "b")])
    code, hdrs, body = raw_request(kube, "GET", "/apis/networking.k8s.io/v1/ingresses?limit=1")
    assert code == 200 and hdrs["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["kind"] == "IngressList" and doc["apiVersion"] == "networking.k8s.io/v1"
    assert doc["metadata"]["remainingItemCount"] == 1 and doc["metadata"]["continue"]
    item = doc["items"][0]
    assert "kind" not in item and "apiVersion" not in item       # as typed lists come
    md = item["metadata"]
    assert md["resourceVersion"].isdigit() and md["uid"] and md["generation"] == 1
    assert md["creationTimestamp"].endswith("Z")
    assert item["status"] == {"loadBalancer": {}}
    tok = json.loads(base64.urlsafe_b64decode(doc["metadata"]["continue"] + "=="))
    assert tok == {"v": "meta.k8s.io/v1", "rv": int(doc["metadata"]["resourceVersion"]),
                   "start": "default/a\x00"}
    code, _, body = raw_request(kube, "GET", "/apis/networking.k8s.io/v1/namespaces/default/"
                                             "ingresses/a")
    single = json.loads(body)
    assert code == 200 and single["kind"] == "Ingress" and body.endswith(b"}\n")
    code, _, body = raw_request(kube, "GET", "/apis/networking.k8s.io/v1/namespaces/default/"
                                             "ingresses/nope")
    assert code == 404 and json.loads(body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'ingresses.networking.k8s.io "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "group": "networking.k8s.io", "kind": "ingresses"},
        "code": 404}


def test_list_resource_version_semantics(kube, kclient, monkeypatch):
    ingresses(kube, [("default", "a"), ("default", "b"), ("default", "c")])
    api = net(kclient)
    rv = api.list_namespaced_ingress("default").metadata.resource_version
    kube.delete("Ingress", "default", "b")
    exact = api.list_namespaced_ingress("default", resource_version=rv,
                                        resource_version_match="Exact")
    assert [i.metadata.name for i in exact.items] == ["a", "b", "c"]
    assert exact.metadata.resource_version == rv
    latest = api.list_namespaced_ingress("default", resource_version=rv,
                                         resource_version_match="NotOlderThan")
    assert [i.metadata.name for i in latest.items] == ["a", "c"]
    # resourceVersion=0: from the cache, the limit is ignored
    any_ = api.list_namespaced_ingress("default", resource_version="0", limit=1)
    assert len(any_.items) == 2 and any_.metadata._continue is None
    kube.compact()
    with pytest.raises(ApiException) as e:
        api.list_namespaced_ingress("default", resource_version=rv,
                                    resource_version_match="Exact")
    assert e.value.status == 410
    monkeypatch.setattr(apiserver, "TOO_LARGE_RV_WAIT", 0.2)
    with pytest.raises(ApiException) as e:
        api.list_namespaced_ingress("default", resource_version=str(kube.resource_version + 50),
                                    resource_version_match="NotOlderThan")
    assert e.value.status == 504
    assert json.loads(e.value.body)["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"


def test_label_and_field_selectors_on_endpointslices(kube, kclient):
    kube.create(fx.endpoint_slice("web", name="web-1", addresses=["10.0.0.1", "10.0.0.2"],
                                  labels={"tier": "front"}))
    kube.create(fx.endpoint_slice("web", name="web-2", addresses=["10.0.0.3"], ready=False))
    kube.create(fx.endpoint_slice("api", name="api-1", addresses=["10.0.1.1"],
                                  labels={"tier": "back"}))
    kube.create(fx.endpoint_slice("web", namespace="other", name="web-1", addresses=["10.9.0.1"]))
    d = client.DiscoveryV1Api(kclient)

    def names(**kw):
        return [(s.metadata.namespace, s.metadata.name) for s in
                d.list_endpoint_slice_for_all_namespaces(**kw).items]

    assert names(label_selector="kubernetes.io/service-name=web") == [
        ("default", "web-1"), ("default", "web-2"), ("other", "web-1")]
    sl = d.list_namespaced_endpoint_slice("default", label_selector="kubernetes.io/service-name=web")
    assert [s.metadata.name for s in sl.items] == ["web-1", "web-2"]
    assert sl.items[0].endpoints[0].conditions.ready is True
    assert sl.items[1].endpoints[0].conditions.ready is False
    assert sl.items[0].ports[0].protocol == "TCP"          # defaulted
    assert names(label_selector="tier in (front,back)") == [("default", "api-1"),
                                                            ("default", "web-1")]
    assert names(label_selector="tier notin (front),kubernetes.io/service-name!=api") == [
        ("default", "web-2"), ("other", "web-1")]
    assert names(label_selector="tier") == [("default", "api-1"), ("default", "web-1")]
    assert names(label_selector="!tier") == [("default", "web-2"), ("other", "web-1")]
    assert names(label_selector="kubernetes.io/service-name==web,tier=front") == [
        ("default", "web-1")]
    assert names(field_selector="metadata.name=web-1") == [("default", "web-1"),
                                                          ("other", "web-1")]
    assert names(field_selector="metadata.namespace!=default") == [("other", "web-1")]
    with pytest.raises(ApiException) as e:
        names(field_selector="spec.nothing=x")
    assert e.value.status == 400 and "field label not supported" in json.loads(e.value.body)[
        "message"]
    with pytest.raises(ApiException) as e:
        names(label_selector="a in (")
    assert e.value.status == 400
    # selectors with pagination: pages are filled with matching items
    p = d.list_endpoint_slice_for_all_namespaces(label_selector="kubernetes.io/service-name=web",
                                                 limit=2)
    assert len(p.items) == 2 and p.metadata._continue and p.metadata.remaining_item_count is None


# --- watch ---

def test_watch_added_modified_deleted(kube, kclient):
    api = net(kclient)
    rv = api.list_namespaced_ingress("default").metadata.resource_version
    q, w = collect_watch(api.list_namespaced_ingress, "default", resource_version=rv,
                         timeout_seconds=10)
    kube.wait_for_watch("ingresses")
    kube.create(fx.ingress("web", host="a.example", service="web"))
    kube.create(fx.ingress("elsewhere", namespace="other", host="b.example", service="web"))
    obj = kube.get("Ingress", "default", "web")
    obj["spec"]["rules"][0]["host"] = "c.example"
    kube.update(obj)
    kube.delete("Ingress", "default", "web")
    evs = take(q, 3)
    w.stop()
    assert [e["type"] for e in evs] == ["ADDED", "MODIFIED", "DELETED"]
    assert evs[1]["object"].spec.rules[0].host == "c.example"
    assert evs[1]["object"].metadata.generation == 2
    rvs = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in evs]
    assert rvs == sorted(rvs) and rvs[-1] == kube.resource_version
    assert evs[2]["raw_object"]["kind"] == "Ingress"


def test_watch_without_resource_version_sends_state_first(kube, kclient):
    ingresses(kube, [("default", "a"), ("default", "b")])
    q, w = collect_watch(net(kclient).list_namespaced_ingress, "default", timeout_seconds=5)
    evs = take(q, 2)
    kube.create(fx.ingress("c", host="c.example", service="web"))
    evs += take(q, 1)
    w.stop()
    assert [(e["type"], e["object"].metadata.name) for e in evs] == [
        ("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]


def test_watch_bookmarks(kube, kclient):
    ingresses(kube, [("default", "a")])
    rv = kube.resource_version
    q, w = collect_watch(net(kclient).list_namespaced_ingress, "default",
                         resource_version=str(rv), allow_watch_bookmarks=True, timeout_seconds=5)
    marks = [q.get(timeout=5) for _ in range(2)]
    w.stop()
    assert [m["type"] for m in marks] == ["BOOKMARK", "BOOKMARK"]
    assert marks[0]["raw_object"] == {"kind": "Ingress", "apiVersion": "networking.k8s.io/v1",
                                      "metadata": {"resourceVersion": str(rv)}}
    # without allowWatchBookmarks there are none
    code, _, chunks, ended = raw_watch(kube, "/apis/networking.k8s.io/v1/namespaces/default/"
                                             f"ingresses?watch=1&resourceVersion={rv}", 0.5)
    assert code == 200 and chunks == [] and ended


def test_watch_resume_from_resource_version(kube, kclient):
    ingresses(kube, [("default", "a")])
    rv = kube.resource_version
    ingresses(kube, [("default", "b"), ("default", "c")])
    kube.delete("Ingress", "default", "a")
    q, w = collect_watch(net(kclient).list_namespaced_ingress, "default",
                         resource_version=str(rv), timeout_seconds=5)
    events = take(q, 3)
    w.stop()
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "b"), ("ADDED", "c"), ("DELETED", "a")]
    assert events[-1]["raw_object"]["metadata"]["resourceVersion"] == str(kube.resource_version)


def test_watch_from_compacted_version_is_410(kube, kclient):
    ingresses(kube, [("default", "a")])
    old = kube.resource_version
    ingresses(kube, [("default", "b")])
    kube.compact()
    # the client turns the ERROR event into ApiException(410) (no retry with timeout_seconds)
    with pytest.raises(ApiException) as e:
        list(watch.Watch().stream(net(kclient).list_namespaced_ingress, "default",
                                  resource_version=str(old), timeout_seconds=2))
    assert e.value.status == 410
    # on the wire: HTTP 200, one ERROR event with a 410 Expired Status, then the end
    code, hdrs, raw = raw_request(kube, "GET", f"/apis/networking.k8s.io/v1/namespaces/default/"
                                               f"ingresses?watch=true&resourceVersion={old}")
    chunks, ended = dechunk(raw)
    assert code == 200 and ended and len(chunks) == 1
    ev = json.loads(chunks[0])
    assert ev == {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {old} ({kube.resource_version})",
        "reason": "Expired", "code": 410}}


def test_watch_timeout_seconds_ends_stream(kube, kclient):
    t0 = time.monotonic()
    events = list(watch.Watch().stream(net(kclient).list_ingress_for_all_namespaces,
                                       timeout_seconds=1))
    assert events == [] and 0.9 <= time.monotonic() - t0 < 3


def test_watch_wire_format_is_chunked_ndjson(kube):
    ingresses(kube, [("default", "a"), ("default", "b")])
    ing = kube.get("Ingress", "default", "a")
    ing["metadata"]["annotations"] = {"note": "<&>"}
    code, hdrs, chunks, ended = raw_watch(kube, "/apis/networking.k8s.io/v1/namespaces/default/"
                                                "ingresses?watch=1",
                                          action=lambda: kube.update(ing))
    assert code == 200
    assert hdrs["transfer-encoding"] == "chunked" and "content-length" not in hdrs
    assert hdrs["content-type"] == "application/json"
    assert ended
    assert len(chunks) == 3                                 # ADDED a, ADDED b, MODIFIED a
    for c in chunks:                                        # one JSON object per chunk/line
        assert c.endswith(b"\n") and c.count(b"\n") == 1
        assert b": " not in c                               # compact, as Go writes it
    evs = [json.loads(c) for c in chunks]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == [
        ("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a")]
    assert evs[2]["object"]["kind"] == "Ingress"
    assert b"\\u003c\\u0026\\u003e" in chunks[2]           # HTML characters escaped like Go


def test_watch_selector_transitions(kube, kclient):
    kube.create(fx.endpoint_slice("web", name="s1", addresses=["10.0.0.1"]))
    d = client.DiscoveryV1Api(kclient)
    q, w = collect_watch(d.list_namespaced_endpoint_slice, "default",
                         label_selector="kubernetes.io/service-name=web", timeout_seconds=5)
    assert [e["type"] for e in take(q, 1)] == ["ADDED"]
    s = kube.get("EndpointSlice", "default", "s1")
    s["metadata"]["labels"]["kubernetes.io/service-name"] = "other"
    kube.update(s)
    s["metadata"]["labels"]["kubernetes.io/service-name"] = "web"
    kube.update(s)
    kube.create(fx.endpoint_slice("api", name="s2", addresses=["10.0.0.2"]))
    s["endpoints"][0]["addresses"] = ["10.0.0.9"]
    kube.update(s)
    evs = take(q, 3)
    w.stop()
    assert [e["type"] for e in evs] == ["DELETED", "ADDED", "MODIFIED"]
    assert evs[2]["object"].endpoints[0].addresses == ["10.0.0.9"]


def test_send_initial_events(kube):
    ingresses(kube, [("default", "a"), ("default", "b")])
    code, _, chunks, _ = raw_watch(kube, "/apis/networking.k8s.io/v1/ingresses?watch=1&"
                                         "sendInitialEvents=true&allowWatchBookmarks=true&"
                                         "resourceVersionMatch=NotOlderThan", 0.1)
    evs = [json.loads(c) for c in chunks]
    assert [e["type"] for e in evs[:3]] == ["ADDED", "ADDED", "BOOKMARK"]
    assert evs[2]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    code, _, raw = raw_request(kube, "GET", "/apis/networking.k8s.io/v1/ingresses?watch=1&"
                                            "sendInitialEvents=true&timeoutSeconds=1")
    assert code == 422


def test_watch_single_object_and_watch_path_prefix(kube):
    ingresses(kube, [("default", "a"), ("default", "b")])
    code, _, chunks, _ = raw_watch(kube, "/apis/networking.k8s.io/v1/namespaces/default/"
                                         "ingresses/b?watch=true", 0.3,
                                   action=lambda: kube.delete("Ingress", "default", "b"))
    assert [(json.loads(c)["type"], json.loads(c)["object"]["metadata"]["name"])
            for c in chunks] == [("ADDED", "b"), ("DELETED", "b")]
    code, _, chunks, _ = raw_watch(kube, "/apis/networking.k8s.io/v1/watch/namespaces/default/"
                                         "ingresses", 0.05)
    assert code == 200 and [json.loads(c)["type"] for c in chunks] == ["ADDED"]


def test_lagging_watcher_is_closed_when_history_overflows(tmp_path, kube_cert_dir):
    with KubeAPIServer(tls=True, token="t", state_dir=tmp_path / "k", cert_dir=kube_cert_dir,
                       history_limit=10) as srv:
        rv = srv.resource_version
        for i in range(30):
            srv.create(fx.config_map(f"c{i}"))
        # a watch from a version the history no longer holds
        code, _, raw = raw_request(srv, "GET", f"/api/v1/configmaps?watch=1&resourceVersion={rv}")
        assert json.loads(dechunk(raw)[0][0])["object"]["code"] == 410


# --- writes ---

def test_stale_update_is_409_conflict(kube, kclient):
    api = net(kclient)
    created = api.create_namespaced_ingress("default", fx.ingress("web", host="a.example",
                                                                 service="web"))
    assert created.metadata.generation == 1 and created.status.load_balancer.ingress is None
    with pytest.raises(ApiException) as e:
        api.create_namespaced_ingress("default", fx.ingress("web", host="a.example",
                                                           service="web"))
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "AlreadyExists"
    stale = api.read_namespaced_ingress("web", "default")
    fresh = api.read_namespaced_ingress("web", "default")
    fresh.spec.rules[0].host = "b.example"
    updated = api.replace_namespaced_ingress("web", "default", fresh)
    assert updated.metadata.generation == 2
    assert int(updated.metadata.resource_version) > int(stale.metadata.resource_version)
    stale.spec.rules[0].host = "c.example"
    with pytest.raises(ApiException) as e:
        api.replace_namespaced_ingress("web", "default", stale)
    st = json.loads(e.value.body)
    assert e.value.status == 409 and st["reason"] == "Conflict"
    assert st["message"] == ('Operation cannot be fulfilled on ingresses.networking.k8s.io "web": '
                             'the object has been modified; please apply your changes to the '
                             'latest version and try again')
    # an update that changes nothing is no write: same resourceVersion
    again = api.replace_namespaced_ingress("web", "default", updated)
    assert again.metadata.resource_version == updated.metadata.resource_version


def test_lease_conflict_between_two_candidates(kube, kclient):
    coord = client.CoordinationV1Api(kclient)
    coord.create_namespaced_lease("default", fx.lease("sluice-leader", holder="a",
                                                      acquire_time=True, renew_time=True))
    with pytest.raises(ApiException) as e:
        coord.create_namespaced_lease("default", fx.lease("sluice-leader", holder="b"))
    assert e.value.status == 409
    seen_a = coord.read_namespaced_lease("sluice-leader", "default")
    seen_b = coord.read_namespaced_lease("sluice-leader", "default")
    seen_a.spec.renew_time = fx.micro_time()
    coord.replace_namespaced_lease("sluice-leader", "default", seen_a)
    seen_b.spec.holder_identity = "b"
    with pytest.raises(ApiException) as e:
        coord.replace_namespaced_lease("sluice-leader", "default", seen_b)
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "Conflict"
    assert coord.read_namespaced_lease("sluice-leader", "default").spec.holder_identity == "a"
    raw = kube.get("Lease", "default", "sluice-leader")
    assert raw["spec"]["renewTime"].endswith("Z") and "." in raw["spec"]["renewTime"]


def test_status_subresource(kube, kclient):
    api = net(kclient)
    api.create_namespaced_ingress("default", fx.ingress("web", host="a.example", service="web"))
    before = kube.get("Ingress", "default", "web")
    out = api.patch_namespaced_ingress_status(
        "web", "default", {"status": fx.load_balancer_status("192.0.2.10"),
                           "spec": {"rules": []}})
    assert out.status.load_balancer.ingress[0].ip == "192.0.2.10"
    after = kube.get("Ingress", "default", "web")
    assert after["spec"] == before["spec"] and after["metadata"]["generation"] == 1
    # the main resource ignores status, and a spec change bumps the generation
    cur = api.read_namespaced_ingress("web", "default")
    cur.status.load_balancer.ingress[0].ip = "198.51.100.1"
    cur.spec.rules[0].host = "b.example"
    upd = api.replace_namespaced_ingress("web", "default", cur)
    assert upd.status.load_balancer.ingress[0].ip == "192.0.2.10"
    assert upd.metadata.generation == 2
    # PUT .../status with a stale resourceVersion conflicts too
    stale = api.read_namespaced_ingress_status("web", "default")
    kube.update_status(dict(kube.get("Ingress", "default", "web"),
                            status=fx.load_balancer_status("203.0.113.5")))
    stale.status.load_balancer.ingress[0].ip = "192.0.2.99"
    with pytest.raises(ApiException) as e:
        api.replace_namespaced_ingress_status("web", "default", stale)
    assert e.value.status == 409


def test_patch_types(kube, kclient):
    core = client.CoreV1Api(kclient)
    core.create_namespaced_service("default", fx.service(
        "web", ports=[fx.service_port(80, name="http", target_port=8080),
                      fx.service_port(443, name="https", target_port=8443)]))
    svc = kube.get("Service", "default", "web")
    assert svc["spec"]["clusterIP"].startswith("10.96.") and svc["spec"]["type"] == "ClusterIP"
    # strategic merge patch (a dict body): ports merged by their port number
    out = core.patch_namespaced_service("web", "default",
                                        {"spec": {"ports": [{"port": 443, "targetPort": 9443}]},
                                         "metadata": {"labels": {"a": "1"}}})
    assert [(p.port, p.target_port) for p in out.spec.ports] == [(80, 8080), (443, 9443)]
    # JSON patch (a list body)
    out = core.patch_namespaced_service("web", "default", [
        {"op": "replace", "path": "/spec/ports/0/targetPort", "value": 8081},
        {"op": "add", "path": "/metadata/labels/b", "value": "2"}])
    assert out.spec.ports[0].target_port == 8081 and out.metadata.labels == {"a": "1", "b": "2"}
    # merge patch: lists replaced, null deletes
    merge = {"Content-Type": "application/merge-patch+json"}
    code, _, body = raw_request(kube, "PATCH", "/api/v1/namespaces/default/services/web",
                                {"metadata": {"labels": {"a": None}},
                                 "spec": {"ports": [{"name": "http", "port": 81}]}},
                                headers=merge)
    out = json.loads(body)
    assert code == 200 and out["metadata"]["labels"] == {"b": "2"}
    assert out["spec"]["ports"] == [{"name": "http", "protocol": "TCP", "port": 81,
                                     "targetPort": 81}]
    # a stale resourceVersion in a patch is a precondition
    code, _, body = raw_request(kube, "PATCH", "/api/v1/namespaces/default/services/web",
                                {"metadata": {"resourceVersion": "1"}}, headers=merge)
    assert code == 409
    code, _, _ = raw_request(kube, "PATCH", "/api/v1/namespaces/default/services/web", {},
                             headers={"Content-Type": "text/plain"})
    assert code == 415


def test_delete_finalizers_and_namespaces(kube, kclient):
    api = net(kclient)
    ing = fx.ingress("web", host="a.example", service="web")
    ing["metadata"]["finalizers"] = ["example.com/hold"]
    api.create_namespaced_ingress("default", ing)
    st = api.delete_namespaced_ingress("web", "default")
    held = kube.get("Ingress", "default", "web")
    assert held["metadata"]["deletionTimestamp"] and st.kind == "Ingress"
    api.patch_namespaced_ingress("web", "default", {"metadata": {"finalizers": None}})
    assert kube.get("Ingress", "default", "web") is None
    api.create_namespaced_ingress("default", fx.ingress("plain", host="a.example",
                                                        service="web"))
    st = api.delete_namespaced_ingress("plain", "default")
    assert st.status == "Success" and st.details.name == "plain"
    with pytest.raises(ApiException) as e:
        api.delete_namespaced_ingress("plain", "default")
    assert e.value.status == 404
    # deleting a namespace deletes what is in it
    kube.create(fx.service("svc", namespace="team"))
    kube.create(fx.ingress("x", namespace="team", host="x.example", service="svc"))
    client.CoreV1Api(kclient).delete_namespace("team")
    assert kube.list("Ingress", "team") == [] and kube.get("Namespace", "team") is None
    with pytest.raises(ApiException) as e:
        api.create_namespaced_ingress("team", fx.ingress("y", namespace="team",
                                                         host="y.example", service="s"))
    assert e.value.status == 404
    assert json.loads(e.value.body)["message"] == 'namespaces "team" not found'


def test_dry_run_and_delete_collection(kube, kclient):
    api = net(kclient)
    rv = kube.resource_version
    out = api.create_namespaced_ingress("default", fx.ingress("dry", host="a.example",
                                                              service="web"), dry_run="All")
    assert out.metadata.name == "dry" and kube.get("Ingress", "default", "dry") is None
    assert kube.resource_version == rv
    ingresses(kube, [("default", "a"), ("default", "b"), ("other", "c")])
    kube.patch("Ingress", "default", "a", {"metadata": {"labels": {"drop": "yes"}}})
    api.delete_collection_namespaced_ingress("default", label_selector="drop=yes")
    assert [i["metadata"]["name"] for i in kube.list("Ingress")] == ["b", "c"]
    with pytest.raises(TypeError):
        kube.get("Ingress", "b")


def test_validation_is_422(kclient):
    bad = fx.ingress("web", host="a.example", service="web")
    del bad["spec"]["rules"][0]["http"]["paths"][0]["pathType"]
    with pytest.raises(ApiException) as e:
        net(kclient).create_namespaced_ingress("default", bad)
    st = json.loads(e.value.body)
    assert e.value.status == 422 and st["reason"] == "Invalid"
    assert st["details"]["causes"][0]["field"] == "spec.rules[0].http.paths[0].pathType"
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(kclient).create_namespaced_secret(
            "default", fx.secret("s", data={"tls.crt": "x"}, type="kubernetes.io/tls"))
    assert e.value.status == 422


def test_secret_and_external_name_service(kube, kclient):
    core = client.CoreV1Api(kclient)
    core.create_namespaced_secret("default", fx.secret("s", string_data={"k": "v"}))
    s = core.read_namespaced_secret("s", "default")
    assert s.data == {"k": base64.b64encode(b"v").decode()} and s.type == "Opaque"
    core.create_namespaced_service("default", fx.external_name_service("ext", "db.example"))
    svc = core.read_namespaced_service("ext", "default")
    assert svc.spec.type == "ExternalName" and svc.spec.external_name == "db.example"
    assert svc.spec.cluster_ip is None
    sel = core.list_secret_for_all_namespaces(field_selector="type=Opaque")
    assert [x.metadata.name for x in sel.items] == ["s"]


# --- faults, controls, restart ---

def test_fault_injection(kube, kclient):
    api = net(kclient)
    kube.fail_next("list", "ingresses", code=500)
    with pytest.raises(ApiException) as e:
        api.list_ingress_for_all_namespaces()
    assert e.value.status == 500 and json.loads(e.value.body)["reason"] == "InternalError"
    api.list_ingress_for_all_namespaces()                   # only the next one fails
    # (urllib3 retries a 429 with Retry-After by itself: look at it raw)
    kube.fail_next("list", code=429, retry_after=1)
    code, hdrs, body = raw_request(kube, "GET", "/apis/networking.k8s.io/v1/ingresses")
    assert code == 429 and hdrs["retry-after"] == "1"
    assert json.loads(body)["details"]["retryAfterSeconds"] == 1
    # a watch whose stream carries a bad line first, then real events
    ingresses(kube, [("default", "a")])
    kube.fail_next("watch", "ingresses", bad_line=b'{"type":"ADDED","object":')
    code, _, chunks, _ = raw_watch(kube, "/apis/networking.k8s.io/v1/ingresses?watch=1", 0.1)
    assert chunks[0] == b'{"type":"ADDED","object":\n'
    assert json.loads(chunks[1])["type"] == "ADDED"
    # a line injected into an open watch
    q, w = collect_watch(api.list_ingress_for_all_namespaces, resource_version="0",
                         timeout_seconds=5)
    take(q, 1)
    kube.wait_for_watch("ingresses")
    assert kube.inject_watch_line("not json at all", "ingresses") == 1
    item = q.get(timeout=5)
    assert isinstance(item, ValueError)                     # the client cannot parse it
    w.stop()


def test_close_watches_clean_and_abrupt(kube):
    for abrupt in (False, True):
        result = {}

        def run():
            result["r"] = raw_request(kube, "GET", "/apis/networking.k8s.io/v1/ingresses?"
                                                   "watch=1&timeoutSeconds=30", timeout=10)
        t = threading.Thread(target=run)
        t.start()
        kube.wait_for_watch("ingresses")
        assert kube.close_watches(abrupt=abrupt) == 1
        t.join(10)
        code, _, raw = result["r"]
        assert code == 200
        assert dechunk(raw)[1] is (not abrupt) if raw else abrupt
        wait_until(lambda: kube.watch_count() == 0)


def test_restart_keeps_objects_and_expires_history(kube, kclient):
    ingresses(kube, [("default", "a")])
    old = kube.resource_version
    ingresses(kube, [("default", "b")])
    kube.restart()
    api = net(kclient)
    assert [i.metadata.name for i in api.list_namespaced_ingress("default").items] == ["a", "b"]
    with pytest.raises(ApiException) as e:
        list(watch.Watch().stream(api.list_namespaced_ingress, "default",
                                  resource_version=str(old), timeout_seconds=1))
    assert e.value.status == 410
    # watches from the current version still work
    rv = api.list_namespaced_ingress("default").metadata.resource_version
    q, w = collect_watch(api.list_namespaced_ingress, "default", resource_version=rv,
                         timeout_seconds=5)
    kube.wait_for_watch("ingresses")
    kube.delete("Ingress", "default", "a")
    assert [e["type"] for e in take(q, 1)] == ["DELETED"]
    w.stop()


def test_compaction_does_not_break_running_watch(kube, kclient):
    api = net(kclient)
    rv = api.list_namespaced_ingress("default").metadata.resource_version
    q, w = collect_watch(api.list_namespaced_ingress, "default", resource_version=rv,
                         timeout_seconds=5)
    kube.wait_for_watch("ingresses")
    with kube.store.cond:                   # write and compact before the watch can send
        ingresses(kube, [("default", "a")])
        kube.compact()
    assert [e["type"] for e in take(q, 1)] == ["ADDED"]
    w.stop()


def test_plain_http_and_request_log(tmp_path):
    with KubeAPIServer(tls=False, token=None, state_dir=tmp_path / "k") as srv:
        assert srv.url.startswith("http://")
        import urllib.request
        srv.create(fx.ingress_class("sluice", default=True))
        body = json.loads(urllib.request.urlopen(
            srv.url + "/apis/networking.k8s.io/v1/ingressclasses", timeout=5).read())
        assert body["items"][0]["metadata"]["annotations"] == {
            "ingressclass.kubernetes.io/is-default-class": "true"}
        # (a request is logged just after its answer is sent)
        wait_until(lambda: srv.requests_matching("GET", r"ingressclasses$"))
        assert srv.requests_matching("GET", r"ingressclasses$")[0]["code"] == 200


# --- scale ---

def test_scale_lists_fast(kube):
    objs = []
    for i in range(5000):
        ns = f"ns{i % 10}"
        objs.append(fx.ingress(f"ing{i:04d}", namespace=ns, host=f"h{i}.example",
                               service=f"svc{i}"))
        objs.append(fx.service(f"svc{i}", namespace=ns))
        objs.append(fx.endpoint_slice(f"svc{i}", namespace=ns, name=f"svc{i}-x",
                                      addresses=[f"10.{i // 250}.{i % 250}.{j}"
                                                 for j in range(1, 5)]))
    t0 = time.monotonic()
    kube.create_many(objs)
    load = time.monotonic() - t0
    ctx = ssl.create_default_context(cafile=kube.ca_file)
    import http.client
    conn = http.client.HTTPSConnection("127.0.0.1", kube.port, context=ctx)
    token, n, worst = None, 0, 0.0
    while True:
        path = "/apis/networking.k8s.io/v1/ingresses?limit=500"
        if token:
            path += "&continue=" + token
        t = time.monotonic()
        conn.request("GET", path, headers={"Authorization": "Bearer t"})
        doc = json.loads(conn.getresponse().read())
        worst = max(worst, time.monotonic() - t)
        n += len(doc["items"])
        token = doc["metadata"].get("continue")
        if not token:
            break
    conn.close()
    assert n == 5000
    assert worst < 1.0, f"slowest page {worst:.3f}s"        # typically ~10 ms
    assert load < 20, f"loading took {load:.1f}s"


# --- CLI ---

def test_cli(tmp_path):
    man = tmp_path / "manifests"
    fx.write_manifests(man, fx.ingress_class("sluice"),
                       fx.ingress("web", namespace="apps", host="a.example", service="web"),
                       fx.service("web", namespace="apps"))
    (tmp_path / "token").write_text("secret\n")
    state = tmp_path / "state"
    p = subprocess.Popen([sys.executable if sys.executable.startswith("/usr/bin") else
                          "/usr/bin/python3", str(HERE / "apiserver.py"), "--listen",
                          "127.0.0.1:0", "--tls", "--token-file", str(tmp_path / "token"),
                          "--state-dir", str(state), "--load", str(man)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = p.stdout.readline()
        assert "serving https://127.0.0.1:" in line, line
        url = (state / "url").read_text().strip()
        port = int(url.rsplit(":", 1)[1])

        class K:                                          # enough for raw_request
            pass
        k = K()
        k.port, k.ca_file = port, str(state / "ca.crt")
        code, _, body = raw_request(k, "GET", "/apis/networking.k8s.io/v1/namespaces/apps/"
                                              "ingresses", token="secret")
        assert code == 200 and [i["metadata"]["name"] for i in json.loads(body)["items"]] == [
            "web"]
        assert raw_request(k, "POST", "/_emulator/compact", b"", token="secret")[0] == 200
        (tmp_path / "token").write_text("rotated\n")
        assert raw_request(k, "GET", "/api/v1/namespaces", token="secret")[0] == 401
        assert raw_request(k, "GET", "/api/v1/namespaces", token="rotated")[0] == 200
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
