"""Builders of Kubernetes objects (plain dicts with the real field names) for sluice's tests.

Every builder returns a complete object with kind and apiVersion, ready for
`KubeAPIServer.create()`, a POST body, or a YAML manifest (`to_yaml`).  Ports given as an int
become `port.number`, as a str `port.name`, as in `networking.k8s.io/v1` backends.

    ing = ingress("web", host="a.example", service="web", port=80, tls_secret="web-tls")
    svc = service("web", ports=[service_port(80, name="http", target_port=8080)])
    eps = endpoint_slice("web", addresses=["10.0.0.1", "10.0.0.2"], ports=[("http", 8080)])
"""

import base64
import os
import subprocess
import tempfile
from datetime import datetime, timezone

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"


def micro_time(t=None):
    """A metav1.MicroTime string (Lease times): 2024-05-01T12:00:00.000000Z."""
    dt = datetime.fromtimestamp(t, timezone.utc) if t is not None else datetime.now(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _meta(name, namespace=None, labels=None, annotations=None, **extra):
    md = {"name": name}
    if namespace is not None:
        md["namespace"] = namespace
    if labels:
        md["labels"] = dict(labels)
    if annotations:
        md["annotations"] = dict(annotations)
    md.update({k: v for k, v in extra.items() if v is not None})
    return md


# --- networking.k8s.io/v1 ---

def backend(service, port):
    """An IngressBackend for a Service port: int = port.number, str = port.name."""
    p = {"number": port} if isinstance(port, int) else {"name": str(port)}
    return {"service": {"name": service, "port": p}}


def resource_backend(kind, name, api_group=None):
    """An IngressBackend pointing at a resource (TypedLocalObjectReference)."""
    ref = {"kind": kind, "name": name}
    if api_group:
        ref["apiGroup"] = api_group
    return {"resource": ref}


def ingress_path(path="/", service=None, port=80, path_type="Prefix", backend_=None):
    """An HTTPIngressPath."""
    p = {}
    if path is not None:
        p["path"] = path
    p["pathType"] = path_type
    p["backend"] = backend_ if backend_ is not None else backend(service, port)
    return p


def rule(host=None, *paths):
    """An IngressRule: rule("a.example", ingress_path("/", "web", 80), ...)."""
    r = {}
    if host:
        r["host"] = host
    if paths:
        r["http"] = {"paths": list(paths)}
    return r


def ingress_tls(hosts, secret_name=None):
    t = {"hosts": list(hosts)}
    if secret_name:
        t["secretName"] = secret_name
    return t


def ingress(name, namespace="default", host=None, path="/", service=None, port=80,
            path_type="Prefix", rules=None, tls=None, tls_secret=None, ingress_class="sluice",
            default_backend=None, annotations=None, labels=None):
    """An Ingress.  The simple form (host/path/service/port) makes one rule with one path;
    `rules` (from rule()) replaces it.  `tls_secret` adds spec.tls for `host`; `tls` is the
    full list.  `ingress_class=None` leaves spec.ingressClassName out.  `default_backend` is a
    backend() dict or a (service, port) pair."""
    spec = {}
    if ingress_class is not None:
        spec["ingressClassName"] = ingress_class
    if isinstance(default_backend, tuple):
        default_backend = backend(*default_backend)
    if default_backend is not None:
        spec["defaultBackend"] = default_backend
    if rules is None and service is not None:
        rules = [rule(host, ingress_path(path, service, port, path_type))]
    if rules:
        spec["rules"] = rules
    if tls is None and tls_secret:
        tls = [ingress_tls([host] if host else [], tls_secret)]
    if tls:
        spec["tls"] = tls
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": _meta(name, namespace, labels, annotations), "spec": spec}


def ingress_class(name="sluice", controller="sluice.io/ingress-controller", default=False,
                  parameters=None, annotations=None):
    """An IngressClass; `default` sets ingressclass.kubernetes.io/is-default-class."""
    ann = dict(annotations or {})
    if default:
        ann[DEFAULT_CLASS_ANNOTATION] = "true"
    spec = {"controller": controller}
    if parameters:
        spec["parameters"] = parameters
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": _meta(name, None, None, ann), "spec": spec}


def load_balancer_status(*addresses):
    """An Ingress/Service status.loadBalancer with ip (or hostname) entries."""
    out = []
    for a in addresses:
        is_ip = all(c in "0123456789.:abcdefABCDEF" for c in a) and any(c in a for c in ".:")
        out.append({"ip": a} if is_ip else {"hostname": a})
    return {"loadBalancer": {"ingress": out}}


# --- v1 ---

def namespace(name, labels=None):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name, None, labels)}


def service_port(port, name=None, target_port=None, protocol="TCP", app_protocol=None,
                 node_port=None):
    """A ServicePort; target_port may be an int or a named container port."""
    p = {}
    if name:
        p["name"] = name
    p["protocol"] = protocol
    if app_protocol:
        p["appProtocol"] = app_protocol
    p["port"] = port
    if target_port is not None:
        p["targetPort"] = target_port
    if node_port is not None:
        p["nodePort"] = node_port
    return p


def service(name, namespace="default", ports=None, type="ClusterIP", external_name=None,
            selector=None, labels=None, annotations=None, cluster_ip=None):
    """A Service.  ports: a list of service_port() dicts, ints, or (name, port[, target])
    tuples; default one port 80 named "http".  type="ExternalName" needs external_name."""
    spec = {"type": type}
    if type == "ExternalName":
        spec["externalName"] = external_name
    if selector is not None:
        spec["selector"] = dict(selector)
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    if ports is None and type != "ExternalName":
        ports = [service_port(80, name="http", target_port=80)]
    norm = []
    for p in ports or []:
        if isinstance(p, int):
            p = service_port(p, name=None if len(ports) == 1 else f"p{p}")
        elif isinstance(p, tuple):
            p = service_port(p[1], name=p[0], target_port=p[2] if len(p) > 2 else None)
        norm.append(p)
    if norm:
        spec["ports"] = norm
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(name, namespace, labels, annotations), "spec": spec}


def external_name_service(name, external_name, namespace="default", ports=None):
    return service(name, namespace, ports=ports, type="ExternalName",
                   external_name=external_name)


def secret(name, namespace="default", data=None, string_data=None, type="Opaque", labels=None):
    """A Secret; `data` values are bytes/str and get base64-encoded here."""
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(name, namespace, labels),
           "type": type}
    if data:
        obj["data"] = {k: base64.b64encode(v.encode() if isinstance(v, str) else v).decode()
                       for k, v in data.items()}
    if string_data:
        obj["stringData"] = dict(string_data)
    return obj


def tls_secret(name, cert_pem, key_pem, namespace="default", ca_pem=None):
    """A kubernetes.io/tls Secret (tls.crt, tls.key and optionally ca.crt)."""
    data = {"tls.crt": cert_pem, "tls.key": key_pem}
    if ca_pem:
        data["ca.crt"] = ca_pem
    return secret(name, namespace, data=data, type="kubernetes.io/tls")


def config_map(name, namespace="default", data=None):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, namespace),
            "data": dict(data or {})}


def self_signed_cert(hosts, days=30):
    """(cert_pem, key_pem) for `hosts` (first is the CN), made with the openssl CLI."""
    hosts = list(hosts)
    sans = ",".join(("IP:" if all(c in "0123456789.:" for c in h) else "DNS:") + h
                    for h in hosts)
    with tempfile.TemporaryDirectory() as d:
        cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", str(days), "-subj", f"/CN={hosts[0]}",
                        "-addext", f"subjectAltName={sans}"],
                       check=True, capture_output=True)
        with open(cert) as c, open(key) as k:
            return c.read(), k.read()


# --- discovery.k8s.io/v1 ---

def endpoint(addresses, ready=True, serving=None, terminating=None, hostname=None,
             node_name=None, zone=None, target_pod=None):
    """An Endpoint of an EndpointSlice; `ready=None` leaves conditions.ready out (unknown,
    which consumers treat as ready)."""
    if isinstance(addresses, str):
        addresses = [addresses]
    e = {"addresses": list(addresses)}
    cond = {}
    if ready is not None:
        cond["ready"] = ready
    if serving is not None:
        cond["serving"] = serving
    if terminating is not None:
        cond["terminating"] = terminating
    e["conditions"] = cond
    if hostname:
        e["hostname"] = hostname
    if target_pod:
        e["targetRef"] = {"kind": "Pod", "name": target_pod[1],
                          "namespace": target_pod[0]}
    if node_name:
        e["nodeName"] = node_name
    if zone:
        e["zone"] = zone
    return e


def endpoint_port(port, name=None, protocol="TCP", app_protocol=None):
    p = {}
    if name is not None:
        p["name"] = name
    p["port"] = port
    p["protocol"] = protocol
    if app_protocol:
        p["appProtocol"] = app_protocol
    return p


def endpoint_slice(service, namespace="default", addresses=None, endpoints=None, ports=None,
                   name=None, address_type="IPv4", ready=True, labels=None):
    """An EndpointSlice of `service` (labelled kubernetes.io/service-name).  Either `addresses`
    (one endpoint each, all with conditions.ready=`ready`) or `endpoints` (endpoint() dicts).
    ports: endpoint_port() dicts, ints, or (name, port) tuples; default [("http", 80)].  The
    name defaults to "<service>-" + a stable suffix."""
    if endpoints is None:
        endpoints = [endpoint(a, ready=ready) for a in (addresses or [])]
    if ports is None:
        ports = [("http", 80)]
    norm = []
    for p in ports:
        if isinstance(p, int):
            p = endpoint_port(p)
        elif isinstance(p, tuple):
            p = endpoint_port(p[1], name=p[0])
        norm.append(p)
    lab = {SERVICE_NAME_LABEL: service, MANAGED_BY_LABEL: "endpointslice-controller.k8s.io"}
    lab.update(labels or {})
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": _meta(name or f"{service}-abcde", namespace, lab),
            "addressType": address_type, "endpoints": endpoints, "ports": norm}


# --- coordination.k8s.io/v1 ---

def lease(name, namespace="default", holder=None, duration=15, acquire_time=None,
          renew_time=None, transitions=None):
    """A Lease as client-go leader election writes it (times as MicroTime strings; pass
    True for "now")."""
    spec = {}
    if holder is not None:
        spec["holderIdentity"] = holder
    if duration is not None:
        spec["leaseDurationSeconds"] = duration
    if acquire_time is not None:
        spec["acquireTime"] = micro_time() if acquire_time is True else acquire_time
    if renew_time is not None:
        spec["renewTime"] = micro_time() if renew_time is True else renew_time
    if transitions is not None:
        spec["leaseTransitions"] = transitions
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": _meta(name, namespace), "spec": spec}


# --- output ---

def to_yaml(*objs):
    """A multi-document YAML manifest of the objects (needs python3-yaml)."""
    import yaml
    return "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objs)


def write_manifests(directory, *objs, name="objects.yaml"):
    """Writes the objects as one YAML file in `directory`; returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(to_yaml(*objs))
    return path
