"""The install: manifests/ (plain YAML), charts/sluice (Helm, rendered here by helmlite since helm
is not installable), the Dockerfile and the kind scripts. Beyond parsing, the tests check that
sluice accepts the config they ship, that sluice-watcher accepts the flags they pass, and that
the RBAC rules grant exactly what a running watcher calls (observed on the API emulator)."""
import re
import subprocess

import yaml

from conftest import ROOT, wait_for
from helpers import SLUICE, WATCHER, run
from helmlite import Chart
from kube import fixtures as fx

MANIFESTS = ROOT / "manifests"
CHART = ROOT / "charts" / "sluice"


def manifest_docs():
    docs = []
    for f in sorted(MANIFESTS.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind):
    found = by_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def containers(deploy):
    spec = deploy["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}, \
        {c["name"]: c for c in spec.get("initContainers", [])}


def check_pod(deploy):
    """What both installs must get right in the pod."""
    cs, init = containers(deploy)
    assert set(cs) == {"sluice", "watcher"}
    sluice, watcher = cs["sluice"], cs["watcher"]
    assert sluice["command"] == ["sluice"]
    ports = {p["name"]: p["containerPort"] for p in sluice["ports"]}
    assert ports["http"] == 8080 and ports["https"] == 8443
    admin_port = [p for n, p in ports.items() if n not in ("http", "https")][0]
    assert sluice["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sluice["livenessProbe"]["httpGet"]["path"] == "/healthz"
    args = watcher["args"]
    assert watcher["command"] == ["sluice-watcher"]
    assert f"--push=http://127.0.0.1:{admin_port}/config" in args, "pushes to its own sluice"
    assert "--admin-token-file=/run/sluice/admin-token" in args
    assert any(a.startswith("--election-id=") for a in args)
    assert {e["name"] for e in watcher["env"]} >= {"POD_NAME", "POD_NAMESPACE"}
    assert watcher["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert watcher["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert "admin-token" in init
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in list(cs.values()) + list(init.values()):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    return args


def config_of(docs):
    cm = one(docs, "ConfigMap")
    return cm["data"]["sluice.yaml"]


def sluice_accepts(tmp_path, text):
    p = tmp_path / "sluice.yaml"
    p.write_text(text.replace("@ADMIN_TOKEN@", "0123abcd"))
    r = run([SLUICE, "-t", "-c", p])
    assert r.returncode == 0, r.stdout + r.stderr


def watcher_accepts(args):
    r = run([WATCHER] + list(args) + ["--version"])
    assert r.returncode == 0, r.stderr


# ---- manifests/ -------------------------------------------------------------------------------

def test_manifests_hold_the_install(tmp_path):
    docs = manifest_docs()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                            "Role", "RoleBinding", "IngressClass", "ConfigMap", "Deployment",
                            "Service", "PodDisruptionBudget"])
    ic = one(docs, "IngressClass")
    assert ic["metadata"]["name"] == "sluice"
    assert ic["spec"]["controller"] == "sluice.io/ingress-controller"
    deploy = one(docs, "Deployment")
    assert deploy["spec"]["replicas"] >= 2
    args = check_pod(deploy)
    assert "--publish-service=$(POD_NAMESPACE)/sluice-controller" in args
    assert one(docs, "Service")["metadata"]["name"] == "sluice-controller"
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    sluice_accepts(tmp_path, config_of(docs))
    watcher_accepts(args)
    for d in docs:
        if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "IngressClass"):
            assert d["metadata"]["namespace"] == "sluice", d["metadata"]["name"]


def rbac_rules(docs):
    """{(role kind, apiGroup, resource, resourceName or None): set(verbs)}."""
    out = {}
    for d in docs:
        if d["kind"] not in ("ClusterRole", "Role"):
            continue
        for r in d["rules"]:
            for g in r["apiGroups"]:
                for res in r["resources"]:
                    for name in r.get("resourceNames") or [None]:
                        out.setdefault((d["kind"], g, res, name), set()).update(r["verbs"])
    return out


def bindings_ok(docs):
    sa = one(docs, "ServiceAccount")["metadata"]
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        b = one(docs, kind)
        role = one(docs, role_kind)
        assert b["roleRef"]["name"] == role["metadata"]["name"]
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"],
                                  "namespace": sa["namespace"]}]


API = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/v1)(?:/namespaces/(?P<ns>[^/]+))?"
                 r"/(?P<res>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$")


def calls_of(kube):
    """(verb, apiGroup, resource[/subresource], name) of every API request made; watches that
    are still open count too (the request log has a request when it ends)."""
    from kube.apiserver import RESOURCES
    out = {("watch", rt.group, rt.plural, None) for rt in RESOURCES if kube.watch_count(rt)}
    for r in kube.requests_matching():
        m = API.match(r["path"])
        if not m:
            continue
        res = m["res"] + (f"/{m['sub']}" if m["sub"] else "")
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            r["method"])
        if r["method"] == "GET":
            verb = "watch" if r["watch"] else "get" if m["name"] else "list"
        out.add((verb, m["group"] or "", res, m["name"] if verb != "create" else None))
    return out


def allowed(rules, call):
    verb, group, res, name = call
    for (kind, g, r, rname), verbs in rules.items():
        if g == group and r == res and verb in verbs and (rname is None or rname == name):
            return True
    return False


def test_rbac_grants_exactly_what_the_watcher_calls(kube, gateway, run_watcher, upstreams):
    """A watcher that reads certificates, writes status and campaigns: every call it makes is
    allowed by manifests/ (and by the chart, whose RBAC is the same), and every verb granted is
    used."""
    blue = upstreams("blue")
    kube.create(fx.service("web", ports=[fx.service_port(80, name="http",
                                                         target_port=blue.port)]))
    kube.create(fx.endpoint_slice("web", addresses=[blue.ip], ports=[("http", blue.port)]))
    cert, key = fx.self_signed_cert(["a.example"])
    kube.create(fx.tls_secret("web-tls", cert, key))
    kube.create(fx.ingress("web", host="a.example", service="web", tls_secret="web-tls"))
    run_watcher(None, "--output", gateway.tmp_path / "out.json", "--tls-certificates",
                "--publish-status-address", "10.1.2.3", "--election-id", "sluice-leader",
                "--election-lease-duration", "2s", "--election-renew-deadline", "1s",
                "--election-retry-period", "100ms", push=False)
    wait_for(lambda: (kube.get("Ingress", "default", "web").get("status") or {})
             .get("loadBalancer", {}).get("ingress"), what="the status write")
    wait_for(lambda: kube.requests_matching("PUT", r"/leases/sluice-leader$"),
             what="a Lease renewal")
    calls = calls_of(kube)
    docs = manifest_docs()
    bindings_ok(docs)
    rules = rbac_rules(docs)
    denied = [c for c in calls if not allowed(rules, c)]
    assert not denied, f"calls the manifests do not allow: {denied}"
    granted = {(verb, g, r) for (kind, g, r, n), verbs in rules.items() for verb in verbs}
    used = {(verb, g, r) for verb, g, r, n in calls}
    assert granted == used, f"granted but never used: {granted - used}"
    chart_rules = rbac_rules(Chart(CHART).documents(release="sluice", namespace="sluice"))
    assert {k[:3]: v for k, v in chart_rules.items()} == {k[:3]: v for k, v in rules.items()}


# ---- charts/sluice ----------------------------------------------------------------------------

def values_paths(node, prefix=""):
    out = set()
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{prefix}.{k}" if prefix else k
            out.add(p)
            out |= values_paths(v, p)
    return out


def test_chart_references_only_defined_values():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    known = values_paths(values)
    used = set()
    for f in (CHART / "templates").iterdir():
        used |= set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", f.read_text()))
    missing = sorted(u for u in used if u.rstrip(".") not in known)
    assert not missing, f"templates use values that values.yaml does not define: {missing}"


def test_chart_default_render(tmp_path):
    chart = Chart(CHART)
    docs = chart.documents(release="edge", namespace="ingress")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                            "RoleBinding", "IngressClass", "ConfigMap", "Deployment", "Service",
                            "Service"])
    deploy = one(docs, "Deployment")
    assert deploy["metadata"]["name"] == "edge-sluice-controller"
    assert deploy["spec"]["replicas"] == 1
    args = check_pod(deploy)
    assert "--publish-service=ingress/edge-sluice-controller" in args
    assert "--ingress-class=sluice" in args
    assert "--controller-class=sluice.io/ingress-controller" in args
    assert "--election-id=edge-sluice-leader" in args
    role = one(docs, "Role")
    assert role["rules"][1]["resourceNames"] == ["edge-sluice-leader"]
    ic = one(docs, "IngressClass")
    assert ic["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == \
        "false"
    cs, _ = containers(deploy)
    assert cs["sluice"]["image"] == "sluice:0.1.0"
    sluice_accepts(tmp_path, config_of(docs))
    watcher_accepts(args)
    selector = deploy["spec"]["selector"]["matchLabels"]
    assert deploy["spec"]["template"]["metadata"]["labels"].items() >= selector.items()
    for svc in by_kind(docs, "Service"):
        assert svc["spec"]["selector"] == selector
    notes = chart.render(release="edge", namespace="ingress")["NOTES.txt"]
    assert "ingressClassName: sluice" in notes


def test_chart_options_render(tmp_path):
    docs = Chart(CHART).documents({
        "fullnameOverride": "gw",
        "commonLabels": {"team": "edge"},
        "controller": {
            "replicaCount": 3,
            "image": {"registry": "registry.example", "tag": "dev"},
            "ingressClassResource": {"name": "public", "default": True},
            "watchIngressWithoutClass": True,
            "scope": {"enabled": True},
            "publishService": {"enabled": False},
            "electionID": "gw-lock",
            "extraArgs": {"default-backend-service": "web/fallback", "tls-certificates": ""},
            "metrics": {"serviceMonitor": {"enabled": True, "additionalLabels": {"r": "p"}}},
            "service": {"type": "NodePort", "nodePorts": {"http": 30080}},
            "config": {"threads": 4},
            "tolerations": [{"key": "edge", "operator": "Exists"}],
        }}, release="x", namespace="net")
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    sm = one(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["r"] == "p"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    deploy = one(docs, "Deployment")
    assert deploy["metadata"]["name"] == "gw-controller"
    assert deploy["metadata"]["labels"]["team"] == "edge"
    args = check_pod(deploy)
    assert "--ingress-class=public" in args
    assert "--watch-ingress-without-class=true" in args
    assert "--watch-namespace=net" in args
    assert not any(a.startswith("--publish-service") for a in args)
    assert "--election-id=gw-lock" in args
    assert "--default-backend-service=web/fallback" in args and "--tls-certificates" in args
    cs, _ = containers(deploy)
    assert cs["watcher"]["image"] == "registry.example/sluice:dev"
    assert deploy["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "edge", "operator": "Exists"}]
    ic = one(docs, "IngressClass")
    assert ic["metadata"]["name"] == "public"
    assert ic["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true"
    svc = [s for s in by_kind(docs, "Service") if s["spec"]["type"] == "NodePort"][0]
    assert svc["spec"]["ports"][0]["nodePort"] == 30080
    assert "threads: 4" in config_of(docs)
    sluice_accepts(tmp_path, config_of(docs))
    watcher_accepts(args)


def test_chart_switches_off():
    docs = Chart(CHART).documents({
        "rbac": {"create": False}, "serviceAccount": {"create": False, "name": "existing"},
        "controller": {"ingressClassResource": {"enabled": False},
                       "service": {"enabled": False}, "metrics": {"enabled": False}}})
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment"]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == \
        "existing"


# ---- image and kind ---------------------------------------------------------------------------

def test_dockerfile_builds_both_binaries_and_runs_unprivileged():
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert froms[0][0].startswith("debian:12") and froms[0][1]
    assert froms[-1][0] == "debian:12-slim"
    assert re.search(r"^RUN .*\bmake\b", text, re.M)
    for b in ("sluice", "sluice-watcher"):
        assert re.search(rf"^COPY --from=\S+ /src/build/{b}\b", text, re.M) or \
            f"build/{b}" in text
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0", "0:0")
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "build" in ignore or "build/" in ignore


def test_kind_scripts_are_valid_shell():
    scripts = sorted((ROOT / "e2e" / "kind").glob("*.sh"))
    assert scripts
    for s in scripts:
        r = subprocess.run(["bash", "-n", str(s)], capture_output=True, text=True)
        assert r.returncode == 0, f"{s}: {r.stderr}"
        assert s.stat().st_mode & 0o111, f"{s} is not executable"
