"""sluice-watcher against the Kubernetes API emulator (TLS, bearer token), a real build/sluice and
real upstreams: objects in the API become traffic through sluice, and the watcher rides out
watch expiry (410), API server and sluice restarts, and broken objects."""
import http.client
import json
import signal
import socket
import ssl
import threading
import time

from conftest import gw_config, http_get, wait_for
from helpers import SLUICE, free_port, wait_port
from kube import fixtures as fx


def app(kube, name, upstreams, host, path="/", ns="default", path_type="Prefix", port=80,
        ready=True):
    """A Service, its EndpointSlice (one endpoint per upstream) and an Ingress for host+path."""
    target = upstreams[0].port
    kube.create(fx.service(name, ns, ports=[fx.service_port(port, name="http",
                                                            target_port=target)]))
    kube.create(fx.endpoint_slice(name, ns, addresses=[u.ip for u in upstreams],
                                  ports=[("http", target)], ready=ready))
    kube.create(fx.ingress(name, ns, host=host, path=path, service=name, port=port,
                           path_type=path_type))


def through(gateway, host, path="/"):
    status, body, _ = http_get(gateway.url + path, host=host)
    return status, body


def served_by(gateway, host, body, path="/"):
    return lambda: through(gateway, host, path) == (200, body)


def set_endpoints(kube, name, upstreams, ns="default", ready=True):
    s = kube.get("EndpointSlice", ns, f"{name}-abcde")
    s["endpoints"] = [fx.endpoint(u.ip, ready=ready) for u in upstreams]
    kube.update(s)


# ---- the basic life cycle ---------------------------------------------------------------------

def test_ingress_created_scaled_and_deleted(kube, gateway, upstreams, run_watcher):
    w = run_watcher(gateway)
    assert http_get(w.healthz)[0] == 200
    blue, green = upstreams("blue"), upstreams("green")
    app(kube, "web", [blue], "a.example")
    wait_for(served_by(gateway, "a.example", "blue\n"), what="the Ingress served")
    # a path of no rule on a known host: 404 from the host's catch-all, never another host's
    assert through(gateway, "other.example")[0] == 404

    set_endpoints(kube, "web", [blue, green])
    seen = set()
    wait_for(lambda: seen.add(through(gateway, "a.example")[1]) or seen >= {"blue\n", "green\n"},
             what="both endpoints in rotation")

    set_endpoints(kube, "web", [green])
    wait_for(lambda: gw_config(gateway)["upstreams"]["default.web.80"]["backends"]
             == [f"{green.ip}:{green.port}"], what="scaled down")
    assert {through(gateway, "a.example")[1] for _ in range(6)} == {"green\n"}

    set_endpoints(kube, "web", [green], ready=False)
    wait_for(lambda: through(gateway, "a.example")[0] == 503, what="503 without ready endpoints")
    assert "no ready endpoints" in through(gateway, "a.example")[1]

    kube.delete("Ingress", "default", "web")
    wait_for(lambda: through(gateway, "a.example")[0] == 404, what="404 after the delete")
    assert gw_config(gateway)["routes"] == []


def test_paginated_initial_list(kube, gateway, upstreams, run_watcher):
    blue = upstreams("blue")
    objs = []
    for i in range(1100):
        objs.append(fx.service(f"s{i}", ports=[fx.service_port(80, name="http",
                                                               target_port=blue.port)]))
        objs.append(fx.endpoint_slice(f"s{i}", addresses=[blue.ip], ports=[("http", blue.port)],
                                      name=f"s{i}-x"))
        objs.append(fx.ingress(f"i{i}", host=f"h{i}.example", service=f"s{i}", port=80))
    kube.create_many(objs)
    w = run_watcher(gateway)
    assert through(gateway, "h1099.example") == (200, "blue\n")
    pages = kube.requests_matching("GET", r"/ingresses$", watch=False)
    assert len(pages) >= 3 and any("continue" in r["query"] for r in pages)
    assert "ingresses: listed 1100" in w.log()


# ---- resilience -------------------------------------------------------------------------------

class Traffic:
    """Requests through sluice in a loop; every answer is recorded."""

    def __init__(self, gateway, host):
        self.gateway, self.host = gateway, host
        self.results = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            self.results.append(through(self.gateway, self.host)[0])
            time.sleep(0.01)

    def finish(self):
        self.stop.set()
        self.t.join(5)
        return self.results


def test_410_mid_watch_relists_without_losing_traffic(kube, gateway, upstreams, run_watcher):
    blue, green = upstreams("blue"), upstreams("green")
    app(kube, "web", [blue], "a.example")
    w = run_watcher(gateway)
    traffic = Traffic(gateway, "a.example")
    kube.compact()
    kube.close_watches()  # the watches resume from a compacted resourceVersion: 410
    w.wait_log(r"listing again")
    set_endpoints(kube, "web", [blue, green])
    wait_for(lambda: len(gw_config(gateway)["upstreams"]["default.web.80"]["backends"]) == 2,
             what="a change after the relist")
    time.sleep(0.3)
    results = traffic.finish()
    assert len(results) > 10 and set(results) == {200}


def test_api_server_restart_is_recovered(kube, gateway, upstreams, run_watcher):
    blue = upstreams("blue")
    app(kube, "web", [blue], "a.example")
    w = run_watcher(gateway)
    traffic = Traffic(gateway, "a.example")
    kube.restart(downtime=1.0)  # connections cut, history compacted
    app(kube, "api", [blue], "b.example")
    wait_for(served_by(gateway, "b.example", "blue\n"), timeout=20,
             what="a change made after the restart")
    results = traffic.finish()
    assert set(results) == {200}, "sluice kept serving while the API server was away"
    assert "watch" in w.log()


def test_sluice_restart_is_repushed(procs, kube, gateway, upstreams, run_watcher):
    blue = upstreams("blue")
    app(kube, "web", [blue], "a.example")
    w = run_watcher(gateway)
    wait_for(served_by(gateway, "a.example", "blue\n"))
    gateway.proc.stop()
    procs.start([SLUICE, "-c", gateway.path], name="sluice-again")
    wait_port(gateway.port)
    wait_for(served_by(gateway, "a.example", "blue\n"), what="the config pushed again")
    w.wait_log(r"pushing again")


def test_broken_objects_are_logged_and_skipped(kube, gateway, upstreams, run_watcher):
    blue = upstreams("blue")
    app(kube, "web", [blue], "a.example")
    w = run_watcher(gateway)
    wait_for(served_by(gateway, "a.example", "blue\n"))
    kube.wait_for_watch("ingresses")
    kube.inject_watch_line("{this is not json", "ingresses")
    kube.inject_watch_line(json.dumps({"type": "ADDED", "object": {
        "kind": "Ingress", "apiVersion": "networking.k8s.io/v1",
        "metadata": {"namespace": "default"}}}), "ingresses")
    broken = fx.ingress("broken", host="c.example", service="web")
    broken["metadata"]["resourceVersion"] = str(kube.resource_version)
    del broken["spec"]["rules"][0]["http"]["paths"][0]["pathType"]
    broken["spec"]["rules"].append({"host": "bad host!", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": fx.backend("web", 80)}]}})
    kube.inject_watch_line(json.dumps({"type": "ADDED", "object": broken}), "ingresses")
    kube.inject_watch_line(json.dumps({"type": "MODIFIED", "object": {
        "metadata": {"name": "huge", "namespace": "default"}, "pad": "x" * (9 << 20)}}),
        "ingresses")
    w.wait_log(r"ingresses watch: an event larger than 8388608 bytes was skipped")
    w.wait_log(r"not \{\"type\", \"object\"\} JSON")
    w.wait_log(r"ADDED event without metadata.name was skipped")
    w.wait_log(r"Ingress default/broken: host c.example: a path has no pathType; skipped")
    w.wait_log(r"Ingress default/broken: host \"bad host!\" is not a valid host name")
    # everything else is still served, and later changes still arrive
    assert through(gateway, "a.example") == (200, "blue\n")
    app(kube, "api", [blue], "b.example")
    wait_for(served_by(gateway, "b.example", "blue\n"))
    assert w.proc.alive()


def https_get(port, host, cafile, path="/"):
    """(status, body, the server certificate's CN) of a GET over TLS with SNI = host."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    tls = ctx.wrap_socket(sock, server_hostname=host)
    cn = dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]
    conn = http.client.HTTPConnection(host, timeout=5)
    conn.sock = tls  # the request goes over this TLS connection
    conn.request("GET", path)
    r = conn.getresponse()
    out = (r.status, r.read().decode(), cn)
    conn.close()
    return out


def test_tls_secrets_become_certificates(procs, tmp_path, kube, upstreams, run_watcher):
    """Valid kubernetes.io/tls Secrets are served by sluice's TLS listener for their hosts; a
    Secret with an invalid PEM is reported and skipped, everything else still served."""
    from gw import Gateway
    tls_port = free_port()
    gw = Gateway(procs, tmp_path, {}, more_listeners=[
        {"name": "websecure", "listen": f"127.0.0.1:{tls_port}", "tls": {}}])
    blue = upstreams("blue")
    cert, key = fx.self_signed_cert(["secure.example"])
    (tmp_path / "ca.pem").write_text(cert)
    kube.create(fx.tls_secret("good", cert, key))
    kube.create(fx.tls_secret("bad", "-----BEGIN CERTIFICATE-----\nAAAA\n"
                                     "-----END CERTIFICATE-----\n", key))
    app(kube, "web", [blue], "secure.example")
    ing = kube.get("Ingress", "default", "web")
    ing["spec"]["tls"] = [fx.ingress_tls(["secure.example"], "good"),
                          fx.ingress_tls(["bad.example"], "bad")]
    kube.update(ing)
    w = run_watcher(gw)
    w.wait_log(r"Secret default/bad: invalid TLS certificate")
    wait_for(lambda: gw_config(gw).get("certificates"), what="certificates pushed")
    certs = gw_config(gw)["certificates"]
    assert [c["hosts"] for c in certs] == [["secure.example"]]
    assert certs[0]["key_pem"] == "<redacted>"
    assert https_get(tls_port, "secure.example", tmp_path / "ca.pem") == \
        (200, "blue\n", "secure.example")
    assert through(gw, "secure.example") == (200, "blue\n")
    # the Secret rotates: the new certificate is served
    cert2, key2 = fx.self_signed_cert(["secure.example"])
    (tmp_path / "ca2.pem").write_text(cert2)
    kube.update(fx.tls_secret("good", cert2, key2))
    wait_for(lambda: _served_with(tls_port, tmp_path / "ca2.pem"), what="the rotated certificate")


def _served_with(port, cafile):
    try:
        return https_get(port, "secure.example", cafile)[0] == 200
    except OSError:
        return False


def test_output_file_with_certificates_off(kube, run_watcher, tmp_path):
    cert, key = fx.self_signed_cert(["secure.example"])
    kube.create(fx.tls_secret("good", cert, key))
    kube.create(fx.service("web"))
    kube.create(fx.ingress("secure", host="secure.example", service="web", tls_secret="good"))
    out = tmp_path / "config.json"
    run_watcher(None, "--output", out, "--tls-certificates=false", push=False)
    doc = json.loads(out.read_text())
    assert "certificates" not in doc
    assert [r["name"] for r in doc["routes"]] == ["default/secure/secure.example/"]
    assert not kube.requests_matching("GET", r"/secrets$"), "Secrets are not read"


# ---- leader election and status ---------------------------------------------------------------

def lb_ips(kube, name):
    ing = kube.get("Ingress", "default", name) or {}
    return [e.get("ip") for e in ing.get("status", {}).get("loadBalancer", {}).get("ingress", [])]


def test_leader_election_status_and_failover(kube, gateway, upstreams, run_watcher):
    blue = upstreams("blue")
    app(kube, "web", [blue], "a.example")
    timing = ["--election-lease-duration", "2s", "--election-renew-deadline", "1500ms",
              "--election-retry-period", "200ms", "--publish-status-address", "10.9.8.7"]
    w1 = run_watcher(gateway, *timing, env={"POD_NAME": "w1"}, name="w1")
    w1.wait_log(r"w1 is now the leader")
    w2 = run_watcher(gateway, *timing, env={"POD_NAME": "w2"}, name="w2")
    w2.wait_log(r"held by \"w1\"")
    wait_for(lambda: lb_ips(kube, "web") == ["10.9.8.7"], what="status written")
    time.sleep(0.5)
    assert "status.loadBalancer updated" in w1.log()
    assert "status.loadBalancer updated" not in w2.log()
    assert "is now the leader" not in w2.log()
    writes = kube.requests_matching("PUT", r"/ingresses/web/status$")
    assert len(writes) == 1, "written once, only when it differed"

    # the leader dies without releasing: the other takes over when the lease expires
    w1.proc.stop(signal.SIGKILL)
    w2.wait_log(r"w2 is now the leader", timeout=10)
    ing = kube.get("Ingress", "default", "web")
    ing["status"] = {"loadBalancer": {}}
    kube.update_status(ing)
    wait_for(lambda: lb_ips(kube, "web") == ["10.9.8.7"], what="the new leader fixes status")
    lease = kube.get("Lease", "default", "sluice-leader")
    assert lease["spec"]["holderIdentity"] == "w2"
    assert lease["spec"]["leaseTransitions"] >= 1

    # a leader that stops releases the lease at once
    w2.proc.stop(signal.SIGTERM)
    w2.wait_log(r"released Lease default/sluice-leader")
    assert kube.get("Lease", "default", "sluice-leader")["spec"]["holderIdentity"] == ""


def test_publish_service_address(kube, gateway, upstreams, run_watcher):
    blue = upstreams("blue")
    app(kube, "web", [blue], "a.example")
    svc = fx.service("sluice", "default", type="LoadBalancer")
    kube.create(svc)
    svc = kube.get("Service", "default", "sluice")
    svc["status"] = fx.load_balancer_status("203.0.113.5")
    kube.update_status(svc)
    run_watcher(gateway, "--publish-service", "default/sluice")
    wait_for(lambda: lb_ips(kube, "web") == ["203.0.113.5"], what="status from the Service")


def test_update_status_false_neither_campaigns_nor_writes(kube, gateway, upstreams,
                                                         run_watcher):
    blue = upstreams("blue")
    app(kube, "web", [blue], "a.example")
    w = run_watcher(gateway, "--update-status=false", "--publish-status-address", "10.9.8.7")
    time.sleep(0.5)
    assert kube.get("Lease", "default", "sluice-leader") is None
    assert not kube.requests_matching(None, r"/leases|/status$")
    assert lb_ips(kube, "web") == []
    assert "campaigning" not in w.log()


# ---- authentication ---------------------------------------------------------------------------

def test_in_cluster_credentials_and_token_rotation(kube, gateway, upstreams, run_watcher):
    blue = upstreams("blue")
    app(kube, "web", [blue], "a.example")
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(kube.port),
           "SLUICE_SERVICEACCOUNT_DIR": str(kube.state_dir / "serviceaccount")}
    w = run_watcher(gateway, env=env, kube_args=False)
    assert "in-cluster service account" in w.log()
    wait_for(served_by(gateway, "a.example", "blue\n"))
    kube.set_token("rotated")  # the old token gets 401 now; the file has the new one
    kube.close_watches()
    app(kube, "api", [blue], "b.example")
    wait_for(served_by(gateway, "b.example", "blue\n"), what="served with the new token")
    assert "changed; using the new one" in w.log()


def test_kubeconfig_credentials(kube, gateway, upstreams, run_watcher):
    blue = upstreams("blue")
    app(kube, "web", [blue], "a.example")
    w = run_watcher(gateway, "--kubeconfig", kube.kubeconfig, kube_args=False)
    wait_for(served_by(gateway, "a.example", "blue\n"))
    assert "kubeconfig" in w.log()


def test_wrong_token_is_retried_not_fatal(kube, gateway, upstreams, run_watcher):
    blue = upstreams("blue")
    app(kube, "web", [blue], "a.example")
    run_watcher.token_file.write_text("wrong")
    w = run_watcher(gateway, wait=False)
    w.wait_log(r"HTTP 401")
    assert http_get(w.healthz)[0] == 503
    run_watcher.token_file.write_text("t")
    w.wait_log(r"first config applied", timeout=20)
    assert through(gateway, "a.example") == (200, "blue\n")
